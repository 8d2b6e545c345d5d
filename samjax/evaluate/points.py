"""Zero-shot point-prompt evaluation (SAM paper §7.1, §D.1) on COCO-format datasets: mIoU after 1..N clicks.

    ious, oracle = evaluate_masks(predictor, gt_masks, num_clicks=9)   # the predictor's current image
    summary = summarize(records, num_clicks=9)                           # per dataset and averaged over datasets

The protocol, as the paper states it (standard in interactive segmentation; RITM's clicker):
- click 1 at the point farthest from the object's boundary: the maximum of the distance transform of the mask's
  interior, the image border counting as boundary (first such pixel in raster order);
- every next click at the maximum of the distance transform of the error region of the previous prediction: of
  the false negatives (a foreground click) if their maximum is larger, else of the false positives (a background
  click); pixels already clicked are not clicked again;
- click 1 uses SAM's three outputs, the one SAM ranks first (highest predicted IoU) scored by default and the best
  of the three against the ground truth as the "oracle"; later clicks give all clicks so far plus the previous
  prediction's low-res logits as the mask prompt, single-output (as SAM's interactive training);
- a mask predicted exactly keeps its IoU (1.0) for the remaining clicks (there is no error left to click on);
- IoU at the image's resolution; per dataset the mean over masks, then the mean over datasets (the paper's
  top-line number). Crowd regions are skipped, and masks smaller than `min_area` pixels: 24^2 by default, the
  paper's size filter (§E: "masks with a size smaller than 24^2 pixels were excluded from sampling").
Clicks are given to SAM as (x, y) = (column, row) pixel indices (its prompt encoder adds the half pixel).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from samjax.evaluate.batching import predict_padded
from samjax.evaluate.report import fmt, markdown_table

MIN_AREA = 24 * 24
PAPER_CLICKS = (1, 2, 3, 5, 9)


def _region_dt(region: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Distance transform of a bool region inside its bounding box (+1 px of background, the image border outside
    counting as background): (dt, (row0, col0) of the crop). Equal to the full image's transform on the box."""
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.pad(region[r0:r1, c0:c1], 1)
    return ndimage.distance_transform_edt(crop)[1:-1, 1:-1], (r0, c0)


