"""Point-prompt mIoU and interactive clicks on SA-1B-format TFRecords: the held-out metric training reports.

    python -m samjax.evaluate tfrecord --checkpoint DIR --data "PATH/*.tfrecord" [--num-images 64] [--max-masks 16]

(`samjax.train` calls `load_examples` + `evaluate` on its eval files; `points` is the paper's protocol on COCO-format
datasets at full resolution.)

Metrics (IoU on the m x m low-res grid of each mask, m = 4g, inside the image's valid region):
  miou_1pt         one point at the mask's interior centre (maximum of the distance transform), the
                   highest-predicted-IoU of the 3 multimask outputs
  miou_1pt_oracle  same point, the best of the 3 outputs against the ground truth
  miou_click{k}    after k clicks: click 1 as above; each next click at the interior centre of the largest
                   connected error region (foreground if a false negative, background if a false positive), with
                   the previous low-res logits as the mask prompt and the single-mask output
Prompts are in the official format, as SamPredictor and training make them: the points and one not-a-point pad.
"""

from __future__ import annotations

import functools
import glob

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from samjax import transforms as T
from samjax.data.example import decode_record
from samjax.data.preprocess import process_record
from samjax.data.tfrecord import iter_records
from samjax.models import IGNORE, NOT_A_POINT, Sam, SamConfig
from samjax.transforms import get_preprocess_shape


def load_examples(files: str, config: SamConfig, num_images: int, max_masks: int, seed: int = 0) -> list[dict]:
    """The first `num_images` records of the sorted files, preprocessed (masks at m = config.mask_input_size)."""
    paths = sorted(glob.glob(files)) if glob.has_magic(files) else [files]
    if not paths:
        raise FileNotFoundError(f"no TFRecord files match {files!r}")
    out = []
    for path in paths:
        for _, data in iter_records(path):
            ex = process_record(decode_record(data), image_size=config.image_size, mask_size=config.mask_input_size,
                                max_masks=max_masks, seed=seed)
            if ex["mask_valid"].any():
                out.append(ex)
            if len(out) >= num_images:
                return out
    return out


def interior_point(region: np.ndarray) -> tuple[int, int]:
    """(row, col) of the maximum of the distance transform of a (h, w) bool region (image border = outside)."""
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(np.argmax(dist), dist.shape)
    return int(r), int(c)


def next_click(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int] | None:
    """Centre of the largest connected error region: (row, col, label 1 | 0), or None when pred == gt."""
    best = None
    for label, region in ((1, gt & ~pred), (0, pred & ~gt)):
        comp, n = ndimage.label(region)
        if n:
            sizes = np.bincount(comp.ravel())[1:]
            k = int(np.argmax(sizes))
            if best is None or sizes[k] > best[0]:
                best = (sizes[k], comp == k + 1, label)
    if best is None:
        return None
    r, c = interior_point(best[1])
    return r, c, best[2]


def cell_centre(row: int, col: int, r: float) -> tuple[float, float]:
    """(x, y) pixels of the input at the centre of low-res cell (row, col), r input pixels per cell (as
    samjax.training.prompts.cell_to_coords with no rng, on the host)."""
    return (col + 0.5) * r - 0.5, (row + 0.5) * r - 0.5


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = (pred | gt).sum()
    return float((pred & gt).sum() / union) if union else 1.0


@functools.partial(jax.jit, static_argnames=("config",))
def _embed(params, image, input_hw, *, config):
    x = T.normalize(image[None], input_hw[None], config.pixel_mean, config.pixel_std)
    return Sam(config).apply({"params": params}, x, method=Sam.embed_images)


@functools.partial(jax.jit, static_argnames=("config",))
def _decode(params, emb, coords, labels, prev, prev_valid, *, config):
    return Sam(config).apply({"params": params}, emb, coords, labels, prev, prev_valid, all_outputs=True,
                             method=Sam.decode)


