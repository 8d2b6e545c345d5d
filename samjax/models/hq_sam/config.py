"""HQSamConfig: HQ-SAM (SysCV `segment-anything-hq`) = a SAM encoder, SAM's prompt encoder, and MaskDecoderHQ.

The presets are the official `build_sam_vit_{b,l,h}` (SAM's ViT, whose first global-attention block's output feeds
the HQ fusion) and `build_sam_vit_t` (`sam_hq_vit_tiny.pth`: MobileSAM's TinyViT, whose stage-1 output feeds it).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar

from samjax.models.family_config import check_encoder_fits, check_family, sam_config_for
from samjax.models.mobile_sam.config import TinyViTConfig
from samjax.models.sam.config import SamConfig

PRESETS = ("sam_hq_vit_b", "sam_hq_vit_l", "sam_hq_vit_h", "sam_hq_vit_tiny")


@dataclasses.dataclass(frozen=True)
class HQSamConfig:
    """sam: the ViT encoder (when tiny_vit is None), prompt encoder, mask decoder (MaskDecoderHQ's SAM part),
    pixel statistics and dtype. tiny_vit: a TinyViT encoder instead of the ViT (sam_hq_vit_tiny); then sam's
    image_size is the prompt frame and its grid the TinyViT's, and its ViT fields are unused."""

    FAMILY: ClassVar[str] = "hq_sam"

    sam: SamConfig = dataclasses.field(default_factory=SamConfig.vit_h)
    tiny_vit: TinyViTConfig | None = None

    def __post_init__(self):
        if isinstance(self.sam, dict):
            object.__setattr__(self, "sam", SamConfig.from_dict(self.sam))
        if isinstance(self.tiny_vit, dict):
            object.__setattr__(self, "tiny_vit", TinyViTConfig.from_dict(self.tiny_vit))
        s = self.sam
        if self.tiny_vit is not None:
            check_encoder_fits(self.tiny_vit.grid_size, self.tiny_vit.out_chans, s, "HQSamConfig")
            if self.tiny_vit.image_size != s.image_size:
                raise ValueError(f"invalid HQSamConfig: TinyViT's image_size ({self.tiny_vit.image_size}) must be the "
                                 f"prompt frame's ({s.image_size})")
            if len(self.tiny_vit.embed_dims) < 3:
                raise ValueError("invalid HQSamConfig: HQ-SAM fuses TinyViT's stage-1 output, which needs 3 stages "
                                 f"or more, got {len(self.tiny_vit.embed_dims)}")
        elif s.window_size > 0 and not s.encoder_global_attn_indexes:
            raise ValueError("invalid HQSamConfig: HQ-SAM fuses the output of the ViT's first global-attention block; "
                             "give encoder_global_attn_indexes or window_size 0")
        if s.prompt_embed_dim % 8:
            raise ValueError(f"invalid HQSamConfig: prompt_embed_dim ({s.prompt_embed_dim}) must divide by 8")

    # ----- presets (official segment_anything_hq/build_sam.py) -----
    @classmethod
    def sam_hq_vit_b(cls, **sam_overrides) -> HQSamConfig:
        return cls(SamConfig.vit_b(**sam_overrides))

    @classmethod
    def sam_hq_vit_l(cls, **sam_overrides) -> HQSamConfig:
        return cls(SamConfig.vit_l(**sam_overrides))

    @classmethod
    def sam_hq_vit_h(cls, **sam_overrides) -> HQSamConfig:
        return cls(SamConfig.vit_h(**sam_overrides))

    @classmethod
    def sam_hq_vit_tiny(cls, **sam_overrides) -> HQSamConfig:
        """TinyViT-5M at 1024 px (MobileSAM's encoder) with MaskDecoderHQ fusing its 160-channel stage-1 output."""
        return cls(sam_config_for(64, **sam_overrides), TinyViTConfig())

    @classmethod
    def from_name(cls, name: str, **sam_overrides) -> HQSamConfig:
        key = name.replace("-", "_")
        key = key if key.startswith("sam_hq_") else f"sam_hq_{key}"  # also "vit_b", "hq_vit_b" ...
        key = key.replace("sam_hq_hq_", "sam_hq_")
        if key not in PRESETS:
            raise ValueError(f"unknown HQ-SAM model {name!r}; expected one of {list(PRESETS)}")
        return getattr(cls, key)(**sam_overrides)

    # ----- derived -----
    @property
    def vit_dim(self) -> int:
        """Channels of the early encoder feature the HQ fusion takes (MaskDecoderHQ's vit_dim)."""
        return self.tiny_vit.interm_dim if self.tiny_vit is not None else self.sam.encoder_embed_dim

    @property
    def encoder_input_size(self) -> int:
        return self.tiny_vit.image_size if self.tiny_vit is not None else self.sam.image_size

    def replace(self, **changes: Any) -> HQSamConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {"family": self.FAMILY, "sam": self.sam.to_dict(),
                "tiny_vit": None if self.tiny_vit is None else self.tiny_vit.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> HQSamConfig:
        d = check_family(cls, d)
        tiny = d.get("tiny_vit")
        return cls(SamConfig.from_dict(d["sam"]), None if tiny is None else TinyViTConfig.from_dict(tiny))
