"""MobileSAM parity: the official MobileSAM modules (mobile_sam, composed as its `build_sam_vit_t`) with every weight
randomised (BatchNorm running statistics, attention biases included), converted by samjax.weights.mobile_sam.

Tolerances (tests/family_official.py): image embeddings, low-res logits and IoU within 1e-4; masks identical away
from the threshold. TinyViT's reference fixes the output grid at 64 x 64, so every TinyViT runs at 1024 px; the
tiny config narrows the stages (16 / 32 / 48 / 320 channels, one block each) and the decoder's MLPs.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from samjax.models.family_config import sam_config_for
from samjax.models.mobile_sam import MobileSam, MobileSamConfig, TinyViTConfig
from samjax.weights import mobile_sam as convert
from tests.family_official import (
    ATOL,
    check_cases,
    import_references,
    photo_input,
    randomize_,
)

pytestmark = pytest.mark.torch
torch = import_references()
pytest.importorskip("mobile_sam", reason="the reference package (pyproject's torch extra) is not installed")
from mobile_sam import build_sam_vit_t  # noqa: E402  (after the stand-ins are on the path)
from mobile_sam.modeling import (  # noqa: E402
    MaskDecoder,
    PromptEncoder,
    Sam,
    TinyViT,
    TwoWayTransformer,
)

TINY = MobileSamConfig(
    TinyViTConfig(embed_dims=(16, 32, 48, 320), depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 10),
                  window_sizes=(7, 7, 14, 7), num_classes=10),
    sam_config_for(64, decoder_mlp_dim=64, iou_head_hidden_dim=32))


def build_reference(cfg: MobileSamConfig, seed: int = 0):
    """MobileSAM's `build_sam_vit_t` composition for `cfg` (the official constructor itself for the preset),
    random weights, eval mode."""
    torch.manual_seed(seed)
    if cfg == MobileSamConfig.mobile_sam():
        sam = build_sam_vit_t()
    else:
        e, s = cfg.encoder, cfg.sam
        sam = Sam(
            image_encoder=TinyViT(img_size=e.image_size, in_chans=e.in_chans, num_classes=e.num_classes,
                                  embed_dims=list(e.embed_dims), depths=list(e.depths), num_heads=list(e.num_heads),
                                  window_sizes=list(e.window_sizes), mlp_ratio=e.mlp_ratio, drop_rate=0.0,
                                  drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=e.mbconv_expand_ratio,
                                  local_conv_size=e.local_conv_size, layer_lr_decay=0.8),
            prompt_encoder=PromptEncoder(embed_dim=s.prompt_embed_dim, image_embedding_size=(s.grid_size,) * 2,
                                         input_image_size=(s.image_size,) * 2, mask_in_chans=s.mask_in_chans),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=s.num_multimask_outputs,
                transformer=TwoWayTransformer(depth=s.decoder_depth, embedding_dim=s.prompt_embed_dim,
                                              mlp_dim=s.decoder_mlp_dim, num_heads=s.decoder_num_heads),
                transformer_dim=s.prompt_embed_dim, iou_head_depth=s.iou_head_depth,
                iou_head_hidden_dim=s.iou_head_hidden_dim),
            pixel_mean=list(s.pixel_mean), pixel_std=list(s.pixel_std))
    randomize_(sam, seed)
    return sam.eval()


@functools.lru_cache(maxsize=2)
def pair(cfg: MobileSamConfig):
    ref = build_reference(cfg)
    variables = convert.from_torch(ref.state_dict(), cfg)
    model = MobileSam(cfg)
    embed = jax.jit(lambda v, x: model.apply(v, x, method=MobileSam.embed_images))
    decode = jax.jit(lambda v, e, c, lab, m, ok, mm: model.apply(v, e, c, lab, m, ok, mm, method=MobileSam.decode),
                     static_argnums=6)
    return ref, variables, embed, decode


def run_parity(cfg: MobileSamConfig, photo, multimasks=(True, False)):
    ref, variables, embed, decode = pair(cfg)
    x, input_size = photo_input(photo, cfg.encoder_input_size, cfg.sam.pixel_mean, cfg.sam.pixel_std)
    with torch.no_grad():
        ref_emb = ref.image_encoder(torch.as_tensor(x.transpose(0, 3, 1, 2)))
    emb = embed(variables, x)
    assert np.isfinite(ref_emb.numpy()).all() and np.abs(ref_emb.numpy()).max() > 0.1
    np.testing.assert_allclose(np.asarray(emb), ref_emb.numpy().transpose(0, 2, 3, 1), atol=ATOL, rtol=0)
    pe = ref.prompt_encoder.get_dense_pe()

    post = functools.partial(ref.postprocess_masks, input_size=input_size, original_size=photo.shape[:2])
    for multimask in multimasks:
        def ref_decode(prompts, multimask=multimask):
            sparse, dense = ref.prompt_encoder(**prompts)
            return ref.mask_decoder(image_embeddings=ref_emb, image_pe=pe, sparse_prompt_embeddings=sparse,
                                    dense_prompt_embeddings=dense, multimask_output=multimask)

        check_cases(torch, ref_decode, lambda c, lab, m, ok, mm=multimask: decode(variables, emb, c, lab, m, ok, mm),
                    post, photo.shape[:2], cfg.sam.image_size, input_size, cfg.sam.mask_input_size)


def test_mobile_sam_parity(photo):
    """The official MobileSAM architecture (TinyViT-5M at 1024 px, SAM's decoder): TinyViT's reference fixes its
    output grid at 64 x 64, so no smaller image would do, and at 1024 px the preset takes little longer than a
    narrowed TinyViT (TINY, used for the key-table tests)."""
    run_parity(MobileSamConfig.mobile_sam(), photo)


def test_key_set_round_trip_and_errors():
    ref = build_reference(TINY, seed=3)
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    variables = convert.from_torch(sd, TINY)
    assert set(variables) == {"params", "batch_stats"}
    back = convert.to_torch(variables, TINY)
    assert set(back) == set(sd)
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            assert back[k].shape == () and back[k] == 0  # no effect at momentum 0.1 (samjax/weights/keys.py)
        else:
            np.testing.assert_array_equal(back[k], v, err_msg=k)
    ref.load_state_dict({k: torch.as_tensor(v) for k, v in back.items()}, strict=True)
    # every parameter and running statistic of the reference, nothing else
    n = sum(np.size(a) for a in jax.tree.leaves(variables))
    assert n == sum(v.numel() for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked"))

    missing = dict(sd)
    del missing["image_encoder.layers.1.blocks.0.attn.attention_biases"]
    extra = {**sd, "image_encoder.extra.weight": np.zeros(3)}
    bad = {**sd, "image_encoder.neck.0.weight": np.zeros((256, 5, 1, 1))}
    for broken, words in ((missing, "missing keys"), (extra, "unexpected keys"), (bad, "mis-shaped")):
        with pytest.raises(ValueError, match=words):
            convert.from_torch(broken, TINY)
    assert convert.detect_model(sd) is None  # a tiny TinyViT is no official checkpoint


def test_detect_official_checkpoint():
    sd = {k: np.empty(v.shape, np.float32) for k, v in build_sam_vit_t().state_dict().items()}
    assert convert.detect_model(sd) == "mobile_sam"
    assert convert.torch_shapes(MobileSamConfig.mobile_sam()) == {k: tuple(v.shape) for k, v in sd.items()}
