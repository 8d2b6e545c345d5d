"""EfficientViT-SAM's image encoder: EfficientViT backbone (L / XL), SAM neck, LayerNorm2d.

Official: efficientvit's models/nn/ops.py, models/efficientvit/backbone.py (EfficientViTLargeBackbone) and
models/efficientvit/sam.py (SamNeck, EfficientViTSamImageEncoder), as vendored by the `efficientsam` package.
Submodule names follow its state_dict (`backbone.stages.3.op_list.1.context_module.main.aggreg.0.1.weight` <->
`backbone/stages_3/op_list_1/context_module/main/aggreg_0_1/kernel`); BatchNorms are `conv_layers.BatchNorm`
(running statistics in "batch_stats").

Shapes (L0 at 512): image (B, 512, 512, 3) normalised -> stages 0..4 at 256, 128, 64, 32, 16 px
-> neck: stages 4, 3, 2 each 1x1-projected to 256 channels and bicubic-resized to 64 x 64, summed, FusedMBConv
blocks, 1x1 conv -> LayerNorm2d -> image embedding (B, 64, 64, 256). XL: six stages at 1024 px, stages 5, 4, 3.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from samjax.models.common import layer_norm
from samjax.models.conv_layers import BatchNorm, conv2d, gelu_tanh
from samjax.models.efficientvit_sam.config import EfficientViTConfig

f32 = jnp.float32
_ACTS = {"gelu": gelu_tanh, "relu": nn.relu, "relu6": nn.relu6, "hswish": nn.hard_swish, "silu": nn.silu}
_BHWC = ("activation_batch", "activation_height", "activation_width", "activation_embed")


# ----------------------------------------------------------------------------------------- bicubic resize
def cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """torch's bicubic convolution weights (A = -0.75) of the 4 taps at offsets -1, 0, 1, 2 for fractions t: (n, 4)."""
    one = np.ones((), t.dtype)

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + one

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + one), near(t), near(one - t), far(2 * one - t)], axis=-1)


@functools.lru_cache(maxsize=32)
def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float32 matrix of torch's `interpolate(mode="bicubic", align_corners=False)` along one
    axis, no antialiasing: source x = (i + 0.5) in / out - 0.5 (not clamped), taps floor(x) - 1 .. floor(x) + 2
    clamped to the border (their weights add up there). Source positions and weights are computed in float32, as
    torch computes them for float32 input (in float64 they differ by up to 1e-5 of the output after a resize)."""
    f = np.float32
    src = (np.arange(out_size, dtype=f) + f(0.5)) * f(in_size / out_size) - f(0.5)
    base = np.floor(src)
    w = cubic_weights(src - base, f(-0.75))
    m = np.zeros((out_size, in_size), np.float32)
    for k in range(4):
        idx = np.clip(base.astype(np.int64) - 1 + k, 0, in_size - 1)
        np.add.at(m, (np.arange(out_size), idx), w[:, k])
    return m


def resize_bicubic(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """torch.nn.functional.interpolate(x, size, mode="bicubic", align_corners=False) on NHWC: (B, H, W, C) ->
    (B, h, w, C), as two products with `bicubic_matrix` (rows, then columns), in float32."""
    h, w = x.shape[1:3]
    if (h, w) == tuple(size):
        return x
    mh, mw = jnp.asarray(bicubic_matrix(h, size[0])), jnp.asarray(bicubic_matrix(w, size[1]))
    hi = jax.lax.Precision.HIGHEST
    y = jnp.einsum("oh,bhwc->bowc", mh, x.astype(f32), precision=hi)
    return jnp.einsum("pw,bowc->bopc", mw, y, precision=hi).astype(x.dtype)


# ------------------------------------------------------------------------------------------------- layers
class ConvLayer(nn.Module):
    """Conv2d ("conv", padding kernel // 2) -> optional BatchNorm2d ("norm") -> optional activation."""

    features: int
    kernel: int = 3
    stride: int = 1
    groups: int = 1
    use_bias: bool = False
    norm: bool = True
    act: str | None = None
    axes: tuple[str | None, str | None] = ("embed", "embed")
    eps: float = 1e-6
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x, train=False):
        x = conv2d(self.features, self.kernel, stride=self.stride, groups=self.groups, use_bias=self.use_bias,
                   axes=self.axes, name="conv", dtype=self.dtype)(x)
        if self.norm:
            x = BatchNorm(self.axes[1], eps=self.eps, dtype=self.dtype, name="norm")(x, train)
        return _ACTS[self.act](x) if self.act else x


