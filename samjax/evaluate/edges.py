"""Zero-shot edge detection (SAM paper §7.2, §D.2): a boundary map from SAM's masks, scored with `bsds`.

    pb = edge_map(predictor)          # the predictor's current image; (H, W) float32 in [0, 1], thinned by edge NMS

The paper's recipe: prompt with a 16 x 16 regular grid of foreground points (768 masks: 3 per point), no
predicted-IoU or stability filter, redundant masks removed by box NMS (the automatic generator's, 0.7, ranked by
predicted IoU); a Sobel filter on each remaining mask's unthresholded probability map (sigmoid of the logits at
the image's size), zero wherever it is not on the mask's outer boundary (pixels just outside the thresholded mask,
4-connected); the pixel-wise max over masks, normalised linearly to [0, 1]; edge NMS to thin the edges.

Edge NMS is the structured-edge toolbox's (Dollár & Zitnick, edgesNms, as used by every BSDS evaluation of a
dense edge map): orientation from the second derivatives of the triangle-smoothed map (convTri radius 4), a pixel
kept if it is at least 1/1.01 of its two neighbours across the edge (bilinear samples at distance 1), and the
responses within 5 pixels of the image border faded linearly.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from samjax.amg.geometry import build_point_grid, nms_host
from samjax.evaluate.batching import predict_padded

_CROSS = ndimage.generate_binary_structure(2, 1)


# ------------------------------------------------------------------------------------------------- edge NMS
def conv_tri(image: np.ndarray, r: int) -> np.ndarray:
    """The toolbox's convTri for integer r >= 1: separable triangle filter [1 .. r+1 .. 1] / (r+1)^2, edges
    mirrored ('symmetric')."""
    if r < 1:
        raise ValueError(f"radius must be >= 1, got {r}")
    f = np.concatenate([np.arange(1, r + 2), np.arange(r, 0, -1)]).astype(np.float64) / (r + 1) ** 2
    out = ndimage.convolve1d(np.asarray(image, np.float64), f, axis=0, mode="reflect")
    return ndimage.convolve1d(out, f, axis=1, mode="reflect")


def edge_orientation(edges: np.ndarray, r: int = 4) -> np.ndarray:
    """(H, W) edge normal angle in [0, pi) from the second derivatives of conv_tri(edges, r) (edgesDetect.m)."""
    oy, ox = np.gradient(conv_tri(edges, r))
    oxx = np.gradient(ox, axis=1)
    oxy, oyy = np.gradient(oy, axis=1), np.gradient(oy, axis=0)
    return np.mod(np.arctan(oyy * np.sign(-oxy) / (oxx + 1e-5)), np.pi)


def _interp(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of image at (x, y), clamped inside the image as edgesNmsMex's interp."""
    h, w = image.shape
    x = np.clip(x, 0, w - 1.001)
    y = np.clip(y, 0, h - 1.001)
    x0, y0 = x.astype(np.int64), y.astype(np.int64)
    dx, dy = x - x0, y - y0
    return (image[y0, x0] * (1 - dx) * (1 - dy) + image[y0, x0 + 1] * dx * (1 - dy)
            + image[y0 + 1, x0] * (1 - dx) * dy + image[y0 + 1, x0 + 1] * dx * dy)


