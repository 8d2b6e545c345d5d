"""The shared layers of samjax.models.common against the operations they stand for."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax.models.common import PatchConv, conv


@pytest.mark.parametrize("k,cin", [(2, 1), (2, 4), (1, 16), (4, 3)])
def test_patch_conv_is_the_strided_convolution(k, cin):
    x = jnp.asarray(np.random.default_rng(k * 10 + cin).standard_normal((2, 8, 12, cin)), jnp.float32)
    layer = conv(5, k, stride=k, axes=("in_channels", "mask_channels"), dtype=jnp.float32)
    assert isinstance(layer, PatchConv)  # what the patch embedding and the mask downscaling get
    params = layer.init(jax.random.PRNGKey(0), x)["params"]
    params = {"kernel": params["kernel"].value, "bias": jnp.linspace(-1.0, 1.0, 5)}
    assert params["kernel"].shape == (k, k, cin, 5)  # nn.Conv's layout: converted weights load unchanged
    got = layer.apply({"params": params}, x)
    ref = jax.lax.conv_general_dilated(x, params["kernel"], (k, k), "VALID",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC")) + params["bias"]
    assert got.shape == (2, 8 // k, 12 // k, 5)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_patch_conv_names_the_shape_it_needs():
    layer = conv(4, 2, stride=2, axes=("in_channels", "mask_channels"), dtype=jnp.float32, name="down")
    with pytest.raises(ValueError, match="multiples of 2"):
        layer.init(jax.random.PRNGKey(0), jnp.zeros((1, 5, 4, 1)))


def test_padded_or_overlapping_convolutions_stay_convolutions():
    assert not isinstance(conv(4, 3, padding=1, axes=("neck", "neck"), dtype=jnp.float32), PatchConv)


def test_low_precision_layer_norm_is_flax_layer_norm():
    """bfloat16 LayerNorm (custom backward: keeps x, mean and 1/std) gives nn.LayerNorm's forward values exactly and
    its gradients (parameters to float32 rounding, the input to one bfloat16 rounding)."""
    import flax.linen as nn

    from samjax.models.common import LowPrecisionLayerNorm, layer_norm

    x = (jax.random.normal(jax.random.key(0), (3, 5, 64)) * 3 + 1).astype(jnp.bfloat16)
    ref = nn.LayerNorm(epsilon=1e-6, dtype=jnp.bfloat16, param_dtype=jnp.float32, use_fast_variance=False)
    ours = layer_norm("embed", eps=1e-6, dtype=jnp.bfloat16)
    assert isinstance(ours, LowPrecisionLayerNorm)
    p = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(2), a.shape), ref.init(jax.random.key(1), x))
    np.testing.assert_array_equal(np.asarray(ref.apply(p, x), np.float32), np.asarray(ours.apply(p, x), np.float32))
    w = jax.random.normal(jax.random.key(3), x.shape)
    grads = [jax.grad(lambda p, x, m=m: (m.apply(p, x).astype(jnp.float32) * w).sum(), argnums=(0, 1))(p, x)
             for m in (ref, ours)]
    (gp_ref, gx_ref), (gp, gx) = grads
    for a, b in zip(jax.tree.leaves(gp_ref), jax.tree.leaves(gp)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gx_ref, np.float32), np.asarray(gx, np.float32), atol=2e-2)
