"""The decoder's attention gives the same values in every association order `attention_plan` can pick."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax.models import transformer as T

PLANS = list(itertools.product(["standard", "k_into_q", "q_into_k"], ["standard", "v_late", "o_early"]))


@pytest.mark.parametrize("shared", ["none", "keys", "queries"])
def test_every_plan_matches_standard(shared, monkeypatch):
    c, nh, b = 32, 4, 3
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((1 if shared == "queries" else b, 5, c)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((1 if shared == "keys" else b, 40, c)), jnp.float32)
    key_mask = jnp.asarray(rng.random((b, 40)) > 0.3)
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
    assert outs[PLANS[0]].shape == (b, 5, c)


def test_plan_picks_the_cheaper_order():
    # ViT-B decoder sizes: 7 prompt tokens, 4096 image positions, 256 channels, 8 heads of 16
    assert T.attention_plan(64, 7, 64, 4096, 256, 8, 16) == ("k_into_q", "v_late")  # token -> prompt-specific image
    assert T.attention_plan(64, 7, 1, 4096, 256, 8, 16)[0] == "standard"  # image side shared: project it once
    assert T.attention_plan(64, 4096, 64, 7, 256, 8, 16) == ("q_into_k", "o_early")  # image -> token
    assert T.attention_plan(1, 4096, 64, 7, 256, 8, 16) == ("standard", "o_early")  # layer 0: image queries shared
    assert T.attention_plan(64, 7, 64, 7, 256, 8, 32) == ("standard", "standard")  # token self-attention
