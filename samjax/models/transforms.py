"""Pre- and post-processing exactly as the official code does it.

Official: segment_anything/utils/transforms.py (ResizeLongestSide) and Sam.preprocess / Sam.postprocess_masks.

- Images are resized on the host with PIL's bilinear filter (what torchvision's `resize` does to a PIL
  image), longest side to `image_size`, then normalised with the pixel mean/std and zero-padded bottom/right.
- Low-res mask logits go back to the original image size with bilinear interpolation in torch's
  `align_corners=False` convention, no antialiasing. Upscale -> crop -> resize is linear, so it is folded into
  one (out, in) matrix per axis, built in float64 on the host: two small matmuls on device, one compile per
  original size.
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


def postprocess_masks(masks: jax.Array, input_size: tuple[int, int], original_size: tuple[int, int],
                      image_size: int) -> jax.Array:
    """Low-res logits (..., 4g, 4g) -> logits at the original image size (..., H, W). Sizes are static."""
    low_h, low_w = masks.shape[-2:]
    m_h = jnp.asarray(postprocess_matrix(low_h, image_size, input_size[0], original_size[0]))
    m_w = jnp.asarray(postprocess_matrix(low_w, image_size, input_size[1], original_size[1]))
    return resize_with_matrices(masks, m_h, m_w)


def resize_with_matrices(masks: jax.Array, m_h: jax.Array, m_w: jax.Array) -> jax.Array:
    """(..., h, w) -> (..., H, W) with per-axis matrices m_h (H, h), m_w (W, w) (see postprocess_matrix). The
    matrices may be traced data, so one compiled function can serve many sizes (rows of zeros pad them). The
    axis whose first product is cheaper goes first (fewer multiply-adds: landscape H first, portrait W first)."""
    hi = jax.lax.Precision.HIGHEST
    (big_h, h), (big_w, w) = m_h.shape, m_w.shape
    masks = masks.astype(jnp.float32)
    if big_h * h * w + big_h * w * big_w <= h * w * big_w + big_h * h * big_w:
        x = jnp.einsum("Hh,...hw->...Hw", m_h, masks, precision=hi)
        return jnp.einsum("...Hw,Ww->...HW", x, m_w, precision=hi)
    x = jnp.einsum("...hw,Ww->...hW", masks, m_w, precision=hi)
    return jnp.einsum("Hh,...hW->...HW", m_h, x, precision=hi)
