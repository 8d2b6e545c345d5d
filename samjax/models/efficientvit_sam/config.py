"""EfficientViTConfig (backbone + SAM neck) and EfficientViTSamConfig (+ SAM's prompt encoder and mask decoder).

Fields mirror the official constructors (efficientvit's `EfficientViTLargeBackbone` and `SamNeck`, vendored by the
`efficientsam` package: efficientsam/models/efficientvit/{backbone,sam}.py). Presets: `efficientvit_sam_{l0, l1,
l2, xl0, xl1}` as `create_efficientvit_sam_model` builds them, which sets every norm's epsilon to 1e-6 (BatchNorm,
the encoder's LayerNorm2d and the mask decoder's transformer LayerNorms). L models take 512 px images, XL 1024;
both answer prompts in SAM's 1024 px frame on a 64 x 64 grid.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar

from samjax.models.family_config import (
    check_encoder_fits,
    check_family,
    check_fields,
    sam_config_for,
)
from samjax.models.sam.config import SamConfig

PRESETS = ("efficientvit_sam_l0", "efficientvit_sam_l1", "efficientvit_sam_l2", "efficientvit_sam_xl0",
           "efficientvit_sam_xl1")
BLOCKS = ("res", "fmb", "mb", "att", "att@3")
MIDDLE_OPS = ("fmb", "mb", "res")
ACTIVATIONS = ("gelu", "relu", "relu6", "hswish", "silu")
NORM_EPS = 1e-6  # create_efficientvit_sam_model: set_norm_eps(model, 1e-6)


@dataclasses.dataclass(frozen=True)
class EfficientViTConfig:
    image_size: int = 512
    in_chans: int = 3
    # EfficientViTLargeBackbone: stage i has width_list[i] channels at 1 / 2^(i+1) of the input
    width_list: tuple[int, ...] = (32, 64, 128, 256, 512)
    depth_list: tuple[int, ...] = (1, 1, 1, 4, 4)
    block_list: tuple[str, ...] = ("res", "fmb", "fmb", "mb", "att")
    expand_list: tuple[float, ...] = (1, 4, 4, 4, 6)
    fewer_norm_list: tuple[bool, ...] = (False, False, False, True, True)
    qkv_dim: int = 32
    act: str = "gelu"  # the backbone's and neck's activation; "gelu" is torch's GELU(approximate="tanh")
    # SamNeck: 1x1 conv + bicubic resize of each of these stages to neck_size, summed, head_depth blocks, 1x1 conv
    neck_stages: tuple[int, ...] = (4, 3, 2)
    head_width: int = 256
    head_depth: int = 4
    neck_expand_ratio: float = 1
    middle_op: str = "fmb"
    out_chans: int = 256
    neck_size: int = 64
    norm_eps: float = NORM_EPS  # every BatchNorm and the final LayerNorm2d

    def __post_init__(self):
        for f, conv in (("width_list", int), ("depth_list", int), ("block_list", str), ("expand_list", float),
                        ("fewer_norm_list", bool), ("neck_stages", int)):
            object.__setattr__(self, f, tuple(conv(v) for v in getattr(self, f)))
        n, problems = len(self.width_list), []
        lengths = {f: len(getattr(self, f)) for f in ("depth_list", "block_list", "expand_list", "fewer_norm_list")}
        if any(v != n for v in lengths.values()):
            problems.append(f"depth_list, block_list, expand_list, fewer_norm_list need one entry per stage "
                            f"({n}), got {lengths}")
        bad = [b for b in self.block_list if b not in BLOCKS]
        if bad or (self.block_list and self.block_list[0] not in ("res", "fmb", "mb")):
            problems.append(f"block_list entries must be in {BLOCKS} (stage 0 a convolution block), "
                            f"got {self.block_list}")
        att = [w for w, b in zip(self.width_list, self.block_list) if b.startswith("att")]
        if any(w % self.qkv_dim for w in att):
            problems.append(f"attention stages' widths {att} must divide by qkv_dim ({self.qkv_dim})")
        if any(not 0 <= s < n for s in self.neck_stages) or not self.neck_stages:
            problems.append(f"neck_stages {self.neck_stages} must name stages 0..{n - 1}")
        if self.middle_op not in MIDDLE_OPS:
            problems.append(f"middle_op must be one of {MIDDLE_OPS}, got {self.middle_op!r}")
        if self.act not in ACTIVATIONS:
            problems.append(f"act must be one of {ACTIVATIONS}, got {self.act!r}")
        if self.image_size % 2 ** n:
            problems.append(f"image_size ({self.image_size}) must divide by 2^{n} (one stride-2 step per stage)")
        if problems:
            raise ValueError("invalid EfficientViTConfig: " + "; ".join(problems))

    @property
    def stage_sizes(self) -> tuple[int, ...]:
        """Side of each stage's output grid."""
        return tuple(self.image_size // 2 ** (i + 1) for i in range(len(self.width_list)))

    @property
    def grid_size(self) -> int:
        return self.neck_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EfficientViTConfig:
        check_fields(cls, d)
        return cls(**d)


_L = dict(width_list=(32, 64, 128, 256, 512), neck_stages=(4, 3, 2), neck_expand_ratio=1, image_size=512)
_XL = dict(width_list=(32, 64, 128, 256, 512, 1024), block_list=("res", "fmb", "fmb", "fmb", "att@3", "att@3"),
           expand_list=(1, 4, 4, 4, 4, 6), fewer_norm_list=(False, False, False, False, True, True),
           neck_stages=(5, 4, 3), neck_expand_ratio=4, image_size=1024)
_ENCODERS = {
    "efficientvit_sam_l0": dict(_L, depth_list=(1, 1, 1, 4, 4), head_depth=4),
    "efficientvit_sam_l1": dict(_L, depth_list=(1, 1, 1, 6, 6), head_depth=8),
    "efficientvit_sam_l2": dict(_L, depth_list=(1, 2, 2, 8, 8), head_depth=12),
    "efficientvit_sam_xl0": dict(_XL, depth_list=(0, 1, 1, 2, 3, 3), head_depth=6),
    "efficientvit_sam_xl1": dict(_XL, depth_list=(1, 2, 2, 4, 6, 6), head_depth=12),
}


@dataclasses.dataclass(frozen=True)
class EfficientViTSamConfig:
    """encoder: EfficientViT backbone + SAM neck. sam: prompt encoder, mask decoder, pixel statistics, dtype (its
    image_size is the prompt / mask frame, 1024 for every preset, its grid the neck's; its ViT fields are unused)."""

    FAMILY: ClassVar[str] = "efficientvit_sam"

    encoder: EfficientViTConfig = EfficientViTConfig()
    sam: SamConfig = dataclasses.field(default_factory=lambda: sam_config_for(64, decoder_norm_eps=NORM_EPS))

    def __post_init__(self):
        if isinstance(self.encoder, dict):
            object.__setattr__(self, "encoder", EfficientViTConfig.from_dict(self.encoder))
        if isinstance(self.sam, dict):
            object.__setattr__(self, "sam", SamConfig.from_dict(self.sam))
        check_encoder_fits(self.encoder.grid_size, self.encoder.out_chans, self.sam, "EfficientViTSamConfig")

    @classmethod
    def from_name(cls, name: str, **sam_overrides) -> EfficientViTSamConfig:
        """'efficientvit_sam_l0' (or 'efficientvit-sam-l0', 'l0') ... 'efficientvit_sam_xl1'."""
        key = name.lower().replace("-", "_")
        key = key if key.startswith("efficientvit_sam_") else f"efficientvit_sam_{key}"
        if key not in _ENCODERS:
            raise ValueError(f"unknown EfficientViT-SAM model {name!r}; expected one of {list(PRESETS)}")
        sam = sam_config_for(64, **{"decoder_norm_eps": NORM_EPS, **sam_overrides})
        return cls(EfficientViTConfig(**_ENCODERS[key]), sam)

    @classmethod
    def l0(cls, **sam_overrides) -> EfficientViTSamConfig:
        return cls.from_name("l0", **sam_overrides)

    @classmethod
    def l1(cls, **sam_overrides) -> EfficientViTSamConfig:
        return cls.from_name("l1", **sam_overrides)

    @classmethod
    def l2(cls, **sam_overrides) -> EfficientViTSamConfig:
        return cls.from_name("l2", **sam_overrides)

    @classmethod
    def xl0(cls, **sam_overrides) -> EfficientViTSamConfig:
        return cls.from_name("xl0", **sam_overrides)

    @classmethod
    def xl1(cls, **sam_overrides) -> EfficientViTSamConfig:
        return cls.from_name("xl1", **sam_overrides)

    @property
    def encoder_input_size(self) -> int:
        """Side of the (resized, padded) image the encoder takes: 512 (L) or 1024 (XL). Prompts and masks stay in
        sam.image_size's frame (1024)."""
        return self.encoder.image_size

    def replace(self, **changes: Any) -> EfficientViTSamConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {"family": self.FAMILY, "encoder": self.encoder.to_dict(), "sam": self.sam.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> EfficientViTSamConfig:
        d = check_family(cls, d)
        return cls(EfficientViTConfig.from_dict(d["encoder"]), SamConfig.from_dict(d["sam"]))
