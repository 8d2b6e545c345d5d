"""Zero-shot instance segmentation (SAM paper §7.4, §D.4): masks for a detector's boxes, scored by mask AP.

    results = segment_boxes(predictor, detections)        # the predictor's current image; COCO results with masks
    metrics = evaluate_results(dataset, all_results)       # COCO mask AP (pycocotools) or LVIS mask AP (lvis)

Each box prompts SAM (three outputs, the highest predicted IoU taken), then one refinement: that mask's low-res
logits go back to the decoder with the same box, single output (the paper: "feeding the most confident predicted
mask, together with the box prompt, back to the mask decoder"). The mask keeps the detection's category and
score. Boxes are clipped to the image first (detectors' boxes may overhang by a fraction of a pixel).

COCO AP is pycocotools' COCOeval (segm). LVIS AP is the `lvis` package's LVISEval (federated: per-image negative and
not-exhaustive categories, 300 detections per image, APr / APc / APf). lvis 0.5.3's package __init__ imports its
visualiser, which needs OpenCV; its evaluation modules need only numpy and pycocotools, so without OpenCV they are
loaded on their own (`lvis_api`). It is the package's last release (2020) and calls `np.float`, which NumPy 1.24
removed: while LVISEval runs, `np.float` is the builtin `float` it stood for (`_numpy_float_alias`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import types

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from samjax.evaluate.batching import predict_padded
from samjax.evaluate.proposals import results_api
from samjax.evaluate.report import fmt, markdown_table

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def boxes_xyxy(detections: list[dict], h: int, w: int) -> np.ndarray:
    """COCO [x, y, w, h] boxes -> (N, 4) XYXY clipped to the (h, w) image."""
    b = np.array([d["bbox"] for d in detections], np.float64).reshape(-1, 4)
    xyxy = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    return np.clip(xyxy, 0, [w, h, w, h])


def encode(mask: np.ndarray) -> dict:
    """(H, W) bool -> COCO compressed RLE with str counts (JSON-serialisable)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode()}


def segment_boxes(predictor, detections: list[dict], batch: int = 32, refine: bool = True) -> list[dict]:
    """Masks for one image's detections (COCO results with bbox): the same list with "segmentation" (RLE) added."""
    if not detections:
        return []
    h, w = predictor.original_size
    boxes = boxes_xyxy(detections, h, w)
    out = []
    for start in range(0, len(boxes), batch):
        b = boxes[start:start + batch]
        n = len(b)
        masks, scores, low = predict_padded(predictor, batch, boxes=b, multimask_output=True)
        best = np.argmax(scores, axis=1)
        masks = masks[np.arange(n), best]
        if refine:
            refined, _, _ = predict_padded(predictor, batch, boxes=b, mask_input=low[np.arange(n), best][:, None],
                                           multimask_output=False)
            masks = refined[:, 0]
        for d, m in zip(detections[start:start + n], masks):
            out.append({"image_id": d["image_id"], "category_id": d["category_id"], "score": float(d["score"]),
                        "bbox": [float(v) for v in d["bbox"]], "segmentation": encode(m)})
    return out


def lvis_api():
    """(LVIS, LVISResults, LVISEval) from the lvis package; without OpenCV, its evaluation modules are loaded
    without the package's __init__ (which imports the OpenCV visualiser)."""
    try:
        from lvis import LVIS, LVISEval, LVISResults
        return LVIS, LVISResults, LVISEval
    except ModuleNotFoundError as e:
        if e.name == "lvis":
            raise ImportError("LVIS mask AP needs the lvis package: pip install 'samjax[eval]' (or "
                              "pip install --no-deps lvis==0.5.3: its evaluation needs only numpy and pycocotools)"
                              ) from e
        if e.name != "cv2":
            raise
    spec = importlib.util.find_spec("lvis")
    pkg = types.ModuleType("lvis")  # a bare package: lvis.lvis / lvis.results / lvis.eval import only each other
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["lvis"] = pkg
    from lvis.eval import LVISEval
    from lvis.lvis import LVIS
    from lvis.results import LVISResults
    return LVIS, LVISResults, LVISEval


def coco_mask_ap(gt, results: list[dict], img_ids: list[int] | None = None) -> dict:
    """pycocotools COCOeval (segm) of results against gt (a COCO api), over img_ids (default: all of gt's images):
    AP, AP50, AP75, APs, APm, APl in [0, 1]."""
    ev = COCOeval(gt, results_api(gt, results), "segm")
    if img_ids is not None:
        ev.params.imgIds = sorted(img_ids)
    with contextlib.redirect_stdout(io.StringIO()) as text:
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {**{k: float(v) for k, v in zip(COCO_STATS, ev.stats[:6])}, "summary": text.getvalue()}


@contextlib.contextmanager
def _numpy_float_alias():
    """np.float = float (NumPy < 1.24's alias, which lvis 0.5.3 uses) for the duration, where NumPy lacks it."""
    missing = "float" not in np.__dict__
    if missing:
        np.float = float
    try:
        yield
    finally:
        if missing:
            del np.float


def lvis_mask_ap(annotations_path: str, results: list[dict], img_ids: list[int] | None = None) -> dict:
    """The lvis package's LVISEval (segm) over img_ids (default all): AP, AP50, AP75, APs, APm, APl, APr, APc, APf
    in [0, 1] (all 0 without results)."""
    LVIS, LVISResults, LVISEval = lvis_api()
    if not results:
        return {k: 0.0 for k in (*COCO_STATS, "APr", "APc", "APf")}
    gt = LVIS(str(annotations_path))
    ev = LVISEval(gt, LVISResults(gt, [dict(r) for r in results]), "segm")
    if img_ids is not None:
        ev.params.img_ids = sorted(img_ids)
    with contextlib.redirect_stdout(io.StringIO()), _numpy_float_alias():
        ev.run()
    return {k: float(v) for k, v in ev.get_results().items()}


def evaluate_results(dataset, results: list[dict], img_ids: list[int] | None = None) -> dict:
    """Mask AP of the results over img_ids (default: every image of the dataset): LVIS's for an LVIS file, COCO's
    otherwise."""
    if dataset.kind == "lvis":
        return {"metric": "lvis", **lvis_mask_ap(dataset.path, results, img_ids)}
    return {"metric": "coco", **coco_mask_ap(dataset.coco(), results, img_ids)}


def table(metrics: dict) -> str:
    keys = ["AP", "APs", "APm", "APl"] + (["APr", "APc", "APf"] if metrics["metric"] == "lvis" else [])
    return markdown_table(["mask AP", *keys], [[metrics["metric"].upper()] + [fmt(metrics.get(k)) for k in keys]])
