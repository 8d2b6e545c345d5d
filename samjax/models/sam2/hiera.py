"""Hiera: SAM 2's hierarchical image-encoder trunk.

Official: sam2/modeling/backbones/hieradet.py. Names follow its state_dict (`trunk.blocks.3.attn.qkv.weight` <->
`trunk/blocks_3/attn/qkv/kernel`).

A 7x7 stride-4 convolution makes the stride-4 grid; a background position embedding (bicubically resized to the
grid) plus a window position embedding (tiled) is added; then `sum(stages)` blocks. The first block of each later
stage doubles the width (`dim_mul`) and the heads (`head_mul`) and, for the first `q_pool` stage changes, max-pools
its queries 2x2 (the keys and values keep the input resolution), halving the grid. Blocks attend within windows
(`window_spec[stage]`, zero-padded to whole windows) except the `global_att_blocks`.

Shapes (sam2.1_hiera_t at 1024): image (B, 1024, 1024, 3) -> (B, 256, 256, 96), (B, 128, 128, 192),
(B, 64, 64, 384), (B, 32, 32, 768): the output of every stage, highest resolution first.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from samjax.models.attention import attention
from samjax.models.common import conv, dense, gelu, layer_norm, partitioned
from samjax.models.sam2.config import Sam2Config
from samjax.models.sam2.layers import (
    MLP,
    bicubic_matrix,
    drop_path,
    max_pool,
    resize_hw,
    window_partition,
    window_unpartition,
)

f32 = jnp.float32


def _sdpa(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(d)) v for queries and keys of different lengths: q (B, Lq, nh, hd), k/v (B, L, nh, hd)."""
    logits = jnp.einsum("bqnd,bknd->bnqk", q * q.shape[-1] ** -0.5, k, preferred_element_type=f32)
    attn = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bnqk,bknd->bqnd", attn, v)


class MultiScaleAttention(nn.Module):
    """Attention over a (B, H, W, dim) grid with optional query pooling: -> (B, H/s, W/s, dim_out)."""

    dim_out: int
    num_heads: int
    q_stride: int = 0
    dtype: jnp.dtype = f32
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, _ = x.shape
        nh = self.num_heads
        hd = self.dim_out // nh
        qkv = dense(3 * self.dim_out, ("embed", "qkv"), name="qkv", dtype=self.dtype)(x)
        qkv = qkv.reshape(b, h * w, 3, nh, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.q_stride:
            q = max_pool(q.reshape(b, h, w, nh * hd), self.q_stride)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, nh, hd)
            out = _sdpa(q, k, v)
        else:  # equal lengths: the shared implementations (query-chunked on CPU for long sequences, cuDNN on GPU)
            out = attention(q, k, v, None, (h, w), self.impl)
        out = out.reshape(b, h, w, self.dim_out)
        return dense(self.dim_out, ("heads", "embed"), name="proj", dtype=self.dtype)(out)


class MultiScaleBlock(nn.Module):
    """Pre-norm block: (pooled) attention, MLP; a projected (and pooled) shortcut where the width changes."""

    dim: int
    dim_out: int
    num_heads: int
    q_stride: int = 0
    window_size: int = 0
    drop_path: float = 0.0
    dtype: jnp.dtype = f32
    impl: str = "auto"
    train: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dt = self.dtype
        active = self.train and self.drop_path > 0.0
        rngs = jax.random.split(self.make_rng("dropout")) if active else (None, None)
        shortcut = x
        x = layer_norm("embed", eps=1e-6, name="norm1", dtype=dt)(x)
        if self.dim != self.dim_out:
            shortcut = dense(self.dim_out, ("embed", "embed"), name="proj", dtype=dt)(x)
            if self.q_stride:
                shortcut = max_pool(shortcut, self.q_stride)
        h, w = x.shape[1:3]
        window = self.window_size
        if window > 0:
            x, pad_hw = window_partition(x, window)
        x = MultiScaleAttention(self.dim_out, self.num_heads, self.q_stride, dt, self.impl, name="attn")(x)
        if self.q_stride:  # the grid (and the windows) shrank with the queries
            window = self.window_size // self.q_stride
            h, w = shortcut.shape[1:3]
            pad_hw = (h + (-h) % window, w + (-w) % window) if window > 0 else None
        if self.window_size > 0:
            x = window_unpartition(x, window, pad_hw, (h, w))
        x = shortcut + drop_path(x, self.drop_path, rngs[0])
        y = layer_norm("embed", eps=1e-6, name="norm2", dtype=dt)(x)
        y = MLP(int(self.dim_out * 4.0), self.dim_out, 2, ("embed", "mlp", "embed"), act=gelu, dtype=dt, name="mlp")(y)
        return x + drop_path(y, self.drop_path, rngs[1])


