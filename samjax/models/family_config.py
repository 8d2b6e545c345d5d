"""Helpers shared by the configs of SAM's encoder families (MobileSAM, HQ-SAM, EfficientViT-SAM).

Each family config holds its encoder's own dataclass and a `SamConfig` for what it shares with SAM: the prompt
encoder, the mask decoder, pixel statistics, mask threshold and compute dtype. That SamConfig's image_size is the
prompt / mask frame and its grid (image_size / patch_size) the encoder's output grid; its ViT fields are used only
where the family's encoder is SAM's ViT (HQ-SAM ViT-B/L/H).
"""

from __future__ import annotations

import dataclasses

from samjax.models.sam.config import SamConfig


def check_fields(cls, d: dict) -> None:
    """Raise if `d` has keys that are not fields of dataclass `cls`."""
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}")


def check_family(cls, d: dict) -> dict:
    """`d` without its "family" entry, which must be `cls.FAMILY` if present; raises on unknown fields."""
    d = dict(d)
    family = d.pop("family", cls.FAMILY)
    if family != cls.FAMILY:
        raise ValueError(f"a {family!r} config is not a {cls.__name__} ({cls.FAMILY!r})")
    check_fields(cls, d)
    return d


def sam_config_for(encoder_grid: int, image_size: int = 1024, **overrides) -> SamConfig:
    """The SamConfig of a prompt encoder and mask decoder in front of an encoder with an (encoder_grid)^2 output:
    prompt frame `image_size` px, patch_size = image_size / encoder_grid; other fields SAM's defaults or `overrides`."""
    if image_size % encoder_grid:
        raise ValueError(f"the prompt frame ({image_size} px) must be a multiple of the encoder grid ({encoder_grid})")
    return SamConfig(**{**dict(image_size=image_size, patch_size=image_size // encoder_grid), **overrides})


def check_encoder_fits(grid: int, channels: int, sam: SamConfig, what: str) -> None:
    """Raise unless an encoder's (B, grid, grid, channels) output is what `sam`'s prompt encoder and decoder expect."""
    problems = []
    if grid != sam.grid_size:
        problems.append(f"the encoder's output grid ({grid}) must be the decoder's (sam.grid_size = "
                        f"{sam.image_size} / {sam.patch_size} = {sam.grid_size})")
    if channels != sam.prompt_embed_dim:
        problems.append(f"the encoder's output channels ({channels}) must be sam.prompt_embed_dim "
                        f"({sam.prompt_embed_dim})")
    if problems:
        raise ValueError(f"invalid {what}: " + "; ".join(problems))
