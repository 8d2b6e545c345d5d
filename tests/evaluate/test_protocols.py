"""The four protocols on data where the answer is known by construction, with stand-in predictors answering from
the ground truth: a perfect one scores 1.0 / AP 100, a known-bad one a value computed here; proposal recall and
mask AP agree with pycocotools' own COCOeval on the same masks."""

from __future__ import annotations

import contextlib
import importlib.util
import io

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from samjax.evaluate import bsds, edges, instances, points, proposals
from samjax.evaluate.datasets import read_instances
from tests.evaluate.synth import (
    GroundTruthPredictor,
    bbox,
    outer_boundary,
    rle,
    shapes,
    write_instances,
)

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:lvis.*")]


# ------------------------------------------------------------------------------------------------ points
def test_clicks_follow_ritm():
    gt = np.zeros((20, 30), bool)
    gt[2:12, 3:23] = True  # 10 x 20: the interior's farthest pixels are rows 6-7; the first in raster order
    assert points.next_click(np.zeros_like(gt), gt) == (6, 7, True)
    pred = gt.copy()
    pred[14:20, 0:30] = True  # a false-positive band 6 rows deep at the image border (which counts as boundary)
    assert points.next_click(pred, gt) == (16, 2, False)
    pred = gt.copy()
    pred[2:12, 3:8] = False  # a false-negative strip 5 wide: its centre column
    r, c, positive = points.next_click(pred, gt)
    assert positive and c == 5 and 4 <= r <= 9
    assert points.next_click(gt, gt) is None
    one = np.zeros_like(gt)
    one[5, 5] = True  # a one-pixel error already clicked: nothing left to click
    assert points.next_click(np.zeros_like(gt), one, {(5, 5)}) is None
    # ties between a false negative and a false positive of equal depth go to the background click (RITM: fn > fp)
    gt2 = np.zeros((10, 21), bool)
    gt2[4:7, 1:4] = True
    pred2 = np.zeros_like(gt2)
    pred2[4:7, 15:18] = True
    assert points.next_click(pred2, gt2)[2] is False


def test_perfect_predictor_scores_one_at_every_click():
    _image, masks = shapes()
    pred = GroundTruthPredictor(masks)
    ious, oracle = points.evaluate_masks(pred, masks, num_clicks=5, batch=2)
    np.testing.assert_allclose(ious, 1.0)
    np.testing.assert_allclose(oracle, 1.0)
    # one call per chunk of 2 masks (the last padded to 2), no clicks after a perfect mask
    assert [c["n"] for c in pred.calls] == [2, 2]
    first = pred.calls[0]["points"][:, 0]
    # (x, y) = (col, row): rectangle 0 (rows 10-39, cols 12-59) is 15 px deep on rows 24-25, cols 26-45; the first
    np.testing.assert_array_equal(first[0], [26, 24])
    summary = points.summarize([{"dataset": "a", "ious": ious.tolist(), "oracle": oracle.tolist()},
                                {"dataset": "b", "ious": [], "oracle": []}], 5)
    assert summary["datasets"]["a"]["miou"] == [1.0] * 5 and summary["mean"]["num_datasets"] == 1


def test_box_shaped_guesses_score_their_area_ratio():
    """A predictor that answers every point with its object's ellipse-in-a-box: the box first (ranked highest),
    then the object. IoU = area(object) / area(box) at every click; the oracle finds the object (1.0)."""
    h, w = 80, 120
    yy, xx = np.mgrid[:h, :w]
    masks = np.stack([((yy - 25) / 15) ** 2 + ((xx - 30) / 20) ** 2 <= 1,
                      ((yy - 55) / 12) ** 2 + ((xx - 85) / 25) ** 2 <= 1])

    def box_first(target, k, multi):
        box = np.zeros_like(target)
        if target.any():
            rows, cols = np.flatnonzero(target.any(1)), np.flatnonzero(target.any(0))
            box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
        return ([box, target, target], [0.9, 0.5, 0.4]) if multi else ([box], [0.9])

    pred = GroundTruthPredictor(masks, box_first)
    ious, oracle = points.evaluate_masks(pred, masks, num_clicks=3)
    ratio = [m.sum() / np.prod([np.ptp(np.flatnonzero(m.any(a))) + 1 for a in (1, 0)]) for m in masks]
    np.testing.assert_allclose(ious, np.array(ratio)[:, None].repeat(3, 1))
    np.testing.assert_allclose(oracle, 1.0)
    later = pred.calls[1]
    assert later["mask_input"] and not later["multimask"] and later["labels"][:2].tolist() == [[1, 0], [1, 0]]


# ------------------------------------------------------------------------------------------------- edges
def _edge_predictor(masks):
    """Answers a point with its object's mask; a point on the background with nothing."""
    return GroundTruthPredictor(masks)


