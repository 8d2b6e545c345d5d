"""samjax.evaluate: its single-point metric is what a served model (samjax.infer, SamPredictor's prompt format)
answers for the same point."""

import jax
import numpy as np

from samjax import evaluate
from samjax.infer import Predictor
from samjax.models import init_params
from tests.conftest import TINY_CONFIGS


def test_single_point_miou_is_the_predictors_answer():
    cfg = TINY_CONFIGS["tiny_windowed"]  # 64 x 64 input, 32 x 32 mask grid: 2 px per cell
    # The model's own init: masks of a few hundred cells (stand-in values saturate them to all or nothing). A loud
    # not-a-point embedding, so that a prompt without the pad gives other masks, not only other decimals.
    params = jax.tree.map(np.asarray, init_params(cfg, jax.random.PRNGKey(0)))
    pad = params["prompt_encoder"]["not_a_point_embed"]
    pad["embedding"] = 10 * pad["embedding"]
    s, m = cfg.image_size, cfg.mask_input_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (s, s, 3), np.uint8)
    masks = np.zeros((3, m, m), bool)
    masks[0, 4:12, 3:20] = True
    masks[1, 15:30, 10:18] = True
    masks[2, 2:9, 22:30] = True
    ex = {"image": image, "input_hw": np.array([s, s], np.int32), "original_hw": np.array([s, s], np.int32),
          "masks": masks, "mask_valid": np.ones(3, bool)}
    got = evaluate.evaluate(params, cfg, [ex], clicks=(1,), batch_masks=4)

    predictor = Predictor(cfg, params)
    predictor.set_image(image)  # S x S: no resize, pixel coordinates are the same in both frames
    r = s / m
    ious, oracle = [], []
    for gt in masks:
        row, col = evaluate.interior_point(gt)
        _, iou_pred, low_res = predictor.predict(np.array([[(col + 0.5) * r - 0.5, (row + 0.5) * r - 0.5]]),
                                                 np.array([1]))
        ious.append(evaluate.iou(low_res[int(np.argmax(iou_pred))] > 0, gt))
        oracle.append(max(evaluate.iou(x > 0, gt) for x in low_res))
    assert got["num_masks"] == 3
    np.testing.assert_allclose(got["miou_1pt"], np.mean(ious), atol=1e-6)
    np.testing.assert_allclose(got["miou_1pt_oracle"], np.mean(oracle), atol=1e-6)
    assert 0.0 < got["miou_1pt_oracle"] < 1.0  # the random model's masks are neither empty nor perfect here