def edge_nms(edges: np.ndarray, orientation: np.ndarray | None = None, r: int = 1, s: int = 5,
             m: float = 1.01) -> np.ndarray:
    """Non-maximum suppression of an (H, W) edge map across the edge direction (edgesNmsMex(E, O, r, s, m))."""
    edges = np.asarray(edges, np.float64)
    if edges.ndim != 2:
        raise ValueError(f"edges must be (H, W), got {edges.shape}")
    o = edge_orientation(edges) if orientation is None else np.asarray(orientation, np.float64)
    h, w = edges.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    cos, sin = np.cos(o), np.sin(o)
    keep = edges != 0
    for d in range(-r, r + 1):
        if d:
            keep &= ~(edges * m < _interp(edges, xs + d * cos, ys + d * sin))
    out = np.where(keep, edges, 0.0)
    s = min(s, w // 2, h // 2)
    for k in range(s):  # fade the responses near the border, as the toolbox (corners twice)
        out[:, k] *= k / s
        out[:, w - 1 - k] *= k / s
    for k in range(s):
        out[k, :] *= k / s
        out[h - 1 - k, :] *= k / s
    return out


# ------------------------------------------------------------------------------------------ SAM edge maps
def mask_boundary_responses(logits: np.ndarray, threshold: float = 0.0) -> tuple[list, list, np.ndarray, np.ndarray]:
    """Per mask of logits (N, H, W): the Sobel magnitude of sigmoid(logits) on the mask's outer boundary, sparse.

    Returns (flat pixel indices per mask, values per mask, boxes (N, 4) XYXY inclusive of the thresholded masks
    (zeros for an empty mask, as the generator's boxes), areas (N,) in pixels). The Sobel filter is scipy's
    (`ndimage.sobel`, edges mirrored) evaluated at the boundary pixels only: a mask costs its perimeter, not its
    image (768 masks per image)."""
    logits = np.asarray(logits, np.float32)
    n, h, w = logits.shape
    idx, vals, boxes = [], [], np.zeros((n, 4), np.float32)
    areas = np.zeros((n,), np.int64)
    for k, lg in enumerate(logits):
        mask = lg > threshold
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if not rows.size:
            idx.append(np.zeros((0,), np.int64))
            vals.append(np.zeros((0,)))
            continue
        areas[k] = mask.sum()
        boxes[k] = (cols[0], rows[0], cols[-1], rows[-1])
        r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, h)
        c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, w)
        crop = mask[r0:r1, c0:c1]
        ys, xs = np.nonzero(ndimage.binary_dilation(crop, _CROSS) & ~crop)
        ys, xs = ys + r0, xs + c0
        near = {(dy, dx): 1.0 / (1.0 + np.exp(-lg[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)]
                                               .astype(np.float64)))
                for dy in (-1, 0, 1) for dx in (-1, 0, 1)}  # clipping at the border = sobel's 'reflect' for 1 px
        gx = sum(wt * (near[dy, 1] - near[dy, -1]) for dy, wt in ((-1, 1), (0, 2), (1, 1)))
        gy = sum(wt * (near[1, dx] - near[-1, dx]) for dx, wt in ((-1, 1), (0, 2), (1, 1)))
        idx.append(ys * w + xs)
        vals.append(np.hypot(gx, gy))
    return idx, vals, boxes, areas


def edge_map(predictor, points_per_side: int = 16, nms_thresh: float = 0.7, batch: int = 64,
             apply_nms: bool = True) -> np.ndarray:
    """The paper's boundary map of the predictor's current image (see module docstring): (H, W) float64 in [0, 1].

    `predictor`: a samjax.infer.Predictor (or anything with its predict_batch and original_size) with an image set."""
    h, w = predictor.original_size
    points = build_point_grid(points_per_side) * np.array([[w, h]], np.float64)
    threshold = getattr(getattr(predictor, "config", None), "mask_threshold", 0.0)
    batch = min(batch, len(points))  # every call the same size (batching.py)
    all_idx, all_vals, all_boxes, all_scores, all_areas = [], [], [], [], []
    for start in range(0, len(points), batch):
        pts = points[start:start + batch]
        logits, iou, _ = predict_padded(predictor, batch, point_coords=pts[:, None],
                                        point_labels=np.ones((len(pts), 1)), multimask_output=True,
                                        return_logits=True)
        n, c = logits.shape[:2]
        idx, vals, boxes, areas = mask_boundary_responses(logits.reshape(n * c, h, w), threshold)
        all_idx += idx
        all_vals += vals
        all_boxes.append(boxes)
        all_areas.append(areas)
        all_scores.append(np.asarray(iou, np.float32).reshape(-1))
    boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
    nonempty = np.flatnonzero(np.concatenate(all_areas) > 0)  # the generator's NMS sees every non-empty mask
    keep = nonempty[nms_host(boxes[nonempty], scores[nonempty], nms_thresh)] if len(nonempty) else nonempty
    out = np.zeros(h * w)
    if len(keep):
        np.maximum.at(out, np.concatenate([all_idx[k] for k in keep]), np.concatenate([all_vals[k] for k in keep]))
    out = out.reshape(h, w)
    lo, hi = out.min(), out.max()
    out = (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
    return edge_nms(out) if apply_nms else out
