"""samjax.amg.AutomaticMaskGenerator on SAM 2 against the official SAM2AutomaticMaskGenerator (sam2 1.1.0), random
weights through samjax's converter, sam2.1_hiera_t at 128 px, on a real photo (non-square: SAM 2 squashes it):
the same records (count, predicted IoUs within 1e-4, stability scores within 1e-3, boxes, points, crop boxes, masks
equal on >= 99.9% of pixels) with one crop layer and thresholds at which random weights keep masks; with use_m2m (a
second decoder pass per candidate, dynamic multimask on, as build_sam2's default); SAM 2's own defaults; python -m
samjax.amg on a converted SAM 2 directory (the official generator's masks)."""

from __future__ import annotations

import csv

import jax
import numpy as np
import pytest
from PIL import Image

from samjax import infer
from samjax.amg import AutomaticMaskGenerator
from samjax.amg.cli import main as amg_main
from samjax.infer import sam2 as P
from samjax.models import sam2 as S
from samjax.weights import sam2 as W
from samjax.weights import store

pytestmark = [pytest.mark.torch,
              pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")]

SIZE = 128
ATOL = 1e-4
# Random weights: predicted IoUs and stability scores are low, so the thresholds are too (the defaults keep none), and
# their masks cover most of the image at logit 0: at mask_threshold 2.5 (an option of SAM 2's generator) they differ.
# One crop layer (5 crops of different sizes, one encoder call, cross-crop NMS): 4 masks of 360 candidates pass.
OPTS = dict(points_per_side=6, points_per_batch=16, pred_iou_thresh=0.0, stability_score_thresh=0.01,
            mask_threshold=2.5, crop_n_layers=1)
CLI_OPTS = ["--points-per-side", "6", "--points-per-batch", "16", "--pred-iou-thresh", "0", "--stability-score-thresh",
            "0.01", "--mask-threshold", "2.5", "--crop-n-layers", "1", "--no-progress"]


@pytest.fixture(scope="module")
def pair():
    """(torch, official SAM2Base at 128 px, our Sam2Predictor of its converted weights (no post-processing, as the
    official model is built))."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("sam2.build_sam")
    from tests.official import import_official
    from tests.sam2.official_sam2 import build_official_sam2, state_dict_numpy

    import_official()  # torchvision (batched_nms, box_area, Resize ...) or the labelled stand-in
    model = build_official_sam2("sam2.1_hiera_t", SIZE, seed=3)
    config = S.Sam2Config.from_name("sam2.1_hiera_t", image_size=SIZE)
    return torch, model, P.Sam2Predictor(config, W.from_torch(state_dict_numpy(model), config))


def official_generator(model, **opts):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    gen = SAM2AutomaticMaskGenerator(model, **opts)
    g = model.image_size // 16  # the predictor's feature sizes follow the model's image size (officially 1024's)
    gen.predictor._bb_feat_sizes = [(4 * g, 4 * g), (2 * g, 2 * g), (g, g)]
    return gen


def records(anns):
    return sorted(anns, key=lambda a: (-a["predicted_iou"], a["bbox"]))


def assert_same_records(mine, theirs, shape):
    assert len(mine) == len(theirs) > 0
    for a, b in zip(records(mine), records(theirs)):
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=ATOL)
        assert a["stability_score"] == pytest.approx(b["stability_score"], abs=1e-3)
        np.testing.assert_allclose(a["point_coords"], b["point_coords"])
        assert a["crop_box"] == [int(v) for v in b["crop_box"]]
        assert a["segmentation"].shape == shape
        differ = int((a["segmentation"] != b["segmentation"]).sum())  # pixels at logits within rounding of 0
        assert differ <= 1e-3 * shape[0] * shape[1] and abs(a["area"] - b["area"]) <= differ
        assert np.abs(np.asarray(a["bbox"]) - np.asarray(b["bbox"])).max() <= (1 if differ else 0)


@pytest.fixture(scope="module")
def official_records(pair, photo):
    torch, model, _ = pair
    with torch.no_grad():
        return official_generator(model, **OPTS).generate(photo)


def test_amg_matches_official_generator(pair, official_records, photo):
    _, _, ours = pair
    mine = AutomaticMaskGenerator(ours, **OPTS).generate(photo)
    assert_same_records(mine, official_records, photo.shape[:2])
    assert len({tuple(r["crop_box"]) for r in mine}) > 1  # masks from the whole image and from crops


def test_amg_m2m_matches_official_generator(pair, photo):
    """use_m2m with the mask decoder's dynamic multimask on (build_sam2's default post-processing), on both."""
    torch, model, ours = pair
    opts = dict(OPTS, points_per_side=4, crop_n_layers=0, stability_score_thresh=0.0, use_m2m=True)
    dynamic = P.Sam2Predictor(P.with_postprocessing(ours.config), ours.params)
    decoder = model.sam_mask_decoder
    decoder.dynamic_multimask_via_stability, decoder.dynamic_multimask_stability_delta = True, 0.05
    decoder.dynamic_multimask_stability_thresh = 0.98
    try:
        with torch.no_grad():
            theirs = official_generator(model, **opts).generate(photo)
    finally:
        decoder.dynamic_multimask_via_stability = False
    mine = AutomaticMaskGenerator(dynamic, **opts).generate(photo)
    assert_same_records(mine, theirs, photo.shape[:2])


def test_sam2_defaults_and_unsupported_options(pair):
    _, _, ours = pair
    gen = AutomaticMaskGenerator(ours)
    assert (gen.pred_iou_thresh, gen.stability_score_thresh, gen.box_nms_thresh, gen.points_per_batch,
            gen.family.sam.mask_threshold, gen.multimask_output, gen.use_m2m) == (0.8, 0.95, 0.7, 64, 0.0, True, False)
    assert AutomaticMaskGenerator(ours, mask_threshold=0.5).family.sam.mask_threshold == 0.5
    with pytest.raises(ValueError, match="min_mask_region_area is not supported with SAM 2"):
        AutomaticMaskGenerator(ours, min_mask_region_area=10)


def test_cli_on_sam2_directory(pair, official_records, photo, tmp_path):
    """python -m samjax.amg --checkpoint <converted SAM 2 dir>: the official generator's masks as PNGs + metadata."""
    _, _, ours = pair
    ckpt = store.save_model(tmp_path / "sam2", jax.device_get(ours.params), ours.config)
    (tmp_path / "in").mkdir()
    Image.fromarray(photo).save(tmp_path / "in" / "cat.png")
    counts = amg_main(["--checkpoint", str(ckpt), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                       *CLI_OPTS])
    assert counts == {"done": 1, "skipped": 0, "failed": 0}
    assert isinstance(infer.load(ckpt), P.Sam2Predictor)
    with open(tmp_path / "out" / "cat" / "metadata.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(official_records)
    ious = sorted(float(r["predicted_iou"]) for r in rows)
    np.testing.assert_allclose(ious, sorted(r["predicted_iou"] for r in official_records), atol=ATOL)
    best = max(official_records, key=lambda r: r["predicted_iou"])
    row = max(range(len(rows)), key=lambda i: float(rows[i]["predicted_iou"]))
    png = np.asarray(Image.open(tmp_path / "out" / "cat" / f"{row}.png")) > 0
    assert np.mean(png == best["segmentation"]) >= 0.999
