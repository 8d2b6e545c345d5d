"""Small pieces SAM 2's modules share: its MLP, windows, stochastic depth, torch-exact resizing, sine encodings.

Official: sam2/modeling/sam2_utils.py (MLP, DropPath, get_1d_sine_pe), backbones/utils.py (windows),
position_encoding.py (PositionEmbeddingSine), and torch's `F.interpolate` where SAM 2 calls it.

Resizing: every resize SAM 2 does has static sizes and is linear, so it is a product with an (out, in) matrix per
axis, built on the host in float64 from torch's own formulas (upsample_bicubic2d, upsample_bilinear2d with and
without antialias, nearest): exact up to float rounding, differentiable, and free of gathers on device.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from samjax.models.common import dense

f32 = jnp.float32


class MLP(nn.Module):
    """sam2_utils.MLP: `num_layers` Linear layers named layers_{i}, `act` between them (not after the last).
    axes: (input, hidden, output) logical names."""

    hidden_dim: int
    output_dim: int
    num_layers: int
    axes: tuple[str, str, str]
    act: Callable = nn.relu
    sigmoid_output: bool = False
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            axes = (self.axes[0] if i == 0 else self.axes[1], self.axes[2] if last else self.axes[1])
            x = dense(self.output_dim if last else self.hidden_dim, axes, name=f"layers_{i}", dtype=self.dtype)(x)
            if not last:
                x = self.act(x)
        return nn.sigmoid(x) if self.sigmoid_output else x


def window_partition(x: jax.Array, window: int) -> tuple[jax.Array, tuple[int, int]]:
    """(B, H, W, C) -> (B * nH * nW, window, window, C), H and W zero-padded up to multiples of `window`
    (the padding takes part in attention, as officially). Returns the windows and the padded (Hp, Wp)."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
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


