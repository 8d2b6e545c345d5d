"""HQSam: SAM's encoder (ViT, or TinyViT for sam_hq_vit_tiny) + SAM's prompt encoder + MaskDecoderHQ.

Official: segment_anything_hq (Sam, MaskDecoderHQ, TinyViT). Use as a pure function on variables
({"params"}, plus "batch_stats" for the TinyViT variant):

    model = HQSam(config)
    emb, interm = model.apply(variables, images, method=HQSam.embed_images)   # (B, 64, 64, 256), (B, 64, 64, vit_dim)
    masks, iou = model.apply(variables, emb, interm, coords, labels, method=HQSam.decode)   # (B, 1, 256, 256), (B, 1)
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.models import IGNORE, ImageEncoderViT, PromptEncoder
from samjax.models.hq_sam.config import HQSamConfig
from samjax.models.hq_sam.mask_decoder_hq import MaskDecoderHQ
from samjax.models.mobile_sam.tiny_vit import TinyViT


class HQSam(nn.Module):
    config: HQSamConfig

    def setup(self):
        cfg = self.config
        if cfg.tiny_vit is not None:
            self.image_encoder = TinyViT(cfg.tiny_vit, cfg.sam.jnp_dtype)
        else:
            self.image_encoder = ImageEncoderViT(cfg.sam)
        self.prompt_encoder = PromptEncoder(cfg.sam)
        self.mask_decoder = MaskDecoderHQ(cfg.sam, cfg.vit_dim)

    def __call__(self, images, coords, labels, masks=None, mask_valid=None, multimask_output: bool = True,
                 hq_token_only: bool = False):
        emb, interm = self.embed_images(images)
        return self.decode(emb, interm, coords, labels, masks, mask_valid, multimask_output, hq_token_only)

    def embed_images(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """Normalised, padded images (B, S, S, 3) -> image embeddings (B, g, g, C) and the early feature HQ-SAM
        fuses (B, g, g, vit_dim): the ViT's first global-attention block's output (interm_embeddings[0]), or
        TinyViT's stage-1 output."""
        emb, interm = self.image_encoder(images, train, return_interm=True)
        return emb, interm if self.config.tiny_vit is not None else interm[0]

    def get_dense_pe(self) -> jax.Array:
        return self.prompt_encoder.get_dense_pe()

    def hq_features(self, image_embeddings: jax.Array, interm: jax.Array) -> jax.Array:
        """(B, g, g, C), (B, g, g, vit_dim) -> the prompt-independent fused feature (B, 4g, 4g, C/8)."""
        return self.mask_decoder.hq_features(image_embeddings, interm)

    def decode(self, image_embeddings: jax.Array, interm: jax.Array | None, coords: jax.Array, labels: jax.Array,
               masks: jax.Array | None = None, mask_valid: jax.Array | None = None, multimask_output: bool = True,
               hq_token_only: bool = False, all_outputs: bool = False, image_pe: jax.Array | None = None,
               hq_features: jax.Array | None = None):
        """Prompts -> low-res mask logits (B, 1, 4g, 4g) and IoU (B, 1) (MaskDecoderHQ's selection).

        image_embeddings and interm (B|1, ...) from `embed_images` (interm may be None when hq_features, from
        `hq_features`, is given); coords (B, N, 2), labels (B, N) as `Sam.decode` (IGNORE slots masked out);
        masks (B, 4g, 4g) optional mask prompts, mask_valid (B,) optional. all_outputs: every output (training),
        see MaskDecoderHQ."""
        sparse, dense = self.prompt_encoder(coords, labels, masks, mask_valid)
        if masks is None:
            dense = dense[:1]
        image_pe = self.get_dense_pe() if image_pe is None else image_pe
        return self.mask_decoder(image_embeddings, image_pe, sparse, dense, labels != IGNORE, multimask_output,
                                 hq_token_only, interm, hq_features, all_outputs)


def _dummy_inputs(config: HQSamConfig):
    s, g = config.encoder_input_size, config.sam.grid_size
    return (jnp.zeros((1, s, s, config.sam.in_chans), jnp.float32), jnp.zeros((1, 1, 2), jnp.float32),
            jnp.ones((1, 1), jnp.int32), jnp.zeros((1, 4 * g, 4 * g), jnp.float32))


def _boxed_init(config: HQSamConfig, rng):
    return HQSam(config).init(rng, *_dummy_inputs(config))


@functools.lru_cache(maxsize=8)
def _jitted_init(config: HQSamConfig):
    return jax.jit(lambda r: nn.meta.unbox(_boxed_init(config, r)))


def init_variables(config: HQSamConfig, rng: jax.Array) -> dict:
    """Fresh variables: {"params"} (+ "batch_stats" with TinyViT), plain nested dicts of float32 arrays."""
    return _jitted_init(config)(rng)


@functools.lru_cache(maxsize=8)
def abstract_variables(config: HQSamConfig) -> dict:
    """Shapes and dtypes of the variables (jax.ShapeDtypeStruct), computing nothing. Cached: read only."""
    return nn.meta.unbox(jax.eval_shape(functools.partial(_boxed_init, config), jax.random.key(0)))


def variable_logical_axes(config: HQSamConfig) -> dict:
    """Logical axis names of every variable (PartitionSpecs), per collection (see samjax.sharding)."""
    return nn.get_partition_spec(jax.eval_shape(functools.partial(_boxed_init, config), jax.random.key(0)))


# Which parameters HQ-SAM trains (official build_sam: everything else has requires_grad=False).
TRAINABLE = ("hf_token", "hf_mlp", "compress_vit_feat", "embedding_encoder", "embedding_maskfeature")


def trainable_mask(params: dict) -> dict:
    """A pytree of bools over `params`: True for HQ-SAM's trained parameters (TRAINABLE), False for SAM's frozen
    ones; for optax.masked / multi_transform in HQ-SAM's fine-tuning recipe."""
    def mark(path, _):
        return any(getattr(k, "key", None) is not None and str(k.key).startswith(TRAINABLE) for k in path)
    return jax.tree_util.tree_map_with_path(mark, params)
