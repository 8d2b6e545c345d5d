"""HQ-SAM, MobileSAM and EfficientViT-SAM through samjax's serving path, against each reference package's own
predictor and automatic mask generator: the reference model built from its constructors with every weight
randomised (tests/family_official.py), converted by our converter, served by `samjax.infer.Predictor` /
`samjax.amg.AutomaticMaskGenerator` on a real photo.

Predictor: low-res logits and IoU within 1e-4, masks at the photo's size identical away from the threshold, for
point, box, points + box and points + mask prompts, multimask on and off (HQ-SAM: its one-mask selection, and
hq_token_only). EfficientViT-SAM's L model encodes 128 px here (512 for the real L0) and answers prompts in the
1024 px frame: the predictor resizes the image to the encoder's size and maps coordinates to the prompt frame as
the reference predictor does. AMG: the same records as the reference generator (counts, order, predicted IoUs,
stability scores, boxes; masks equal away from the threshold) with thresholds at 0, where random weights keep
masks. Tiny configs throughout (each family's parity test file has the real sizes).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from samjax import infer
from samjax.amg import AutomaticMaskGenerator
from tests.family_official import ATOL, assert_masks_match, import_references

pytestmark = pytest.mark.torch
torch = import_references()
for _name in ("segment_anything_hq", "mobile_sam", "efficientsam"):
    pytest.importorskip(_name, reason="the reference packages (pyproject's torch extra) are not installed")

import mobile_sam
import segment_anything_hq
from efficientsam.models.efficientvit.sam import (
    EfficientViTSamAutomaticMaskGenerator,
    EfficientViTSamPredictor,
)

from samjax.weights import efficientvit_sam as ev_weights
from samjax.weights import hq_sam as hq_weights
from samjax.weights import mobile_sam as mb_weights
from tests.efficientvit_sam.test_efficientvit_sam_parity import TINY_L
from tests.efficientvit_sam.test_efficientvit_sam_parity import (
    build_reference as build_ev,
)
from tests.hq_sam.test_hq_sam_parity import TINY_VIT
from tests.hq_sam.test_hq_sam_parity import build_reference as build_hq
from tests.mobile_sam.test_mobile_sam_parity import TINY as TINY_MOBILE
from tests.mobile_sam.test_mobile_sam_parity import build_reference as build_mobile

# family -> (tiny config, reference builder, converter, reference predictor, reference generator)
FAMILIES = {
    "hq_sam": (TINY_VIT, build_hq, hq_weights, segment_anything_hq.SamPredictor,
               segment_anything_hq.SamAutomaticMaskGenerator),
    "mobile_sam": (TINY_MOBILE, build_mobile, mb_weights, mobile_sam.SamPredictor,
                   mobile_sam.SamAutomaticMaskGenerator),
    "efficientvit_sam": (TINY_L, build_ev, ev_weights, EfficientViTSamPredictor,
                         EfficientViTSamAutomaticMaskGenerator),
}


@functools.cache
def served(family: str):
    """(reference model, our Predictor) for a family's tiny config: one build, conversion and compile per family."""
    cfg, build, weights, *_ = FAMILIES[family]
    ref = build(cfg, seed=1)
    return ref, infer.Predictor(cfg, weights.from_torch(ref.state_dict(), cfg))


def prompts(photo):
    """Prompt cases in the photo's pixels (chelsea, 451 x 300): name -> predict kwargs."""
    return {
        "point, multimask": dict(point_coords=np.array([[220.0, 150.0]]), point_labels=np.array([1]),
                                 multimask_output=True),
        "box": dict(box=np.array([80.0, 40.0, 330.0, 260.0]), multimask_output=False),
        "points and box": dict(point_coords=np.array([[220.0, 150.0], [100.0, 60.0]]), point_labels=np.array([1, 0]),
                               box=np.array([80.0, 40.0, 330.0, 260.0]), multimask_output=False),
        "points, multimask": dict(point_coords=np.array([[220.0, 150.0], [400.0, 250.0], [100.0, 60.0]]),
                                  point_labels=np.array([1, 1, 0]), multimask_output=True),
    }