def test_boundary_responses_are_sobel_on_the_outer_boundary():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    logits = ndimage.gaussian_filter(rng.standard_normal((4, 50, 70)), (0, 3, 3)) * 30
    logits[2] = 5.0  # everything: no outer boundary
    logits[3, :15, :25] = 8.0  # touching the image border
    idx, vals, boxes, areas = edges.mask_boundary_responses(logits)
    cross = ndimage.generate_binary_structure(2, 1)
    for k, lg in enumerate(logits):
        m = lg > 0
        p = 1 / (1 + np.exp(-lg))
        whole = np.hypot(ndimage.sobel(p, 0), ndimage.sobel(p, 1)).ravel()
        outer = np.flatnonzero(ndimage.binary_dilation(m, cross) & ~m)
        order = np.argsort(idx[k])
        np.testing.assert_array_equal(idx[k][order], outer)
        np.testing.assert_allclose(vals[k][order], whole[outer], rtol=1e-6, atol=1e-12)
        assert areas[k] == m.sum()
    assert len(idx[2]) == 0 and areas[2] == 50 * 70 and boxes[2].tolist() == [0, 0, 69, 49]


def test_perfect_masks_give_perfect_edges():
    _image, masks = shapes(160, 200, [(20, 20, 70, 90), (90, 110, 140, 180)])
    pb = edges.edge_map(_edge_predictor(masks), points_per_side=8)
    assert pb.max() == pytest.approx(1.0) and pb.min() == 0.0
    th = bsds.thresholds(9)
    m = bsds.summarize(bsds.evaluate_image(pb, [outer_boundary(masks)] * 2, th)[None], th)
    assert m["ods"] > 0.99 and m["ois"] > 0.99


def test_edges_of_half_the_objects_recall_half():
    """Two equal squares; a predictor that only ever finds the first: precision 1, recall 1/2, F = 2/3."""
    _image, masks = shapes(160, 200, [(30, 30, 80, 80), (90, 120, 140, 170)])

    def first_only(target, k, multi):
        t = target if k == 0 else np.zeros_like(target)
        return ([t] * 3, [0.9, 0.8, 0.7]) if multi else ([t], [0.9])

    pb = edges.edge_map(GroundTruthPredictor(masks, first_only), points_per_side=8)
    th = bsds.thresholds(9)
    m = bsds.summarize(bsds.evaluate_image(pb, [outer_boundary(masks)], th)[None], th)
    assert m["ods_precision"] == pytest.approx(1.0, abs=0.01) and m["ods_recall"] == pytest.approx(0.5, abs=0.01)
    assert m["ods"] == pytest.approx(2 / 3, abs=0.01)
    empty = edges.edge_map(GroundTruthPredictor(masks, lambda t, k, multi: ([np.zeros_like(t)] * (3 if multi else 1),
                                                                            [0.5] * (3 if multi else 1))))
    assert not empty.any()


# --------------------------------------------------------------------------------------------- proposals
@pytest.fixture(scope="module")
def coco_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    rng = np.random.default_rng(0)
    samples = []
    for i in range(4):  # sizes across COCO's small / medium / large ranges
        rects = [(5, 5, 10, 12), (15, 20, 40, 70), (45, 10, 150, 120), (60, 130, 100, 190)][:2 + i % 3]
        samples.append(shapes(160, 200, rects, seed=i))
    path, img_dir = write_instances(root, samples)
    return read_instances(path, img_dir), samples, rng


def _jitter(mask, rng, n):
    """n masks near `mask` (shifted a few pixels) for synthetic proposals."""
    out = []
    for _ in range(n):
        dy, dx = rng.integers(-6, 7, 2)
        out.append(np.roll(mask, (dy, dx), axis=(0, 1)))
    return out


def test_proposal_recall_equals_cocoeval(coco_set):
    ds, samples, rng = coco_set
    apis = proposals.group_apis(ds)
    records, all_dets = [], []
    for im, (_, masks) in zip(ds.images, samples):
        props = [{"segmentation": rle(m), "score": float(rng.random())} for gt in masks for m in _jitter(gt, rng, 4)]
        props = proposals.top_proposals([dict(p, predicted_iou=p["score"], stability_score=p["score"]) for p in props],
                                        max_proposals=6)  # fewer than made: truncation by score matters
        records.append({"num_proposals": len(props), "recalls": {"all": proposals.image_recalls(apis["all"], im["id"],
                                                                                                props)}})
        all_dets += [dict(p, image_id=im["id"], category_id=1) for p in props]
    got = proposals.summarize(records)["all"]
    gt = ds.coco()
    ev = COCOeval(gt, proposals.results_api(gt, all_dets), "segm")
    ev.params.useCats = 0
    ev.params.maxDets = [1, 5, 1000]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    recall = ev.eval["recall"]  # (IoUs, categories=1, areas, maxDets)
    for a, area in enumerate(proposals.AREAS):
        r = recall[:, 0, a, 2]
        want = float(r.mean()) if (r > -1).all() else -1.0
        assert got[f"AR@1000_{area}"] == pytest.approx(want, abs=1e-12)
        assert got[f"AR@10_{area}"] == pytest.approx(want, abs=1e-12)  # <= 6 proposals per image
    assert 0.0 < got["AR@1000_all"] < 1.0


