"""TwoWayTransformer: prompt tokens and image embedding attend to each other.

Official: segment_anything/modeling/transformer.py, with one addition: an optional `token_mask` (B, N) that
removes IGNORE tokens (padding added for static shapes) from every attention in which tokens are keys.
With no IGNORE tokens the function is the official one.

Shapes: image_embedding (B|1, h, w, C), image_pe (B|1, h, w, C), point_embedding (B, N, C)
-> queries (B, N, C), keys (B, h*w, C).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.models.common import MLPBlock, dense, layer_norm
from samjax.models.config import SamConfig

f32 = jnp.float32


def _batched_einsum(spec: str, x: jax.Array, y: jax.Array) -> jax.Array:
    """einsum over a leading batch `b` where either operand may have batch 1 (shared by every row of the other):
    the shared operand enters the product once instead of being copied B times (same arithmetic)."""
    if x.shape[0] == y.shape[0]:
        return jnp.einsum(spec, x, y)
    ins, out = spec.split("->")
    a, b = ins.split(",")
    if y.shape[0] == 1:
        return jnp.einsum(f"{a},{b[1:]}->{out}", x, y[0])
    if x.shape[0] == 1:
        return jnp.einsum(f"{a[1:]},{b}->{out}", x[0], y)
    raise ValueError(f"batch sizes {x.shape[0]} and {y.shape[0]} do not broadcast")


class Attention(nn.Module):
    """Attention with q/k/v projections down to `embedding_dim // downsample_rate` channels.

    q and k/v may differ in batch when one has batch 1 (the image side before it becomes prompt-specific):
    its projections then run once for all prompts."""

    embedding_dim: int
    num_heads: int
    downsample_rate: int = 1
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
        """q (B, Nq, C), k and v (B, Nk, C), key_mask (B, Nk) bool or None -> (B, Nq, C)."""
        internal = self.embedding_dim // self.downsample_rate
        axes = ("prompt_embed", "prompt_attn")
        q = dense(internal, axes, name="q_proj", dtype=self.dtype)(q)
        k = dense(internal, axes, name="k_proj", dtype=self.dtype)(k)
        v = dense(internal, axes, name="v_proj", dtype=self.dtype)(v)
        nh, hd = self.num_heads, internal // self.num_heads
        q = q.reshape(*q.shape[:2], nh, hd)
        k = k.reshape(*k.shape[:2], nh, hd)
        v = v.reshape(*v.shape[:2], nh, hd)
        logits = _batched_einsum("bqnc,bknc->bnqk", q, k) / jnp.sqrt(jnp.asarray(hd, self.dtype))
        logits = logits.astype(f32)
        if key_mask is not None:
            logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(f32).min)
        attn = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = _batched_einsum("bnqk,bknc->bqnc", attn, v).reshape(*attn.shape[:1], attn.shape[2], internal)
        return dense(self.embedding_dim, axes[::-1], name="out_proj", dtype=self.dtype)(out)


class TwoWayAttentionBlock(nn.Module):
    """Self-attn on tokens, token->image cross-attn, MLP on tokens, image->token cross-attn."""

    config: SamConfig
    skip_first_layer_pe: bool = False

    @nn.compact
    def __call__(self, queries, keys, query_pe, key_pe, token_mask=None):
        cfg, dt = self.config, self.config.jnp_dtype
        c, nh, rate = cfg.prompt_embed_dim, cfg.decoder_num_heads, cfg.attention_downsample_rate
        if self.skip_first_layer_pe:
            queries = Attention(c, nh, dtype=dt, name="self_attn")(queries, queries, queries, token_mask)
        else:
            q = queries + query_pe
            queries = queries + Attention(c, nh, dtype=dt, name="self_attn")(q, q, queries, token_mask)
        queries = layer_norm("prompt_embed", eps=1e-5, name="norm1", dtype=dt)(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = queries + Attention(c, nh, rate, dtype=dt, name="cross_attn_token_to_image")(q, k, keys)
        queries = layer_norm("prompt_embed", eps=1e-5, name="norm2", dtype=dt)(queries)

        mlp = MLPBlock(c, cfg.decoder_mlp_dim, ("prompt_embed", "prompt_mlp"), act=nn.relu, dtype=dt, name="mlp")
        queries = layer_norm("prompt_embed", eps=1e-5, name="norm3", dtype=dt)(queries + mlp(queries))

        q, k = queries + query_pe, keys + key_pe
        keys = keys + Attention(c, nh, rate, dtype=dt, name="cross_attn_image_to_token")(k, q, queries, token_mask)
        keys = layer_norm("prompt_embed", eps=1e-5, name="norm4", dtype=dt)(keys)
        return queries, keys


class TwoWayTransformer(nn.Module):
    config: SamConfig

    @nn.compact
    def __call__(self, image_embedding: jax.Array, image_pe: jax.Array, point_embedding: jax.Array,
                 token_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        cfg, dt = self.config, self.config.jnp_dtype
        b, n, c = point_embedding.shape
        # Batch 1 (one image, no per-prompt mask prompt) stays batch 1 until the first image->token attention makes
        # the keys prompt-specific: the image-side projections before it are computed once, not once per prompt.
        keys = image_embedding.reshape(image_embedding.shape[0], -1, c)
        key_pe = image_pe.reshape(image_pe.shape[0], -1, c)
        queries = point_embedding
        for i in range(cfg.decoder_depth):
            queries, keys = TwoWayAttentionBlock(cfg, skip_first_layer_pe=(i == 0), name=f"layers_{i}")(
                queries, keys, point_embedding, key_pe, token_mask)
        q, k = queries + point_embedding, keys + key_pe
        attn = Attention(c, cfg.decoder_num_heads, cfg.attention_downsample_rate, dtype=dt,
                         name="final_attn_token_to_image")(q, k, keys)
        queries = layer_norm("prompt_embed", eps=1e-5, name="norm_final_attn", dtype=dt)(queries + attn)
        return queries, jnp.broadcast_to(keys, (b, *keys.shape[1:]))
