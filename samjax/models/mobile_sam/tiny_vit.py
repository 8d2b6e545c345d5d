"""TinyViT: MobileSAM's image encoder (and HQ-SAM's `vit_tiny`).

Official: mobile_sam/modeling/tiny_vit_sam.py (MobileSAM; segment_anything_hq ships the same module). Submodule and
parameter names follow its state_dict (`layers.1.blocks.0.attn.attention_biases` <->
`layers_1/blocks_0/attn/attention_biases`, `patch_embed.seq.0.c.weight` <-> `patch_embed/seq_0/c/kernel`); its
BatchNorms are `conv_layers.BatchNorm` (running statistics in "batch_stats").

Shapes (the preset, TinyViT-5M at 1024): image (B, 1024, 1024, 3) normalised -> patch embedding (B, 256, 256, 64)
-> stage 0 (MBConv) + merging (B, 128, 128, 128) -> stage 1 (windowed attention) + merging (B, 64, 64, 160)
= `interm` (HQ-SAM's early feature) -> stage 2 + merging at stride 1 (B, 64, 64, 320) -> stage 3 -> neck
-> image embedding (B, 64, 64, 256).
"""

from __future__ import annotations

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from samjax.models.common import conv, dense, gelu, layer_norm, partitioned
from samjax.models.conv_layers import BatchNorm, conv2d
from samjax.models.mobile_sam.config import TinyViTConfig

f32 = jnp.float32


class Conv2dBN(nn.Module):
    """Conv2d without bias ("c") then BatchNorm2d ("bn"): the official Conv2d_BN."""

    features: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    axes: tuple[str | None, str | None] = ("embed", "embed")
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = conv2d(self.features, self.kernel, stride=self.stride, groups=self.groups, axes=self.axes, name="c",
                   dtype=self.dtype)(x)
        return BatchNorm(self.axes[1], dtype=self.dtype, name="bn")(x, train)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 Conv2d_BN with GELU between: (B, S, S, 3) -> (B, S/4, S/4, embed_dims[0])."""

    dim: int
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x, train=False):
        x = Conv2dBN(self.dim // 2, 3, 2, axes=("in_channels", "embed"), dtype=self.dtype, name="seq_0")(x, train)
        x = gelu(x)
        return Conv2dBN(self.dim, 3, 2, axes=("embed", "embed"), dtype=self.dtype, name="seq_2")(x, train)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, + input, GELU after each and after the sum."""

    dim: int
    expand_ratio: float
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x, train=False):
        hidden, dt = int(self.dim * self.expand_ratio), self.dtype
        y = gelu(Conv2dBN(hidden, 1, axes=("embed", "mlp"), dtype=dt, name="conv1")(x, train))
        y = gelu(Conv2dBN(hidden, 3, groups=hidden, axes=("mlp", "mlp"), dtype=dt, name="conv2")(y, train))
        y = Conv2dBN(self.dim, 1, axes=("mlp", "embed"), dtype=dt, name="conv3")(y, train)
        return gelu(y + x)


class PatchMerging(nn.Module):
    """1x1 Conv2d_BN, GELU, 3x3 depthwise Conv2d_BN at `stride`, GELU, 1x1 Conv2d_BN: (B, H, W, dim) ->
    (B, H/stride, W/stride, out_dim)."""

    out_dim: int
    stride: int
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x, train=False):
        d, dt = self.out_dim, self.dtype
        x = gelu(Conv2dBN(d, 1, axes=("embed", "embed"), dtype=dt, name="conv1")(x, train))
        x = gelu(Conv2dBN(d, 3, self.stride, groups=d, axes=("embed", "embed"), dtype=dt, name="conv2")(x, train))
        return Conv2dBN(d, 1, axes=("embed", "embed"), dtype=dt, name="conv3")(x, train)


@functools.lru_cache(maxsize=16)
def attention_bias_index(window: int) -> np.ndarray:
    """(N, N) int32 index into a block's attention_biases for its window of N = window^2 tokens: each distinct
    offset (|dy|, |dx|) numbered in order of first appearance, row-major over (query, key) (official order)."""
    points = list(itertools.product(range(window), range(window)))
    offsets: dict[tuple[int, int], int] = {}
    idx = [offsets.setdefault((abs(p[0] - q[0]), abs(p[1] - q[1])), len(offsets)) for p in points for q in points]
    return np.asarray(idx, np.int32).reshape(len(points), len(points))


class Attention(nn.Module):
    """LayerNorm, then multi-head attention within one window of `window`^2 tokens with a learned bias per head and
    offset: x (B', N, C) -> (B', N, C). qkv's output features are per head [q (hd), k (hd), v (hd)]."""

    dim: int
    num_heads: int
    window: int
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        nh, hd, dt = self.num_heads, self.dim // self.num_heads, self.dtype
        idx = attention_bias_index(self.window)
        biases = self.param("attention_biases", partitioned(nn.initializers.zeros_init(), ("attn_heads", "rel_pos")),
                            (nh, int(idx.max()) + 1), f32)
        x = layer_norm("embed", eps=1e-5, name="norm", dtype=dt)(x)
        qkv = dense(3 * self.dim, ("embed", "qkv"), name="qkv", dtype=dt)(x)
        b, n = x.shape[:2]
        qkv = qkv.reshape(b, n, nh, 3, hd)
        q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
        logits = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=f32) * np.float32(hd ** -0.5)
        logits = logits + biases[:, idx][None]
        attn = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bnqk,bknd->bqnd", attn, v).reshape(b, n, self.dim)
        return dense(self.dim, ("heads", "embed"), name="proj", dtype=dt)(out)


