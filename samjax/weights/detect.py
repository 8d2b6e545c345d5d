"""Which official checkpoint a state dict is, and its conversion: family and preset from its key set and shapes
(`--model auto`), for SAM, HQ-SAM, MobileSAM, EfficientViT-SAM and SAM 2 / 2.1.

    detect(sd)            -> ("hq_sam", "sam_hq_vit_b"), ("mobile_sam", "mobile_sam"), ("sam2", "sam2.1_hiera_t"),
                             ("sam", "vit_h") ... or None when no preset matches exactly
    family_of(sd)         -> the family its distinctive keys name, even where no preset's shapes match (for errors)
    config_for(family, preset) -> the family's config object for that preset
    convert(sd, model)    -> (config, the family's tree: SAM / SAM 2 params, other families' variables)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from samjax.models import SamConfig
from samjax.models.efficientvit_sam import EfficientViTSamConfig
from samjax.models.hq_sam import HQSamConfig
from samjax.models.mobile_sam import MobileSamConfig
from samjax.models.sam2 import Sam2Config
from samjax.weights import efficientvit_sam, hq_sam, mobile_sam, sam2
from samjax.weights import sam as sam_weights
from samjax.weights.keys import CheckpointMismatchError

FAMILIES = ("sam", "hq_sam", "mobile_sam", "efficientvit_sam", "sam2")
CONFIGS = {"sam": SamConfig, "hq_sam": HQSamConfig, "mobile_sam": MobileSamConfig,
           "efficientvit_sam": EfficientViTSamConfig, "sam2": Sam2Config}
CONVERTERS = {"sam": sam_weights, "hq_sam": hq_sam, "mobile_sam": mobile_sam, "efficientvit_sam": efficientvit_sam,
              "sam2": sam2}
PRESETS = {"sam": sam_weights.PRESETS, "hq_sam": hq_sam.PRESETS, "mobile_sam": mobile_sam.PRESETS,
           "efficientvit_sam": efficientvit_sam.PRESETS, "sam2": sam2.PRESETS}
OTHER_FAMILIES = ("samjax also converts HQ-SAM (sam_hq_vit_*.pth), MobileSAM (mobile_sam.pt), EfficientViT-SAM "
                  "(efficientvit_sam_*.pt) and SAM 2 / 2.1 (sam2*_hiera_*.pt) checkpoints")


def family_of(state_dict: Mapping[str, Any]) -> str | None:
    """The family whose distinctive keys `state_dict` has: SAM 2 (a Hiera trunk, memory attention or SAM 2 heads),
    HQ-SAM (mask_decoder.hf_token), EfficientViT-SAM (image_encoder.backbone.stages...), MobileSAM (TinyViT's
    image_encoder.layers... without hf_token), SAM (a ViT image encoder), else None."""
    state_dict = sam2.unwrap(state_dict)
    if sam2.is_sam2_state_dict(state_dict):
        return "sam2"
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
    preset = CONVERTERS[family].detect_model(sam2.unwrap(state_dict)) if family else None
    return (family, preset) if preset else None


def family_of_preset(name: str) -> str:
    """The family of a preset name (one of `PRESETS`' values)."""
    for family, names in PRESETS.items():
        if name in names:
            return family
    raise ValueError(f"unknown model {name!r}; expected 'auto' or one of "
                     + ", ".join(n for names in PRESETS.values() for n in names))


def config_for(family: str, preset: str):
    """The config of `preset` in `family` (SamConfig, HQSamConfig, MobileSamConfig, EfficientViTSamConfig,
    Sam2Config)."""
    if family not in CONFIGS:
        raise ValueError(f"unknown model family {family!r}; expected one of {list(FAMILIES)}")
    return CONFIGS[family].from_name(preset)


def convert(state_dict: Mapping[str, Any], model: str = "auto") -> tuple[Any, dict]:
    """An official state dict (torch tensors or numpy; SAM 2's {"model": ...} unwrapped) -> (config, tree): SAM's and
    SAM 2's params, the other families' variables {"params"(, "batch_stats")}. `model`: "auto" (detected) or a
    preset of any family. A state dict that fits no preset raises CheckpointMismatchError listing its differences
    from the nearest one, with a hint; one of no known family, a one-line error naming the official files."""
    state_dict = sam2.unwrap(state_dict)
    if model == "auto":
        found = detect(state_dict)
        if found is None:
            family = family_of(state_dict)
            default = {"sam": "vit_b", "hq_sam": "sam_hq_vit_b", "mobile_sam": "mobile_sam",
                       "efficientvit_sam": "efficientvit_sam_l0", "sam2": "sam2.1_hiera_t"}
            try:  # raises with the list of differences (and a one-line error for a foreign state dict)
                CONVERTERS[family or "sam"].check_state_dict(state_dict, config_for(family or "sam",
                                                                                   default[family or "sam"]))
            except CheckpointMismatchError as e:
                if family is None:
                    raise CheckpointMismatchError(f"{e}; {OTHER_FAMILIES}") from None
                raise
            raise CheckpointMismatchError(f"no {family} preset matches this checkpoint")  # pragma: no cover
        family, model = found
    else:
        family = family_of_preset(model)
    config = config_for(family, model)
    return config, CONVERTERS[family].from_torch(state_dict, config)
