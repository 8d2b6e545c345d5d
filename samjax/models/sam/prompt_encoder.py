"""PromptEncoder: points, boxes and masks -> sparse and dense prompt embeddings.

Official: segment_anything/modeling/prompt_encoder.py. One change of representation, not of function:
boxes travel as two corner points with labels 2 (top-left) and 3 (bottom-right), which is exactly what the
official `_embed_boxes` computes (corner PE + point_embeddings[2|3]). This gives one static-shape token
array for every prompt kind, which jitted inference and the training loop's prompt simulation need.

Token labels
   1  foreground point          0  background point
   2  box top-left corner       3  box bottom-right corner
  -1  "not a point" (the official padding token: it takes part in attention)
  -2  IGNORE: a slot that does not exist. Its embedding is zero and the mask decoder masks it out of
      attention, so padding a prompt to a fixed length changes nothing. Used for shape bucketing.

Text (SamConfig.text_embed_dim > 0 only; the SAM paper's text prompt, section 7.5 and appendix D.5): a CLIP
embedding (B, D) becomes one more sparse token, `embed_text`: its l2-normalised value through a linear projection
`text_projection` (D -> C, no bias) plus a learned type embedding `text_embed` (as a point's label embedding is added
to its position encoding). Trained with CLIP image embeddings of mask crops, prompted with CLIP text embeddings.
`Sam.decode(text_embedding=...)` appends the token after the point / box tokens.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.models.common import Embedding, conv, dense, gelu, layer_norm, partitioned
from samjax.models.sam.config import SamConfig

f32 = jnp.float32
NOT_A_POINT = -1
IGNORE = -2
BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 2, 3


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of normalised (x, y) coordinates (Tancik et al.); the matrix is not trained."""

    num_pos_feats: int
    scale: float = 1.0

    def setup(self):
        self.positional_encoding_gaussian_matrix = self.param(
            "positional_encoding_gaussian_matrix",
            partitioned(nn.initializers.normal(self.scale), ("pe_coords", "pe_feats")), (2, self.num_pos_feats), f32)

    def _pe_encoding(self, coords: jax.Array) -> jax.Array:
        """coords (..., 2) in [0, 1] -> (..., 2 * num_pos_feats)."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return jnp.concatenate([jnp.sin(coords), jnp.cos(coords)], axis=-1)

    def dense(self, h: int, w: int) -> jax.Array:
        """Encoding of every cell centre of an (h, w) grid: (h, w, C)."""
        y = (jnp.arange(h, dtype=f32) + 0.5) / h
        x = (jnp.arange(w, dtype=f32) + 0.5) / w
        grid = jnp.stack(jnp.broadcast_arrays(x[None, :], y[:, None]), axis=-1)
        return self._pe_encoding(grid)

    def with_coords(self, coords: jax.Array, image_size: tuple[int, int]) -> jax.Array:
        """coords (..., 2) as (x, y) pixels of an image of `image_size` = (H, W) -> (..., C)."""
        coords = coords.astype(f32) / jnp.array([image_size[1], image_size[0]], f32)
        return self._pe_encoding(coords)


class PromptEncoder(nn.Module):
    """Sparse tokens for points/box corners, a dense embedding for a mask prompt (or the no-mask embedding)."""

    config: SamConfig

    def setup(self):
        cfg = self.config
        c, dt = cfg.prompt_embed_dim, cfg.jnp_dtype
        self.pe_layer = PositionEmbeddingRandom(c // 2)
        self.point_embeddings = [Embedding(1, c) for _ in range(4)]  # neg, pos, box top-left, bottom-right
        self.not_a_point_embed = Embedding(1, c)
        self.no_mask_embed = Embedding(1, c)
        # Official nn.Sequential indices: 0 conv, 1 LN2d, 2 GELU, 3 conv, 4 LN2d, 5 GELU, 6 conv.
        m = cfg.mask_in_chans
        self.mask_downscaling_0 = conv(m // 4, 2, stride=2, axes=("in_channels", "mask_channels"), dtype=dt)
        self.mask_downscaling_1 = layer_norm("mask_channels", eps=1e-6, dtype=dt)
        self.mask_downscaling_3 = conv(m, 2, stride=2, axes=("mask_channels", "mask_channels"), dtype=dt)
        self.mask_downscaling_4 = layer_norm("mask_channels", eps=1e-6, dtype=dt)
        self.mask_downscaling_6 = conv(c, 1, axes=("mask_channels", "prompt_embed"), dtype=dt)
        if cfg.text_embed_dim:
            self.text_projection = dense(c, ("joint_embed", "prompt_embed"), use_bias=False, dtype=dt)
            self.text_embed = Embedding(1, c)

    def get_dense_pe(self) -> jax.Array:
        """Positional encoding of the image-embedding grid: (1, g, g, C)."""
        g = self.config.grid_size
        return self.pe_layer.dense(g, g)[None]

    def embed_points(self, coords: jax.Array, labels: jax.Array) -> jax.Array:
        """coords (B, N, 2) (x, y) in the resized-and-padded input frame; labels (B, N) int -> (B, N, C)."""
        s = self.config.image_size
        pe = self.pe_layer.with_coords(coords + 0.5, (s, s))  # + 0.5: centre of the pixel
        labels = labels[..., None]
        emb = jnp.where(labels == NOT_A_POINT, self.not_a_point_embed()[0], pe)
        for i, table in enumerate(self.point_embeddings):
            emb = emb + jnp.where(labels == i, table()[0], 0.0)
        return jnp.where(labels == IGNORE, 0.0, emb)

    def embed_text(self, text_embedding: jax.Array) -> jax.Array:
        """CLIP embeddings (B, text_embed_dim), any norm (they are l2-normalised here, as the paper's D.5) ->
        text tokens (B, 1, C)."""
        cfg = self.config
        if not cfg.text_embed_dim:
            raise ValueError("this SAM has no text prompt (SamConfig.text_embed_dim is 0, as in every released "
                             "checkpoint); train one with experiments/text_prompt.py")
        if text_embedding.ndim != 2 or text_embedding.shape[-1] != cfg.text_embed_dim:
            raise ValueError(f"text embeddings must be (B, {cfg.text_embed_dim}) (the model's text_embed_dim), "
                             f"got {tuple(text_embedding.shape)}")
        x = text_embedding.astype(f32)
        x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
        return (self.text_projection(x.astype(cfg.jnp_dtype)) + self.text_embed()[0].astype(cfg.jnp_dtype))[:, None]

    def embed_masks(self, masks: jax.Array) -> jax.Array:
        """masks (B, 4g, 4g) low-res logits -> (B, g, g, C)."""
        return self.mask_downscaling_6(self.mask_features(masks))

    def mask_features(self, masks: jax.Array) -> jax.Array:
        """masks (B, 4g, 4g) low-res logits -> h (B, g, g, mask_in_chans), the features before the last, linear, layer
        of the mask downscaling: the dense embedding is h W + b (`mask_projection`)."""
        x = masks[..., None].astype(self.config.jnp_dtype)
        x = gelu(self.mask_downscaling_1(self.mask_downscaling_0(x)))
        return gelu(self.mask_downscaling_4(self.mask_downscaling_3(x)))

    def mask_projection(self) -> tuple[jax.Array, jax.Array]:
        """The dense embedding's 1x1 convolution as a matrix: W (mask_in_chans, C), b (C,), in the compute dtype."""
        if self.is_initializing():  # create the layer's parameters in init
            self.mask_downscaling_6(jnp.zeros((1, 1, 1, self.config.mask_in_chans), self.config.jnp_dtype))
        p = self.mask_downscaling_6.variables["params"]
        dt = self.config.jnp_dtype
        return p["kernel"][0, 0].astype(dt), p["bias"].astype(dt)

    def __call__(self, coords: jax.Array, labels: jax.Array, masks: jax.Array | None = None,
                 mask_valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Returns sparse (B, N, C) and dense (B, g, g, C) embeddings.

        masks: optional (B, 4g, 4g) mask prompts; mask_valid: optional (B,) bool choosing, per row, the mask
        prompt (True) or the learned no-mask embedding (False), so a batch can mix both at a static shape.
        """
        cfg = self.config
        b, g = coords.shape[0], cfg.grid_size
        if coords.ndim != 3 or coords.shape[-1] != 2 or labels.shape != coords.shape[:2]:
            raise ValueError(f"prompt coords must be (B, N, 2) and labels (B, N); got {coords.shape}, {labels.shape}")
        sparse = self.embed_points(coords, labels).astype(cfg.jnp_dtype)
        if cfg.text_embed_dim and self.is_initializing():  # create the text layers' parameters in init
            self.embed_text(jnp.zeros((1, cfg.text_embed_dim), f32))
        no_mask = jnp.broadcast_to(self.no_mask_embed()[0], (b, g, g, cfg.prompt_embed_dim))
        if masks is None:
            return sparse, no_mask
        if masks.shape != (b, 4 * g, 4 * g):
            raise ValueError(f"mask prompts must be ({b}, {4 * g}, {4 * g}), got {masks.shape}")
        dense = self.embed_masks(masks)
        if mask_valid is not None:
            dense = jnp.where(mask_valid[:, None, None, None], dense, no_mask)
        return sparse, dense
