"""SAM in Flax Linen: config, modules and parameter builders."""

from samjax.models.config import SamConfig
from samjax.models.image_encoder import ImageEncoderViT
from samjax.models.mask_decoder import MaskDecoder, upscale_masks
from samjax.models.prompt_encoder import IGNORE, NOT_A_POINT, PromptEncoder
from samjax.models.sam import Sam, abstract_params, decode_prompts, image_cache, init_params, param_logical_axes
from samjax.models.transformer import TwoWayTransformer

__all__ = [
    "SamConfig", "Sam", "ImageEncoderViT", "PromptEncoder", "MaskDecoder", "TwoWayTransformer",
    "init_params", "abstract_params", "param_logical_axes", "decode_prompts", "image_cache", "upscale_masks",
    "IGNORE", "NOT_A_POINT",
]
