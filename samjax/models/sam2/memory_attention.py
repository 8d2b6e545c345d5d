"""SAM 2's memory attention: the current frame's features attend to themselves and to the memory bank, with
axial rotary position encodings (RoPE).

Official: sam2/modeling/memory_attention.py (MemoryAttention, MemoryAttentionLayer) and sam/transformer.py
(RoPEAttention), position_encoding.py (compute_axial_cis, apply_rotary_enc). Names follow the state_dict
(`memory_attention.layers.0.cross_attn_image.k_proj.weight` <-> `memory_attention/layers_0/cross_attn_image/k_proj/
kernel`).

RoPE: a head's channels are taken in pairs (2i, 2i+1) and rotated by angle t * f_i, where the first head_dim/4 pairs
use the token's column x and the next head_dim/4 its row y on the (h, w) grid, f_i = theta^(-4i / head_dim). In
cross-attention the memory's spatial keys are `S` grids of the same size, each rotated like the queries (the
official `rope_k_repeat`); the last `num_k_exclude_rope` keys (object pointer tokens) are not rotated.

Fixed shapes: the memory is a fixed number of key slots with a validity mask (B, M) (`memory_bank.MemoryBank`);
invalid keys get a logit of -inf's stand-in (float32 min), so they receive exactly zero weight and the output is
the official attention over the valid keys alone (a permutation of keys changes nothing: the official order is not
needed).

Shapes (at 1024, 7 memories, 16 pointers): curr (B, 4096, 256), curr_pos (1|B, 4096, 256), memory
(B, 7*4096 + 16*4, 64), memory_pos (same), key_mask (B, 7*4096 + 64) -> (B, 4096, 256).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from samjax.models.common import dense, gelu, layer_norm
from samjax.models.sam2.config import Sam2Config

f32 = jnp.float32


@functools.lru_cache(maxsize=32)
def rope_angles(head_dim: int, h: int, w: int, theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin of the axial RoPE angles of an (h, w) grid in row-major token order: (h*w, head_dim/2) float32 each.
    The angles are formed in float32 as officially (compute_axial_cis), the cos/sin taken in float64."""
    exps = np.arange(0, head_dim, 4)[: head_dim // 4].astype(np.float32) / np.float32(head_dim)
    freqs = (np.float32(1.0) / np.power(np.float32(theta), exps, dtype=np.float32)).astype(np.float32)
    t = np.arange(h * w, dtype=np.float32)
    t_x, t_y = t % np.float32(w), np.floor(t / np.float32(w))
    angles = np.concatenate([np.outer(t_x, freqs), np.outer(t_y, freqs)], axis=-1).astype(np.float32)
    angles = angles.astype(np.float64)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x (B, L, nh, hd), cos/sin (L, hd/2): each channel pair (2i, 2i+1) rotated, as a complex product (float32)."""
    xr = x.astype(f32).reshape(*x.shape[:-1], -1, 2)
    a, b = xr[..., 0], xr[..., 1]
    c, s = cos[:, None, :], sin[:, None, :]
    return jnp.stack([a * c - b * s, a * s + b * c], axis=-1).reshape(x.shape).astype(x.dtype)


class RoPEAttention(nn.Module):
    """Attention with q/k/v projections to `embedding_dim // downsample_rate` channels and axial RoPE.

    q (B, Lq, C) on a (h, w) grid; k/v (B, Lk, kv_in_dim) whose first Lk - num_k_exclude_rope keys are
    (Lk - num_k_exclude_rope) / (h w) grids like the queries'; key_mask (B, Lk) bool or None. -> (B, Lq, C)."""

    embedding_dim: int
    num_heads: int
    kv_in_dim: int | None = None
    downsample_rate: int = 1
    rope_theta: float = 10000.0
    dropout: float = 0.0
    k_axis: str = "prompt_embed"
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, q, k, v, grid: tuple[int, int], num_k_exclude_rope: int = 0, key_mask=None,
                 train: bool = False):
        c, dt = self.embedding_dim, self.dtype
        internal = c // self.downsample_rate
        nh = self.num_heads
        hd = internal // nh
        q = dense(internal, ("prompt_embed", "prompt_attn"), name="q_proj", dtype=dt)(q)
        k = dense(internal, (self.k_axis, "prompt_attn"), name="k_proj", dtype=dt)(k)
        v = dense(internal, (self.k_axis, "prompt_attn"), name="v_proj", dtype=dt)(v)
        q, k, v = (x.reshape(*x.shape[:2], nh, hd) for x in (q, k, v))

        h, w = grid
        lq = q.shape[1]
        if lq != h * w:
            raise ValueError(f"RoPEAttention: {lq} queries do not form the {h}x{w} grid")
        cos, sin = (jnp.asarray(a) for a in rope_angles(hd, h, w, self.rope_theta))
        q = apply_rope(q, cos, sin)
        n_rope = k.shape[1] - num_k_exclude_rope
        if n_rope % lq:
            raise ValueError(f"RoPEAttention: {n_rope} rotated keys are not whole {h}x{w} grids")
        if n_rope:
            reps = n_rope // lq
            k_rot = apply_rope(k[:, :n_rope], jnp.tile(cos, (reps, 1)), jnp.tile(sin, (reps, 1)))
            k = jnp.concatenate([k_rot, k[:, n_rope:]], axis=1) if num_k_exclude_rope else k_rot

        q = q * hd ** -0.5
        if train and self.dropout > 0:
            attn = jax.nn.softmax(_logits(q, k, key_mask), axis=-1)
            attn = nn.Dropout(self.dropout)(attn, deterministic=False)
            out = jnp.einsum("bnqk,bknd->bqnd", attn.astype(v.dtype), v)
        else:
            out = attend(q, k, v, key_mask)
        return dense(c, ("prompt_attn", "prompt_embed"), name="out_proj", dtype=dt)(out.reshape(*q.shape[:2], internal))