class LocalBlock(nn.Module):
    """The backbone's convolution blocks, by `kind`:
    "res" ResBlock (conv1 3x3 at stride, conv2 3x3), "fmb" FusedMBConv (spatial_conv 3x3 at stride, point_conv 1x1),
    "mb" MBConv (inverted_conv 1x1, depth_conv 3x3 depthwise at stride, point_conv 1x1), "ds" DSConv (depth_conv
    3x3 depthwise at stride, point_conv 1x1; the B backbones' block, which no SAM model uses). Activation after every
    conv but the last; with fewer_norm only the last conv has a BatchNorm and the others have biases."""

    kind: str
    out: int
    stride: int
    expand_ratio: float
    fewer_norm: bool
    act: str
    eps: float
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x, train=False):
        mid = round(x.shape[-1] * self.expand_ratio)
        fn, dt, eps = self.fewer_norm, self.dtype, self.eps
        layer = functools.partial(ConvLayer, eps=eps, dtype=dt)
        if self.kind == "mb":
            x = layer(mid, 1, use_bias=fn, norm=not fn, act=self.act, axes=("embed", "mlp"), name="inverted_conv")(
                x, train)
            x = layer(mid, 3, self.stride, groups=mid, use_bias=fn, norm=not fn, act=self.act, axes=("mlp", "mlp"),
                      name="depth_conv")(x, train)
            return layer(self.out, 1, axes=("mlp", "embed"), name="point_conv")(x, train)
        if self.kind == "ds":
            c = x.shape[-1]
            x = layer(c, 3, self.stride, groups=c, use_bias=fn, norm=not fn, act=self.act, axes=("embed", "embed"),
                      name="depth_conv")(x, train)
            return layer(self.out, 1, axes=("embed", "embed"), name="point_conv")(x, train)
        first, second, k2 = {"res": ("conv1", "conv2", 3), "fmb": ("spatial_conv", "point_conv", 1)}[self.kind]
        x = layer(mid, 3, self.stride, use_bias=fn, norm=not fn, act=self.act, axes=("embed", "mlp"), name=first)(
            x, train)
        return layer(self.out, k2, axes=("mlp", "embed"), name=second)(x, train)


