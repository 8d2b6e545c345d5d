"""TinyViTConfig (the TinyViT image encoder) and MobileSamConfig (TinyViT + SAM's prompt encoder and mask decoder).

Fields mirror the constructor of the official `TinyViT` (MobileSAM's mobile_sam/modeling/tiny_vit_sam.py; HQ-SAM
ships the same module). The preset is MobileSAM's `build_sam_vit_t`: TinyViT-5M at 1024 px, SAM's prompt encoder and
mask decoder unchanged.
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

# PatchMerging keeps the resolution (stride 1) when it widens to one of these: the official rule that leaves the last
# stage of TinyViT-5M / 11M / 21M at 1/16 of the input, SAM's 64 x 64 grid at 1024 px.
STRIDE_ONE_WIDTHS = (320, 448, 576)


@dataclasses.dataclass(frozen=True)
class TinyViTConfig:
    image_size: int = 1024
    in_chans: int = 3
    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    # The ImageNet head the official module builds and its checkpoints carry (norm_head, head); never applied.
    num_classes: int = 1000
    out_chans: int = 256  # neck width (the official module fixes it at 256)

    def __post_init__(self):
        for f in ("embed_dims", "depths", "num_heads", "window_sizes"):
            object.__setattr__(self, f, tuple(int(v) for v in getattr(self, f)))
        problems = []
        n = len(self.embed_dims)
        if n < 2:
            problems.append(f"TinyViT needs at least 2 stages (a conv stage, then attention), got {n}")
        if not len(self.depths) == len(self.num_heads) == len(self.window_sizes) == n:
            problems.append(f"embed_dims, depths, num_heads and window_sizes need one entry per stage, got lengths "
                            f"{n}, {len(self.depths)}, {len(self.num_heads)}, {len(self.window_sizes)}")
        else:
            bad = [i for i in range(1, n) if self.embed_dims[i] % self.num_heads[i]]
            if bad:
                problems.append(f"embed_dims must divide by num_heads in stages {bad}")
            if any(w <= 0 for w in self.window_sizes):
                problems.append(f"window_sizes must be > 0, got {self.window_sizes}")
        if n >= 2 and self.image_size % (4 * 2 ** self.num_stride_two_merges):
            problems.append(f"image_size ({self.image_size}) must divide by {4 * 2 ** self.num_stride_two_merges}")
        if self.local_conv_size % 2 == 0:
            problems.append(f"local_conv_size must be odd, got {self.local_conv_size}")
        if problems:
            raise ValueError("invalid TinyViTConfig: " + "; ".join(problems))

    @property
    def merge_strides(self) -> tuple[int, ...]:
        """Stride of each stage's PatchMerging (all stages but the last have one)."""
        n = len(self.embed_dims)
        return tuple(1 if self.embed_dims[min(i + 1, n - 1)] in STRIDE_ONE_WIDTHS else 2 for i in range(n - 1))

    @property
    def num_stride_two_merges(self) -> int:
        return sum(s == 2 for s in self.merge_strides)

    @property
    def grid_size(self) -> int:
        """Side of the output grid: image_size / 4 (patch embedding) / the stride-2 merges (64 for the preset)."""
        return self.image_size // 4 // 2 ** self.num_stride_two_merges

    @property
    def interm_dim(self) -> int:
        """Channels of stage 1's output (after its merging): HQ-SAM's early feature (160 for the preset)."""
        return self.embed_dims[min(2, len(self.embed_dims) - 1)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TinyViTConfig:
        check_fields(cls, d)
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class MobileSamConfig:
    """encoder: TinyViT. sam: the prompt encoder, mask decoder, pixel statistics, dtype and mask threshold (its
    image_size is the prompt / mask frame, its grid the encoder's; its ViT encoder fields are not used)."""

    FAMILY: ClassVar[str] = "mobile_sam"  # written into to_dict(): config.json names its family

    encoder: TinyViTConfig = TinyViTConfig()
    sam: SamConfig = dataclasses.field(default_factory=lambda: sam_config_for(64))

    def __post_init__(self):
        if isinstance(self.encoder, dict):
            object.__setattr__(self, "encoder", TinyViTConfig.from_dict(self.encoder))
        if isinstance(self.sam, dict):
            object.__setattr__(self, "sam", SamConfig.from_dict(self.sam))
        check_encoder_fits(self.encoder.grid_size, self.encoder.out_chans, self.sam, "MobileSamConfig")
        if self.encoder.image_size != self.sam.image_size:
            raise ValueError(f"invalid MobileSamConfig: TinyViT's image_size ({self.encoder.image_size}) must be the "
                             f"prompt frame's ({self.sam.image_size})")

    @classmethod
    def mobile_sam(cls, **sam_overrides) -> MobileSamConfig:
        """MobileSAM (`mobile_sam.pt`): TinyViT-5M at 1024 px + SAM's ViT-sized prompt encoder and decoder."""
        return cls(TinyViTConfig(), sam_config_for(64, **sam_overrides))

    @classmethod
    def from_name(cls, name: str, **sam_overrides) -> MobileSamConfig:
        if name.replace("-", "_") not in ("mobile_sam", "vit_t"):
            raise ValueError(f"unknown MobileSAM model {name!r}; expected 'mobile_sam'")
        return cls.mobile_sam(**sam_overrides)

    @property
    def encoder_input_size(self) -> int:
        """Side of the (resized, padded) image the encoder takes."""
        return self.encoder.image_size

    def replace(self, **changes: Any) -> MobileSamConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {"family": self.FAMILY, "encoder": self.encoder.to_dict(), "sam": self.sam.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> MobileSamConfig:
        d = check_family(cls, d)
        return cls(TinyViTConfig.from_dict(d["encoder"]), SamConfig.from_dict(d["sam"]))
