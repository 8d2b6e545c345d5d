"""One decoded record -> one fixed-shape training/evaluation example (pure numpy; no grain, no JAX).

`process_record(record, ...)` returns (S = image_size, m = mask_size, M = max_masks)::

    image:       (S, S, 3) uint8    longest side resized to S (PIL bilinear, official ResizeLongestSide rounding
                                    `int(old * S / max(H, W) + 0.5)`), zero-padded bottom/right
    input_hw:    (2,) int32         valid (h, w) of `image` after the resize
    original_hw: (2,) int32         (H, W) of the JPEG
    masks:       (M, m, m) bool     target masks in the same resized+padded frame at m x m (see below)
    mask_valid:  (M,) bool          False for padding slots
    boxes:       (M, 4) float32     XYXY in pixels of the S x S input, from the mask's exact extent
    image_id:    () int64

Masks. Masks covering more than `max_area_fraction` of the image (area from the RLE) and empty masks are
dropped; of the rest, up to M are drawn without replacement by a generator seeded with (seed, epoch, image_id),
so the choice depends only on the seed, the epoch and the record. Each chosen mask is decoded (columns under its
box only) and area-averaged (PIL BOX filter) straight onto the m x m grid of the padded frame: the valid
part is `get_preprocess_shape(H, W, m)`, each cell covering (H / h_m) x (W / w_m) original pixels; a cell is True
when at least half of it is covered (PIL rounds the 0/1 average). When m x m is the original size (S = m =
max(H, W)) no resampling happens and the masks are exactly pycocotools' decode, which evaluation can use.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from samjax.data import rle
from samjax.data.example import Record
from samjax.transforms import get_preprocess_shape, resize_and_pad


class ImageDecodeError(ValueError):
    """The record's image does not decode or does not match its declared size."""


def decode_image(rec: Record) -> np.ndarray:
    """JPEG -> (H, W, 3) uint8; ImageDecodeError if broken or not height x width."""
    try:
        with Image.open(io.BytesIO(rec["jpeg"])) as im:
            img = np.asarray(im.convert("RGB"))
    except Exception as e:
        raise ImageDecodeError(f"image {rec['image_id']} ({rec['file_name']}): JPEG does not decode: {e}") from e
    if img.shape[:2] != (rec["height"], rec["width"]):
        raise ImageDecodeError(f"image {rec['image_id']}: JPEG is {img.shape[:2]}, record says "
                               f"{(rec['height'], rec['width'])}")
    return img


def select_masks(rec: Record, max_masks: int, max_area_fraction: float, seed: int, epoch: int = 0) -> np.ndarray:
    """(k,) int64 indices of the masks to use, k <= max_masks (see module docstring)."""
    n = len(rec["rle_counts"])
    if n == 0:
        return np.zeros((0,), np.int64)
    h, w = rec["height"], rec["width"]
    areas = mask_utils.area([{"size": [h, w], "counts": c} for c in rec["rle_counts"]]).astype(np.int64)
    keep = np.flatnonzero((areas > 0) & (areas <= max_area_fraction * h * w))
    rng = np.random.default_rng([seed, epoch, rec["image_id"] & (2**63 - 1)])
    return rng.permutation(keep)[:max_masks]


def mask_to_grid(counts: bytes, h0: int, w0: int, mh: int, mw: int, bbox_xywh) -> np.ndarray:
    """One RLE mask of an h0 x w0 image -> (mh, mw) bool: area average >= 0.5, computed near its box only.

    Only the original columns under the cells that meet the box are decoded (`rle.decode_columns`), and PIL's
    BOX filter averages them with the same cell geometry as a full-image resize (tests compare the two).
    """
    runs = rle.rle_runs(counts)
    rle.check_runs(runs, h0, w0)
    if (mh, mw) == (h0, w0):
        return rle.decode_columns(runs, h0, 0, w0).T.astype(bool)
    sy, sx = h0 / mh, w0 / mw
    x, y, bw, bh = (float(v) for v in bbox_xywh)
    c0, c1 = int(x // sx), min(int(np.ceil((x + bw) / sx)), mw)
    r0, r1 = int(y // sy), min(int(np.ceil((y + bh) / sy)), mh)
    out = np.zeros((mh, mw), bool)
    if c1 <= c0 or r1 <= r0:
        return out
    p0, p1 = int(c0 * sx), min(int(np.ceil(c1 * sx)), w0)  # original columns under cell columns [c0, c1)
    cols = rle.decode_columns(runs, h0, p0, p1)  # (p1 - p0, h0): the mask transposed, work transposed
    small = Image.fromarray(cols).resize((r1 - r0, c1 - c0), Image.BOX,
                                         box=(r0 * sy, c0 * sx - p0, r1 * sy, c1 * sx - p0))
    out[r0:r1, c0:c1] = np.asarray(small).T > 0
    return out


def process_record(rec: Record, *, image_size: int, mask_size: int | None = None, max_masks: int = 64,
                   max_area_fraction: float = 0.9, seed: int = 0, epoch: int = 0,
                   image: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Record -> per-image dict of fixed-shape arrays (shapes in the module docstring).

    image: the decoded (H, W, 3) uint8 image if the caller already has it (else the JPEG is decoded here).
    """
    mask_size = image_size // 4 if mask_size is None else mask_size
    img = decode_image(rec) if image is None else image
    h0, w0 = rec["height"], rec["width"]
    padded, (h, w) = resize_and_pad(img, image_size)

    idx = select_masks(rec, max_masks, max_area_fraction, seed, epoch)
    mh, mw = get_preprocess_shape(h0, w0, mask_size)
    masks = np.zeros((max_masks, mask_size, mask_size), bool)
    boxes = np.zeros((max_masks, 4), np.float32)
    valid = np.zeros((max_masks,), bool)
    if len(idx):
        rles = [{"size": [h0, w0], "counts": rec["rle_counts"][i]} for i in idx]
        xywh = mask_utils.toBbox(rles)  # exact extent of each mask, (k, 4) float64
        for j, i in enumerate(idx):
            masks[j, :mh, :mw] = mask_to_grid(rec["rle_counts"][i], h0, w0, mh, mw, xywh[j])
        sx, sy = w / w0, h / h0
        boxes[: len(idx)] = np.stack(
            [xywh[:, 0] * sx, xywh[:, 1] * sy, (xywh[:, 0] + xywh[:, 2]) * sx, (xywh[:, 1] + xywh[:, 3]) * sy], 1)
        valid[: len(idx)] = True
    return {
        "image": padded,
        "input_hw": np.array([h, w], np.int32),
        "original_hw": np.array([h0, w0], np.int32),
        "masks": masks,
        "mask_valid": valid,
        "boxes": boxes,
        "image_id": np.int64(rec["image_id"]),
    }