def evaluate(params, config: SamConfig, examples: list[dict], clicks=(1, 3, 5), batch_masks: int = 64) -> dict:
    """Mean IoUs over all valid masks of `examples` (see module docstring). Masks are decoded `batch_masks` at a
    time (padded, so one compile)."""
    config = config.replace(encoder_drop_path_rate=0.0, encoder_remat=False)
    m, s = config.mask_input_size, config.image_size
    r = s / m
    n_tok = 1 + max(max(clicks), 1)  # slot 0 the first point, slot 1 the not-a-point pad, slot t + 1 click t + 1
    res = {"miou_1pt": [], "miou_1pt_oracle": [], **{f"miou_click{k}": [] for k in clicks}}
    for ex in examples:
        emb = _embed(params, jnp.asarray(ex["image"]), jnp.asarray(ex["input_hw"]), config=config)
        mh, mw = get_preprocess_shape(int(ex["original_hw"][0]), int(ex["original_hw"][1]), m)
        gts = ex["masks"][ex["mask_valid"]][:, :mh, :mw]
        for start in range(0, len(gts), batch_masks):
            gt = gts[start:start + batch_masks]
            k = len(gt)
            coords = np.zeros((batch_masks, n_tok, 2), np.float32)
            labels = np.full((batch_masks, n_tok), IGNORE, np.int32)
            prev = np.zeros((batch_masks, m, m), np.float32)
            pv = np.zeros((batch_masks,), bool)
            for i in range(k):
                rr, cc = interior_point(gt[i])
                coords[i, 0] = cell_centre(rr, cc, r)
                labels[i, :2] = (1, NOT_A_POINT)
            for t in range(1, max(clicks) + 1):
                logits, iou_pred = _decode(params, emb, coords, labels, prev, pv, config=config)
                logits, iou_pred = np.asarray(logits, np.float32), np.asarray(iou_pred, np.float32)
                if t == 1:
                    sel = 1 + np.argmax(iou_pred[:, 1:], -1)
                else:
                    sel = np.zeros((batch_masks,), np.int64)
                chosen = logits[np.arange(batch_masks), sel]
                preds = chosen[:k, :mh, :mw] > 0
                ious = [iou(preds[i], gt[i]) for i in range(k)]
                if t == 1:
                    res["miou_1pt"] += ious
                    res["miou_1pt_oracle"] += [max(iou(logits[i, j, :mh, :mw] > 0, gt[i])
                                                   for j in range(1, logits.shape[1])) for i in range(k)]
                if t in clicks:
                    res[f"miou_click{t}"] += ious
                if t == max(clicks):
                    break
                prev, pv = chosen, np.ones((batch_masks,), bool)
                for i in range(k):
                    c = next_click(preds[i], gt[i])
                    if c is not None:
                        coords[i, t + 1] = cell_centre(c[0], c[1], r)
                        labels[i, t + 1] = c[2]
    out = {key: float(np.mean(v)) if v else float("nan") for key, v in res.items()}
    out["num_masks"] = len(res["miou_1pt"])
    out["num_images"] = len(examples)
    return out


def demo_image(model_dir: str, files: str, out_path: str) -> dict:
    """Segments the first image of `files` with samjax.infer from one point at the centre of its largest mask;
    writes an overlay PNG to out_path. Returns {"path", "score", "iou"} (IoU at the original resolution)."""
    from PIL import Image  # noqa: PLC0415
    from pycocotools import mask as mask_utils  # noqa: PLC0415

    import samjax.infer  # noqa: PLC0415

    paths = sorted(glob.glob(files)) if glob.has_magic(files) else [files]
    rec = decode_record(next(iter_records(paths[0]))[1])
    image = np.asarray(Image.open(__import__("io").BytesIO(rec["jpeg"])).convert("RGB"))
    h, w = image.shape[:2]
    gts = [mask_utils.decode({"size": [h, w], "counts": c}).astype(bool) for c in rec["rle_counts"]]
    gt = max(gts, key=lambda g: g.sum())
    rr, cc = interior_point(gt)
    predictor = samjax.infer.load(model_dir)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(point_coords=np.array([[cc + 0.5, rr + 0.5]]), point_labels=np.array([1]))
    best = int(np.argmax(scores))
    mask = masks[best]
    overlay = image.astype(np.float32)
    overlay[mask] = 0.45 * overlay[mask] + 0.55 * np.array([255, 40, 40])
    overlay[max(rr - 1, 0):rr + 2, max(cc - 1, 0):cc + 2] = (40, 255, 40)
    side = np.concatenate([image, overlay.astype(np.uint8)], axis=1)
    Image.fromarray(side).save(out_path)
    return {"path": out_path, "score": float(scores[best]), "iou": iou(mask, gt)}