class PatchEmbed(nn.Module):
    """Conv2d(3, embed_dim, 7, stride 4, padding 3): (B, S, S, 3) -> (B, S/4, S/4, embed_dim)."""

    embed_dim: int
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return conv(self.embed_dim, 7, stride=4, padding=3, axes=("in_channels", "embed"), name="proj",
                    dtype=self.dtype)(x)


class Hiera(nn.Module):
    """images (B, S, S, 3) normalised -> the output of every stage, highest resolution first (see module docstring).

    train: enables drop path (config.drop_path_rate; needs a "dropout" rng)."""

    config: Sam2Config

    def block_specs(self) -> list[dict]:
        """Per block: dim, dim_out, num_heads, q_stride, window_size (Hiera.__init__'s loop)."""
        cfg = self.config
        specs, dim, heads, stage = [], cfg.embed_dim, cfg.num_heads, 1
        for i in range(cfg.depth):
            dim_out = dim
            window = cfg.window_spec[stage - 1]  # lags by a block: a stage's first block keeps the previous window
            if i in cfg.global_att_blocks:
                window = 0
            if i - 1 in cfg.stage_ends:
                dim_out = int(dim * cfg.dim_mul)
                heads = int(heads * cfg.head_mul)
                stage += 1
            specs.append({"dim": dim, "dim_out": dim_out, "num_heads": heads,
                          "q_stride": cfg.q_stride if i in cfg.q_pool_blocks else 0, "window_size": window})
            dim = dim_out
        return specs

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
        cfg, dt = self.config, self.config.jnp_dtype
        x = PatchEmbed(cfg.embed_dim, dt, name="patch_embed")(x.astype(dt))
        bh, bw = cfg.window_pos_embed_bkg_spatial_size
        ws, axes = cfg.window_spec[0], (None, "pos_h", "pos_w", "embed")
        bkg = self.param("pos_embed", partitioned(nn.initializers.zeros_init(), axes), (1, bh, bw, cfg.embed_dim), f32)
        win = self.param("pos_embed_window", partitioned(nn.initializers.zeros_init(), axes),
                         (1, ws, ws, cfg.embed_dim), f32)
        x = x + hiera_pos_embed(bkg, win, x.shape[1:3]).astype(dt)
        rates = np.linspace(0.0, cfg.drop_path_rate, cfg.depth)
        block = nn.remat(MultiScaleBlock, static_argnums=()) if cfg.remat else MultiScaleBlock
        outputs = []
        for i, spec in enumerate(self.block_specs()):
            x = block(**spec, drop_path=float(rates[i]), dtype=dt, impl=cfg.attention, train=train,
                      name=f"blocks_{i}")(x)
            if i in cfg.stage_ends:
                outputs.append(x)
        return outputs


def hiera_pos_embed(bkg: jax.Array, win: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """Hiera._get_pos_embed: the background embedding bkg (1, bh, bw, C) resized (bicubic, as torch) to the grid,
    plus the window embedding win (1, ws, ws, C) tiled over it: (1, h, w, C)."""
    h, w = hw
    ws = win.shape[1]
    if h % ws or w % ws:
        raise ValueError(f"Hiera: the stride-4 grid {h}x{w} must be a multiple of the window embedding ({ws})")
    pos = resize_hw(bkg, bicubic_matrix(bkg.shape[1], h), bicubic_matrix(bkg.shape[2], w))
    return pos + jnp.tile(win, (1, h // ws, w // ws, 1))
