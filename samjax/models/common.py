"""Layers shared by the three SAM modules (official: segment_anything/modeling/common.py).

Every parameter is created through `nn.with_logical_partitioning` with names from `samjax.parallel`, so a
mesh can shard it later. Parameters are float32; `dtype` is the compute dtype. Layout is NHWC throughout.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
f32 = jnp.float32


def partitioned(init: Callable, axes: Sequence[str | None]) -> Callable:
    """`init` with logical axis names. A name may appear only once per array, so where a square layer names
    both sides alike (e.g. neck 3x3 conv: neck -> neck) the earlier (input) side is left unnamed: replicated."""
    axes = tuple(axes)
    return nn.with_logical_partitioning(init, tuple(None if a in axes[i + 1:] else a for i, a in enumerate(axes)))


def gelu(x):
    """torch.nn.GELU(): the exact form 0.5 x (1 + erf(x / sqrt 2)), as torch computes it, in float32.

    Not `jax.nn.gelu(approximate=False)`: that one goes through erfc, which XLA expands into two branches of
    exp/polynomial code; on an H200 ViT-H's 32 GELUs over (8, 64, 64, 5120) took 23 ms of a 126 ms encoder call
    that way, against a few ms for erf's single rational approximation (benchmarks/profile.py)."""
    y = x.astype(jnp.float32)
    return (0.5 * y * (1.0 + jax.lax.erf(y * np.float32(1 / np.sqrt(2))))).astype(x.dtype)


def dense(features: int, axes: tuple[str | None, str | None], *, name: str | None = None, dtype: Dtype,
          use_bias: bool = True) -> nn.Dense:
    """A Linear layer; `axes` names (input features, output features). `name`: None inside `setup`."""
    return nn.Dense(
        features, use_bias=use_bias, dtype=dtype, param_dtype=f32, name=name,
        kernel_init=partitioned(nn.initializers.xavier_uniform(), axes),
        bias_init=partitioned(nn.initializers.zeros_init(), axes[1:]),
    )


def conv(features: int, kernel: int, *, stride: int = 1, padding: int = 0, axes: tuple[str | None, str | None],
         name: str | None = None, dtype: Dtype, use_bias: bool = True) -> nn.Module:
    """A square Conv2d; `axes` names (input channels, output channels). Kernel layout (kh, kw, in, out).

    Where the kernel tiles the input (stride == kernel, no padding: the patch embedding, the mask downscaling, 1x1
    convolutions) it is a `PatchConv`, with the same parameters."""
    if stride == kernel and padding == 0:
        return PatchConv(features, kernel, axes, dtype=dtype, use_bias=use_bias, name=name)
    return nn.Conv(
        features, (kernel, kernel), strides=(stride, stride), padding=((padding, padding), (padding, padding)),
        use_bias=use_bias, dtype=dtype, param_dtype=f32, name=name,
        kernel_init=partitioned(nn.initializers.lecun_normal(), ("conv_h", "conv_w", *axes)),
        bias_init=partitioned(nn.initializers.zeros_init(), axes[1:]),
    )