def next_click(pred: np.ndarray, gt: np.ndarray, clicked: set | frozenset = frozenset()
               ) -> tuple[int, int, bool] | None:
    """RITM's next click for prediction `pred` of `gt` ((H, W) bool): (row, col, is_foreground), or None when
    there is nothing left to click (no error, or only clicked pixels). pred all False gives the first click."""
    found = {}  # positive -> (max distance, row, col)
    for positive, region in ((True, gt & ~pred), (False, pred & ~gt)):
        if not region.any():
            continue
        dt, (r0, c0) = _region_dt(region)
        for r, c in clicked:  # already clicked pixels do not count (RITM's not_clicked_map)
            if r0 <= r < r0 + dt.shape[0] and c0 <= c < c0 + dt.shape[1]:
                dt[r - r0, c - c0] = 0
        k = int(np.argmax(dt))
        if dt.flat[k] > 0:
            found[positive] = (float(dt.flat[k]), r0 + k // dt.shape[1], c0 + k % dt.shape[1])
    if not found:
        return None
    fn, fp = found.get(True, (0.0,))[0], found.get(False, (0.0,))[0]
    positive = fn > fp  # ties go to the background click, as RITM's
    _, r, c = found[positive]
    return int(r), int(c), positive


def _ious(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(B, H, W) x (B, H, W) bool -> (B,) IoU."""
    inter = np.logical_and(pred, gt).sum((-2, -1))
    union = np.logical_or(pred, gt).sum((-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def evaluate_masks(predictor, gts: np.ndarray, num_clicks: int = 9, batch: int = 32,
                   use_mask_input: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The point protocol for every ground-truth mask gts (K, H, W) bool of the predictor's current image.

    `predictor`: a samjax.infer.Predictor (or anything with its predict_batch) with the image set. The masks of
    a chunk of `batch` are prompted together, one predict_batch call per click (padded to `batch`: `batching`).
    Returns ious (K, num_clicks) (column t: after t + 1 clicks) and oracle (K,) (best of click 1's three)."""
    gts = np.asarray(gts, bool)
    k_all = len(gts)
    ious = np.zeros((k_all, num_clicks))
    oracle = np.zeros((k_all,))
    for start in range(0, k_all, batch):
        gt = gts[start:start + batch]
        n = len(gt)
        clicks = [[next_click(np.zeros_like(g), g)] for g in gt]  # never None: masks are not empty
        coords = np.array([[[c[1], c[0]]] for (c,) in clicks], np.float64)
        labels = np.ones((n, 1), np.int32)
        masks, scores, low = predict_padded(predictor, batch, point_coords=coords, point_labels=labels,
                                            multimask_output=True)
        best = np.argmax(scores, axis=1)
        pred = masks[np.arange(n), best]
        iou = _ious(pred, gt)
        oracle[start:start + n] = _ious(masks, gt[:, None]).max(1)
        ious[start:start + n, 0] = iou
        prev = low[np.arange(n), best]
        preds = list(pred)
        active = np.arange(n)
        for t in range(1, num_clicks):
            new = {i: next_click(preds[i], gt[i], {(r, c) for r, c, _ in clicks[i]}) for i in active}
            active = np.array([i for i in active if new[i] is not None], np.int64)
            for i in active:
                clicks[i].append(new[i])
            ious[start:start + n, t] = ious[start:start + n, t - 1]  # masks with nothing to click keep their IoU
            if not len(active):
                continue
            coords = np.array([[[c, r] for r, c, _ in clicks[i]] for i in active], np.float64)
            labels = np.array([[int(p) for _, _, p in clicks[i]] for i in active], np.int32)
            masks, _, low = predict_padded(predictor, batch, point_coords=coords, point_labels=labels,
                                           mask_input=prev[active][:, None] if use_mask_input else None,
                                           multimask_output=False)
            prev[active] = low[:, 0]
            for j, i in enumerate(active):
                preds[i] = masks[j, 0]
            ious[start + active, t] = _ious(masks[:, 0], gt[active])
    return ious, oracle


def summarize(records: list[dict], num_clicks: int) -> dict:
    """Per-dataset mIoU after each number of clicks and the 1-click oracle, and their means over datasets."""
    per: dict[str, dict] = {}
    for rec in records:
        d = per.setdefault(rec["dataset"], {"ious": [], "oracle": [], "images": 0})
        d["images"] += 1
        d["ious"] += rec["ious"]
        d["oracle"] += rec["oracle"]
    datasets = {}
    for name, d in per.items():
        ious = np.asarray(d["ious"], np.float64).reshape(-1, num_clicks)
        datasets[name] = {"num_images": d["images"], "num_masks": len(ious),
                          "miou": [float(x) for x in ious.mean(0)] if len(ious) else [float("nan")] * num_clicks,
                          "miou_oracle_1": float(np.mean(d["oracle"])) if d["oracle"] else float("nan")}
    scored = [v for v in datasets.values() if v["num_masks"]]
    mean = {"num_datasets": len(scored),
            "miou": [float(np.mean([v["miou"][t] for v in scored])) if scored else float("nan")
                     for t in range(num_clicks)],
            "miou_oracle_1": float(np.mean([v["miou_oracle_1"] for v in scored])) if scored else float("nan")}
    return {"num_clicks": num_clicks, "datasets": datasets, "mean": mean}


def table(summary: dict) -> str:
    n = summary["num_clicks"]
    cols = [k for k in PAPER_CLICKS if k <= n] or list(range(1, n + 1))
    header = ["dataset", "masks", "1 pt oracle"] + [f"{k} pt{'s' if k > 1 else ''}" for k in cols]
    rows = [[name, d["num_masks"], fmt(d["miou_oracle_1"])] + [fmt(d["miou"][k - 1]) for k in cols]
            for name, d in sorted(summary["datasets"].items())]
    m = summary["mean"]
    rows.append([f"**mean over {m['num_datasets']} datasets**", "", fmt(m["miou_oracle_1"])]
                + [fmt(m["miou"][k - 1]) for k in cols])
    return markdown_table(header, rows)