def drop_path(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    """Stochastic depth on a residual branch x (B, ...): zero whole samples with probability `rate`, rescale the
    rest."""
    if rate == 0.0 or rng is None:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


# ----------------------------------------------------------------------------------------------- resizing ---

@functools.lru_cache(maxsize=64)
def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) float64: torch's bicubic resize (align_corners=False, no antialias, A = -0.75, borders clamped)."""
    a = -0.75
    scale = in_size / out_size
    m = np.zeros((out_size, in_size))
    for i in range(out_size):
        real = scale * (i + 0.5) - 0.5  # bicubic does not clamp the source index at 0
        x0 = math.floor(real)
        t = real - x0
        coeffs = (((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
                  ((a + 2) * t - (a + 3)) * t * t + 1,
                  ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
                  ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a)
        for k, c in enumerate(coeffs):
            m[i, min(max(x0 - 1 + k, 0), in_size - 1)] += c
    return m


@functools.lru_cache(maxsize=64)
def bilinear_matrix(in_size: int, out_size: int, antialias: bool = False) -> np.ndarray:
    """(out, in) float64: torch's bilinear resize, align_corners=False; with `antialias` (only differs when
    shrinking) the triangle filter is widened by the scale and renormalised (upsample_bilinear2d_aa)."""
    scale = in_size / out_size
    m = np.zeros((out_size, in_size))
    if antialias:
        support = max(scale, 1.0)
        inv = 1.0 / scale if scale >= 1.0 else 1.0
        for i in range(out_size):
            center = scale * (i + 0.5)
            lo = max(int(center - support + 0.5), 0)
            hi = min(int(center + support + 0.5), in_size)
            w = np.array([max(0.0, 1.0 - abs((j - center + 0.5) * inv)) for j in range(lo, hi)])
            m[i, lo:hi] = w / w.sum() if w.sum() else w
        return m
    src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = src - i0
    np.add.at(m, (np.arange(out_size), i0), 1.0 - frac)
    np.add.at(m, (np.arange(out_size), i1), frac)
    return m


def resize_hw(x: jax.Array, mh: np.ndarray, mw: np.ndarray, layout: str = "nhwc") -> jax.Array:
    """Apply per-axis (out, in) matrices to the spatial axes of x: "nhwc" (..., H, W, C) or "hw" (..., H, W).
    float32 with full-precision products (the matrices' weights do not survive bfloat16 passes)."""
    hi = jax.lax.Precision.HIGHEST
    mh, mw = jnp.asarray(mh, f32), jnp.asarray(mw, f32)
    x = x.astype(f32)
    if layout == "nhwc":
        return jnp.einsum("Hh,Ww,...hwc->...HWc", mh, mw, x, precision=hi)
    return jnp.einsum("Hh,Ww,...hw->...HW", mh, mw, x, precision=hi)


def resize_bilinear(x: jax.Array, size: tuple[int, int], antialias: bool = False, layout: str = "hw") -> jax.Array:
    """torch `F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=antialias)` on (..., H, W)
    ("hw") or (..., H, W, C) ("nhwc") arrays."""
    h, w = (x.shape[-2:] if layout == "hw" else x.shape[-3:-1])
    if (h, w) == tuple(size):
        return x.astype(f32)
    return resize_hw(x, bilinear_matrix(h, size[0], antialias), bilinear_matrix(w, size[1], antialias), layout)


# ------------------------------------------------------------------------------------- sine encodings ---

@functools.lru_cache(maxsize=32)
def sine_position_encoding(h: int, w: int, channels: int, temperature: float = 10000.0) -> np.ndarray:
    """PositionEmbeddingSine(channels, normalize=True) of an (h, w) grid: (1, h, w, channels) float32, y half
    first. Channel j of each half is sin (j even) / cos (j odd) of pos / temperature^(2 floor(j/2) / (channels/2)),
    positions 1..n normalised by n (+1e-6) and scaled to 2 pi. A constant of the shape (not a parameter)."""
    npf = channels // 2
    scale = 2 * math.pi
    y = np.arange(1, h + 1, dtype=np.float64) / (h + 1e-6) * scale
    x = np.arange(1, w + 1, dtype=np.float64) / (w + 1e-6) * scale
    dim_t = temperature ** (2 * (np.arange(npf) // 2) / npf)

    def enc(p):  # (n,) -> (n, npf): interleaved sin / cos, as torch.stack((sin 0::2, cos 1::2), -1).flatten
        a = p[:, None] / dim_t
        return np.where(np.arange(npf) % 2 == 0, np.sin(a), np.cos(a))

    pos_y = np.broadcast_to(enc(y)[:, None, :], (h, w, npf))
    pos_x = np.broadcast_to(enc(x)[None, :, :], (h, w, npf))
    return np.concatenate([pos_y, pos_x], axis=-1)[None].astype(np.float32)


def sine_1d(pos: jax.Array, dim: int, temperature: float = 10000.0) -> jax.Array:
    """get_1d_sine_pe: pos (...,) float -> (..., dim) = [sin(pos / dim_t), cos(pos / dim_t)], dim_t over dim / 2."""
    pe_dim = dim // 2
    dim_t = jnp.asarray(temperature ** (2 * (np.arange(pe_dim) // 2) / pe_dim), f32)
    a = pos.astype(f32)[..., None] / dim_t
    return jnp.concatenate([jnp.sin(a), jnp.cos(a)], axis=-1)


def max_pool(x: jax.Array, stride: int) -> jax.Array:
    """nn.MaxPool2d(stride, stride, ceil_mode=False) on (B, H, W, C): trailing rows/columns that do not fill a
    window are dropped."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, stride, stride, 1), (1, stride, stride, 1), "VALID")


def check_shape(name: str, x: jax.Array, expected: Sequence[int | None]) -> None:
    """Raise a ValueError naming `name` if x's shape does not match `expected` (None: any size)."""
    if len(x.shape) != len(expected) or any(e is not None and s != e for s, e in zip(x.shape, expected)):
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
