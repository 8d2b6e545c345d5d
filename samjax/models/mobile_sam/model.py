"""MobileSam: TinyViT image encoder + SAM's prompt encoder and mask decoder (MobileSAM's `build_sam_vit_t`).

Same methods as `samjax.models.Sam` (embed_images, get_dense_pe, decode, __call__), on variables
{"params": ..., "batch_stats": ...} (TinyViT's BatchNorm running statistics):

    model = MobileSam(config)
    variables = init_variables(config, jax.random.key(0))        # or samjax.weights.mobile_sam.from_torch(...)
    emb = model.apply(variables, images, method=MobileSam.embed_images)          # (B, 64, 64, 256)
    masks, iou = model.apply(variables, emb, coords, labels, method=MobileSam.decode)
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.models import MaskDecoder, PromptEncoder, Sam
from samjax.models.mobile_sam.config import MobileSamConfig
from samjax.models.mobile_sam.tiny_vit import TinyViT


class MobileSam(Sam):
    """`Sam` with TinyViT as its image encoder; prompts and decoding exactly as Sam's (config.sam)."""

    config: MobileSamConfig

    def setup(self):
        self.image_encoder = TinyViT(self.config.encoder, self.config.sam.jnp_dtype)
        self.prompt_encoder = PromptEncoder(self.config.sam)
        self.mask_decoder = MaskDecoder(self.config.sam)


def dummy_inputs(sam_config, input_size: int, in_chans: int = 3):
    """(images, coords, labels, masks) of batch 1 that touch every parameter of a SAM-like model."""
    g = sam_config.grid_size
    return (jnp.zeros((1, input_size, input_size, in_chans), jnp.float32), jnp.zeros((1, 1, 2), jnp.float32),
            jnp.ones((1, 1), jnp.int32), jnp.zeros((1, 4 * g, 4 * g), jnp.float32))


def _boxed_init(config: MobileSamConfig, rng):
    return MobileSam(config).init(rng, *dummy_inputs(config.sam, config.encoder.image_size, config.encoder.in_chans))


@functools.lru_cache(maxsize=8)
def _jitted_init(config: MobileSamConfig):
    return jax.jit(lambda r: nn.meta.unbox(_boxed_init(config, r)))


def init_variables(config: MobileSamConfig, rng: jax.Array) -> dict:
    """Fresh {"params", "batch_stats"}: plain nested dicts of float32 arrays."""
    return _jitted_init(config)(rng)


@functools.lru_cache(maxsize=8)
def abstract_variables(config: MobileSamConfig) -> dict:
    """Shapes and dtypes of the variables (jax.ShapeDtypeStruct), computing nothing. Cached: read only."""
    return nn.meta.unbox(jax.eval_shape(functools.partial(_boxed_init, config), jax.random.key(0)))


def variable_logical_axes(config: MobileSamConfig) -> dict:
    """Logical axis names of every variable (PartitionSpecs), per collection (see samjax.sharding)."""
    return nn.get_partition_spec(jax.eval_shape(functools.partial(_boxed_init, config), jax.random.key(0)))
