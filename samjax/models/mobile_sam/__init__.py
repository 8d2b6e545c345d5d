"""MobileSAM: TinyViT-5M distilled from SAM's ViT-H, with SAM's prompt encoder and mask decoder."""

from samjax.models.mobile_sam.config import MobileSamConfig, TinyViTConfig
from samjax.models.mobile_sam.model import (
    MobileSam,
    abstract_variables,
    init_variables,
    variable_logical_axes,
)
from samjax.models.mobile_sam.tiny_vit import TinyViT

__all__ = [
    "MobileSam",
    "MobileSamConfig",
    "TinyViT",
    "TinyViTConfig",
    "abstract_variables",
    "init_variables",
    "variable_logical_axes",
]
