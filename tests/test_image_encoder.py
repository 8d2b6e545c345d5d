"""The scanned image encoder (config.encoder_scan) computes what the blocks one after another compute."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax.models import ImageEncoderViT, SamConfig
from samjax.models.sam.image_encoder import block_groups
from tests.conftest import TINY_CONFIGS


def test_block_groups_of_the_official_sizes():
    assert block_groups(SamConfig.vit_b()) == (4, ((14, 2), (0, 1)))
    assert block_groups(SamConfig.vit_l()) == (4, ((14, 5), (0, 1)))
    assert block_groups(SamConfig.vit_h()) == (4, ((14, 7), (0, 1)))
    # all global: one block per group; an irregular pattern: one group of runs
    assert block_groups(TINY_CONFIGS["tiny_global_norel"]) == (3, ((0, 1),))
    assert block_groups(TINY_CONFIGS["tiny_noabs_deep"]) == (1, ((0, 1), (4, 2), (0, 1)))


@pytest.mark.parametrize("name", ["periodic", "tiny_noabs_deep"])
def test_scan_equals_unrolled_blocks(name):
    """Embeddings, the global blocks' outputs (HQ-SAM's interm) and gradients, with drop path and remat on: the scan
    stacks the per-block parameters and draws block i's drop-path key as the unrolled blocks do."""
    cfg = TINY_CONFIGS.get(name) or SamConfig(image_size=64, patch_size=8, encoder_embed_dim=32, encoder_depth=6,
                                              encoder_num_heads=2, window_size=3, encoder_global_attn_indexes=(2, 5),
                                              prompt_embed_dim=32, mask_in_chans=8)
    cfg = cfg.replace(encoder_drop_path_rate=0.3, encoder_remat=True)
    x = jax.random.normal(jax.random.key(0), (2, cfg.image_size, cfg.image_size, 3))
    params = ImageEncoderViT(cfg.replace(encoder_scan=False)).init(jax.random.key(1), x)
    rngs = {"dropout": jax.random.key(5)}
    out = {}
    for scan in (False, True):
        m = ImageEncoderViT(cfg.replace(encoder_scan=scan))

        def loss(p, m=m):
            emb, interm = m.apply(p, x, train=True, return_interm=True, rngs=rngs)
            return (emb ** 2).sum(), (emb, interm)

        (_, (emb, interm)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        out[scan] = emb, interm, grads
    (e0, i0, g0), (e1, i1, g1) = out[False], out[True]
    np.testing.assert_array_equal(e0, e1)
    assert len(i0) == len(i1) == sum(1 for i in range(cfg.encoder_depth)
                                     if cfg.window_size == 0 or i in cfg.encoder_global_attn_indexes)
    for a, b in zip(i0, i1):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(e1).max()) > 0.1
