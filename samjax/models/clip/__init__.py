"""CLIP (OpenAI / Hugging Face ViT models) in Flax Linen: config, modules and parameter builders."""

from samjax.models.clip.config import CLIP_MEAN, CLIP_STD, ClipConfig
from samjax.models.clip.model import (
    Clip,
    TextTransformer,
    VisionTransformer,
    abstract_params,
    init_params,
    normalize,
    param_logical_axes,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "Clip",
    "ClipConfig",
    "TextTransformer",
    "VisionTransformer",
    "abstract_params",
    "init_params",
    "normalize",
    "param_logical_axes",
]