def test_ground_truth_as_proposals_recalls_everything(coco_set, tmp_path):
    ds, samples, _ = coco_set
    apis = proposals.group_apis(ds)
    recs = [{"num_proposals": len(m), "recalls": {"all": proposals.image_recalls(
        apis["all"], im["id"], [{"segmentation": rle(x), "score": 1.0} for x in m])}} for im, (_, m) in
        zip(ds.images, samples)]
    recs.append({"num_proposals": 0, "recalls": {"all": proposals.image_recalls(apis["all"], ds.images[0]["id"], [])}})
    got = proposals.summarize(recs)["all"]
    assert got["AR@1000_all"] == 1.0 * sum(len(m) for _, m in samples) / (sum(len(m) for _, m in samples)
                                                                          + len(samples[0][1]))
    path, img_dir = write_instances(tmp_path, samples, lvis=True)  # by LVIS frequency: categories cycle f, c, r
    lv = read_instances(path, img_dir)
    apis = proposals.group_apis(lv)
    assert set(apis) == {"all", "frequent", "common", "rare"}
    recs = [{"num_proposals": 1, "recalls": {g: proposals.image_recalls(api, im["id"], [
        {"segmentation": rle(m[0]), "score": 1.0}]) for g, api in apis.items()}} for im, (_, m) in
        zip(lv.images, samples)]
    got = proposals.summarize(recs)
    # frequent: category 1 in all 4 images (found) and category 4 in one (not): 4 / 5; common: 2 and 5, none found
    assert got["frequent"]["AR@1000_all"] == 0.8 and got["common"]["AR@1000_all"] == 0.0
    assert "rare" in proposals.table(got)


# --------------------------------------------------------------------------------------------- instances
def _gt_boxes(ds, samples, score=0.9):
    return {im["id"]: [{"image_id": im["id"], "category_id": k + 1, "bbox": bbox(m), "score": score - 0.01 * k}
                       for k, m in enumerate(masks)] for im, (_, masks) in zip(ds.images, samples)}


def test_perfect_masks_from_boxes_score_ap_100(coco_set):
    ds, samples, _ = coco_set
    dets = _gt_boxes(ds, samples)
    results = []
    for im, (_, masks) in zip(ds.images, samples):
        pred = GroundTruthPredictor(masks)
        results += instances.segment_boxes(pred, dets[im["id"]], batch=2)
        assert pred.calls[1]["mask_input"] and not pred.calls[1]["multimask"]  # the refinement pass
    m = instances.evaluate_results(ds, results)
    assert m["metric"] == "coco" and m["AP"] == pytest.approx(1.0)


def test_box_masks_score_what_cocoeval_scores(coco_set):
    """Masks filled to their boxes (a known-bad segmenter): the AP is COCOeval's for those same masks."""
    ds, samples, _ = coco_set

    def filled(target, k, multi):
        box = np.zeros_like(target)
        x, y, w, h = (round(v) for v in bbox(target))
        box[y:y + h, x:x + w] = True
        box[y + h // 3:y + h // 2, x:x + max(1, w // 3)] = False  # a notch, so boxes of rectangles are not exact
        return ([box] * 3, [0.9, 0.8, 0.7]) if multi else ([box], [0.9])

    dets = _gt_boxes(ds, samples)
    results = []
    for im, (_, masks) in zip(ds.images, samples):
        results += instances.segment_boxes(GroundTruthPredictor(masks, filled), dets[im["id"]])
    got = instances.evaluate_results(ds, results)
    gt = ds.coco()
    ev = COCOeval(gt, gt.loadRes([dict(r) for r in results]), "segm")
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert got["AP"] == pytest.approx(ev.stats[0]) and 0.0 < got["AP"] < 1.0
    assert [got[k] for k in instances.COCO_STATS] == pytest.approx(list(ev.stats[:6]))


def test_lvis_ap_of_perfect_masks(tmp_path, coco_set):
    if importlib.util.find_spec("lvis") is None:
        pytest.skip("the lvis package is not installed")
    _, samples, _ = coco_set
    path, img_dir = write_instances(tmp_path, samples, lvis=True)
    ds = read_instances(path, img_dir)
    dets = _gt_boxes(ds, samples)
    results = [r for im, (_, masks) in zip(ds.images, samples)
               for r in instances.segment_boxes(GroundTruthPredictor(masks), dets[im["id"]])]
    m = instances.evaluate_results(ds, results)
    assert m["metric"] == "lvis" and m["AP"] == pytest.approx(1.0) and m["APr"] == pytest.approx(1.0)
    assert "APr" in instances.table(m)
