"""Recipe pieces: layer-decay multipliers, schedule values, which parameters get weight decay, freezing."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from samjax.models import SamConfig, abstract_params
from samjax.training import optim
from tests.conftest import stand_in_params

CFG = SamConfig(image_size=32, patch_size=8, encoder_embed_dim=16, encoder_depth=3, encoder_num_heads=2,
                window_size=2, encoder_global_attn_indexes=(2,), prompt_embed_dim=16, mask_in_chans=4,
                decoder_depth=1, decoder_num_heads=2, decoder_mlp_dim=16, iou_head_hidden_dim=16)


def _flat(tree):
    return {"/".join(str(k.key) for k in p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_schedule_vith_values():
    fn = optim.schedule(8e-4, 250, (60000, 86666), 0.1)
    assert float(fn(0)) == pytest.approx(8e-4 / 250)
    assert float(fn(124)) == pytest.approx(8e-4 * 125 / 250)
    assert float(fn(249)) == pytest.approx(8e-4)
    assert float(fn(59999)) == pytest.approx(8e-4)
    assert float(fn(60000)) == pytest.approx(8e-5)
    assert float(fn(86665)) == pytest.approx(8e-5)
    assert float(fn(86666)) == pytest.approx(8e-6)
    assert float(fn(89999)) == pytest.approx(8e-6)


def test_layer_decay_multipliers():
    mult = _flat(optim.lr_multipliers(abstract_params(CFG), depth=3, layer_decay=0.8))
    d = 0.8
    assert mult["image_encoder/patch_embed/proj/kernel"] == pytest.approx(d ** 4)
    assert mult["image_encoder/pos_embed"] == pytest.approx(d ** 4)
    assert mult["image_encoder/blocks_0/attn/qkv/kernel"] == pytest.approx(d ** 3)
    assert mult["image_encoder/blocks_2/mlp/lin2/bias"] == pytest.approx(d ** 1)
    assert mult["image_encoder/neck_0/kernel"] == 1.0
    assert mult["mask_decoder/iou_token/embedding"] == 1.0
    assert mult["prompt_encoder/pe_layer/positional_encoding_gaussian_matrix"] == 0.0
    frozen = _flat(optim.lr_multipliers(abstract_params(CFG), 3, 0.8, freeze_image_encoder=True))
    assert all(v == 0.0 for k, v in frozen.items() if k.startswith("image_encoder/"))
    assert frozen["mask_decoder/iou_token/embedding"] == 1.0


def test_weight_decay_mask():
    mask = _flat(optim.decay_mask(abstract_params(CFG)))
    assert mask["image_encoder/blocks_0/attn/qkv/kernel"]
    assert mask["mask_decoder/transformer/layers_0/mlp/lin1/kernel"]
    for no in ("image_encoder/blocks_0/attn/qkv/bias", "image_encoder/blocks_0/norm1/scale",
               "image_encoder/neck_1/bias", "image_encoder/pos_embed", "image_encoder/blocks_1/attn/rel_pos_h",
               "image_encoder/blocks_1/attn/rel_pos_w",
               "prompt_encoder/pe_layer/positional_encoding_gaussian_matrix"):
        assert not mask[no], no


def test_adamw_update_matches_formula_and_freezes_fourier():
    params = stand_in_params(CFG)  # any values of the model's shapes (no init compile)
    cfg = ml_collections.ConfigDict(dict(lr=1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1, layer_decay=0.5,
                                         warmup_steps=0, decay_steps=(), decay_factor=0.1))
    tx = optim.make_optimizer(cfg, params, CFG.encoder_depth)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
    # jitted: one compile instead of one per eager op and shape
    updates, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(grads, params)
    u, p = _flat(updates), _flat(params)
    # first Adam step: m/sqrt(v) = sign(g) = 1 (up to eps)
    k = "image_encoder/blocks_0/attn/qkv/kernel"
    np.testing.assert_allclose(u[k], -1e-2 * 0.5 ** 3 * (1.0 + 0.1 * p[k]), rtol=1e-4)
    b = "image_encoder/blocks_0/attn/qkv/bias"
    np.testing.assert_allclose(u[b], -1e-2 * 0.5 ** 3 * np.ones_like(p[b]), rtol=1e-4)
    assert not np.any(u["prompt_encoder/pe_layer/positional_encoding_gaussian_matrix"])


def test_muon_orthogonalises_dense_kernels_and_adam_does_the_rest():
    params = stand_in_params(CFG)
    labels = _flat(jax.tree_util.tree_map_with_path(optim.is_matrix, abstract_params(CFG)))
    assert labels["image_encoder/blocks_0/attn/qkv/kernel"]
    assert labels["mask_decoder/iou_prediction_head/layers_0/kernel"]
    for adam in ("image_encoder/patch_embed/proj/kernel", "image_encoder/blocks_1/attn/rel_pos_h",
                 "mask_decoder/iou_token/embedding", "image_encoder/neck_0/kernel",
                 "image_encoder/blocks_0/norm1/scale"):
        assert not labels[adam], adam
    base = dict(lr=1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1, layer_decay=0.5, warmup_steps=0,
                decay_steps=(), decay_factor=0.1)
    cfg = ml_collections.ConfigDict(dict(base, kind="muon", muon_beta=0.95, muon_rms=0.2))
    tx = optim.make_optimizer(cfg, params, CFG.encoder_depth)
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(p.size), p.shape, p.dtype), params)
    updates, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(grads, params)
    u, p, g = _flat(updates), _flat(params), _flat(grads)
    k = "image_encoder/blocks_0/attn/qkv/kernel"  # (16, 48): one step of Muon, then decay, layer decay and lr
    direction = (-u[k] / (1e-2 * 0.5 ** 3) - 0.1 * p[k]) / (0.2 * 48 ** 0.5)
    s = np.linalg.svd(direction, compute_uv=False)
    assert 0.5 < s.min() and s.max() < 1.25, s  # orthogonalised: the gradient's singular values were spread out
    assert np.linalg.svd(g[k], compute_uv=False).max() / np.linalg.svd(g[k], compute_uv=False).min() > 2.5
    assert np.corrcoef(direction.ravel(), g[k].ravel())[0, 1] > 0.5  # ... and still points along it
    b = "image_encoder/blocks_0/attn/qkv/bias"  # Adam's first step: sign(g)
    np.testing.assert_allclose(u[b], -1e-2 * 0.5 ** 3 * np.sign(g[b]), rtol=1e-3)
    assert not np.any(u["prompt_encoder/pe_layer/positional_encoding_gaussian_matrix"])
    with pytest.raises(ValueError, match="optim.kind"):
        optim.make_optimizer(ml_collections.ConfigDict(dict(base, kind="sgd")), params, CFG.encoder_depth)
