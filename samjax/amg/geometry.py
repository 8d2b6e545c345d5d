"""Automatic-mask-generation building blocks: point grids, crop boxes, and the on-device filters.

Same semantics as segment_anything/utils/amg.py and torchvision's `batched_nms`, but the filters work on
static shapes so they can run inside `jax.jit`: instead of dropping rows, every function takes and returns a
`valid` (N,) bool vector. Host-side helpers (RLE, small regions) live in `samjax.amg.mask_io`.

Shapes: N candidate masks, (H, W) the mask size, boxes (N, 4) XYXY with inclusive pixel indices as the official
`batched_mask_to_box` (an empty mask gives [0, 0, 0, 0]).
"""

from __future__ import annotations

import math
from itertools import product

import jax
import jax.numpy as jnp
import numpy as np


# ----------------------------------------------------------------------------------------- grids and crops
def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) float64 (x, y) in [0, 1]: cell centres of an n x n grid, x fastest (official order)."""
    half = 1 / (2 * n_per_side)
    side = np.linspace(half, 1 - half, n_per_side)
    xs = np.broadcast_to(side[None, :], (n_per_side, n_per_side))
    ys = np.broadcast_to(side[:, None], (n_per_side, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer; layer i has int(n_per_side / scale_per_layer**i) points per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer ** i))) for i in range(n_layers + 1)]


def generate_crop_boxes(im_size: tuple[int, int], n_layers: int, overlap_ratio: float
                        ) -> tuple[list[list[int]], list[int]]:
    """Crop boxes XYXY (ints) and their layer index: the whole image, then (2**i)**2 overlapping crops for
    layer i = 1..n_layers, in the official order (x0 outer, y0 inner)."""
    im_h, im_w = im_size
    short = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]
    for layer in range(1, n_layers + 1):
        n = 2 ** layer
        overlap = int(overlap_ratio * short * (2 / n))
        crop_w = int(math.ceil((overlap * (n - 1) + im_w) / n))
        crop_h = int(math.ceil((overlap * (n - 1) + im_h) / n))
        xs = [int((crop_w - overlap) * i) for i in range(n)]
        ys = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in product(xs, ys):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(layer)
    return boxes, layers


# ------------------------------------------------------------------------------------------ on-device filters
def stability_score(logits: jax.Array, mask_threshold: float, offset) -> jax.Array:
    """logits (..., H, W) -> (...,) float32: |logits > t + offset| / |logits > t - offset| (NaN if both 0)."""
    inter = jnp.sum(logits > mask_threshold + offset, axis=(-2, -1), dtype=jnp.int32)
    union = jnp.sum(logits > mask_threshold - offset, axis=(-2, -1), dtype=jnp.int32)
    return inter.astype(jnp.float32) / union.astype(jnp.float32)


def masks_to_boxes(masks: jax.Array) -> jax.Array:
    """Binary masks (..., H, W) -> (..., 4) int32 XYXY of the inclusive pixel extent; [0, 0, 0, 0] if empty."""
    h, w = masks.shape[-2:]
    rows = jnp.any(masks, axis=-1)  # (..., H)
    cols = jnp.any(masks, axis=-2)  # (..., W)
    ar_h, ar_w = jnp.arange(h, dtype=jnp.int32), jnp.arange(w, dtype=jnp.int32)
    bottom = jnp.max(jnp.where(rows, ar_h, 0), axis=-1)
    top = jnp.min(jnp.where(rows, ar_h, h), axis=-1)
    right = jnp.max(jnp.where(cols, ar_w, 0), axis=-1)
    left = jnp.min(jnp.where(cols, ar_w, w), axis=-1)
    boxes = jnp.stack([left, top, right, bottom], axis=-1)
    empty = (right < left) | (bottom < top)
    return jnp.where(empty[..., None], 0, boxes)


def box_near_crop_edge(boxes: jax.Array, crop_box: jax.Array, orig_box: jax.Array, atol: float = 20.0) -> jax.Array:
    """boxes (..., 4) in the crop frame -> (...,) bool: a side lies within `atol` px of a crop edge that is not
    also an edge of the image (such masks are probably cut off by the crop)."""
    crop_box = crop_box.astype(jnp.float32)
    b = boxes.astype(jnp.float32) + jnp.stack([crop_box[0], crop_box[1], crop_box[0], crop_box[1]])
    near_crop = jnp.abs(b - crop_box) <= atol
    near_image = jnp.abs(b - orig_box.astype(jnp.float32)) <= atol
    return jnp.any(near_crop & ~near_image, axis=-1)


def _iou_row(box: jax.Array, boxes: jax.Array, areas: jax.Array) -> jax.Array:
    """IoU of one box (4,) with boxes (N, 4), in torchvision's float32 operation order."""
    lt = jnp.maximum(box[:2], boxes[:, :2])
    rb = jnp.minimum(box[2:], boxes[:, 2:])
    wh = jnp.maximum(rb - lt, 0.0)
    inter = wh[:, 0] * wh[:, 1]
    area = (box[2] - box[0]) * (box[3] - box[1])
    return inter / (area + areas - inter)


def nms(boxes: jax.Array, scores: jax.Array, valid: jax.Array, iou_threshold) -> tuple[jax.Array, jax.Array]:
    """Greedy non-maximum suppression with static shapes (traceable; see `nms_jit` for a compiled one).

    boxes (N, 4) XYXY, scores (N,), valid (N,) bool (invalid rows take no part), iou_threshold scalar.
    Returns order (N,) int32, the candidates by descending score (ties: lower index first, a stable sort, as
    the reference `batched_nms`), and kept (N,) bool aligned with `order`: order[kept] are the survivors in
    the official output order. A box is suppressed when its IoU with an already kept box is > the threshold.
    """
    n = boxes.shape[0]
    key = jnp.where(valid, -scores.astype(jnp.float32), jnp.inf)
    order = jnp.argsort(key, stable=True).astype(jnp.int32)
    b = boxes.astype(jnp.float32)[order]
    v = valid[order]
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    def body(i, carry):
        suppressed, kept = carry
        keep_i = v[i] & ~suppressed[i]
        hit = _iou_row(b[i], b, areas) > iou_threshold
        return suppressed | (keep_i & hit), kept.at[i].set(keep_i)

    # Only valid rows are visited: invalid ones sort last, so the loop stops at the number of valid rows.
    _, kept = jax.lax.fori_loop(0, jnp.sum(v, dtype=jnp.int32), body,
                                (jnp.zeros((n,), bool), jnp.zeros((n,), bool)))
    return order, kept


nms_jit = jax.jit(nms)


def nms_host(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """NMS over host arrays (padded to a power of two so compiles are shared): indices kept, in output order."""
    n = len(boxes)
    if n == 0:
        return np.zeros((0,), np.int64)
    size = 1 << max(n - 1, 0).bit_length()
    pb = np.zeros((size, 4), np.float32)
    pb[:n] = boxes
    ps = np.zeros((size,), np.float32)
    ps[:n] = scores
    valid = np.arange(size) < n
    order, kept = nms_jit(pb, ps, valid, np.float32(iou_threshold))
    order, kept = np.asarray(order), np.asarray(kept)
    return order[kept].astype(np.int64)

