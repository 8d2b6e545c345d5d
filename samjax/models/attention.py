"""Encoder self-attention with SAM's decomposed relative-position bias, in interchangeable implementations.

Every implementation computes, per head and for a (H, W) grid of L = H*W tokens,

    out = softmax(scale * q k^T + rel_h[q, row(k)] + rel_w[q, col(k)]) v,
    rel_h[i, r] = q_i . R_h[row(i) - r],   rel_w[i, c] = q_i . R_w[col(i) - c]   (q unscaled, as the official code)

and they differ only in how (and whether) the (L, L) logits exist:

- ``xla``: the reference. Logits (B, nh, L, L) materialised, bias added by broadcasting; the official formula.
- ``chunked``: the same maths over chunks of (batch elements or windows, query grid rows, heads) (``lax.map``),
  each rematerialised in the backward pass, so only (bs, heads, rows * W, L) logits exist at a time (a few MB:
  they stay in cache), and the softmax normalised after the product with v.
  Exact up to rounding (same per-row softmax). On a 2-core CPU it ran
  ViT-B's 64x64 global attention 1.6-1.9x faster than ``xla``; it also bounds memory (ViT-B encoder at batch 8 on
  a v5e, by XLA's count: 1.4 instead of 9.8 GiB).
- ``cudnn``: the bias folded into the dot product, so a fused flash-attention kernel needs no (L, L) bias at all:
  q' = [scale * q, rel_h, rel_w], k' = [k, onehot(row), onehot(col)] give q' k'^T = the biased logits exactly.
  Runs cuDNN flash attention (GPU, bfloat16/float16). Head dims are padded to a multiple of 8; v keeps its own width
  where cuDNN allows a narrower v (>= 9.10, Hopper: ViT-H 3% faster on an H200), else it is zero-padded to q's
  width for ``jax.nn.dot_product_attention`` and the padding sliced off.
- ``folded``: the same folding through XLA's ``dot_product_attention`` (any backend): the reference for ``cudnn``'s
  algebra, testable on CPU.
- ``cudnn_bias``: cuDNN flash attention with the bias materialised (B, nh, L, L) in the compute dtype.
- ``auto``: ``cudnn`` on GPU in bfloat16/float16, ``chunked`` for long sequences elsewhere and on CPU wherever the
  logits exceed a chunk (ViT-B's 25 windows of 14x14: 2.4x faster than ``xla`` there), else ``xla``.

Shapes: q, k, v (B, L, nh, hd); R_h (2H-1, hd), R_w (2W-1, hd) or None; output (B, L, nh, hd).
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ("auto", "xla", "chunked", "folded", "cudnn", "cudnn_bias")
# `auto` switches to `chunked` at this many tokens (global attention at 64x64 = 4096; windows are 196).
CHUNK_MIN_TOKENS = 1024
# Float32 logits per chunk of (batch, query rows, heads), at most. CPU: ViT-B's 64x64 global attention on a 2-core
# CPU ran 1.7x faster in 1-4 MB chunks (logits that stay in cache through bias, max, exp and the product with v)
# than in 50 MB chunks of all heads (measured side by side). Accelerators keep large chunks (fewer, bigger
# matmuls; the TPU memory estimates in benchmarks/README.md were made with them).
CHUNK_LOGIT_BYTES = 4 * 2 ** 20
ACCELERATOR_CHUNK_LOGIT_BYTES = 64 * 2 ** 20
# Queries per chunk where heads must be split to fit the budget: products of 64 queries (one grid row) ran at
# half the rate of 128. ViT-B global attention, 2-core CPU, 4 MB chunks: 2 rows x 2 heads 436 ms per block
# against 1 row x 4 heads 619-720 ms (2 rows x 1 head 469, 4 x 2 433, 16 x 1 458; measured side by side); the
# whole ViT-B encoder 7.57 -> 6.41 s (best of 4, same process, identical outputs).
MIN_CHUNK_QUERIES = 128


def rel_pos_index(q_size: int, k_size: int) -> np.ndarray:
    """Index into a (2 * max(q, k) - 1)-row table for each (query, key) pair: (q_size, k_size) int32."""
    q = np.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k = np.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    return ((q - k) + (k_size - 1) * max(q_size / k_size, 1.0)).astype(np.int32)


def rel_pos_terms(q: jax.Array, rel_pos_h: jax.Array, rel_pos_w: jax.Array, hw: tuple[int, int]):
    """q (B, L, nh, hd) unscaled -> rel_h (B, H, W, nh, H) and rel_w (B, H, W, nh, W) float32: the bias of query
    (y, x) towards key row r / key column c.

    Where the tables have their full 2H-1 / 2W-1 rows (always, in SAM's encoder) q meets every table row in one
    plain product, (B L nh, hd) x (hd, 2H-1 + 2W-1), and each query keeps its H (W) offsets by a gather: no batch
    dimension over query rows, so no transposed copies of q (benchmarks/README.md has what the gather saves)."""
    h, w = hw
    b, _, nh, hd = q.shape
    q = q.reshape(b, h, w, nh, hd)
    f32 = jnp.float32
    if rel_pos_h.shape[0] != 2 * h - 1 or rel_pos_w.shape[0] != 2 * w - 1:
        r_h = rel_pos_h.astype(q.dtype)[rel_pos_index(h, h)]  # (H, H, hd)
        r_w = rel_pos_w.astype(q.dtype)[rel_pos_index(w, w)]  # (W, W, hd)
        return (jnp.einsum("bhwnc,hkc->bhwnk", q, r_h, preferred_element_type=f32),
                jnp.einsum("bhwnc,wkc->bhwnk", q, r_w, preferred_element_type=f32))
    table = jnp.concatenate([rel_pos_h, rel_pos_w]).astype(q.dtype)  # (2H-1 + 2W-1, hd)
    every = jnp.einsum("bhwnc,rc->bhwnr", q, table, preferred_element_type=f32)
    idx_h = rel_pos_index(h, h)[None, :, None, None, :]  # query row y, key row r -> table row y - r + H - 1
    idx_w = (2 * h - 1) + rel_pos_index(w, w)[None, None, :, None, :]
    return (jnp.take_along_axis(every, jnp.asarray(idx_h), axis=-1, mode="clip"),
            jnp.take_along_axis(every, jnp.asarray(idx_w), axis=-1, mode="clip"))


_TARGET_PLATFORM: str | None = None


@contextlib.contextmanager
def for_platform(platform: str):
    """Resolve `auto` for `platform` ("cpu", "gpu", "tpu") instead of the default backend inside this block: for
    ahead-of-time compilation on one machine for another (e.g. TPU executables built on a CPU host)."""
    global _TARGET_PLATFORM
    old, _TARGET_PLATFORM = _TARGET_PLATFORM, platform
    try:
        yield
    finally:
        _TARGET_PLATFORM = old


def target_platform() -> str:
    """The platform being compiled for: `for_platform`'s, else the default backend."""
    return _TARGET_PLATFORM or jax.default_backend()


def resolve(impl: str, dtype, num_tokens: int, logit_bytes: int = 0) -> str:
    """The implementation `auto` stands for on the default backend (tracing time), else `impl` itself.
    logit_bytes: the size the (B, nh, L, L) float32 logits would have (0: unknown)."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, got {impl!r}")
    if impl != "auto":
        return impl
    backend = target_platform()
    if backend == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
        return "cudnn"
    if num_tokens >= CHUNK_MIN_TOKENS or (backend == "cpu" and logit_bytes > chunk_budget()):
        return "chunked"
    return "xla"


def attention(q: jax.Array, k: jax.Array, v: jax.Array, rel_pos: tuple[jax.Array, jax.Array] | None,
              hw: tuple[int, int], impl: str = "auto") -> jax.Array:
    """Multi-head attention over a (H, W) token grid; see the module docstring. -> (B, L, nh, hd)."""
    b, length, nh, _ = q.shape
    impl = resolve(impl, q.dtype, length, 4 * b * nh * length * length)
    scale = q.shape[-1] ** -0.5
    rel = rel_pos_terms(q, *rel_pos, hw) if rel_pos is not None else None
    if impl == "xla":
        return _xla(q, k, v, rel, hw, scale)
    if impl == "chunked":
        return _chunked(q, k, v, rel, hw, scale)
    if impl in ("folded", "cudnn"):
        return _folded(q, k, v, rel, hw, scale, "xla" if impl == "folded" else "cudnn")
    return _cudnn_bias(q, k, v, rel, hw, scale)


def _bias(rel, hw) -> jax.Array:
    """(rel_h, rel_w) (B, H', W, nh, H) / (..., W) -> additive bias (B, nh, H'*W, H*W)."""
    rel_h, rel_w = rel
    b, hq, w, nh, h = rel_h.shape
    bias = rel_h[..., :, None] + rel_w[..., None, :]  # (B, H', W, nh, H, W)
    return bias.transpose(0, 3, 1, 2, 4, 5).reshape(b, nh, hq * w, h * w)


def _softmax_av(logits: jax.Array, v: jax.Array) -> jax.Array:
    """logits (B, nh, Lq, L) float32 -> softmax in float32 -> attn @ v (B, Lq, nh, hd) in v's dtype."""
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    return jnp.einsum("bnqk,bknd->bqnd", attn, v)


def _logits(q, k):
    """q k^T accumulated and returned in float32 whatever the compute dtype (bf16 logits lose the bias's detail)."""
    return jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32)


