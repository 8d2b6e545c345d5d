"""samjax.models.conv_layers against torch: BatchNorm2d in eval and train mode (running statistics updated as
torch's: momentum 0.1, unbiased variance), the tanh GELU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax.models.conv_layers import BatchNorm, gelu_tanh

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def test_batch_norm_matches_torch_in_eval_and_train():
    rng = np.random.default_rng(0)
    x = (3.0 + 2.0 * rng.standard_normal((4, 5, 6, 7))).astype(np.float32)
    ref = torch.nn.BatchNorm2d(7, eps=1e-6)
    with torch.no_grad():
        ref.weight.copy_(torch.as_tensor(1 + 0.1 * rng.standard_normal(7), dtype=torch.float32))
        ref.bias.copy_(torch.as_tensor(0.1 * rng.standard_normal(7), dtype=torch.float32))
        ref.running_mean.copy_(torch.as_tensor(rng.standard_normal(7), dtype=torch.float32))
        ref.running_var.copy_(torch.as_tensor(rng.uniform(0.5, 1.5, 7), dtype=torch.float32))
    variables = {"params": {"scale": ref.weight.detach().numpy().copy(), "bias": ref.bias.detach().numpy().copy()},
                 "batch_stats": {"mean": ref.running_mean.numpy().copy(), "var": ref.running_var.numpy().copy()}}
    bn = BatchNorm("embed", eps=1e-6)
    xt = torch.as_tensor(x.transpose(0, 3, 1, 2))
    with torch.no_grad():
        ref_eval = ref.eval()(xt).numpy().transpose(0, 2, 3, 1)
        ref_train = ref.train()(xt).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(bn.apply(variables, jnp.asarray(x))), ref_eval, atol=1e-5, rtol=0)
    out, updated = bn.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(out), ref_train, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(updated["batch_stats"]["mean"]), ref.running_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(np.asarray(updated["batch_stats"]["var"]), ref.running_var.numpy(), atol=1e-5)
    init = BatchNorm("embed").init(jax.random.key(0), jnp.asarray(x), train=True)
    assert float(jnp.abs(init["batch_stats"]["mean"].unbox()).max()) == 0.0  # init leaves the statistics alone


def test_gelu_tanh_matches_torch():
    x = np.linspace(-6, 6, 1001, dtype=np.float32)
    ref = torch.nn.GELU(approximate="tanh")(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(np.asarray(gelu_tanh(jnp.asarray(x))), ref, atol=1e-6, rtol=0)
