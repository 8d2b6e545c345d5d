"""MAE checkpoint -> SAM image encoder: key mapping, layouts, position-embedding interpolation."""

import jax
import numpy as np
import pytest

from samjax.models import SamConfig
from samjax.weights import mae

CFG = SamConfig(image_size=64, patch_size=16, encoder_embed_dim=16, encoder_depth=2, encoder_num_heads=2,
                window_size=2, encoder_global_attn_indexes=(1,), prompt_embed_dim=16, mask_in_chans=4,
                decoder_depth=1, decoder_num_heads=2, decoder_mlp_dim=16, iou_head_hidden_dim=16)


def fake_mae(c=16, depth=2, n=4, seed=0):
    r = np.random.default_rng(seed)
    sd = {"cls_token": r.normal(size=(1, 1, c)), "pos_embed": r.normal(size=(1, 1 + n * n, c)),
          "patch_embed.proj.weight": r.normal(size=(c, 3, 16, 16)), "patch_embed.proj.bias": r.normal(size=(c,)),
          "norm.weight": np.ones(c), "norm.bias": np.zeros(c)}
    for i in range(depth):
        p = f"blocks.{i}."
        for k, shape in (("norm1.weight", (c,)), ("norm1.bias", (c,)), ("attn.qkv.weight", (3 * c, c)),
                         ("attn.qkv.bias", (3 * c,)), ("attn.proj.weight", (c, c)), ("attn.proj.bias", (c,)),
                         ("norm2.weight", (c,)), ("norm2.bias", (c,)), ("mlp.fc1.weight", (4 * c, c)),
                         ("mlp.fc1.bias", (4 * c,)), ("mlp.fc2.weight", (c, 4 * c)), ("mlp.fc2.bias", (c,))):
            sd[p + k] = r.normal(size=shape)
    return sd


def test_mapping_layouts_and_untouched_rest():
    sd = fake_mae()
    params = mae.init_from_mae({"model": sd}, CFG, jax.random.PRNGKey(0))
    enc = params["image_encoder"]
    np.testing.assert_allclose(enc["patch_embed"]["proj"]["kernel"],
                               sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0), rtol=1e-6)
    np.testing.assert_allclose(enc["blocks_1"]["attn"]["qkv"]["kernel"], sd["blocks.1.attn.qkv.weight"].T, rtol=1e-6)
    np.testing.assert_allclose(enc["blocks_0"]["mlp"]["lin2"]["bias"], sd["blocks.0.mlp.fc2.bias"], rtol=1e-6)
    np.testing.assert_allclose(enc["blocks_0"]["norm2"]["scale"], sd["blocks.0.norm2.weight"], rtol=1e-6)
    # same grid (4 x 4): cls dropped, reshaped row-major
    np.testing.assert_allclose(enc["pos_embed"][0], sd["pos_embed"][0, 1:].reshape(4, 4, 16), rtol=1e-6)
    assert not np.any(enc["blocks_0"]["attn"]["rel_pos_h"])  # not in MAE: fresh (zeros)


def test_pos_embed_interpolation_and_errors():
    grid = np.linspace(0, 1, 14 * 14).reshape(1, 196, 1) * np.ones((1, 1, 3))
    out = mae.resize_pos_embed(np.concatenate([np.zeros((1, 1, 3)), grid], 1), 64)
    assert out.shape == (1, 64, 64, 3)
    assert out[0, 0, 0, 0] < out[0, 0, -1, 0] < out[0, -1, -1, 0]  # smooth ramp preserved
    with pytest.raises(ValueError, match="blocks"):
        mae.mae_to_encoder(fake_mae(depth=3), CFG)
    with pytest.raises(ValueError, match="patch embedding"):
        mae.mae_to_encoder(fake_mae(c=8), CFG)
