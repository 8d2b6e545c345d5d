"""Pre- and post-processing exactly as the official code does it: the one implementation that the predictor, the
automatic mask generator, the data pipeline and evaluation all use, so training and serving see the same inputs.

Official: segment_anything/utils/transforms.py (ResizeLongestSide) and Sam.preprocess / Sam.postprocess_masks.

- Images are resized on the host with PIL's bilinear filter (what torchvision's `resize` does to a PIL
  image), longest side to `image_size`, then normalised with the pixel mean/std and zero-padded bottom/right.
- Low-res mask logits go back to the original image size with bilinear interpolation in torch's
  `align_corners=False` convention, no antialiasing. Upscale -> crop -> resize is linear, so it is folded into
  one (out, in) matrix per axis, built in float64 on the host. On device each axis is a product with that
  matrix's non-zero band only (`interpolation_tiles`): one compile per original size.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image


def get_preprocess_shape(old_h: int, old_w: int, long_side: int) -> tuple[int, int]:
    """Size after resizing the longest side to `long_side` (official rounding)."""
    scale = long_side * 1.0 / max(old_h, old_w)
    new_h, new_w = old_h * scale, old_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_image(image: np.ndarray, long_side: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 with max(h, w) == long_side (PIL bilinear, as the official code)."""
    h, w = get_preprocess_shape(image.shape[0], image.shape[1], long_side)
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def apply_coords(coords: np.ndarray, original_size: tuple[int, int], long_side: int) -> np.ndarray:
    """(..., 2) (x, y) in original pixels -> the resized frame (float64, as the official numpy code)."""
    old_h, old_w = original_size
    new_h, new_w = get_preprocess_shape(old_h, old_w, long_side)
    coords = np.array(coords, dtype=np.float64, copy=True)
    coords[..., 0] *= new_w / old_w
    coords[..., 1] *= new_h / old_h
    return coords


def apply_boxes(boxes: np.ndarray, original_size: tuple[int, int], long_side: int) -> np.ndarray:
    """(B, 4) XYXY in original pixels -> the resized frame."""
    return apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size, long_side).reshape(-1, 4)


