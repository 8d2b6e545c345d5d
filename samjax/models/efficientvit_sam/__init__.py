"""EfficientViT-SAM (MIT Han lab): EfficientViT backbone with ReLU linear attention, a SAM neck, SAM's decoder."""

from samjax.models.efficientvit_sam.config import (
    PRESETS,
    EfficientViTConfig,
    EfficientViTSamConfig,
)
from samjax.models.efficientvit_sam.encoder import (
    EfficientViTSamImageEncoder,
    resize_bicubic,
)
from samjax.models.efficientvit_sam.model import (
    EfficientViTSam,
    abstract_variables,
    init_variables,
    variable_logical_axes,
)

__all__ = [
    "PRESETS",
    "EfficientViTConfig",
    "EfficientViTSam",
    "EfficientViTSamConfig",
    "EfficientViTSamImageEncoder",
    "abstract_variables",
    "init_variables",
    "resize_bicubic",
    "variable_logical_axes",
]
