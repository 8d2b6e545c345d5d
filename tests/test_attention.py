"""The encoder attention implementations compute the same function (values and gradients) as the reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax.models import SamConfig
from samjax.models import attention as A


def _inputs(seed, b=2, hw=(6, 5), nh=3, hd=8, rel=True, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    h, w = hw
    q, k, v = (jnp.asarray(rng.standard_normal((b, h * w, nh, hd)), dtype) for _ in range(3))
    rel_pos = (jnp.asarray(rng.standard_normal((2 * h - 1, hd)) * 0.5, jnp.float32),
               jnp.asarray(rng.standard_normal((2 * w - 1, hd)) * 0.5, jnp.float32)) if rel else None
    return q, k, v, rel_pos


def _official(q, k, v, rel_pos, hw):
    """The official formula in numpy float64 (segment_anything/modeling/image_encoder.py Attention.forward)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    b, length, nh, hd = q.shape
    logits = np.einsum("bqnd,bknd->bnqk", q * hd ** -0.5, k)
    if rel_pos is not None:
        h, w = hw
        r_h = np.asarray(rel_pos[0], np.float64)[A.rel_pos_index(h, h)]
        r_w = np.asarray(rel_pos[1], np.float64)[A.rel_pos_index(w, w)]
        r_q = q.reshape(b, h, w, nh, hd)
        rel_h = np.einsum("bhwnc,hkc->bnhwk", r_q, r_h)
        rel_w = np.einsum("bhwnc,wkc->bnhwk", r_q, r_w)
        logits = (logits.reshape(b, nh, h, w, h, w) + rel_h[..., :, None] + rel_w[..., None, :]).reshape(logits.shape)
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    return np.einsum("bnqk,bknd->bqnd", attn, v)


@pytest.mark.parametrize("impl", ["xla", "chunked", "folded"])
@pytest.mark.parametrize("rel", [True, False])
def test_matches_official_formula(impl, rel, monkeypatch):
    monkeypatch.setattr(A, "CHUNK_LOGIT_BYTES", 1)  # force one query row per chunk: many chunks
    hw = (6, 5)
    q, k, v, rel_pos = _inputs(0, hw=hw, rel=rel)
    out = jax.jit(lambda *a: A.attention(*a, hw, impl))(q, k, v, rel_pos)
    np.testing.assert_allclose(np.asarray(out), _official(q, k, v, rel_pos, hw), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("budget,shape", [(4 * 5 * 30, (1, 1, 1)), (2 * 4 * 5 * 30, (1, 2, 1)),
                                          (8 * 4 * 5 * 30, (1, 2, 4)),
                                          (24 * 4 * 5 * 30, (1, 6, 4)), (10 ** 9, (2, 6, 4))])
def test_chunked_over_batch_rows_and_head_groups(budget, shape, monkeypatch):
    """Chunks of (batch, query grid rows, heads) sized by CHUNK_LOGIT_BYTES; every split gives the official values."""
    monkeypatch.setattr(A, "CHUNK_LOGIT_BYTES", budget)
    hw = (6, 5)
    assert A.chunk_shape(2, *hw, 30, 4) == shape  # logits of one grid row of one head: 4 B x 5 x 30
    q, k, v, rel_pos = _inputs(5, hw=hw, nh=4)
    out = jax.jit(lambda *a: A.attention(*a, hw, "chunked"))(q, k, v, rel_pos)
    np.testing.assert_allclose(np.asarray(out), _official(q, k, v, rel_pos, hw), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["chunked", "folded"])
def test_gradients_match_reference(impl, monkeypatch):
    monkeypatch.setattr(A, "CHUNK_LOGIT_BYTES", 1)
    hw = (4, 4)
    q, k, v, rel_pos = _inputs(1, hw=hw)
    cot = jnp.asarray(np.random.default_rng(2).standard_normal(q.shape), jnp.float32)

    def loss(impl, q, k, v, rel_pos):
        return jnp.sum(A.attention(q, k, v, rel_pos, hw, impl) * cot)

    ref = jax.grad(lambda *a: loss("xla", *a), argnums=(0, 1, 2, 3))(q, k, v, rel_pos)
    got = jax.grad(lambda *a: loss(impl, *a), argnums=(0, 1, 2, 3))(q, k, v, rel_pos)
    for r, g in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=2e-5, rtol=1e-4)


def test_fold_rel_pos_is_exact_and_padded():
    hw = (3, 4)
    q, k, _, rel_pos = _inputs(3, b=1, hw=hw, nh=2, hd=6)
    rel = A.rel_pos_terms(q, *rel_pos, hw)
    qf, kf = A.fold_rel_pos(q, k, rel, hw, scale=0.5)
    assert qf.shape[-1] == kf.shape[-1] == 16  # 6 + 3 + 4 = 13, padded to a multiple of 8
    logits = np.einsum("bqnd,bknd->bnqk", qf, kf)
    ref = np.einsum("bqnd,bknd->bnqk", q * 0.5, k) + np.asarray(A._bias(rel, hw))
    np.testing.assert_allclose(logits, ref, atol=1e-5)


def test_bfloat16_close_to_float32():
    hw = (8, 8)
    q, k, v, rel_pos = _inputs(4, hw=hw)
    ref = _official(q, k, v, rel_pos, hw)
    for impl in ("xla", "chunked", "folded"):
        out = A.attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)), rel_pos, hw, impl)
        err = np.linalg.norm(np.asarray(out, np.float64) - ref) / np.linalg.norm(ref)
        assert err < 2e-2, (impl, err)


def test_auto_and_errors():
    assert A.resolve("auto", jnp.float32, 4096) == "chunked"  # CPU, global attention at 64x64
    assert A.resolve("auto", jnp.bfloat16, 196) == "xla"  # CPU, a 14x14 window
    assert A.resolve("auto", jnp.float32, 196, 4 * 25 * 12 * 196 ** 2) == "chunked"  # ViT-B's 25 windows (46 MB)
    assert A.resolve("auto", jnp.float32, 16, 4 * 32 * 4 * 16 ** 2) == "xla"  # tiny training windows
    with A.for_platform("tpu"):  # ahead-of-time compilation for TPU on this CPU host: no CPU-only window rule
        assert A.resolve("auto", jnp.float32, 196, 4 * 25 * 12 * 196 ** 2) == "xla"
        assert A.resolve("auto", jnp.bfloat16, 4096) == "chunked"
    with A.for_platform("gpu"):
        assert A.resolve("auto", jnp.bfloat16, 4096) == "cudnn"
        assert A.chunk_shape(1, 64, 64, 4096, 16) == (1, 4, 16)  # ViT-H global attention: 64 MB chunks on TPU
    assert A.chunk_shape(1, 64, 64, 4096, 16) == (1, 2, 2)  # on CPU, 4 MB: 2 grid rows (128 queries) x 2 heads
    assert A.resolve("auto", jnp.float32, 196, 4 * 25 * 12 * 196 ** 2) == "chunked"  # the context is gone
    assert A.resolve("folded", jnp.float32, 10) == "folded"
    with pytest.raises(ValueError, match="attention implementation must be one of"):
        A.resolve("flash", jnp.float32, 10)
    with pytest.raises(ValueError, match="attention must be one of"):
        SamConfig(attention="flash")
