"""Host-side mask encodings and clean-up for automatic mask generation.

- Uncompressed RLE exactly as segment_anything's `mask_to_rle_pytorch`: {"size": [h, w], "counts": [...]}, runs
  over the column-major (Fortran) flattening, starting with a (possibly empty) run of zeros.
- COCO compressed RLE via pycocotools (`coco_encode_rle`), decodable with `pycocotools.mask.decode`.
- `remove_small_regions`: the official clean-up (fill holes / drop islands smaller than an area) with scipy's
  8-connected labelling in place of OpenCV's `connectedComponentsWithStats(mask, 8)`: the same components, and
  components are numbered in raster order of their first pixel in both, so "keep the largest" picks the same one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

_EIGHT = np.ones((3, 3), bool)


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool -> uncompressed RLE {"size": [H, W], "counts": list[int]} (official format)."""
    h, w = mask.shape
    flat = np.ascontiguousarray(mask.T).reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    idx = np.concatenate([[0], change, [h * w]])
    counts = np.diff(idx).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [h, w], "counts": counts}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Uncompressed RLE -> (H, W) bool."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], np.int64)
    vals = (np.arange(len(counts)) % 2).astype(bool)
    return np.repeat(vals, counts).reshape(w, h).T


def area_from_rle(rle: dict[str, Any]) -> int:
    return int(sum(rle["counts"][1::2]))


def coco_encode_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """Uncompressed RLE -> COCO compressed RLE {"size", "counts": str} (JSON-serialisable)."""
    from pycocotools import mask as mask_utils

    h, w = rle["size"]
    out = mask_utils.frPyObjects(rle, h, w)
    out["counts"] = out["counts"].decode("utf-8")
    return out


def box_xyxy_to_xywh(box) -> list:
    x0, y0, x1, y1 = (v.item() if hasattr(v, "item") else v for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (4,) int64 XYXY inclusive extent, zeros if empty (as `batched_mask_to_box`)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return np.zeros(4, np.int64)
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], np.int64)


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (mode "holes") or drop islands (mode "islands") smaller than `area_thresh` pixels, with
    8-connectivity. Returns (mask, changed). Islands: if every island is small, the largest is kept."""
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    work = mask ^ holes
    labels, n = ndimage.label(work, structure=_EIGHT)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    small = np.flatnonzero(sizes < area_thresh) + 1
    if small.size == 0:
        return mask, False
    if holes:
        return mask | np.isin(labels, small), True
    big = np.setdiff1d(np.arange(1, n + 1), small)
    if big.size == 0:
        big = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(labels, big), True
