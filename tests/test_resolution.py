"""samjax.weights.resolution: parameters trained at one image size, grown to another (training's low_res stage)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from samjax.models import SamConfig, abstract_params, init_params
from samjax.weights import resolution

SMALL = SamConfig(image_size=32, patch_size=8, encoder_embed_dim=16, encoder_depth=2, encoder_num_heads=2,
                  window_size=2, encoder_global_attn_indexes=(1,), prompt_embed_dim=16, mask_in_chans=4,
                  decoder_depth=1, decoder_num_heads=2, decoder_mlp_dim=32, iou_head_hidden_dim=16)


def test_grown_params_fit_the_larger_model_and_only_grid_tables_change():
    params = jax.tree.map(np.asarray, init_params(SMALL, jax.random.PRNGKey(0)))
    params["image_encoder"]["blocks_1"]["attn"]["rel_pos_h"] = np.random.default_rng(0).normal(size=(7, 8))
    big = SMALL.replace(image_size=64, dtype="bfloat16")
    grown = resolution.grow_params(params, SMALL, big)
    assert jax.tree.map(np.shape, grown) == jax.tree.map(lambda a: a.shape, abstract_params(big))
    enc, old = grown["image_encoder"], params["image_encoder"]
    assert enc["pos_embed"].shape == (1, 8, 8, 16)
    assert enc["blocks_1"]["attn"]["rel_pos_h"].shape == (15, 8)  # global block: 2 x 8 - 1
    np.testing.assert_array_equal(enc["blocks_0"]["attn"]["rel_pos_h"], old["blocks_0"]["attn"]["rel_pos_h"])
    flat_new = jax.tree_util.tree_flatten_with_path(grown)[0]
    flat_old = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    changed = {jax.tree_util.keystr(p) for p, v in flat_new if v.shape != flat_old[p].shape
               or not np.array_equal(v, flat_old[p])}
    assert changed == {"['image_encoder']['pos_embed']", "['image_encoder']['blocks_1']['attn']['rel_pos_h']",
                       "['image_encoder']['blocks_1']['attn']['rel_pos_w']"}
    assert params["image_encoder"]["pos_embed"].shape == (1, 4, 4, 16)  # the input is left as it was


def test_rel_pos_offsets_scale_with_the_grid():
    old = np.random.default_rng(1).normal(size=(7, 3)).astype(np.float32)  # offsets -3..3 of a 4-grid
    new = resolution.resample_rel_pos(old, 15)  # offsets -7..7 of an 8-grid
    for d in range(-3, 4):  # offset d of the 4-grid is offset 2d of the 8-grid
        np.testing.assert_allclose(new[7 + 2 * d], old[3 + d], rtol=1e-6)
    np.testing.assert_allclose(new[8], (old[3] + old[4]) / 2, rtol=1e-6)  # linear in between
    np.testing.assert_array_equal(new[0], old[0])  # offset -7 is beyond -6: held at the end row
    np.testing.assert_array_equal(resolution.resample_rel_pos(old, 7), old)
    with pytest.raises(ValueError, match="odd"):
        resolution.resample_rel_pos(old, 14)


def test_pos_embed_keeps_its_place_in_the_image():
    params = jax.tree.map(np.asarray, init_params(SMALL, jax.random.PRNGKey(0)))
    ramp = np.broadcast_to(np.arange(4, dtype=np.float32)[None, :, None], (4, 4, 16))  # column index
    params["image_encoder"]["pos_embed"] = ramp[None].copy()
    grown = resolution.grow_params(params, SMALL, SMALL.replace(image_size=64))["image_encoder"]["pos_embed"][0]
    # column c of the 8-grid sits at (c + 0.5) / 2 - 0.5 of the 4-grid: a linear ramp of slope
    # 1/2 where the bicubic taps stay inside the grid
    expected = (np.arange(8) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(grown[:, 3:5, 0], np.broadcast_to(expected[3:5], (8, 2)), atol=1e-4)
    np.testing.assert_allclose(grown[..., 0], grown[..., 5], atol=1e-6)  # rows unchanged across channels


def test_configs_that_differ_in_more_than_the_size_are_refused():
    params = jax.tree.map(np.asarray, init_params(SMALL, jax.random.PRNGKey(0)))
    with pytest.raises(ValueError, match="encoder_depth"):
        resolution.grow_params(params, SMALL, SMALL.replace(image_size=64, encoder_depth=3))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        resolution.grow_params(params, SMALL, SMALL.replace(image_size=60))
