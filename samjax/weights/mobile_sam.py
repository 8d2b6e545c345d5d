"""MobileSAM checkpoints (`mobile_sam.pt`) <-> samjax MobileSam variables.

The state dict is MobileSAM's `build_sam_vit_t()` model's: `image_encoder.*` (TinyViT, with its BatchNorm running
statistics and the unused ImageNet head `norm_head` / `head`), `prompt_encoder.*` and `mask_decoder.*` as SAM's.
Key table and layouts: samjax/weights/keys.py. BatchNorm scale/bias go to "params", running_mean/var to
"batch_stats" (samjax/models/conv_layers.py says why they are not folded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from samjax.models.mobile_sam import MobileSamConfig, abstract_variables
from samjax.weights import keys

TRANSPOSED = ("output_upscaling",)
PRESETS = ("mobile_sam",)
TINY_VIT_KEY = "image_encoder.layers.0.blocks.0.conv1.c.weight"  # present in every TinyViT checkpoint


def torch_shapes(config: MobileSamConfig) -> dict[str, tuple[int, ...]]:
    """The official state_dict's keys and shapes for `config`."""
    return keys.torch_shapes(abstract_variables(config), TRANSPOSED)


def check_state_dict(state_dict: Mapping[str, Any], config: MobileSamConfig) -> None:
    """Raise CheckpointMismatchError listing missing, unexpected and mis-shaped keys, if any."""
    problems = keys.mismatch(state_dict, torch_shapes(config), (config.sam.pixel_mean, config.sam.pixel_std))
    hint = ""
    if problems and "mask_decoder.hf_token.weight" in state_dict:
        hint = "This is an HQ-SAM checkpoint (it has mask_decoder.hf_token): use samjax.weights.hq_sam."
    keys.raise_mismatch(problems, "MobileSAM", hint)


def from_torch(state_dict: Mapping[str, Any], config: MobileSamConfig | None = None) -> dict:
    """Official state dict (torch tensors or numpy arrays) -> {"params", "batch_stats"} of numpy float32."""
    config = config or MobileSamConfig.mobile_sam()
    check_state_dict(state_dict, config)
    return keys.from_torch(state_dict, abstract_variables(config), TRANSPOSED)


def to_torch(variables: Mapping, config: MobileSamConfig | None = None) -> dict[str, np.ndarray]:
    """{"params", "batch_stats"} -> the official state dict (numpy), loadable by MobileSAM's `Sam` strictly."""
    return keys.to_torch(variables, TRANSPOSED)


def detect_model(state_dict: Mapping[str, Any]) -> str | None:
    """'mobile_sam' if `state_dict` is exactly MobileSAM's (keys and shapes), else None."""
    if TINY_VIT_KEY not in state_dict or "mask_decoder.hf_token.weight" in state_dict:
        return None
    cfg = MobileSamConfig.mobile_sam()
    fits = not keys.mismatch(state_dict, torch_shapes(cfg), (cfg.sam.pixel_mean, cfg.sam.pixel_std))
    return "mobile_sam" if fits else None
