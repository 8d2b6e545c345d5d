"""SAM (Kirillov et al. 2023): config, image encoder, prompt encoder, mask decoder, and the parameter builders.

Official: segment_anything/modeling. Module and parameter names follow its state_dict.
"""

from samjax.models.sam.config import SamConfig
from samjax.models.sam.image_encoder import ImageEncoderViT
from samjax.models.sam.mask_decoder import MaskDecoder, upscale_masks
from samjax.models.sam.prompt_encoder import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, IGNORE, NOT_A_POINT, PromptEncoder
from samjax.models.sam.sam import (
    Sam,
    abstract_params,
    decode_group_size,
    decode_prompts,
    image_cache,
    init_params,
    init_text_params,
    param_logical_axes,
)
from samjax.models.sam.transformer import TwoWayTransformer

__all__ = [
    "SamConfig", "Sam", "ImageEncoderViT", "PromptEncoder", "MaskDecoder", "TwoWayTransformer",
    "init_params", "init_text_params", "abstract_params", "param_logical_axes", "decode_prompts", "decode_group_size",
    "image_cache", "upscale_masks", "IGNORE", "NOT_A_POINT", "BOX_TOP_LEFT", "BOX_BOTTOM_RIGHT",
]