def _logits(q, k, key_mask):
    """(B, Lq, nh, hd), (B, Lk, nh, hd), (B, Lk) bool or None -> (B, nh, Lq, Lk) float32, masked keys at float32 min."""
    logits = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=f32)
    if key_mask is not None:
        logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(f32).min)
    return logits


# Above this many logits per batch row (Lq x Lk x heads: 4096 x 28736 in the cross-attention at 1024 with 7 memories)
# the queries go in blocks of QUERY_BLOCK: each block's logits stay small enough for the caches instead of a 0.5 GB
# array written and read back several times (benchmarks/README.md: the SAM 2 rows). Each query's arithmetic is
# unchanged.
BLOCK_ABOVE = 1 << 24
QUERY_BLOCK = 512


def attend(q, k, v, key_mask=None):
    """Softmax attention, q pre-scaled: (B, Lq, nh, hd), (B, Lk, nh, hd) x2, (B, Lk) -> (B, Lq, nh, hd)."""
    b, lq, nh, hd = q.shape

    def plain(q):
        attn = jax.nn.softmax(_logits(q, k, key_mask), axis=-1)
        return jnp.einsum("bnqk,bknd->bqnd", attn.astype(v.dtype), v)

    if lq * k.shape[1] * nh <= BLOCK_ABOVE or lq % QUERY_BLOCK:
        return plain(q)
    out = jax.lax.map(plain, q.reshape(b, lq // QUERY_BLOCK, QUERY_BLOCK, nh, hd).swapaxes(0, 1))
    return out.swapaxes(0, 1).reshape(b, lq, nh, hd)


class MemoryAttentionLayer(nn.Module):
    """Pre-norm self-attention (RoPE), cross-attention to the memory (RoPE), FFN; dropout only when training."""

    d_model: int
    dim_feedforward: int
    num_heads: int
    kv_in_dim: int
    activation: str = "relu"
    dropout: float = 0.1
    rope_theta: float = 10000.0
    pos_enc_at_attn: bool = False
    pos_enc_at_cross_attn_keys: bool = True
    pos_enc_at_cross_attn_queries: bool = False
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, tgt, memory, pos, query_pos, grid, num_k_exclude_rope: int = 0, key_mask=None,
                 train: bool = False):
        dt = self.dtype
        act = nn.relu if self.activation == "relu" else gelu

        def drop(x):
            return nn.Dropout(self.dropout)(x, deterministic=not train)

        tgt2 = layer_norm("prompt_embed", eps=1e-5, name="norm1", dtype=dt)(tgt)
        qk = tgt2 + query_pos if self.pos_enc_at_attn else tgt2
        tgt2 = RoPEAttention(self.d_model, self.num_heads, rope_theta=self.rope_theta, dropout=self.dropout,
                             dtype=dt, name="self_attn")(qk, qk, tgt2, grid, train=train)
        tgt = tgt + drop(tgt2)

        tgt2 = layer_norm("prompt_embed", eps=1e-5, name="norm2", dtype=dt)(tgt)
        tgt2 = RoPEAttention(self.d_model, self.num_heads, self.kv_in_dim, rope_theta=self.rope_theta,
                             dropout=self.dropout, k_axis="memory_embed", dtype=dt, name="cross_attn_image")(
            tgt2 + query_pos if self.pos_enc_at_cross_attn_queries else tgt2,
            memory + pos if self.pos_enc_at_cross_attn_keys else memory,
            memory, grid, num_k_exclude_rope, key_mask, train)
        tgt = tgt + drop(tgt2)

        tgt2 = layer_norm("prompt_embed", eps=1e-5, name="norm3", dtype=dt)(tgt)
        tgt2 = dense(self.dim_feedforward, ("prompt_embed", "memory_mlp"), name="linear1", dtype=dt)(tgt2)
        tgt2 = dense(self.d_model, ("memory_mlp", "prompt_embed"), name="linear2", dtype=dt)(drop(act(tgt2)))
        return tgt + drop(tgt2)


class MemoryAttention(nn.Module):
    """curr (B, L, C) on a (h, w) grid, curr_pos (1|B, L, C), memory / memory_pos (B, M, mem_dim), key_mask (B, M)
    -> (B, L, C). The last `num_obj_ptr_tokens` memory tokens are object pointers (not rotated)."""

    config: Sam2Config

    @nn.compact
    def __call__(self, curr, memory, curr_pos, memory_pos, grid, num_obj_ptr_tokens: int = 0, key_mask=None,
                 train: bool = False):
        cfg, dt = self.config, self.config.jnp_dtype
        output = curr.astype(dt)
        if cfg.pos_enc_at_input:
            output = output + 0.1 * curr_pos.astype(dt)
        for i in range(cfg.memory_attention_layers):
            output = MemoryAttentionLayer(
                cfg.d_model, cfg.memory_attention_mlp_dim, cfg.memory_attention_heads, cfg.mem_dim,
                cfg.memory_attention_activation, cfg.memory_attention_dropout, cfg.rope_theta, cfg.pos_enc_at_attn,
                cfg.pos_enc_at_cross_attn_keys, cfg.pos_enc_at_cross_attn_queries, dt, name=f"layers_{i}")(
                output, memory.astype(dt), memory_pos.astype(dt), curr_pos.astype(dt), grid, num_obj_ptr_tokens,
                key_mask, train)
        return layer_norm("prompt_embed", eps=1e-5, name="norm", dtype=dt)(output)
