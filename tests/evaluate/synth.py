"""Small evaluation data made in the tests, where the right answers are known: images of flat-coloured shapes
and their masks written as COCO / LVIS instances files, BSDS500 folders and COCO detection results; and
stand-in predictors that answer prompts from the ground truth (samjax.infer.Predictor's predict_batch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image
from pycocotools import mask as mask_utils
from scipy import ndimage

# (row0, col0, row1, col1) rectangles, disjoint and away from the border
RECTS = [(10, 12, 40, 60), (50, 20, 90, 44), (20, 80, 70, 130)]


def shapes(h: int = 100, w: int = 150, rects=RECTS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image of flat coloured rectangles on grey, and their masks (K, H, W) bool."""
    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), 128, np.uint8)
    masks = np.zeros((len(rects), h, w), bool)
    for k, (r0, c0, r1, c1) in enumerate(rects):
        masks[k, r0:r1, c0:c1] = True
        image[masks[k]] = rng.integers(0, 256, 3)
    return image, masks


def rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(r["size"]), "counts": r["counts"].decode()}


def bbox(mask: np.ndarray) -> list[float]:
    return [float(v) for v in mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))]


def write_instances(root: Path, samples: list[tuple[np.ndarray, np.ndarray]], lvis: bool = False) -> tuple[Path, Path]:
    """Write images (PNG) and a COCO (or LVIS v1 style) instances JSON; returns (json path, images folder).
    Mask k of every image has category k + 1; LVIS frequencies cycle f, c, r."""
    root.mkdir(parents=True, exist_ok=True)
    img_dir = root / "images"
    sub = img_dir / "val2017" if lvis else img_dir
    sub.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    n_cats = max(len(m) for _, m in samples)
    for i, (image, masks) in enumerate(samples):
        name = f"{i + 1:012d}.png"
        Image.fromarray(image).save(sub / name)
        entry = {"id": i + 1, "height": image.shape[0], "width": image.shape[1]}
        if lvis:
            entry.update(coco_url=f"http://images.cocodataset.org/val2017/{name}", neg_category_ids=[],
                         not_exhaustive_category_ids=[])
        else:
            entry["file_name"] = name
        images.append(entry)
        for k, m in enumerate(masks):
            ann = {"id": len(anns) + 1, "image_id": i + 1, "category_id": k + 1, "segmentation": rle(m),
                   "area": float(m.sum()), "bbox": bbox(m)}
            if not lvis:
                ann["iscrowd"] = 0
            anns.append(ann)
    cats = [{"id": k + 1, "name": f"c{k + 1}", **({"frequency": "fcr"[k % 3], "synset": f"c{k + 1}.n.01",
                                                  "image_count": 1, "instance_count": 1} if lvis else {})}
            for k in range(n_cats)]
    path = root / ("lvis.json" if lvis else "instances.json")
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path, img_dir


def outer_boundary(masks: np.ndarray) -> np.ndarray:
    """Pixels just outside any of the masks (4-connected): where the edge protocol puts a mask's edges."""
    cross = ndimage.generate_binary_structure(2, 1)
    out = np.zeros(masks.shape[1:], bool)
    for m in masks:
        out |= ndimage.binary_dilation(m, cross) & ~m
    return out


def write_bsds(root: Path, samples: list[tuple[np.ndarray, np.ndarray]], split: str = "test",
               annotators: int = 2) -> Path:
    """A BSDS500-layout folder: data/images/<split>/N.png and data/groundTruth/<split>/N.mat, every annotator
    drawing the masks' outer boundaries."""
    img_dir, gt_dir = root / "data" / "images" / split, root / "data" / "groundTruth" / split
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    for i, (image, masks) in enumerate(samples):
        Image.fromarray(image).save(img_dir / f"{i + 1}.png")
        cell = np.empty((1, annotators), dtype=object)
        seg = (np.argmax(np.concatenate([np.zeros((1, *masks.shape[1:]), bool), masks]), 0) + 1).astype(np.uint16)
        for k in range(annotators):
            cell[0, k] = {"Segmentation": seg, "Boundaries": outer_boundary(masks).astype(np.uint8)}
        scipy.io.savemat(gt_dir / f"{i + 1}.mat", {"groundTruth": cell})
    return root


def perfect(target: np.ndarray, k, multimask: bool):
    """Every output is the target mask."""
    c = 3 if multimask else 1
    return [target] * c, [0.9, 0.8, 0.7][:c]


class GroundTruthPredictor:
    """predict_batch answered from the current image's ground-truth masks (K, H, W).

    A point prompt selects the mask under its first point (none: the background, i.e. no mask); a box prompt the
    mask with that bounding box. `answer(target (H, W) bool, k or None, multimask)` -> list of C masks and scores;
    the default answers perfectly."""

    def __init__(self, masks: np.ndarray, answer=None):
        self.masks = np.asarray(masks, bool)
        self.original_size = self.masks.shape[1:]
        self.answer = answer or perfect
        self.calls = []

    def _target(self, point=None, box=None):
        if point is not None:
            x, y = round(point[0]), round(point[1])
            for k, m in enumerate(self.masks):
                if m[y, x]:
                    return m, k
            return np.zeros(self.original_size, bool), None
        for k, m in enumerate(self.masks):
            b = bbox(m)
            if np.allclose([b[0], b[1], b[0] + b[2], b[1] + b[3]], box, atol=1.0):
                return m, k
        raise AssertionError(f"no mask has the box {box}")

    def predict_batch(self, point_coords=None, point_labels=None, boxes=None, mask_input=None,
                      multimask_output=True, return_logits=False):
        n = len(point_coords) if point_coords is not None else len(boxes)
        self.calls.append({"n": n, "points": None if point_coords is None else np.asarray(point_coords),
                           "labels": None if point_labels is None else np.asarray(point_labels),
                           "mask_input": mask_input is not None, "multimask": multimask_output})
        out_m, out_s = [], []
        for b in range(n):
            target, k = self._target(point=None if point_coords is None else point_coords[b][0],
                                     box=None if boxes is None else boxes[b])
            masks, scores = self.answer(target, k, multimask_output)
            out_m.append(np.stack(masks))
            out_s.append(scores)
        masks = np.stack(out_m)
        low = np.where(masks[..., ::4, ::4], 10.0, -10.0).astype(np.float32)  # stands for the low-res logits
        if return_logits:
            masks = np.where(masks, 10.0, -10.0).astype(np.float32)
        return masks, np.asarray(out_s, np.float32), low
