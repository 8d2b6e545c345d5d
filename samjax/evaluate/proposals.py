"""Zero-shot object proposals (SAM paper §7.3, §D.3): mask AR@1000 on LVIS v1 (or any COCO-format set).

    gen = proposal_generator(predictor)                 # the automatic mask generator with the paper's settings
    props = top_proposals(gen.generate_batch(images))  # per image: <= 1000 COCO-RLE masks, ranked
    rec = image_recalls(gts, image_id, props)          # per-image matched counts (pycocotools' COCOeval)
    metrics = summarize(records)                       # AR@10/100/1000 by size (and by LVIS frequency)

The paper's settings: no crops, no predicted-IoU or stability filter, a 64 x 64 point grid and box NMS at 0.9;
an image's masks ranked by the mean of predicted IoU and stability score and cut to the top 1000.

Recall is class-agnostic (COCOeval with useCats=0), at IoU 0.50:0.05:0.95, by area (all / small < 32^2 / medium /
large > 96^2, COCO's ranges, which LVIS shares); LVIS's frequent / common / rare columns measure the same
proposals against the ground truth of those categories only (area all), as the paper's §D.3. Each image is
evaluated as it finishes (pycocotools' evaluateImg) and only its counts are kept: matched ground truth (not
ignored) per IoU threshold, max detections and area, and the number of ground-truth masks; AR = the mean over IoU
thresholds of matched / total. That is exactly COCOeval's accumulated recall (summing its per-image true
positives; checked against a whole-dataset COCOeval in the tests), without storing a thousand masks per image.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from samjax.amg import AutomaticMaskGenerator
from samjax.evaluate.datasets import coco_from_dict
from samjax.evaluate.report import fmt, markdown_table

MAX_DETS = (10, 100, 1000)
AREAS = ("all", "small", "medium", "large")
GROUPS = {"all": None, "frequent": "f", "common": "c", "rare": "r"}


def proposal_generator(predictor, points_per_side: int = 64, box_nms_thresh: float = 0.9,
                       points_per_batch: int = 64):
    """samjax.amg.AutomaticMaskGenerator with the paper's proposal settings (COCO RLE output)."""
    return AutomaticMaskGenerator(predictor, points_per_side=points_per_side, points_per_batch=points_per_batch,
                                  pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=box_nms_thresh,
                                  crop_n_layers=0, output_mode="coco_rle")


def top_proposals(records: list[dict], max_proposals: int = 1000) -> list[dict]:
    """Generator records -> at most max_proposals {"segmentation": RLE, "score"}, score = mean of predicted IoU and
    stability, best first."""
    scored = [{"segmentation": r["segmentation"], "score": (r["predicted_iou"] + r["stability_score"]) / 2}
              for r in records]
    scored.sort(key=lambda r: -r["score"])
    return scored[:max_proposals]


def results_api(gt, anns: list[dict]):
    """COCO results over gt's images (pycocotools' loadRes for segmentations, and an empty list allowed): each
    result gets an id, iscrowd 0, and area / bbox from its mask."""
    out = []
    for k, a in enumerate(anns):
        seg = a["segmentation"]
        if isinstance(seg.get("counts"), str):
            seg = dict(seg, counts=seg["counts"].encode())
        out.append(dict(a, segmentation=seg, id=k + 1, iscrowd=0, area=float(mask_utils.area(seg)),
                        bbox=[float(v) for v in mask_utils.toBbox(seg)]))
    return coco_from_dict({"images": gt.dataset["images"], "categories": gt.dataset["categories"],
                           "annotations": out})


def image_recalls(gt, image_id: int, proposals: list[dict], max_dets=MAX_DETS) -> dict:
    """COCOeval (segm, class-agnostic) of one image's proposals: {"tp": [max_dets][areas][10 IoUs] matched ground
    truth, "gt": [areas] ground-truth masks not ignored}."""
    cat = gt.dataset["categories"][0]["id"]  # any: with useCats=0 every class is one
    dt = results_api(gt, [dict(p, image_id=image_id, category_id=cat) for p in proposals])
    ev = COCOeval(gt, dt, "segm")
    ev.params.imgIds = [image_id]
    ev.params.useCats = 0
    ev.params.maxDets = list(max_dets)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    n_iou = len(ev.params.iouThrs)
    tp = np.zeros((len(max_dets), len(AREAS), n_iou), np.int64)
    n_gt = np.zeros((len(AREAS),), np.int64)
    for e in ev.evalImgs:
        if e is None:
            continue
        a = ev.params.areaRng.index(e["aRng"])
        n_gt[a] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
        matched = (np.asarray(e["dtMatches"]) > 0) & ~np.asarray(e["dtIgnore"], bool)  # (IoUs, dets by score)
        for m, md in enumerate(max_dets):
            tp[m, a] = matched[:, :md].sum(1)
    return {"tp": tp.tolist(), "gt": n_gt.tolist()}


def group_apis(dataset) -> dict:
    """pycocotools COCO objects of the ground truth: all of it, and for LVIS its frequent / common / rare parts."""
    apis = {"all": dataset.coco()}
    if dataset.kind == "lvis":
        freq = {c["id"]: c.get("frequency") for c in dataset.categories}
        for name, f in GROUPS.items():
            if f is not None:
                apis[name] = dataset.coco([a for a in dataset.doc["annotations"] if freq[a["category_id"]] == f])
    return apis


def summarize(records: list[dict], max_dets=MAX_DETS) -> dict:
    """AR per group, max detections and area from per-image counts (records' "recalls": {group: image_recalls})."""
    out = {"num_images": len(records), "num_proposals_mean": float(np.mean([r["num_proposals"] for r in records]))
           if records else 0.0}
    groups = sorted({g for r in records for g in r["recalls"]}, key=list(GROUPS).index)
    for g in groups:
        tp = sum(np.asarray(r["recalls"][g]["tp"], np.float64) for r in records)
        n = sum(np.asarray(r["recalls"][g]["gt"], np.float64) for r in records)
        ar = {}
        for m, md in enumerate(max_dets):
            for a, area in enumerate(AREAS):
                ar[f"AR@{md}_{area}"] = float((tp[m, a] / n[a]).mean()) if n[a] else -1.0
        out[g] = {"num_gt": {area: int(n[a]) for a, area in enumerate(AREAS)}, **ar}
    return out


def table(summary: dict, max_det: int = 1000) -> str:
    if "all" not in summary:
        return "no images evaluated"
    header = ["proposals", "all", "small", "med.", "large"]
    row = [f"mask AR@{max_det}"] + [fmt(summary["all"][f"AR@{max_det}_{a}"]) for a in AREAS]
    extra = [g for g in ("frequent", "common", "rare") if g in summary]
    header += [g[:4] + "." for g in extra]
    row += [fmt(summary[g][f"AR@{max_det}_all"]) for g in extra]
    rows = [row] + [[f"mask AR@{md}"] + [fmt(summary["all"][f"AR@{md}_{a}"]) for a in AREAS]
                    + [fmt(summary[g][f"AR@{md}_all"]) for g in extra] for md in MAX_DETS if md != max_det]
    return markdown_table(header, rows)
