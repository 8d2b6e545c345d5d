"""Configs of the SAM families (MobileSAM, HQ-SAM, EfficientViT-SAM): presets, validation, to_dict / from_dict,
logical axis names of every variable; BatchNorm in train mode as torch's; family detection."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from samjax.models import SamConfig
from samjax.models.efficientvit_sam import PRESETS as EVIT_PRESETS
from samjax.models.efficientvit_sam import EfficientViTConfig, EfficientViTSamConfig
from samjax.models.efficientvit_sam import variable_logical_axes as evit_axes
from samjax.models.hq_sam import PRESETS as HQ_PRESETS
from samjax.models.hq_sam import HQSamConfig
from samjax.models.hq_sam import variable_logical_axes as hq_axes
from samjax.models.mobile_sam import MobileSamConfig, TinyViTConfig
from samjax.models.mobile_sam import variable_logical_axes as mobile_axes
from samjax.parallel import check_axes
from samjax.weights import detect

ALL = ([("mobile_sam", MobileSamConfig, "mobile_sam")] + [("hq_sam", HQSamConfig, n) for n in HQ_PRESETS]
       + [("efficientvit_sam", EfficientViTSamConfig, n) for n in EVIT_PRESETS])


@pytest.mark.parametrize("family,cls,name", ALL)
def test_presets_round_trip(family, cls, name):
    cfg = cls.from_name(name)
    d = json.loads(cfg.to_json())
    assert d["family"] == family
    assert cls.from_dict(d) == cfg
    assert detect.config_for(family, name) == cfg
    assert cfg.sam.grid_size == 64 and cfg.sam.image_size == 1024 and cfg.sam.prompt_embed_dim == 256
    with pytest.raises(ValueError, match="unknown"):
        cls.from_dict({**d, "extra": 1})
    with pytest.raises(ValueError, match="is not a"):
        cls.from_dict({**d, "family": "sam2"})


def test_preset_details():
    assert MobileSamConfig.mobile_sam().encoder.merge_strides == (2, 2, 1)  # TinyViT-5M: 320-wide last stage at 1/16
    assert HQSamConfig.sam_hq_vit_tiny().vit_dim == 160 and HQSamConfig.sam_hq_vit_l().vit_dim == 1024
    l0, xl1 = EfficientViTSamConfig.l0(), EfficientViTSamConfig.from_name("efficientvit-sam-xl1")
    assert (l0.encoder_input_size, xl1.encoder_input_size) == (512, 1024)
    assert l0.sam.decoder_norm_eps == 1e-6 and l0.encoder.norm_eps == 1e-6  # the model zoo's set_norm_eps
    assert SamConfig().decoder_norm_eps == 1e-5


@pytest.mark.parametrize("make,words", [
    (lambda: TinyViTConfig(embed_dims=(16, 32), depths=(1,), num_heads=(1, 2), window_sizes=(7, 7)), "one entry"),
    (lambda: TinyViTConfig(num_heads=(2, 3, 5, 10)), "divide by num_heads"),
    (lambda: MobileSamConfig(TinyViTConfig(image_size=512), SamConfig(image_size=1024, patch_size=16)), "grid"),
    (lambda: HQSamConfig(SamConfig(window_size=4, encoder_global_attn_indexes=())), "global-attention"),
    (lambda: HQSamConfig(SamConfig(image_size=256, patch_size=4),
                         TinyViTConfig(image_size=256, embed_dims=(16, 320), depths=(1, 1), num_heads=(1, 10),
                                       window_sizes=(7, 7))), "3 stages"),
    (lambda: EfficientViTConfig(block_list=("res", "fmb", "fmb", "mb", "attn")), "block_list"),
    (lambda: EfficientViTConfig(qkv_dim=24), "qkv_dim"),
    (lambda: EfficientViTConfig(neck_stages=(5, 3)), "neck_stages"),
    (lambda: EfficientViTSamConfig(EfficientViTConfig(out_chans=128)), "output channels"),
    (lambda: EfficientViTSamConfig.from_name("efficientvit_sam_l9"), "unknown"),
    (lambda: SamConfig(decoder_norm_eps=0.0), "decoder_norm_eps"),
])
def test_validation(make, words):
    with pytest.raises(ValueError, match=words):
        make()


@pytest.mark.parametrize("axes_fn,cfg", [(mobile_axes, MobileSamConfig.mobile_sam()),
                                         (hq_axes, HQSamConfig.sam_hq_vit_tiny()),
                                         (evit_axes, EfficientViTSamConfig.xl0())])
def test_every_variable_has_known_logical_axes(axes_fn, cfg):
    specs = axes_fn(cfg)
    leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert leaves and all(isinstance(s, jax.sharding.PartitionSpec) for s in leaves)
    check_axes([n for s in leaves for n in s])
    assert set(specs) == {"params", "batch_stats"}


def test_detect_and_family_of():
    from samjax.weights import efficientvit_sam, mobile_sam

    sd = {k: np.broadcast_to(np.float32(0), s) for k, s in mobile_sam.torch_shapes(MobileSamConfig()).items()}
    assert detect.detect(sd) == ("mobile_sam", "mobile_sam")
    sd = {k: np.broadcast_to(np.float32(0), s)
          for k, s in efficientvit_sam.torch_shapes(EfficientViTSamConfig.l0()).items()}
    assert detect.detect(sd) == ("efficientvit_sam", "efficientvit_sam_l0")
    assert detect.family_of({efficientvit_sam.BACKBONE_KEY: 0}) == "efficientvit_sam"
    assert detect.detect({efficientvit_sam.BACKBONE_KEY: 0}) is None
    assert detect.family_of({"model.layer.weight": 0}) is None