class LiteMLA(nn.Module):
    """Lightweight multi-scale ReLU linear attention: x (B, H, W, C) -> (B, H, W, C).

    qkv: 1x1 conv to 3 x heads x dim channels; aggreg_i_0 / aggreg_i_1: a depthwise scale x scale conv then a
    grouped 1x1 conv (3 x heads groups) per scale, concatenated after qkv. Each group of 3 x dim channels is one
    head [q | k | v]; with q, k = ReLU(q), ReLU(k): out = (v k^T) q / (sum_n k_n . q + eps) over the H*W tokens
    (quadratic form, normalised over keys, when H*W <= dim, as officially). proj: 1x1 conv + BatchNorm."""

    dim: int
    scales: tuple[int, ...]
    eps: float
    att_eps: float = 1e-15
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x, train=False):
        b, h, w, c = x.shape
        heads = c // self.dim
        total = heads * self.dim
        qkv = ConvLayer(3 * total, 1, norm=False, axes=("embed", "qkv"), dtype=self.dtype, name="qkv")(x, train)
        parts = [qkv]
        for i, s in enumerate(self.scales):
            y = conv2d(3 * total, s, groups=3 * total, axes=("qkv", "qkv"), name=f"aggreg_{i}_0", dtype=self.dtype)(qkv)
            parts.append(conv2d(3 * total, 1, groups=3 * heads, axes=("qkv", "qkv"), name=f"aggreg_{i}_1",
                                dtype=self.dtype)(y))
        qkv = jnp.concatenate(parts, axis=-1).astype(f32).reshape(b, h * w, -1, 3 * self.dim)  # (B, N, G, 3d)
        d = self.dim
        q, k, v = jax.nn.relu(qkv[..., :d]), jax.nn.relu(qkv[..., d:2 * d]), qkv[..., 2 * d:]
        if h * w > d:  # linear: the (d x d) key-value summary per head
            vk = jnp.einsum("bngd,bnge->bgde", v, k)
            num = jnp.einsum("bgde,bnge->bngd", vk, q)
            den = jnp.einsum("bge,bnge->bng", k.sum(1), q)[..., None]
            out = num / (den + self.att_eps)
        else:  # quadratic
            att = jnp.einsum("bkge,bqge->bgkq", k, q)
            att = att / (att.sum(axis=2, keepdims=True) + self.att_eps)
            out = jnp.einsum("bkgd,bgkq->bqgd", v, att)
        out = out.reshape(b, h, w, -1).astype(self.dtype)
        return ConvLayer(c, 1, act=None, axes=("heads", "embed"), eps=self.eps, dtype=self.dtype, name="proj")(
            out, train)


class Residual(nn.Module):
    """The official ResidualBlock: main(x) (+ x where `shortcut`). `make` builds the wrapped block (a module class
    with its arguments bound, functools.partial); it is named "main", as officially."""

    make: Callable[..., nn.Module]
    shortcut: bool = True

    @nn.compact
    def __call__(self, x, train=False):
        y = self.make(name="main")(x, train)
        return y + x if self.shortcut else y


class EfficientViTBlock(nn.Module):
    """context_module: x + LiteMLA(x); local_module: x + MBConv(x) (biases on its first two convs, BatchNorm on
    the last, activation after the first two)."""

    dim: int
    expand_ratio: float
    scales: tuple[int, ...]
    act: str
    eps: float
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x, train=False):
        attn = functools.partial(LiteMLA, self.dim, self.scales, self.eps, dtype=self.dtype)
        x = Residual(attn, name="context_module")(x, train)
        local = functools.partial(LocalBlock, "mb", x.shape[-1], 1, self.expand_ratio, True, self.act, self.eps,
                                  self.dtype)
        return Residual(local, name="local_module")(x, train)


class Stage(nn.Module):
    """Stage i of EfficientViTLargeBackbone ("op_list"). Stage 0: a stride-2 3x3 ConvLayer, then residual local
    blocks. Later stages: a stride-2 local block without shortcut (MBConv for attention stages, expand x 4), then
    EfficientViT blocks (attention stages) or residual local blocks."""

    config: EfficientViTConfig
    index: int
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x, train=False):
        cfg, i, dt = self.config, self.index, self.dtype
        w, block, expand = cfg.width_list[i], cfg.block_list[i], cfg.expand_list[i]
        fewer, eps, act = cfg.fewer_norm_list[i], cfg.norm_eps, cfg.act
        if i == 0:
            x = ConvLayer(w, 3, 2, act=act, axes=("in_channels", "embed"), eps=eps, dtype=dt,
                          name="op_list_0")(x, train)
        else:
            down = block if block in ("mb", "fmb") else "mb"
            block0 = functools.partial(LocalBlock, down, w, 2, expand * 4, fewer, act, eps, dt)
            x = Residual(block0, shortcut=False, name="op_list_0")(x, train)
        for j in range(1, cfg.depth_list[i] + 1):
            if block.startswith("att"):
                scales = (3,) if block == "att@3" else (5,)
                x = EfficientViTBlock(cfg.qkv_dim, expand, scales, act, eps, dt, name=f"op_list_{j}")(x, train)
            else:
                local = functools.partial(LocalBlock, block, w, 1, expand, fewer, act, eps, dt)
                x = Residual(local, name=f"op_list_{j}")(x, train)
            x = nn.with_logical_constraint(x, _BHWC)
        return x


