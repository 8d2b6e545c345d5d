"""EfficientViT-SAM checkpoints (`efficientvit_sam_{l0,l1,l2,xl0,xl1}.pt`) <-> samjax EfficientViTSam variables.

The state dict is efficientvit's EfficientViTSam's: `image_encoder.backbone.*`, `image_encoder.neck.*`,
`image_encoder.norm.*` (with every BatchNorm's running statistics), `prompt_encoder.*` and `mask_decoder.*` as
SAM's. Official files may wrap it in {"state_dict": ...} (samjax.convert.load_torch_checkpoint unwraps it). Key table
and layouts: samjax/weights/keys.py; running statistics go to "batch_stats".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from samjax.models.efficientvit_sam import (
    PRESETS,
    EfficientViTSamConfig,
    abstract_variables,
)
from samjax.weights import keys

TRANSPOSED = ("output_upscaling",)
BACKBONE_KEY = "image_encoder.backbone.stages.0.op_list.0.conv.weight"


def torch_shapes(config: EfficientViTSamConfig) -> dict[str, tuple[int, ...]]:
    """The official state_dict's keys and shapes for `config`."""
    return keys.torch_shapes(abstract_variables(config), TRANSPOSED)


def _problems(state_dict, config: EfficientViTSamConfig) -> list[str]:
    return keys.mismatch(state_dict, torch_shapes(config), (config.sam.pixel_mean, config.sam.pixel_std))


def check_state_dict(state_dict: Mapping[str, Any], config: EfficientViTSamConfig) -> None:
    """Raise CheckpointMismatchError listing missing, unexpected and mis-shaped keys, if any."""
    problems = _problems(state_dict, config)
    hint = ""
    if problems:
        guess = detect_model(state_dict)
        if guess:
            hint = f"This checkpoint looks like {guess}: use EfficientViTSamConfig.from_name({guess!r})."
        elif BACKBONE_KEY not in state_dict:
            hint = f"It has no {BACKBONE_KEY}: not an EfficientViT-SAM checkpoint."
    keys.raise_mismatch(problems, "EfficientViT-SAM", hint)


def from_torch(state_dict: Mapping[str, Any], config: EfficientViTSamConfig) -> dict:
    """Official state dict (torch tensors or numpy arrays) -> {"params", "batch_stats"} of numpy float32."""
    check_state_dict(state_dict, config)
    return keys.from_torch(state_dict, abstract_variables(config), TRANSPOSED)


def to_torch(variables: Mapping, config: EfficientViTSamConfig | None = None) -> dict[str, np.ndarray]:
    """{"params", "batch_stats"} -> the official state dict (numpy), loadable by efficientvit's model strictly."""
    return keys.to_torch(variables, TRANSPOSED)


def _structure(state_dict: Mapping[str, Any]) -> tuple[tuple[int, ...], int]:
    """(ops per backbone stage, neck middle blocks) as the keys show them: a cheap filter before the exact check."""
    ops: dict[int, set[int]] = {}
    middle = set()
    for k in state_dict:
        parts = k.split(".")
        if k.startswith("image_encoder.backbone.stages.") and len(parts) > 5 and parts[4] == "op_list":
            ops.setdefault(int(parts[3]), set()).add(int(parts[5]))
        elif k.startswith("image_encoder.neck.middle.op_list.") and len(parts) > 5:
            middle.add(int(parts[4]))
    return tuple(len(ops.get(i, ())) for i in range(len(ops))), len(middle)


def detect_model(state_dict: Mapping[str, Any]) -> str | None:
    """The preset (one of PRESETS) whose keys and shapes `state_dict` has exactly, or None. The blocks per stage
    and in the neck pick the candidate; its full key and shape table decides."""
    if BACKBONE_KEY not in state_dict:
        return None
    structure = _structure(state_dict)
    for name in PRESETS:
        enc = EfficientViTSamConfig.from_name(name).encoder
        if structure == (tuple(d + 1 for d in enc.depth_list), enc.head_depth):
            return name if not _problems(state_dict, EfficientViTSamConfig.from_name(name)) else None
    return None
