"""Prompt simulation: sampler statistics, token layout, round schedule, loss selection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax.models.sam.prompt_encoder import IGNORE, NOT_A_POINT
from samjax.training import losses, prompts

S, M = 64, 16  # image side, mask grid (4 px per cell)


def _square_masks(p):
    m = np.zeros((p, M, M), bool)
    m[:, 4:12, 2:6] = True  # cells rows 4..11, cols 2..5 -> pixels x [8, 24), y [16, 48)
    return jnp.asarray(m), jnp.tile(jnp.array([[8.0, 16.0, 24.0, 48.0]]), (p, 1))


def test_first_prompt_statistics():
    p = 4000
    masks, boxes = _square_masks(p)
    cfg = prompts.PromptConfig()
    coords, labels, is_point = prompts.initial_prompts(jax.random.PRNGKey(0), masks, boxes, S, cfg)
    coords, labels, is_point = map(np.asarray, (coords, labels, is_point))
    assert coords.shape == (p, cfg.num_tokens, 2) and cfg.num_tokens == 10
    assert abs(is_point.mean() - 0.5) < 0.03  # 50/50 point or box
    pts = coords[is_point, 0]
    assert np.all(labels[is_point, 0] == 1) and np.all(labels[is_point, 1] == NOT_A_POINT)  # official pad
    # foreground point: inside the mask, uniform over it (mean at the centre, spread of a uniform)
    assert pts[:, 0].min() >= 7.5 and pts[:, 0].max() < 24 and pts[:, 1].min() >= 15.5 and pts[:, 1].max() < 48
    np.testing.assert_allclose(pts.mean(0), [15.5, 31.5], atol=0.4)
    np.testing.assert_allclose(pts[:, 1].std(), 32 / np.sqrt(12), rtol=0.05)
    # noisy box: corners labelled 2 / 3, noise sd 10% of side (w = 16 -> 1.6 px; h = 32 -> 3.2 px)
    box = coords[~is_point, :2].reshape(-1, 4)
    assert np.all(labels[~is_point, 0] == 2) and np.all(labels[~is_point, 1] == 3)
    np.testing.assert_allclose((box - np.array([8, 16, 24, 48])).std(0), [1.6, 3.2, 1.6, 3.2], rtol=0.08)
    assert np.all(labels[:, 2:] == IGNORE)


def test_training_point_prompts_are_the_served_format():
    """The simulation's first point prompt decodes exactly as the same point through samjax.infer, which follows
    SamPredictor (the point and one not-a-point pad): a model is trained on the token set it is served with.
    Without the pad in training (IGNORE in slot 1) the outputs differ."""
    from samjax.infer import Predictor
    from samjax.models import decode_prompts
    from tests.conftest import TINY_CONFIGS, stand_in_params

    cfg = TINY_CONFIGS["tiny_windowed"]
    params = stand_in_params(cfg, scale=0.3)
    m = cfg.mask_input_size
    masks = np.zeros((2, m, m), bool)
    masks[:, 5:20, 8:14] = True
    boxes = jnp.tile(jnp.array([[16.0, 10.0, 28.0, 40.0]]), (2, 1))
    coords, labels, is_point = prompts.initial_prompts(jax.random.PRNGKey(3), jnp.asarray(masks), boxes,
                                                       cfg.image_size, prompts.PromptConfig(box_prob=0.0))
    assert bool(is_point.all())
    predictor = Predictor(cfg, params)
    image = np.random.default_rng(0).integers(0, 255, (cfg.image_size, cfg.image_size, 3), np.uint8)
    predictor.set_image(image)  # S x S: no resize, so the pixel coordinates are the same in both frames
    _, iou_served, logits_served = predictor.predict(np.asarray(coords[0, :1]), np.array([1]))
    logits, iou = decode_prompts(predictor.params, cfg, predictor.features, coords[:1], labels[:1],
                                 image_pe=predictor.image_pe)
    np.testing.assert_allclose(np.asarray(logits[0]), logits_served, atol=1e-4)
    np.testing.assert_allclose(np.asarray(iou[0]), iou_served, atol=1e-5)


def test_box_noise_is_clipped_to_20px():
    p = 2000
    masks = jnp.ones((p, M, M), bool)
    boxes = jnp.tile(jnp.array([[0.0, 0.0, 1000.0, 1000.0]]), (p, 1))
    cfg = prompts.PromptConfig(box_prob=1.0)
    coords, _, _ = prompts.initial_prompts(jax.random.PRNGKey(1), masks, boxes, 2000, cfg)
    dev = np.abs(np.asarray(coords[:, :2]).reshape(-1, 4) - np.array([0, 0, 1000, 1000]))
    assert dev.max() <= 20.0 + 1e-4 and dev.max() > 19.0


def test_error_click_labels_and_uniformity():
    p = 3000
    target = np.zeros((p, M, M), bool)
    target[:, :, :8] = True
    pred = np.zeros((p, M, M), bool)
    pred[:, :, 4:12] = True  # false negatives: cols 0..3; false positives: cols 8..11 (equal areas)
    coords, labels = prompts.error_click(jax.random.PRNGKey(2), jnp.asarray(pred), jnp.asarray(target), S)
    coords, labels = np.asarray(coords), np.asarray(labels)
    col = (coords[:, 0] + 0.5) // (S / M)
    assert np.all((labels == 1) == (col < 4)) and np.all((labels == 0) == ((col >= 8) & (col < 12)))
    assert abs(labels.mean() - 0.5) < 0.04
    same = jnp.asarray(target)
    _, lab = prompts.error_click(jax.random.PRNGKey(3), same, same, S)
    assert np.all(np.asarray(lab) == IGNORE)  # perfect prediction: no click


def test_round_schedule():
    cfg = prompts.PromptConfig()
    assert cfg.num_rounds == 11
    positions = []
    for seed in range(200):
        add = np.asarray(prompts.round_schedule(jax.random.PRNGKey(seed), cfg))
        assert not add[0] and not add[-1] and add.sum() == 8
        positions.append(int(np.flatnonzero(~add[1:-1])[0]) + 1)
    assert set(positions) == set(range(1, 10))  # the extra no-click round lands anywhere among the 9


def test_simulate_loss_selection_against_hand_computation():
    p = 6
    masks, boxes = _square_masks(p)
    cfg = prompts.PromptConfig(num_click_rounds=3, no_click_rounds=2, box_prob=0.0)  # all single points
    good = jnp.where(masks, 30.0, -30.0)
    bad = jnp.full_like(good, -30.0)
    iou_pred = jnp.tile(jnp.array([[0.1, 0.2, 0.9, 0.3]]), (p, 1))

    def first(coords, labels):  # output 2 perfect, the others empty
        return jnp.stack([bad, bad, good, bad], 1), iou_pred

    def next_(coords, labels, mask_prompt):  # rounds 1..: the single-mask output only
        return bad[:, None], iou_pred[:, :1]

    loss, metrics = prompts.simulate(first, next_, masks, boxes, jnp.ones((p,), bool), jax.random.PRNGKey(0), S,
                                     cfg)
    # round 0 (one point: ambiguous) backpropagates the best multimask output (2) and trains the IoU head on all 3
    parts = losses.sam_loss(jnp.stack([bad, bad, good, bad], 1), iou_pred, masks)
    r0 = 20 * parts["focal"][0, 2] + parts["dice"][0, 2] + ((0.2 - 0) ** 2 + (0.9 - 1) ** 2 + (0.3 - 0) ** 2) / 3
    # later rounds: the single-mask output (0), which is empty
    later = 20 * parts["focal"][0, 0] + parts["dice"][0, 0] + 0.1 ** 2
    assert float(loss) == pytest.approx(float(r0 + 5 * later) / 6, rel=1e-5)
    assert float(metrics["miou_first"]) == pytest.approx(1.0)  # highest predicted IoU among 1..3 = output 2
    assert float(metrics["miou_last"]) == pytest.approx(0.0)   # single-mask output afterwards
    # padding slots carry no loss
    loss2, _ = prompts.simulate(first, next_, masks, boxes, jnp.arange(p) < 3, jax.random.PRNGKey(0), S, cfg)
    assert float(loss2) == pytest.approx(float(loss), rel=1e-6)


def test_lowest_loss_output_by_total_or_by_mask_loss():
    """loss.choose_by: "total" backpropagates the output with the lowest total loss, IoU term included, so a badly
    predicted IoU can move the choice to a worse mask; "mask" (SAM 2's rule) picks by focal + dice alone."""
    p = 4
    masks, boxes = _square_masks(p)
    cfg = prompts.PromptConfig(num_click_rounds=0, no_click_rounds=0, box_prob=0.0)  # one round, single points
    good = jnp.where(masks, 30.0, -30.0)
    near = good.at[:, 4, 2].set(-30.0)  # one cell short: a slightly higher mask loss
    iou_pred = jnp.tile(jnp.array([[0.5, 0.0, 1.0, 0.5]]), (p, 1))  # output 1 (perfect) predicted 0, 2 predicted 1
    outs = jnp.stack([near, good, near, near], 1)
    parts = losses.sam_loss(outs, iou_pred, masks, iou_weight=20.0)
    assert float(parts["loss"][0, 1]) > float(parts["loss"][0, 2])  # by the total, output 2 is chosen
    iou_term = 20.0 * parts["iou_mse"][0, 1:].mean()
    first, next_ = (lambda *a: (outs, iou_pred)), (lambda *a: (outs[:, :1], iou_pred[:, :1]))
    for choose_by, chosen in (("total", 2), ("mask", 1)):
        loss, _ = prompts.simulate(first, next_, masks, boxes, jnp.ones((p,), bool),
                                   jax.random.PRNGKey(0), S, cfg, {"iou_weight": 20.0, "choose_by": choose_by})
        assert float(loss) == pytest.approx(float(parts["mask"][0, chosen] + iou_term), rel=1e-5), choose_by
    with pytest.raises(ValueError, match="choose_by must be"):
        prompts.simulate(first, next_, masks, boxes, jnp.ones((p,), bool), jax.random.PRNGKey(0), S,
                         cfg, {"choose_by": "iou"})


@pytest.mark.parametrize("variant", [dict(unroll_rounds=True), dict(remat_rounds=True),
                                     *(dict(remat_rounds=True, remat_policy=n) for n in prompts.REMAT_POLICIES[1:])])
def test_unrolled_or_rematerialised_rounds_equal_the_scan(variant):
    """unroll_rounds (the CPU default of tiny_synthetic) and remat_rounds with each policy change how the rounds
    compile, not what they compute: the same loss, metrics and gradients as the plain scan, with rounds that depend
    on the previous mask and clicks."""
    p = 4
    masks, boxes = _square_masks(p)
    valid = jnp.arange(p) < 3

    def run(changed):
        cfg = prompts.PromptConfig(num_click_rounds=3, no_click_rounds=2, box_prob=0.5, **(variant if changed else {}))

        def loss_fn(w):
            def decode(coords, labels, prev):
                prev = prev @ jnp.eye(prev.shape[-1])  # a matrix product, for the policies that keep them
                base = jnp.where(masks, 2.0, -2.0) * w + 0.3 * prev + 0.01 * coords.sum((1, 2))[:, None, None]
                logits = jnp.stack([base, 0.5 * base, base - 1.0, base + 1.0], 1)
                return logits, jax.nn.sigmoid(logits.mean((2, 3)) * w)

            def first(coords, labels):
                return decode(coords, labels, jnp.zeros(masks.shape, jnp.float32))

            def next_(coords, labels, mask_prompt):
                logits, iou = decode(coords, labels, mask_prompt)
                return logits[:, :1], iou[:, :1]

            return prompts.simulate(first, next_, masks, boxes, valid, jax.random.PRNGKey(3), S, cfg)

        return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(jnp.float32(0.7))

    (loss_s, m_s), g_s = run(False)
    (loss_u, m_u), g_u = run(True)
    assert float(g_s) != 0.0
    np.testing.assert_allclose(float(loss_u), float(loss_s), rtol=1e-6)
    np.testing.assert_allclose(float(g_u), float(g_s), rtol=1e-5)
    for k in m_s:
        np.testing.assert_allclose(float(m_u[k]), float(m_s[k]), rtol=1e-6, err_msg=k)


def test_unknown_remat_policy_is_named():
    with pytest.raises(ValueError, match="remat_policy must be one of"):
        prompts.PromptConfig(remat_rounds=True, remat_policy="dots")


def test_mask_depth_is_the_chessboard_distance_to_the_background():
    """Against scipy's chessboard distance transform, the image border counting as background, capped."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    masks = np.zeros((6, 24, 24), bool)
    masks[0, 3:20, 2:15] = True            # a rectangle
    masks[1, :, :5] = True                 # touching three borders
    masks[2, 7, 9] = True                  # one cell
    masks[3] = rng.random((24, 24)) < 0.7  # ragged
    yy, xx = np.mgrid[:24, :24]
    masks[4] = (yy - 12) ** 2 + (xx - 11) ** 2 < 81  # a disc
    depth = np.asarray(prompts.mask_depth(jnp.asarray(masks), 4))
    for m, d in zip(masks, depth):
        ref = ndimage.distance_transform_cdt(np.pad(m, 1), metric="chessboard")[1:-1, 1:-1]
        np.testing.assert_array_equal(d, np.minimum(ref, 4))
    assert depth[5].max() == 0 and depth[0].max() == 4 and depth[2].max() == 1


def test_first_point_from_the_interior():
    """point_depth 1: every first point in the mask's deepest cells; 0.5: in cells at least half as deep; the
    box prompts are unchanged."""
    p = 2000
    masks, boxes = _square_masks(p)  # 8 x 4 cells: depth 2 in rows 5..10, cols 3..4 (x [12, 20), y [20, 44))
    uniform = prompts.initial_prompts(jax.random.PRNGKey(0), masks, boxes, S, prompts.PromptConfig())
    deep = prompts.initial_prompts(jax.random.PRNGKey(0), masks, boxes, S, prompts.PromptConfig(point_depth=1.0))
    pts = np.asarray(deep[0])[np.asarray(deep[2]), 0]
    assert pts[:, 0].min() >= 12 - 0.5 and pts[:, 0].max() < 20 and pts[:, 1].min() >= 20 - 0.5
    assert pts[:, 1].max() < 44
    np.testing.assert_allclose(pts.mean(0), [15.5, 31.5], atol=0.4)
    u = np.asarray(uniform[0])[np.asarray(uniform[2]), 0]
    assert (u[:, 0] < 12).mean() > 0.2  # uniform points do reach the outer ring
    np.testing.assert_array_equal(np.asarray(deep[0])[~np.asarray(deep[2])], np.asarray(uniform[0])[~np.asarray(
        uniform[2])])
    half = prompts.initial_prompts(jax.random.PRNGKey(1), masks, boxes, S, prompts.PromptConfig(point_depth=0.5))
    hp = np.asarray(half[0])[np.asarray(half[2]), 0]
    assert hp[:, 0].min() >= 7.5 and (hp[:, 0] < 12).mean() > 0.2  # ceil(0.5 * 2) = 1: the whole mask
    with pytest.raises(ValueError, match="point_depth must be in"):
        prompts.PromptConfig(point_depth=1.5)
