"""EfficientViTSam: EfficientViT-SAM's image encoder + SAM's prompt encoder and mask decoder.

Official: efficientvit's EfficientViTSam (efficientsam/models/efficientvit/sam.py). Same methods as
`samjax.models.Sam` (embed_images, get_dense_pe, decode, __call__), on {"params", "batch_stats"}:

    model = EfficientViTSam(config)
    emb = model.apply(variables, images, method=EfficientViTSam.embed_images)   # (B, 512, 512, 3) -> (B, 64, 64, 256)
    masks, iou = model.apply(variables, emb, coords, labels, method=EfficientViTSam.decode)

Prompts are in the 1024 px frame (config.sam.image_size) even where the encoder takes 512 px images (L models),
as the official predictor maps them.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax

from samjax.models import MaskDecoder, PromptEncoder, Sam
from samjax.models.efficientvit_sam.config import EfficientViTSamConfig
from samjax.models.efficientvit_sam.encoder import EfficientViTSamImageEncoder
from samjax.models.mobile_sam.model import dummy_inputs


class EfficientViTSam(Sam):
    """`Sam` with EfficientViT-SAM's image encoder; prompts and decoding as Sam's (config.sam, whose decoder
    LayerNorms use epsilon 1e-6 in the presets, as the official builder sets them)."""

    config: EfficientViTSamConfig

    def setup(self):
        self.image_encoder = EfficientViTSamImageEncoder(self.config.encoder, self.config.sam.jnp_dtype)
        self.prompt_encoder = PromptEncoder(self.config.sam)
        self.mask_decoder = MaskDecoder(self.config.sam)


def _boxed_init(config: EfficientViTSamConfig, rng):
    return EfficientViTSam(config).init(rng, *dummy_inputs(config.sam, config.encoder.image_size,
                                                           config.encoder.in_chans))


@functools.lru_cache(maxsize=8)
def _jitted_init(config: EfficientViTSamConfig):
    return jax.jit(lambda r: nn.meta.unbox(_boxed_init(config, r)))


def init_variables(config: EfficientViTSamConfig, rng: jax.Array) -> dict:
    """Fresh {"params", "batch_stats"}: plain nested dicts of float32 arrays."""
    return _jitted_init(config)(rng)


@functools.lru_cache(maxsize=8)
def abstract_variables(config: EfficientViTSamConfig) -> dict:
    """Shapes and dtypes of the variables (jax.ShapeDtypeStruct), computing nothing. Cached: read only."""
    return nn.meta.unbox(jax.eval_shape(functools.partial(_boxed_init, config), jax.random.key(0)))


def variable_logical_axes(config: EfficientViTSamConfig) -> dict:
    """Logical axis names of every variable (PartitionSpecs), per collection (see samjax.sharding)."""
    return nn.get_partition_spec(jax.eval_shape(functools.partial(_boxed_init, config), jax.random.key(0)))
