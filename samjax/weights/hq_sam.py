"""HQ-SAM checkpoints (`sam_hq_vit_{b,l,h}.pth`, `sam_hq_vit_tiny.pth`) <-> samjax HQSam variables.

The state dict is segment_anything_hq's `Sam` with `MaskDecoderHQ`: SAM's keys (ViT or TinyViT encoder) plus
`mask_decoder.{hf_token, hf_mlp, compress_vit_feat, embedding_encoder, embedding_maskfeature}.*`. Key table and
layouts: samjax/weights/keys.py; `compress_vit_feat.{0,3}` and `embedding_encoder.{0,3}` are
ConvTranspose2d, `embedding_maskfeature.{0,3}` Conv2d. The TinyViT variant's BatchNorm running statistics go to
"batch_stats".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from samjax.models.hq_sam import PRESETS, HQSamConfig, abstract_variables
from samjax.weights import keys

TRANSPOSED = ("output_upscaling", "compress_vit_feat", "embedding_encoder")
HQ_KEY = "mask_decoder.hf_token.weight"
TINY_VIT_KEY = "image_encoder.layers.0.blocks.0.conv1.c.weight"
_VIT_WIDTHS = {768: "sam_hq_vit_b", 1024: "sam_hq_vit_l", 1280: "sam_hq_vit_h"}


def torch_shapes(config: HQSamConfig) -> dict[str, tuple[int, ...]]:
    """The official state_dict's keys and shapes for `config`."""
    return keys.torch_shapes(abstract_variables(config), TRANSPOSED)


def _problems(state_dict, config: HQSamConfig) -> list[str]:
    return keys.mismatch(state_dict, torch_shapes(config), (config.sam.pixel_mean, config.sam.pixel_std))


def check_state_dict(state_dict: Mapping[str, Any], config: HQSamConfig) -> None:
    """Raise CheckpointMismatchError listing missing, unexpected and mis-shaped keys, if any."""
    problems = _problems(state_dict, config)
    hint = ""
    if problems:
        guess = detect_model(state_dict)
        if guess:
            hint = f"This checkpoint looks like {guess}: use HQSamConfig.{guess}()."
        elif HQ_KEY not in state_dict:
            hint = "It has no mask_decoder.hf_token: not an HQ-SAM checkpoint (SAM, MobileSAM?)."
    keys.raise_mismatch(problems, "HQ-SAM", hint)


def from_torch(state_dict: Mapping[str, Any], config: HQSamConfig) -> dict:
    """Official state dict (torch tensors or numpy arrays) -> variables ({"params"}, + "batch_stats" for TinyViT)."""
    check_state_dict(state_dict, config)
    return keys.from_torch(state_dict, abstract_variables(config), TRANSPOSED)


def to_torch(variables: Mapping, config: HQSamConfig | None = None) -> dict[str, np.ndarray]:
    """Variables -> the official state dict (numpy), loadable by segment_anything_hq's Sam strictly."""
    return keys.to_torch(variables, TRANSPOSED)


def detect_model(state_dict: Mapping[str, Any]) -> str | None:
    """The HQ-SAM preset whose keys and shapes `state_dict` has exactly (one of PRESETS), or None."""
    if HQ_KEY not in state_dict:
        return None
    if TINY_VIT_KEY in state_dict:
        name = "sam_hq_vit_tiny"
    else:
        width = np.shape(state_dict.get("image_encoder.patch_embed.proj.weight", ()))[:1]
        name = _VIT_WIDTHS.get(width[0]) if width else None
    if name is None or name not in PRESETS:
        return None
    return name if not _problems(state_dict, HQSamConfig.from_name(name)) else None
