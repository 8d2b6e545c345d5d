"""Which official checkpoint a state dict is: family and preset from its key set and shapes (`--model auto`).

    detect(sd)     -> ("hq_sam", "sam_hq_vit_b"), ("mobile_sam", "mobile_sam"), ("efficientvit_sam", "efficientvit_sam_l0"),
                      ("sam", "vit_h") ... or None when no preset matches exactly
    family_of(sd)  -> the family its distinctive keys name, even where no preset's shapes match (for error hints)
    config_for(family, preset) -> the family's config object for that preset
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from samjax.weights import sam as sam_weights
from samjax.models import SamConfig
from samjax.models.efficientvit_sam import EfficientViTSamConfig
from samjax.models.hq_sam import HQSamConfig
from samjax.models.mobile_sam import MobileSamConfig
from samjax.weights import efficientvit_sam, hq_sam, mobile_sam

FAMILIES = ("sam", "hq_sam", "mobile_sam", "efficientvit_sam")


def family_of(state_dict: Mapping[str, Any]) -> str | None:
    """The family whose distinctive keys `state_dict` has: HQ-SAM (mask_decoder.hf_token), EfficientViT-SAM
    (image_encoder.backbone.stages...), MobileSAM (TinyViT's image_encoder.layers... without hf_token), SAM (a ViT
    image encoder), else None."""
    if hq_sam.HQ_KEY in state_dict:
        return "hq_sam"
    if efficientvit_sam.BACKBONE_KEY in state_dict:
        return "efficientvit_sam"
    if mobile_sam.TINY_VIT_KEY in state_dict:
        return "mobile_sam"
    if "image_encoder.patch_embed.proj.weight" in state_dict and "mask_decoder.iou_token.weight" in state_dict:
        return "sam"
    return None


def detect(state_dict: Mapping[str, Any]) -> tuple[str, str] | None:
    """(family, preset) whose official state_dict has exactly these keys and shapes, or None."""
    family = family_of(state_dict)
    preset = {"hq_sam": hq_sam.detect_model, "efficientvit_sam": efficientvit_sam.detect_model,
              "mobile_sam": mobile_sam.detect_model, "sam": sam_weights.detect_model,
              None: lambda sd: None}[family](state_dict)
    return (family, preset) if preset else None


def config_for(family: str, preset: str):
    """The config of `preset` in `family` (SamConfig, HQSamConfig, MobileSamConfig or EfficientViTSamConfig)."""
    configs = {"sam": SamConfig, "hq_sam": HQSamConfig, "mobile_sam": MobileSamConfig,
               "efficientvit_sam": EfficientViTSamConfig}
    if family not in configs:
        raise ValueError(f"unknown model family {family!r}; expected one of {list(FAMILIES)}")
    return configs[family].from_name(preset)