def compare(ours, ref, kwargs, **options):
    """One prompt through both predictors (logits at the photo's size): IoU and low-res logits within ATOL, masks
    equal away from the threshold, our boolean masks those logits > 0."""
    o_logits, o_iou, o_low = ours.predict(**kwargs, return_logits=True, **options)
    with torch.no_grad():
        r_logits, r_iou, r_low = (np.asarray(x) for x in ref.predict(**kwargs, return_logits=True, **options))
    assert o_logits.shape == r_logits.shape and o_iou.shape == r_iou.shape and o_low.shape == r_low.shape
    np.testing.assert_allclose(o_iou, r_iou, atol=ATOL, rtol=0)
    np.testing.assert_allclose(o_low, r_low, atol=ATOL, rtol=0)
    assert_masks_match(o_logits, r_logits)
    masks = ours.predict(**kwargs, **options)[0]
    np.testing.assert_array_equal(masks, o_logits > 0)
    return r_low


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_predictor_matches_reference_predictor(family, photo):
    ref_model, ours = served(family)
    ref = FAMILIES[family][3](ref_model)
    ours.set_image(photo)
    with torch.no_grad():
        ref.set_image(photo)
    assert ours.input_size == tuple(ref.input_size) and ours.original_size == tuple(ref.original_size)
    np.testing.assert_allclose(ours.get_image_embedding()[0], ref.features[0].numpy().transpose(1, 2, 0), atol=ATOL,
                               rtol=0)
    options = [{}, {"hq_token_only": True}] if family == "hq_sam" else [{}]
    for opts in options:
        for kwargs in prompts(photo).values():
            low = compare(ours, ref, kwargs, **opts)
        # refinement: the previous answer's low-res logits as the mask prompt, with the clicks
        compare(ours, ref, dict(kwargs, mask_input=low[:1], multimask_output=False), **opts)
    if family == "hq_sam":  # one mask per prompt either way, as the reference's selection
        assert ours.predict(**prompts(photo)["point, multimask"])[0].shape == (1, *photo.shape[:2])
    else:  # one call for many prompts = the reference's predict_torch on the same prompts
        boxes = np.array([[80.0, 40.0, 330.0, 260.0], [10.0, 10.0, 200.0, 150.0], [200.0, 100.0, 450.0, 299.0]])
        masks, iou, low = ours.predict_batch(boxes=boxes, multimask_output=True, return_logits=True)
        with torch.no_grad():
            tb = torch.as_tensor(ref.transform.apply_boxes(boxes, photo.shape[:2]), dtype=torch.float32)
            r_masks, r_iou, r_low = ref.predict_torch(None, None, tb, multimask_output=True, return_logits=True)
        np.testing.assert_allclose(iou, r_iou.numpy(), atol=ATOL, rtol=0)
        np.testing.assert_allclose(low, r_low.numpy(), atol=ATOL, rtol=0)
        assert_masks_match(masks, r_masks.numpy())


def test_decode_options_are_checked(photo):
    _, hq = served("hq_sam")
    _, mobile = served("mobile_sam")
    mobile.set_image(photo)
    with pytest.raises(TypeError, match="no decode option"):
        mobile.predict(point_coords=np.array([[20.0, 30.0]]), point_labels=np.array([1]), hq_token_only=True)
    with pytest.raises(TypeError, match="hq_token_only"):
        AutomaticMaskGenerator(hq, decode_options={"hq_only": True})


def records(anns):
    return sorted(anns, key=lambda a: (-a["predicted_iou"], a["bbox"]))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_amg_matches_reference_generator(family, photo):
    """The generator on each family, its options at the reference's meaning: thresholds 0 (random weights), 4 x 4
    points; the records equal the reference generator's."""
    ref_model, ours = served(family)
    opts = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    mine = AutomaticMaskGenerator(ours, **opts).generate(photo)
    with torch.no_grad():
        theirs = FAMILIES[family][4](ref_model, **opts).generate(photo)
    assert len(mine) == len(theirs) > 0
    for a, b in zip(records(mine), records(theirs)):
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=ATOL)
        assert a["stability_score"] == pytest.approx(b["stability_score"], abs=1e-3)
        np.testing.assert_allclose(a["point_coords"], b["point_coords"])
        assert a["bbox"] == [int(v) for v in b["bbox"]] and a["segmentation"].shape == photo.shape[:2]
        differ = int((a["segmentation"] != b["segmentation"]).sum())  # pixels at logits within rounding of 0
        assert differ <= 1e-3 * photo.shape[0] * photo.shape[1] and abs(a["area"] - b["area"]) <= differ
    if family == "hq_sam":  # hq_token_only through the generator: the HQ mask alone
        only = AutomaticMaskGenerator(ours, decode_options={"hq_token_only": True}, **opts).generate(photo)
        assert len(only) > 0 and {r["predicted_iou"] for r in only} <= {r["predicted_iou"] for r in mine}


def test_mesh_path_equals_one_device(photo, tall_photo):
    """A family's Predictor on a (one-device) data mesh: set_images / select_image and the generator's batch give
    what the plain Predictor gives (the multi-device run of the same code: tests/test_amg_mesh.py, SAM)."""
    cfg, _, weights, *_ = FAMILIES["efficientvit_sam"]
    ref, plain = served("efficientvit_sam")
    meshed = infer.Predictor(cfg, weights.from_torch(ref.state_dict(), cfg), mesh=infer.data_mesh())
    meshed.set_images([photo, tall_photo])
    meshed.select_image(-1)
    plain.set_image(tall_photo)
    point = dict(point_coords=np.array([[60.0, 100.0]]), point_labels=np.array([1]))
    a, b = meshed.predict(**point), plain.predict(**point)
    np.testing.assert_allclose(a[1], b[1], atol=1e-5)
    assert (a[0] != b[0]).mean() < 1e-3
    opts = dict(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    batch = AutomaticMaskGenerator(meshed, **opts).generate_batch([photo, tall_photo])
    single = AutomaticMaskGenerator(plain, **opts).generate(tall_photo)
    assert [r["bbox"] for r in batch[1]] == [r["bbox"] for r in single]
