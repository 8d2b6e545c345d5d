"""Parity with the official segment-anything: same random weights, converted with `from_torch`, same outputs.

Tolerances: 1e-4 absolute in float32 for image embeddings, low-res logits and IoU predictions. Thresholded
masks must be identical except where the official logit itself lies within 1e-4 of the threshold (there the
sign is float rounding noise in either implementation); such pixels are counted and must be rare.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from samjax.convert import from_torch
from samjax.infer import Predictor
from tests.conftest import TINY_CONFIGS
from tests.official import build_official, import_official, state_dict_numpy

torch, segment_anything = import_official()
ATOL = 1e-4


def make_pair(cfg, seed=0):
    sam = build_official(cfg, seed)
    ours = Predictor(cfg, from_torch(sam.state_dict(), cfg))
    return segment_anything.SamPredictor(sam), ours


def assert_masks_match(ours_masks, ref_masks, ref_logits):
    ours_masks, ref_masks = np.asarray(ours_masks), np.asarray(ref_masks)
    assert ours_masks.shape == ref_masks.shape and ours_masks.dtype == ref_masks.dtype == bool
    differ = ours_masks != ref_masks
    decided = np.abs(ref_logits) > ATOL
    assert not (differ & decided).any(), f"{int((differ & decided).sum())} mask pixels differ away from the threshold"
    assert differ.mean() < 1e-4, f"{differ.mean():.2e} of mask pixels differ (all at |logit| <= {ATOL})"


def compare_predict(ref, ours, **prompt):
    with torch.no_grad():
        r_masks, r_iou, r_low = ref.predict(**prompt)
        r_logits, _, _ = ref.predict(**prompt, return_logits=True)
    o_masks, o_iou, o_low = ours.predict(**prompt)
    o_logits, _, _ = ours.predict(**prompt, return_logits=True)
    assert o_low.shape == r_low.shape and o_iou.shape == r_iou.shape
    np.testing.assert_allclose(o_low, r_low, atol=ATOL, rtol=0)
    np.testing.assert_allclose(o_iou, r_iou, atol=ATOL, rtol=0)
    np.testing.assert_allclose(o_logits, r_logits, atol=ATOL, rtol=0)
    assert_masks_match(o_masks, r_masks, r_logits)
    return np.array(o_low)  # writable copy: torch.as_tensor warns on read-only arrays


def test_converted_keys_are_the_official_keys(tiny_config):
    sam = build_official(tiny_config)
    params = from_torch(state_dict_numpy(sam), tiny_config)  # numpy input works as well as torch tensors
    n_ours = sum(np.size(x) for x in jax.tree.leaves(params))
    # every parameter, plus the Fourier-feature buffer; the pixel mean/std buffers live in the config
    official = sum(v.numel() for k, v in sam.state_dict().items() if k not in ("pixel_mean", "pixel_std"))
    assert n_ours == official


def test_image_embedding(tiny_config, photo):
    ref, ours = make_pair(tiny_config)
    with torch.no_grad():
        ref.set_image(photo)
    ours.set_image(photo)
    assert ours.input_size == tuple(ref.input_size) and ours.original_size == tuple(ref.original_size)
    ref_emb = ref.get_image_embedding().numpy().transpose(0, 2, 3, 1)
    emb = ours.get_image_embedding()
    assert emb.shape == ref_emb.shape
    np.testing.assert_allclose(emb, ref_emb, atol=ATOL, rtol=0)
    assert np.abs(ref_emb).max() > 0.1  # the comparison is not between near-zero tensors


@pytest.mark.parametrize("multimask", [True, False])
def test_predict_prompts(tiny_config, photo, multimask):
    ref, ours = make_pair(tiny_config, seed=1)
    with torch.no_grad():
        ref.set_image(photo)
    ours.set_image(photo)
    pts = np.array([[220.0, 150.0], [100.0, 60.0], [400.0, 250.0]])
    lbl = np.array([1, 0, 1])
    box = np.array([80.0, 40.0, 330.0, 260.0])
    low = compare_predict(ref, ours, point_coords=pts[:1], point_labels=lbl[:1], multimask_output=multimask)
    compare_predict(ref, ours, point_coords=pts, point_labels=lbl, multimask_output=multimask)
    compare_predict(ref, ours, box=box, multimask_output=multimask)
    compare_predict(ref, ours, point_coords=pts[:2], point_labels=lbl[:2], box=box, multimask_output=multimask)
    # iterative refinement: the previous low-res logits as the mask prompt
    compare_predict(ref, ours, point_coords=pts, point_labels=lbl, mask_input=low[:1], multimask_output=multimask)
    compare_predict(ref, ours, mask_input=low[:1], multimask_output=multimask)  # a mask alone


def test_predict_tall_image(tall_photo):

    ref, ours = make_pair(TINY_CONFIGS["tiny_windowed"], seed=2)
    with torch.no_grad():
        ref.set_image(tall_photo)
    ours.set_image(tall_photo)
    compare_predict(ref, ours, point_coords=np.array([[60.0, 100.0]]), point_labels=np.array([1]))
    compare_predict(ref, ours, box=np.array([10, 20, 100, 180]), multimask_output=False)


def test_bgr_input(photo):

    ref, ours = make_pair(TINY_CONFIGS["tiny_windowed"])
    bgr = np.ascontiguousarray(photo[..., ::-1])
    with torch.no_grad():
        ref.set_image(bgr, image_format="BGR")
    ours.set_image(bgr, image_format="BGR")
    np.testing.assert_allclose(ours.get_image_embedding(), ref.get_image_embedding().numpy().transpose(0, 2, 3, 1),
                               atol=ATOL, rtol=0)


def test_predict_batch_matches_predict_torch(tiny_config, photo):
    """B prompts in one call == the official predict_torch on the same transformed prompts."""
    ref, ours = make_pair(tiny_config, seed=3)
    with torch.no_grad():
        ref.set_image(photo)
    ours.set_image(photo)
    rng = np.random.default_rng(0)
    b, n = 5, 3
    pts = rng.uniform([0, 0], [451, 300], size=(b, n, 2))
    lbl = rng.integers(0, 2, size=(b, n))
    xs, ys = np.sort(rng.uniform(0, 451, (b, 2)), axis=1), np.sort(rng.uniform(0, 300, (b, 2)), axis=1)
    boxes = np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1)
    tr = ref.transform
    with torch.no_grad():
        for use_pts, use_box in ((True, False), (False, True), (True, True)):
            kw = {}
            if use_pts:
                kw["point_coords"] = torch.as_tensor(tr.apply_coords(pts, ref.original_size), dtype=torch.float)
                kw["point_labels"] = torch.as_tensor(lbl, dtype=torch.int)
            else:
                kw["point_coords"] = kw["point_labels"] = None
            kw["boxes"] = (torch.as_tensor(tr.apply_boxes(boxes, ref.original_size), dtype=torch.float)
                           if use_box else None)
            r_logits, r_iou, r_low = ref.predict_torch(**kw, multimask_output=True, return_logits=True)
            o_masks, o_iou, o_low = ours.predict_batch(point_coords=pts if use_pts else None,
                                                       point_labels=lbl if use_pts else None,
                                                       boxes=boxes if use_box else None)
            np.testing.assert_allclose(o_low, r_low.numpy(), atol=ATOL, rtol=0)
            np.testing.assert_allclose(o_iou, r_iou.numpy(), atol=ATOL, rtol=0)
            assert_masks_match(o_masks, r_logits.numpy() > 0, r_logits.numpy())