class PatchConv(nn.Module):
    """Conv2d(kernel_size=k, stride=k, padding=0) as one product per k x k patch: x (B, H, W, in) -> (B, H/k, W/k,
    out), H and W multiples of k. Parameters as nn.Conv's: kernel (k, k, in, out), bias (out,).

    The same sums as the convolution, as a matrix product: no cuDNN convolution over a few channels and no layout
    passes around it on GPU (the mask downscaling's 1 -> 4 -> 16 channels, every prompt round of a training step)."""

    features: int
    kernel_size: int
    axes: tuple[str | None, str | None]
    dtype: Dtype = f32
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        b, h, w, c = x.shape
        if h % k or w % k:
            raise ValueError(f"{self.name}: a {k}x{k} stride-{k} convolution needs H and W multiples of {k}, "
                             f"got {tuple(x.shape)}")
        kernel = self.param("kernel", partitioned(nn.initializers.lecun_normal(), ("conv_h", "conv_w", *self.axes)),
                            (k, k, c, self.features), f32)
        patches = x.astype(self.dtype).reshape(b, h // k, k, w // k, k, c)
        y = jnp.einsum("bhpwqc,pqco->bhwo", patches, kernel.astype(self.dtype))
        if self.use_bias:
            bias = self.param("bias", partitioned(nn.initializers.zeros_init(), self.axes[1:]), (self.features,), f32)
            y = y + bias.astype(self.dtype)
        return y


def layer_norm(axis_name: str, *, eps: float, name: str | None = None, dtype: Dtype) -> nn.Module:
    """torch.nn.LayerNorm over the last axis (also LayerNorm2d in NHWC). Two-pass variance, as torch. In a compute
    dtype narrower than float32 it is `LowPrecisionLayerNorm` (same parameters and forward values)."""
    if jnp.dtype(dtype).itemsize < 4:
        return LowPrecisionLayerNorm(axis_name, eps, dtype, name=name)
    return nn.LayerNorm(
        epsilon=eps, dtype=dtype, param_dtype=f32, use_fast_variance=False, name=name,
        scale_init=partitioned(nn.initializers.ones_init(), (axis_name,)),
        bias_init=partitioned(nn.initializers.zeros_init(), (axis_name,)),
    )


class LowPrecisionLayerNorm(nn.Module):
    """LayerNorm for bfloat16 / float16 activations: statistics and arithmetic in float32 as nn.LayerNorm, but the
    backward pass keeps only the input (in its own dtype) and two float32 numbers per row (mean, 1/std), recomputing
    the normalised values: autodiff of the float32 arithmetic would keep float32 copies of whole activations (the
    mask decoder's per-prompt image side: (prompts, 4096, 256) float32 per LayerNorm per round). Parameters `scale`,
    `bias` as nn.LayerNorm's."""

    axis_name: str
    eps: float
    dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", partitioned(nn.initializers.ones_init(), (self.axis_name,)), (c,), f32)
        bias = self.param("bias", partitioned(nn.initializers.zeros_init(), (self.axis_name,)), (c,), f32)
        return _low_precision_ln(x.astype(self.dtype), scale, bias, self.eps)


def _ln_stats(x: jax.Array, eps: float):
    xf = x.astype(f32)
    mean = xf.mean(-1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.square(xf - mean).mean(-1, keepdims=True) + eps)
    return xf, mean, rstd


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _low_precision_ln(x, scale, bias, eps):
    xf, mean, rstd = _ln_stats(x, eps)
    return ((xf - mean) * rstd * scale + bias).astype(x.dtype)


def _low_precision_ln_fwd(x, scale, bias, eps):
    xf, mean, rstd = _ln_stats(x, eps)
    return ((xf - mean) * rstd * scale + bias).astype(x.dtype), (x, mean, rstd, scale)


def _low_precision_ln_bwd(eps, res, g):
    x, mean, rstd, scale = res
    xhat = (x.astype(f32) - mean) * rstd
    gf = g.astype(f32)
    rows = tuple(range(g.ndim - 1))
    gx = gf * scale
    dx = rstd * (gx - gx.mean(-1, keepdims=True) - xhat * (gx * xhat).mean(-1, keepdims=True))
    return dx.astype(x.dtype), (gf * xhat).sum(rows), gf.sum(rows)


_low_precision_ln.defvjp(_low_precision_ln_fwd, _low_precision_ln_bwd)


class Embedding(nn.Module):
    """nn.Embedding used as a table of learned tokens: returns the whole (num, dim) table."""

    num: int
    dim: int
    dtype: Dtype = f32

    @nn.compact
    def __call__(self) -> jax.Array:
        table = self.param("embedding", partitioned(nn.initializers.normal(1.0), ("tokens", "prompt_embed")),
                           (self.num, self.dim), f32)
        return table.astype(self.dtype)


def cast_einsum(spec: str, x: jax.Array, y: jax.Array, operand_dtype: Dtype | None = None) -> jax.Array:
    """jnp.einsum(spec, x, y); with operand_dtype, both operands cast to it and the product accumulated and
    returned in float32 (`SamConfig.decoder_matmul_dtype`)."""
    if operand_dtype is None:
        return jnp.einsum(spec, x, y)
    return jnp.einsum(spec, x.astype(operand_dtype), y.astype(operand_dtype), preferred_element_type=f32)


class ConvTranspose2x2(nn.Module):
    """ConvTranspose2d(kernel_size=2, stride=2): each input pixel writes its own 2x2 output block.

    kernel: (2, 2, in, out); official weight (in, out, 2, 2). x: (B, H, W, in) -> (B, 2H, 2W, out).
    With `blocks=True` the 2x2 block stays in two axes of its own, x (..., in) -> (..., 2, 2, out), row offset
    first: no interleaving transpose, for callers that apply more per-pixel layers before they need the image.
    operand_dtype: the product's operands cast to it, accumulated in float32 (`SamConfig.decoder_matmul_dtype`).
    """

    features: int
    axes: tuple[str | None, str | None]
    dtype: Dtype = f32
    operand_dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, blocks: bool = False) -> jax.Array:
        kernel = self.param("kernel", partitioned(nn.initializers.lecun_normal(in_axis=2, out_axis=3),
                                                  ("conv_h", "conv_w", *self.axes)),
                            (2, 2, x.shape[-1], self.features), f32)
        bias = self.param("bias", partitioned(nn.initializers.zeros_init(), self.axes[1:]), (self.features,), f32)
        y = cast_einsum("...i,acio->...aco", x.astype(self.dtype), kernel.astype(self.dtype), self.operand_dtype)
        y = y.astype(self.dtype) + bias.astype(self.dtype)
        if blocks:
            return y
        b, h, w = x.shape[:3]
        return y.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, self.features)


class MLPBlock(nn.Module):
    """lin1 -> act -> lin2 (official MLPBlock). `axes` names (model width, hidden width)."""

    embedding_dim: int
    mlp_dim: int
    axes: tuple[str, str]
    act: Callable = gelu
    dtype: Dtype = f32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = dense(self.mlp_dim, self.axes, name="lin1", dtype=self.dtype)(x)
        x = self.act(x)
        return dense(self.embedding_dim, self.axes[::-1], name="lin2", dtype=self.dtype)(x)


class MLP(nn.Module):
    """The decoder's small MLPs (official mask_decoder.MLP): `num_layers` Linear layers, ReLU between."""

    hidden_dim: int
    output_dim: int
    num_layers: int
    sigmoid_output: bool = False
    dtype: Dtype = f32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            axes = ("prompt_embed" if i == 0 else "prompt_mlp", "prompt_embed" if last else "prompt_mlp")
            x = dense(self.output_dim if last else self.hidden_dim, axes, name=f"layers_{i}", dtype=self.dtype)(x)
            if not last:
                x = nn.relu(x)
        return nn.sigmoid(x) if self.sigmoid_output else x