def pad_image(image: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad an (h, w, 3) image bottom/right to (size, size, 3)."""
    h, w = image.shape[:2]
    return np.pad(image, ((0, size - h), (0, size - w), (0, 0)))


def resize_and_pad(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, 3) uint8 -> ((size, size, 3) uint8, (h, w)): the longest side resized to `size` (PIL bilinear; an image
    already that size is left as it is, as PIL's resize does), zero-padded bottom/right; (h, w) is the valid size."""
    resized = resize_image(np.ascontiguousarray(image), size)
    return pad_image(resized, size), tuple(resized.shape[:2])


def normalize(images: jax.Array, input_hw: jax.Array, mean, std) -> jax.Array:
    """Sam.preprocess on device.

    images (B, S, S, 3) uint8 or float, already zero-padded; input_hw (B, 2) int: the valid (h, w) of each.
    Pixels outside the valid region become exactly 0, as the official pad-after-normalise gives. The valid size
    is data, not shape, so one compiled encoder serves every aspect ratio.
    """
    x = (images.astype(jnp.float32) - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    s_h, s_w = images.shape[1], images.shape[2]
    rows = jnp.arange(s_h)[None, :, None] < input_hw[:, 0, None, None]
    cols = jnp.arange(s_w)[None, None, :] < input_hw[:, 1, None, None]
    return jnp.where((rows & cols)[..., None], x, 0.0)


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 matrix of torch's bilinear resize, align_corners=False, no antialias."""
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = src - i0
    m = np.zeros((out_size, in_size))
    np.add.at(m, (np.arange(out_size), i0), 1.0 - frac)
    np.add.at(m, (np.arange(out_size), i1), frac)
    return m


@functools.lru_cache(maxsize=64)
def postprocess_matrix(low_res: int, image_size: int, input_len: int, original_len: int) -> np.ndarray:
    """One axis of postprocess_masks: low_res -> image_size, keep [:input_len], -> original_len. (orig, low_res)."""
    up = bilinear_matrix(low_res, image_size)[:input_len]
    return (bilinear_matrix(input_len, original_len) @ up).astype(np.float32)


# Output rows per tile of an interpolation matrix (see `interpolation_tiles`): 32 rows of a bilinear map from 256
# low-res cells span at most 16 input cells for outputs of 600 px and more. Measured on a 2-core CPU, 12 masks
# 256x256 -> 448x640: 12 ms with tiles of 32 rows (16-row windows), 17 ms with 64, 30 ms as two dense matmuls.
TILE = 32


def interpolation_tiles(m: np.ndarray, tile: int = TILE, multiple: int = 8,
                        width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """An (out, in) interpolation matrix as row tiles with their input windows, for `resize_with_tiles`.

    Bilinear maps are banded (each output mixes <= 4 neighbouring inputs), so a dense product spends ~16x the
    work on zeros. Rows are split into ceil(out / tile) tiles; tile t reads only the R consecutive inputs from
    starts[t] that its rows touch. R (the widest tile's span rounded up to `multiple`, at most `in`) is static
    for jit, the starts and weights are data. `width` fixes R instead (at most `in`; it must cover every tile's
    span), so that matrices of several sizes share one compiled resize. Returns starts (T,) int32, blocks
    (T, tile, R) float32; rows past `out` are zero.
    """
    out, n = m.shape
    nt = -(-out // tile)
    padded = np.zeros((nt * tile, n), np.float64)
    padded[:out] = m
    spans = []
    for t in range(nt):
        cols = np.flatnonzero(padded[t * tile:(t + 1) * tile].any(0))
        spans.append((cols[0], cols[-1] + 1) if len(cols) else (0, 1))
    widest = max(e - s for s, e in spans)
    if width is None:
        r = min(n, -(-widest // multiple) * multiple)
    elif widest > min(width, n):
        raise ValueError(f"a tile of the interpolation matrix spans {widest} inputs, more than width={width}")
    else:
        r = min(width, n)
    starts = np.array([min(s, n - r) for s, _ in spans], np.int32)
    blocks = np.stack([padded[t * tile:(t + 1) * tile, s:s + r] for t, s in enumerate(starts)])
    return starts, blocks.astype(np.float32)


@functools.lru_cache(maxsize=64)
def postprocess_tiles(low_res: int, image_size: int, input_len: int, original_len: int) -> tuple[np.ndarray, ...]:
    """`interpolation_tiles` of one axis' `postprocess_matrix` (cached: read only)."""
    return interpolation_tiles(postprocess_matrix(low_res, image_size, input_len, original_len))


def postprocess_masks(masks: jax.Array, input_size: tuple[int, int], original_size: tuple[int, int],
                      image_size: int) -> jax.Array:
    """Low-res logits (..., 4g, 4g) -> logits at the original image size (..., H, W). Sizes are static."""
    low_h, low_w = masks.shape[-2:]
    tiles_h = postprocess_tiles(low_h, image_size, input_size[0], original_size[0])
    tiles_w = postprocess_tiles(low_w, image_size, input_size[1], original_size[1])
    return resize_with_tiles(masks, tiles_h, tiles_w)[..., :original_size[0], :original_size[1]]


def resize_with_tiles(masks: jax.Array, tiles_h, tiles_w) -> jax.Array:
    """(..., h, w) -> (..., T_h * tile, T_w * tile) with per-axis `interpolation_tiles` (starts, blocks); the
    same values as the dense matrix products up to float rounding. The tiles may be traced data, so one compiled
    function serves many sizes with the same tile counts and windows. Width first, then height: the output of
    each tile is a small matmul with a window sliced from the input."""
    hi = jax.lax.Precision.HIGHEST
    (starts_h, blocks_h), (starts_w, blocks_w) = tiles_h, tiles_w
    x = masks.astype(jnp.float32)
    r_w, r_h = blocks_w.shape[-1], blocks_h.shape[-1]
    win = jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(x, s, r_w, axis=-1))(starts_w)  # (Tw, ..., h, Rw)
    y = jnp.einsum("tjr,t...lr->...ltj", blocks_w, win, precision=hi)
    y = y.reshape(*y.shape[:-2], -1)  # (..., h, Tw * tile)
    win = jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(y, s, r_h, axis=-2))(starts_h)  # (Th, ..., Rh, W)
    z = jnp.einsum("tir,t...rw->...tiw", blocks_h, win, precision=hi)
    return z.reshape(*z.shape[:-3], -1, z.shape[-1])