class Backbone(nn.Module):
    """EfficientViTLargeBackbone: (B, S, S, 3) -> the output of every stage, [(B, S/2^(i+1), S/2^(i+1), width_i)]."""

    config: EfficientViTConfig
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x, train=False):
        outs = []
        for i in range(len(self.config.width_list)):
            x = Stage(self.config, i, self.dtype, name=f"stages_{i}")(x, train)
            outs.append(x)
        return outs


class NeckInput(nn.Module):
    """One neck input ("op_list"): 1x1 ConvLayer + BatchNorm to head_width, then bicubic resize to neck_size."""

    config: EfficientViTConfig
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x, train=False):
        cfg = self.config
        x = ConvLayer(cfg.head_width, 1, axes=("embed", "neck"), eps=cfg.norm_eps, dtype=self.dtype, name="op_list_0")(
            x, train)
        return resize_bicubic(x, (cfg.neck_size, cfg.neck_size))


class SamNeck(nn.Module):
    """The official SamNeck (a DAGBlock): inputs summed in order x0 + (x1 + (x2 ...)), `middle` residual blocks,
    output 1x1 conv with bias (output_ops_0)."""

    config: EfficientViTConfig
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, stages: list[jax.Array], train=False) -> jax.Array:
        cfg, dt = self.config, self.dtype
        feats = [NeckInput(cfg, dt, name=f"input_ops_{i}")(stages[s], train) for i, s in enumerate(cfg.neck_stages)]
        x = feats[-1]
        for f in feats[-2::-1]:
            x = f + x
        middle = Middle(cfg, dt, name="middle")
        x = middle(x, train)
        out = OutputOp(cfg, dt, name="output_ops_0")
        return out(x)


class Middle(nn.Module):
    """The neck's head_depth residual blocks ("op_list"): FusedMBConv (or MBConv / ResBlock per middle_op)."""

    config: EfficientViTConfig
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x, train=False):
        cfg = self.config
        for j in range(cfg.head_depth):
            block = functools.partial(LocalBlock, cfg.middle_op, cfg.head_width, 1, cfg.neck_expand_ratio, False,
                                      cfg.act, cfg.norm_eps, self.dtype)
            x = Residual(block, name=f"op_list_{j}")(x, train)
        return x


class OutputOp(nn.Module):
    """output_ops.0 = OpSequential([ConvLayer(head_width, out_chans, 1, bias, no norm)])."""

    config: EfficientViTConfig
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x):
        return ConvLayer(self.config.out_chans, 1, use_bias=True, norm=False, axes=("neck", "neck"), dtype=self.dtype,
                         name="op_list_0")(x)


class EfficientViTSamImageEncoder(nn.Module):
    """images (B, S, S, 3) normalised -> image embeddings (B, neck_size, neck_size, out_chans).

    train: BatchNorms normalise with batch statistics and update "batch_stats" (apply with mutable=["batch_stats"]);
    False (default): running statistics, the official eval mode."""

    config: EfficientViTConfig
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.config
        s = cfg.image_size
        if x.shape[1:] != (s, s, cfg.in_chans):
            raise ValueError(f"EfficientViT-SAM's encoder expects (B, {s}, {s}, {cfg.in_chans}) images, got "
                             f"{tuple(x.shape)}")
        stages = Backbone(cfg, self.dtype, name="backbone")(x.astype(self.dtype), train)
        x = SamNeck(cfg, self.dtype, name="neck")(stages, train)
        return layer_norm("neck", eps=cfg.norm_eps, name="norm", dtype=self.dtype)(x)
