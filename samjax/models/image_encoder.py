"""ImageEncoderViT: the MAE-style ViT with windowed attention and decomposed relative positions.

Official: segment_anything/modeling/image_encoder.py. Submodule and parameter names follow its state_dict
(`blocks.3.attn.rel_pos_h` <-> `blocks_3/attn/rel_pos_h`), so `samjax.convert` is a key table plus transposes.

Shapes (official ViT-B at 1024): image (B, 1024, 1024, 3) normalised float -> patches (B, 64, 64, 768)
-> blocks -> neck -> image embedding (B, 64, 64, 256).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from samjax.models.attention import attention
from samjax.models.common import MLPBlock, conv, dense, gelu, layer_norm, partitioned
from samjax.models.config import SamConfig

f32 = jnp.float32
_BHWC = ("activation_batch", "activation_height", "activation_width", "activation_embed")


def window_partition(x: jax.Array, window: int, fill: jax.Array | None = None) -> tuple[jax.Array, tuple[int, int]]:
    """(B, H, W, C) -> (B * nH * nW, window, window, C), padding H and W up to multiples of `window` with zeros, or
    with `fill` (C,) where given."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        if fill is not None:
            inside = (jnp.arange(h + pad_h) < h)[:, None] & (jnp.arange(w + pad_w) < w)[None, :]
            x = jnp.where(inside[None, :, :, None], x, fill.astype(x.dtype))
    hp, wp = h + pad_h, w + pad_w
    x = x.reshape(b, hp // window, window, wp // window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window, window, c), (hp, wp)


def window_unpartition(windows: jax.Array, window: int, pad_hw: tuple[int, int], hw: tuple[int, int]) -> jax.Array:
    """Inverse of `window_partition`, dropping the padding: -> (B, H, W, C)."""
    hp, wp = pad_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.reshape(b, hp // window, wp // window, window, window, -1).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hp, wp, -1)[:, :h, :w, :]


# Windowed blocks project q/k/v and the output on the unpadded grid and give the padding tokens the values the
# official code computes for them (it pads the normalised input with zeros: q/k/v of a padding token = the qkv bias;
# its outputs are dropped). The same numbers, without matrix products over 4900 instead of 4096 tokens per image
# in every windowed block (ViT-B 8 of 12, ViT-H 28 of 32). Side by side: H200 bf16 batch 8 ViT-H 113.6 -> 112.1 ms,
# ViT-B 25.7 -> 25.5 ms; 2-core CPU float32 ViT-B at 1024 6.75 -> 6.39 s (median of 5), outputs bitwise equal.
# False: partition first, as the official code (kept for side-by-side benchmarks).
PROJECT_UNPADDED = True


class Attention(nn.Module):
    """Multi-head self-attention over a (B, H, W, C) grid with optional decomposed relative-position bias; with
    `window_size` > 0 within non-overlapping windows of that size (the grid zero-padded to whole windows).

    impl picks the attention implementation (samjax.models.attention; all compute the official formula)."""

    dim: int
    num_heads: int
    qkv_bias: bool
    use_rel_pos: bool
    input_size: tuple[int, int]
    dtype: jnp.dtype = f32
    impl: str = "auto"  # samjax.models.attention.IMPLEMENTATIONS
    window_size: int = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        nh, hd = self.num_heads, c // self.num_heads
        grid = x.shape[1:3]
        project_qkv = dense(3 * c, ("embed", "qkv"), name="qkv", use_bias=self.qkv_bias, dtype=self.dtype)
        qkv = project_qkv(x)
        if self.window_size > 0:
            padding = project_qkv(jnp.zeros((1, c), x.dtype))[0]  # what a zero padding token projects to
            qkv, pad_hw = window_partition(qkv, self.window_size, padding)
        b, h, w = qkv.shape[:3]
        qkv = qkv.reshape(b, h * w, 3, nh, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, L, nh, hd)
        rel_pos = None
        if self.use_rel_pos:
            rows_h, rows_w = 2 * self.input_size[0] - 1, 2 * self.input_size[1] - 1
            rel_pos_h = self.param("rel_pos_h", partitioned(nn.initializers.zeros_init(), ("rel_pos", "head_dim")),
                                   (rows_h, hd), f32)
            rel_pos_w = self.param("rel_pos_w", partitioned(nn.initializers.zeros_init(), ("rel_pos", "head_dim")),
                                   (rows_w, hd), f32)
            if rows_h != 2 * h - 1 or rows_w != 2 * w - 1:
                raise ValueError(f"attention input {h}x{w} does not match its relative-position tables "
                                 f"({rows_h}, {rows_w} rows), built for {self.input_size}")
            rel_pos = (rel_pos_h, rel_pos_w)
        out = attention(q, k, v, rel_pos, (h, w), self.impl).reshape(b, h, w, c)
        if self.window_size > 0:
            out = window_unpartition(out, self.window_size, pad_hw, grid)
        return dense(c, ("heads", "embed"), name="proj", dtype=self.dtype)(out)


def drop_path(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    """Stochastic depth on a residual branch x (B, ...): zero whole samples with probability `rate`, rescale the rest."""
    if rate == 0.0 or rng is None:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class Block(nn.Module):
    """Pre-norm transformer block; windowed attention when `window_size > 0`, else global.

    drop_path: stochastic-depth rate of both residual branches, used only when `train` (needs a "dropout" rng).
    """

    config: SamConfig
    window_size: int
    drop_path: float = 0.0
    train: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg, dt = self.config, self.config.jnp_dtype
        active = self.train and self.drop_path > 0.0
        rngs = jax.random.split(self.make_rng("dropout")) if active else (None, None)
        shortcut = x
        x = layer_norm("embed", eps=1e-6, name="norm1", dtype=dt)(x)
        h, w = x.shape[1], x.shape[2]
        outside = self.window_size > 0 and not PROJECT_UNPADDED  # partition around the whole attention module
        if outside:
            x, pad_hw = window_partition(x, self.window_size)
        size = (self.window_size, self.window_size) if self.window_size > 0 else (cfg.grid_size, cfg.grid_size)
        x = Attention(cfg.encoder_embed_dim, cfg.encoder_num_heads, cfg.encoder_qkv_bias, cfg.encoder_use_rel_pos,
                      size, dtype=dt, impl=cfg.attention, window_size=0 if outside else self.window_size,
                      name="attn")(x)
        if outside:
            x = window_unpartition(x, self.window_size, pad_hw, (h, w))
        x = shortcut + drop_path(x, self.drop_path, rngs[0])
        y = layer_norm("embed", eps=1e-6, name="norm2", dtype=dt)(x)
        y = MLPBlock(cfg.encoder_embed_dim, int(cfg.encoder_embed_dim * cfg.encoder_mlp_ratio),
                     ("embed", "mlp"), act=gelu, dtype=dt, name="mlp")(y)
        x = x + drop_path(y, self.drop_path, rngs[1])
        return nn.with_logical_constraint(x, _BHWC)


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, S, S, 3) -> (B, S/p, S/p, embed)."""

    config: SamConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        return conv(cfg.encoder_embed_dim, cfg.patch_size, stride=cfg.patch_size, axes=("in_channels", "embed"),
                    name="proj", dtype=cfg.jnp_dtype)(x)


class ImageEncoderViT(nn.Module):
    """images (B, S, S, in_chans) normalised -> image embeddings (B, S/p, S/p, prompt_embed_dim).

    train: enables drop path (config.encoder_drop_path_rate; needs a "dropout" rng). config.encoder_remat wraps
    every block in `nn.remat` (same parameter names, same values, less activation memory).
    return_interm: also return the output of every global-attention block (window size 0), in block order, each
    (B, S/p, S/p, embed): HQ-SAM's `interm_embeddings`. Returns (embeddings, interm) then.
    """

    config: SamConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, return_interm: bool = False):
        cfg, dt = self.config, self.config.jnp_dtype
        if x.shape[1:] != (cfg.image_size, cfg.image_size, cfg.in_chans):
            raise ValueError(f"ImageEncoderViT expects (B, {cfg.image_size}, {cfg.image_size}, {cfg.in_chans}) "
                             f"images, got {tuple(x.shape)}")
        x = PatchEmbed(cfg, name="patch_embed")(x.astype(dt))
        if cfg.encoder_use_abs_pos:
            g = cfg.grid_size
            pos = self.param("pos_embed", partitioned(nn.initializers.zeros_init(), (None, "pos_h", "pos_w", "embed")),
                             (1, g, g, cfg.encoder_embed_dim), f32)
            x = x + pos.astype(dt)
        x = nn.with_logical_constraint(x, _BHWC)
        global_idx = set(cfg.encoder_global_attn_indexes)
        block = nn.remat(Block) if cfg.encoder_remat else Block
        rates = np.linspace(0.0, cfg.encoder_drop_path_rate, cfg.encoder_depth) if cfg.encoder_depth else []
        interm = []
        for i in range(cfg.encoder_depth):
            window = 0 if i in global_idx else cfg.window_size
            x = block(cfg, window, float(rates[i]), train, name=f"blocks_{i}")(x)
            if window == 0:
                interm.append(x)
        # neck: 1x1 conv -> LN2d -> 3x3 conv -> LN2d, no biases.
        c = cfg.prompt_embed_dim
        x = conv(c, 1, axes=("embed", "neck"), use_bias=False, name="neck_0", dtype=dt)(x)
        x = layer_norm("neck", eps=1e-6, name="neck_1", dtype=dt)(x)
        x = conv(c, 3, padding=1, axes=("neck", "neck"), use_bias=False, name="neck_2", dtype=dt)(x)
        x = layer_norm("neck", eps=1e-6, name="neck_3", dtype=dt)(x)
        return (x, tuple(interm)) if return_interm else x
