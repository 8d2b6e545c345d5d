"""samjax.models.conv_layers against torch: BatchNorm2d in eval and train mode (running statistics updated as
torch's: momentum 0.1, unbiased variance), the tanh GELU, depthwise Conv2d (values and input gradients)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax.models.conv_layers import BatchNorm, DepthwiseConv2d, conv2d, gelu_tanh

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


@pytest.mark.parametrize("kernel,stride,bias,size", [(3, 1, False, 9), (3, 2, True, 9), (5, 1, True, 8),
                                                     (3, 2, False, 8)])
def test_depthwise_conv_matches_torch(kernel, stride, bias, size):
    """conv2d with groups == features is the shifted-sum DepthwiseConv2d: torch's Conv2d(groups=C) from the same
    weights (odd and even sizes, stride 1 and 2), values and the gradient with respect to the input."""
    c = 6
    layer = conv2d(c, kernel, stride=stride, groups=c, use_bias=bias, axes=("embed", "embed"))
    assert isinstance(layer, DepthwiseConv2d)
    rng = np.random.default_rng(kernel + stride)
    x = rng.standard_normal((2, size, size, c)).astype(np.float32)
    shapes = nn.unbox(jax.eval_shape(layer.init, jax.random.key(0), x))["params"]
    params = jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(np.float32), shapes)
    ref = torch.nn.Conv2d(c, c, kernel, stride, kernel // 2, groups=c, bias=bias)
    with torch.no_grad():
        ref.weight.copy_(torch.as_tensor(np.asarray(params["kernel"]).transpose(3, 2, 0, 1)))
        if bias:
            ref.bias.copy_(torch.as_tensor(np.asarray(params["bias"])))
    xt = torch.as_tensor(x.transpose(0, 3, 1, 2)).requires_grad_(True)
    out_t = ref(xt)
    cot = rng.standard_normal(out_t.shape).astype(np.float32)
    out_t.backward(torch.as_tensor(cot))

    def f(x):
        return layer.apply({"params": params}, x)

    out, vjp = jax.vjp(f, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(out), out_t.detach().numpy().transpose(0, 2, 3, 1), atol=1e-5, rtol=0)
    (dx,) = vjp(jnp.asarray(cot.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(dx), xt.grad.numpy().transpose(0, 2, 3, 1), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="depthwise convolution of 6 channels got an input of 4"):
        layer.apply({"params": params}, x[..., :4])