def _xla(q, k, v, rel, hw, scale):
    logits = _logits(q * scale, k)
    if rel is not None:
        logits = logits + _bias(rel, hw)
    return _softmax_av(logits, v)


def chunk_budget() -> int:
    """Bytes of float32 logits per chunk on the platform being compiled for (see `for_platform`)."""
    return CHUNK_LOGIT_BYTES if target_platform() == "cpu" else ACCELERATOR_CHUNK_LOGIT_BYTES


def batch_shards() -> int:
    """How many ways the batch axis is split over the mesh being traced under (its "data" and "fsdp" axes; 1 with no
    mesh)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or not mesh.shape:
        return 1
    return int(np.prod([n for a, n in mesh.shape.items() if a in ("data", "fsdp")] or [1]))


def chunk_shape(b: int, h: int, w: int, length: int, nh: int) -> tuple[int, int, int]:
    """(batch elements, query grid rows, heads) per chunk: the most whose float32 logits fit `chunk_budget()`.
    Batch elements are split only once whole elements fit, and all heads of a row group are kept where they fit;
    otherwise heads are split, but a chunk still spans enough grid rows for MIN_CHUNK_QUERIES queries.

    Under a mesh that splits the batch, every chunk keeps the whole batch (counted per device): a loop over a
    sharded axis would make every device run every element (GSPMD does not partition a loop's iterations)."""
    shards = batch_shards()
    if shards > 1 and b % shards == 0:
        per_head_row, budget = 4 * w * length * (b // shards), chunk_budget()
        b = 1  # the batch, inside every chunk, is one "element" here
    else:
        per_head_row, budget = 4 * w * length, chunk_budget()
    fits = lambda n, unit: [d for d in range(1, n + 1) if n % d == 0 and d * unit <= budget]  # noqa: E731
    if h * nh * per_head_row <= budget:
        return max(fits(b, h * nh * per_head_row)), h, nh
    if nh * per_head_row <= budget:
        return 1, max(fits(h, nh * per_head_row)), nh
    want = -(-MIN_CHUNK_QUERIES // w)
    rows = max([d for d in fits(h, per_head_row) if d <= want] or [1])
    return 1, rows, max(fits(nh, rows * per_head_row) or [1])


def _chunked(q, k, v, rel, hw, scale):
    """Nested maps: outer over (batch group, head group), whose keys and values it slices once; inner over query
    row groups, which use them as loop invariants (slicing k and v per inner chunk copied 768 MB per ViT-B global
    block on CPU: 7% of the encoder)."""
    b, length, nh, hd = q.shape
    h, w = hw
    bs, rows, heads = chunk_shape(b, h, w, length, nh)
    if batch_shards() > 1 and b % batch_shards() == 0:
        bs = b  # the sharded batch stays inside every chunk (see chunk_shape)
    nb, nr, ng = b // bs, h // rows, nh // heads

    def chunks(x):  # (B, H, W, nh, d) -> (nb * ng, nr, bs, heads, rows, W, d): outer groups, then row groups
        x = x.reshape(nb, bs, nr, rows, w, ng, heads, x.shape[-1]).transpose(0, 5, 2, 1, 6, 3, 4, 7)
        return x.reshape(nb * ng, nr, bs, heads, rows, w, x.shape[-1])

    def groups(x, order=(0, 3, 1, 4, 2, 5)):  # (B, L, nh, d) -> (nb * ng, bs, heads, L, d) (or ..., d, L)
        x = x.reshape(nb, bs, length, ng, heads, hd).transpose(order)
        return x.reshape(nb * ng, *x.shape[2:])

    qs = chunks((q * scale).reshape(b, h, w, nh, hd))
    rels = (jnp.zeros((nb * ng, nr), q.dtype),) * 2 if rel is None else tuple(chunks(r) for r in rel)

    def outer(args):
        q_rows, rh_rows, rw_rows, kc, vc = args

        @jax.checkpoint
        def block(inner):
            qc, rh, rw = inner
            logits = jnp.einsum("bnrwd,bndk->bnrwk", qc, kc, preferred_element_type=jnp.float32)
            if rel is not None:
                logits = (logits.reshape(*logits.shape[:4], h, w) + rh[..., :, None] + rw[..., None, :])
            logits = logits.reshape(bs, heads, rows * w, length)
            m = jax.lax.stop_gradient(logits.max(-1, keepdims=True))  # the shift cancels in value and gradient
            e = jnp.exp(logits - m)
            out = jnp.einsum("bnqk,bnkd->bnqd", e.astype(v.dtype), vc, preferred_element_type=jnp.float32)
            return (out / e.sum(-1, keepdims=True)).astype(v.dtype)  # normalised after the product with v

        return jax.lax.map(block, (q_rows, rh_rows, rw_rows))  # (nr, bs, heads, rows * W, hd)

    # k as (d, L) per head: the layout the product wants, made once here (not copied in every inner chunk)
    kv = (groups(k, (0, 3, 1, 4, 5, 2)), groups(v))
    out = jax.lax.map(outer, (qs,) + rels + kv)  # (nb * ng, nr, bs, heads, rows * W, hd)
    out = out.reshape(nb, ng, nr, bs, heads, rows, w, hd).transpose(0, 3, 2, 5, 6, 1, 4, 7)
    return out.reshape(b, length, nh, hd)


def fold_rel_pos(q, k, rel, hw, scale, multiple: int = 8):
    """q' = [scale q, rel_h, rel_w], k' = [k, onehot(row), onehot(col)], zero-padded to a multiple of `multiple`:
    q' k'^T = scale q k^T + bias exactly. -> (B, L, nh, D), (B, L, nh, D)."""
    b, length, nh, hd = q.shape
    h, w = hw
    q_parts, k_parts = [q * scale], [k]
    if rel is not None:
        rel_h, rel_w = rel
        q_parts += [rel_h.reshape(b, length, nh, h).astype(q.dtype), rel_w.reshape(b, length, nh, w).astype(q.dtype)]
        row = jnp.broadcast_to(jnp.eye(h, dtype=k.dtype)[:, None, None, :], (h, w, nh, h)).reshape(length, nh, h)
        col = jnp.broadcast_to(jnp.eye(w, dtype=k.dtype)[None, :, None, :], (h, w, nh, w)).reshape(length, nh, w)
        k_parts += [jnp.broadcast_to(row, (b, length, nh, h)), jnp.broadcast_to(col, (b, length, nh, w))]
    width = sum(p.shape[-1] for p in q_parts)
    pad = (-width) % multiple
    if pad:
        zeros = jnp.zeros((b, length, nh, pad), q.dtype)
        q_parts.append(zeros)
        k_parts.append(zeros.astype(k.dtype))
    return jnp.concatenate(q_parts, -1), jnp.concatenate(k_parts, -1)


# cuDNN >= 9.10 on Hopper runs attention whose v is narrower than q/k ("multi-head latent attention" in JAX's
# cuDNN bindings; the public jax.nn API still wants equal widths). With it, v keeps its head dim instead of being
# zero-padded to the folded q's (ViT-H global blocks: 80 instead of 208, 2.6x fewer flops in softmax @ v).
CUDNN_NARROW_V = True


def _cudnn_narrow_v(qf, kf, v):
    """cuDNN flash attention with v narrower than q/k, or None where this JAX / cuDNN / GPU cannot (trace time)."""
    if not CUDNN_NARROW_V or v.shape[-1] % 8:
        return None
    try:
        from jax._src.cudnn import fused_attention_stablehlo as cudnn  # noqa: PLC0415 - private: guarded below
        return cudnn.dot_product_attention(qf, kf, v, scale=1.0, qkv_layout="BTNH")
    except (ImportError, AttributeError, TypeError, ValueError, NotImplementedError, RuntimeError):
        return None


def _folded(q, k, v, rel, hw, scale, implementation):
    hd = q.shape[-1]
    qf, kf = fold_rel_pos(q, k, rel, hw, scale)
    if implementation == "cudnn" and qf.shape[-1] != hd:
        out = _cudnn_narrow_v(qf, kf, v)
        if out is not None:
            return out
    vf = jnp.pad(v, ((0, 0), (0, 0), (0, 0), (0, qf.shape[-1] - hd)))
    out = jax.nn.dot_product_attention(qf, kf, vf, scale=1.0, implementation=implementation)
    return out[..., :hd]


def _cudnn_bias(q, k, v, rel, hw, scale):
    bias = _bias(rel, hw).astype(q.dtype) if rel is not None else None
    return jax.nn.dot_product_attention(q, k, v, bias=bias, scale=scale, implementation="cudnn")
