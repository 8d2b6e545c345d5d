"""Flax Linen modules of the SAM family, one subpackage per family; shared layers in `common` and `attention`.

The SAM names are re-exported here (`from samjax.models import SamConfig, Sam, init_params`). Models import
nothing from training, data, inference, automatic masks or weights.
"""

from samjax.models.sam import (
    BOX_BOTTOM_RIGHT,
    BOX_TOP_LEFT,
    IGNORE,
    NOT_A_POINT,
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    SamConfig,
    TwoWayTransformer,
    abstract_params,
    decode_group_size,
    decode_prompts,
    image_cache,
    init_params,
    init_text_params,
    param_logical_axes,
    upscale_masks,
)

__all__ = [
    "SamConfig", "Sam", "ImageEncoderViT", "PromptEncoder", "MaskDecoder", "TwoWayTransformer",
    "init_params", "init_text_params", "abstract_params", "param_logical_axes", "decode_prompts", "decode_group_size",
    "image_cache", "upscale_masks", "IGNORE", "NOT_A_POINT", "BOX_TOP_LEFT", "BOX_BOTTOM_RIGHT",
]
