"""The loss against hand-computed values."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from samjax.training import losses


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_focal_matches_hand_computation():
    logits = jnp.array([[[2.0, -1.0]]])  # (1, 1, 2)
    target = jnp.array([[[True, True]]])
    expect = []
    for x in (2.0, -1.0):
        p = _sig(x)
        expect.append(0.25 * -math.log(p) * (1 - p) ** 2)
    got = losses.sigmoid_focal_loss(logits, target)
    np.testing.assert_allclose(got, [np.mean(expect)], rtol=1e-5)
    # negatives use 1 - alpha and p^gamma
    got_neg = losses.sigmoid_focal_loss(jnp.array([[[0.5]]]), jnp.array([[[False]]]))
    p = _sig(0.5)
    np.testing.assert_allclose(got_neg, [0.75 * -math.log(1 - p) * p ** 2], rtol=1e-5)


def test_dice_and_iou_hand_values():
    logits = jnp.array([[[10.0, 10.0], [-10.0, -10.0]]])  # predicts the top row
    target = jnp.array([[[True, False], [True, False]]])
    p = np.array([[_sig(10), _sig(10)], [_sig(-10), _sig(-10)]])
    t = np.array([[1, 0], [1, 0]], float)
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    np.testing.assert_allclose(losses.dice_loss(logits, target), [dice], rtol=1e-5)
    np.testing.assert_allclose(losses.mask_iou(logits, target), [1 / 3], rtol=1e-6)
    # both empty -> IoU 1
    np.testing.assert_allclose(losses.mask_iou(-jnp.ones((1, 2, 2)), jnp.zeros((1, 2, 2), bool)), [1.0])


def test_sam_loss_weights_and_shapes():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(3, 4, 8, 8)), jnp.float32)
    iou_pred = jnp.asarray(rng.uniform(size=(3, 4)), jnp.float32)
    target = jnp.asarray(rng.uniform(size=(3, 8, 8)) > 0.5)
    parts = losses.sam_loss(logits, iou_pred, target)
    for k in ("loss", "focal", "dice", "iou_mse", "iou"):
        assert parts[k].shape == (3, 4)
    np.testing.assert_allclose(parts["loss"], 20 * parts["focal"] + parts["dice"] + parts["iou_mse"], rtol=1e-6)
    np.testing.assert_allclose(parts["iou_mse"], (iou_pred - parts["iou"]) ** 2, rtol=1e-6)
    np.testing.assert_allclose(parts["mask"], 20 * parts["focal"] + parts["dice"], rtol=1e-6)
    l1 = losses.sam_loss(logits, iou_pred, target, iou_weight=3.0, iou_loss="l1")  # SAM 2's absolute error
    np.testing.assert_allclose(l1["iou_mse"], np.abs(iou_pred - parts["iou"]), rtol=1e-6)
    np.testing.assert_allclose(l1["loss"], parts["mask"] + 3 * l1["iou_mse"], rtol=1e-6)
    with pytest.raises(ValueError, match="iou_loss must be one of"):
        losses.sam_loss(logits, iou_pred, target, iou_loss="huber")


def test_perfect_prediction_has_low_loss():
    target = jnp.zeros((1, 8, 8), bool).at[0, 2:6, 2:6].set(True)
    logits = jnp.where(target, 20.0, -20.0)[:, None]
    parts = losses.sam_loss(logits, jnp.ones((1, 1)), target)
    assert float(parts["loss"][0, 0]) == pytest.approx(0.0, abs=1e-3)
