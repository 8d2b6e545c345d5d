"""The decoder's attention gives the same values in every association order `attention_plan` can pick and in every
logits layout it lays the products out in (image->token, token->image, image side projected once per image)."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax.models.sam import transformer as T

PLANS = list(itertools.product(["standard", "k_into_q", "q_into_k"], ["standard", "v_late", "o_early"]))


@pytest.mark.parametrize("shared", ["none", "keys", "queries"])
@pytest.mark.parametrize("sizes", [(5, 40), (40, 5)], ids=["few_queries", "few_keys"])
def test_every_plan_matches_standard(shared, sizes, monkeypatch):
    c, nh, b = 32, 4, 3
    nq, nk = sizes
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((1 if shared == "queries" else b, nq, c)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((1 if shared == "keys" else b, nk, c)), jnp.float32)
    key_mask = jnp.asarray(rng.random((b, nk)) > 0.3).at[:, 0].set(True)
    module = T.Attention(c, nh, downsample_rate=2)
    params = module.init(jax.random.key(0), q, k, k)
    # non-zero biases: the plans treat them differently (dropped under softmax, folded after the weights)
    params = jax.tree.map(lambda x: x + 0.1 * jnp.asarray(rng.standard_normal(x.shape), jnp.float32), params)
    outs = {}
    for plan in PLANS:
        monkeypatch.setattr(T, "attention_plan", lambda *a, plan=plan: plan)
        outs[plan] = np.asarray(module.apply(params, q, k, k, key_mask))
    for plan in PLANS[1:]:
        np.testing.assert_allclose(outs[plan], outs[PLANS[0]], atol=2e-5, rtol=2e-5, err_msg=str(plan))
    assert outs[PLANS[0]].shape == (b, nq, c)


@pytest.mark.parametrize("names", [("k", "v"), ("q",)], ids=["token_to_image", "image_to_token"])
def test_projected_image_side_matches_computed(names):
    """`projected` (the image side's projections made once per image, head-major, as `models.image_cache` makes
    them) gives what the module computes from the raw image side, in the layouts it picks for them."""
    c, nh, b, n, t = 64, 4, 3, 48, 5
    # at these sizes the image->token values go through the output projection first, as at SAM's
    assert T.attention_plan(1, n, b, t, c, nh, c // 2 // nh)[1] == "o_early"
    rng = np.random.default_rng(1)
    image = jnp.asarray(rng.standard_normal((1, n, c)), jnp.float32)
    tokens = jnp.asarray(rng.standard_normal((b, t, c)), jnp.float32)
    module = T.Attention(c, nh, downsample_rate=2)
    params = module.init(jax.random.key(0), tokens, image, image)
    params = jax.tree.map(lambda x: x + 0.1 * jnp.asarray(rng.standard_normal(x.shape), jnp.float32), params)
    p = nn.meta.unbox(params)["params"]

    def head_major(name):
        y = image @ p[f"{name}_proj"]["kernel"] + p[f"{name}_proj"]["bias"]
        return y.reshape(1, n, nh, -1).transpose(0, 2, 3, 1)

    projected = {name: head_major(name) for name in names}
    if names == ("q",):  # image positions attend to the tokens; some tokens are padding
        args = (image, tokens, tokens, jnp.asarray(rng.random((b, t)) > 0.3).at[:, 0].set(True))
    else:
        args = (tokens, image, image, None)
    want = module.apply(params, *args)
    got = module.apply(params, *args, projected=projected)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5, rtol=2e-5)
    assert got.shape == (b, args[0].shape[1], c)


def test_plan_picks_the_cheaper_order():
    # ViT-B decoder sizes: 7 prompt tokens, 4096 image positions, 256 channels, 8 heads of 16
    assert T.attention_plan(64, 7, 64, 4096, 256, 8, 16) == ("k_into_q", "v_late")  # token -> prompt-specific image
    assert T.attention_plan(64, 7, 1, 4096, 256, 8, 16)[0] == "standard"  # image side shared: project it once
    assert T.attention_plan(64, 4096, 64, 7, 256, 8, 16) == ("q_into_k", "o_early")  # image -> token
    assert T.attention_plan(1, 4096, 64, 7, 256, 8, 16) == ("standard", "o_early")  # layer 0: image queries shared
    assert T.attention_plan(64, 7, 64, 7, 256, 8, 32) == ("standard", "standard")  # token self-attention
