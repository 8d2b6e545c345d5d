"""Layers shared by the convolutional SAM encoders (TinyViT for MobileSAM / HQ-SAM tiny, EfficientViT-SAM).

BatchNorm is kept as torch's BatchNorm2d, not folded into the convolutions: `scale` and `bias` are parameters and
the running statistics `mean` and `var` live in the "batch_stats" collection. Then

- conversion is a key table with an exact inverse (`to_torch` gives back the same running statistics);
- inference (train=False) uses the running statistics, as torch's eval mode: x * scale / sqrt(var + eps) + shift,
  which XLA fuses with the activation or residual add that follows (no extra pass over the activations);
- training later (MobileSAM's encoder distillation, HQ-SAM fine-tuning with the encoder frozen) can either keep the
  statistics frozen (train=False) or update them exactly as torch's train mode does (train=True with
  `mutable=["batch_stats"]`): folded weights could do neither.

Layout NHWC; convolution kernels (kh, kw, in / groups, out), torch's (out, in / groups, kh, kw) transposed.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from samjax.models.common import partitioned

Dtype = Any
f32 = jnp.float32


def gelu_tanh(x: jax.Array) -> jax.Array:
    """torch.nn.GELU(approximate="tanh"), EfficientViT's activation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    y = x.astype(f32)
    inner = np.float32(np.sqrt(2.0 / np.pi)) * (y + np.float32(0.044715) * y * y * y)
    return (0.5 * y * (1.0 + jnp.tanh(inner))).astype(x.dtype)


def conv2d(features: int, kernel: int, *, axes: tuple[str | None, str | None], stride: int = 1,
           padding: int | None = None, groups: int = 1, use_bias: bool = False, name: str | None = None,
           dtype: Dtype = f32) -> nn.Module:
    """torch.nn.Conv2d(in, features, kernel, stride, padding, groups=groups, bias=use_bias) on NHWC.

    padding: None gives kernel // 2 ("same" for odd kernels at stride 1, as TinyViT and EfficientViT pad).
    axes: logical names of (input channels, output channels); for depthwise convolutions (groups == in channels)
    the kernel's input axis has size 1 and is named None. Depthwise convolutions with one output per channel
    (groups == features) are `DepthwiseConv2d`: the same parameters, computed as a sum of shifted products."""
    pad = kernel // 2 if padding is None else padding
    in_axis = None if groups > 1 else axes[0]
    kernel_init = partitioned(nn.initializers.lecun_normal(), ("conv_h", "conv_w", in_axis, axes[1]))
    bias_init = partitioned(nn.initializers.zeros_init(), (axes[1],))
    if groups > 1 and groups == features:
        return DepthwiseConv2d(features, kernel, stride, pad, use_bias, kernel_init, bias_init, dtype, name=name)
    return nn.Conv(
        features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
        feature_group_count=groups, use_bias=use_bias, dtype=dtype, param_dtype=f32, name=name,
        kernel_init=kernel_init, bias_init=bias_init,
    )


class DepthwiseConv2d(nn.Module):
    """A depthwise convolution, one filter per channel: x (B, H, W, C) -> (B, H', W', C), H' = (H + 2 pad - kernel)
    // stride + 1. Parameters as nn.Conv's with feature_group_count=C: kernel (k, k, 1, C), bias (C,).

    Computed as the sum of the k^2 shifted, strided views of the padded input times their per-channel weights,
    accumulated in float32, which XLA fuses into one pass over the activations: the layer is memory-bound on every
    backend, and XLA:CPU's grouped convolution is several times slower than that pass on wide layers (TinyViT's
    first stage; figures in benchmarks/README.md). An input with other than C channels is an error."""

    features: int
    kernel: int
    stride: int
    pad: int
    use_bias: bool
    kernel_init: Any
    bias_init: Any
    dtype: Dtype = f32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s, p, c = self.kernel, self.stride, self.pad, self.features
        w = self.param("kernel", self.kernel_init, (k, k, 1, c), f32)
        b = self.param("bias", self.bias_init, (c,), f32) if self.use_bias else None
        if x.shape[-1] != c:
            raise ValueError(f"a depthwise convolution of {c} channels got an input of {x.shape[-1]} channels")
        h_out = (x.shape[1] + 2 * p - k) // s + 1
        w_out = (x.shape[2] + 2 * p - k) // s + 1
        xp = jnp.pad(x.astype(self.dtype), ((0, 0), (p, p), (p, p), (0, 0)))
        w = w.astype(self.dtype).astype(f32)
        y = None
        for i in range(k):
            for j in range(k):
                tap = jax.lax.slice(xp, (0, i, j, 0), (xp.shape[0], i + s * (h_out - 1) + 1,
                                                       j + s * (w_out - 1) + 1, c), (1, s, s, 1))
                term = tap.astype(f32) * w[i, j, 0]
                y = term if y is None else y + term
        if b is not None:
            y = y + b.astype(self.dtype).astype(f32)
        return y.astype(self.dtype)


class BatchNorm(nn.Module):
    """torch.nn.BatchNorm2d over the channel (last) axis: x (..., C) -> (..., C).

    Parameters scale (C,), bias (C,); "batch_stats" mean (C,), var (C,) (torch's running_mean / running_var).
    train=False: the running statistics. train=True: the batch's mean and biased variance normalise, and the running
    statistics move as torch's do, new = (1 - momentum) old + momentum batch, with the unbiased batch variance for
    `var` (needs mutable=["batch_stats"]; during `init` they are left at their initial values)."""

    axis_name: str | None
    eps: float = 1e-5
    momentum: float = 0.1
    dtype: Dtype = f32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c, axes = x.shape[-1], (self.axis_name,)
        scale = self.param("scale", partitioned(nn.initializers.ones_init(), axes), (c,), f32)
        bias = self.param("bias", partitioned(nn.initializers.zeros_init(), axes), (c,), f32)
        mean = self.variable("batch_stats", "mean", partitioned(nn.initializers.zeros_init(), axes), None, (c,), f32)
        var = self.variable("batch_stats", "var", partitioned(nn.initializers.ones_init(), axes), None, (c,), f32)
        if train:
            y = x.astype(f32)
            reduce = tuple(range(y.ndim - 1))
            mu = y.mean(reduce)
            sigma2 = jnp.square(y - mu).mean(reduce)
            if not self.is_initializing():
                n = int(np.prod([y.shape[a] for a in reduce]))
                m = self.momentum
                mean.value = (1 - m) * mean.value + m * jax.lax.stop_gradient(mu)
                var.value = (1 - m) * var.value + m * jax.lax.stop_gradient(sigma2) * (n / max(n - 1, 1))
        else:
            mu, sigma2 = mean.value, var.value
        alpha = scale * jax.lax.rsqrt(sigma2 + self.eps)
        return (x.astype(f32) * alpha + (bias - mu * alpha)).astype(self.dtype)