class Mlp(nn.Module):
    """LayerNorm, fc1, GELU, fc2."""

    dim: int
    hidden: int
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x):
        x = layer_norm("embed", eps=1e-5, name="norm", dtype=self.dtype)(x)
        x = gelu(dense(self.hidden, ("embed", "mlp"), name="fc1", dtype=self.dtype)(x))
        return dense(self.dim, ("mlp", "embed"), name="fc2", dtype=self.dtype)(x)


class TinyViTBlock(nn.Module):
    """Windowed attention (+ residual), 3x3 depthwise Conv2d_BN, MLP (+ residual): (B, H, W, C) -> same.

    The grid is zero-padded bottom/right to whole windows before the attention's LayerNorm, as officially: padding
    tokens take part in attention as keys (their normalised value is the norm's bias); their outputs are dropped."""

    dim: int
    num_heads: int
    window: int
    mlp_ratio: float
    local_conv_size: int
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x, train=False):
        b, h, w, c = x.shape
        ws = self.window
        ph, pw = (-h) % ws, (-w) % ws
        y = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0))) if ph or pw else x
        nh_, nw_ = (h + ph) // ws, (w + pw) // ws
        y = y.reshape(b, nh_, ws, nw_, ws, c).transpose(0, 1, 3, 2, 4, 5).reshape(b * nh_ * nw_, ws * ws, c)
        y = Attention(self.dim, self.num_heads, ws, self.dtype, name="attn")(y)
        y = y.reshape(b, nh_, nw_, ws, ws, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h + ph, w + pw, c)[:, :h, :w]
        x = x + y
        x = Conv2dBN(c, self.local_conv_size, groups=c, axes=("embed", "embed"), dtype=self.dtype,
                     name="local_conv")(x, train)
        return x + Mlp(c, int(c * self.mlp_ratio), self.dtype, name="mlp")(x)


class Stage(nn.Module):
    """Stage i (the official ConvLayer for i = 0: MBConv blocks; BasicLayer after: TinyViT blocks), then its
    PatchMerging ("downsample") unless it is the last stage."""

    config: TinyViTConfig
    index: int
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x, train=False):
        cfg, i, dt = self.config, self.index, self.dtype
        dims = cfg.embed_dims
        for j in range(cfg.depths[i]):
            if i == 0:
                x = MBConv(dims[0], cfg.mbconv_expand_ratio, dt, name=f"blocks_{j}")(x, train)
            else:
                x = TinyViTBlock(dims[i], cfg.num_heads[i], cfg.window_sizes[i], cfg.mlp_ratio, cfg.local_conv_size,
                                 dt, name=f"blocks_{j}")(x, train)
            x = nn.with_logical_constraint(
                x, ("activation_batch", "activation_height", "activation_width", "activation_embed"))
        if i < len(dims) - 1:
            x = PatchMerging(dims[i + 1], cfg.merge_strides[i], dt, name="downsample")(x, train)
        return x


class TinyViT(nn.Module):
    """images (B, S, S, in_chans) normalised -> image embeddings (B, g, g, out_chans), g = config.grid_size.

    train: BatchNorms normalise with batch statistics and update "batch_stats" (apply with mutable=["batch_stats"]);
    False (default): running statistics, the official eval mode.
    return_interm: also return stage 1's output (after its merging), (B, g, g, config.interm_dim): the
    `interm_embeddings[0]` HQ-SAM's vit_tiny takes. Returns (embeddings, interm) then."""

    config: TinyViTConfig
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, return_interm: bool = False):
        cfg, dt = self.config, self.dtype
        s = cfg.image_size
        if x.shape[1:] != (s, s, cfg.in_chans):
            raise ValueError(f"TinyViT expects (B, {s}, {s}, {cfg.in_chans}) images, got {tuple(x.shape)}")
        dims, n = cfg.embed_dims, len(cfg.embed_dims)
        x = PatchEmbed(dims[0], dt, name="patch_embed")(x.astype(dt), train)
        interm = None
        for i in range(n):
            x = Stage(cfg, i, dt, name=f"layers_{i}")(x, train)
            if i == 1:
                interm = x
        if self.is_initializing():  # the unused ImageNet head: its parameters exist, as in the official state_dict
            feat = jnp.zeros((1, dims[-1]), dt)
            feat = layer_norm("embed", eps=1e-5, name="norm_head", dtype=dt)(feat)
            if cfg.num_classes > 0:
                dense(cfg.num_classes, ("embed", None), name="head", dtype=dt)(feat)
        c = cfg.out_chans
        x = conv(c, 1, axes=("embed", "neck"), use_bias=False, name="neck_0", dtype=dt)(x)
        x = layer_norm("neck", eps=1e-6, name="neck_1", dtype=dt)(x)
        x = conv(c, 3, padding=1, axes=("neck", "neck"), use_bias=False, name="neck_2", dtype=dt)(x)
        x = layer_norm("neck", eps=1e-6, name="neck_3", dtype=dt)(x)
        return (x, interm) if return_interm else x
