"""TwoWayTransformer: prompt tokens and image embedding attend to each other.

Official: segment_anything/modeling/transformer.py, with one addition: an optional `token_mask` (B, N) that
removes IGNORE tokens (padding added for static shapes) from every attention in which tokens are keys.
With no IGNORE tokens the function is the official one.

Shapes: image_embedding (B|1, h, w, C), image_pe (B|1, h, w, C), point_embedding (B, N, C)
-> queries (B, N, C), keys (B, h*w, C).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.models.common import MLPBlock, cast_einsum, layer_norm, partitioned
from samjax.models.sam.config import SamConfig

f32 = jnp.float32


def _batched_einsum(spec: str, x: jax.Array, y: jax.Array, operand_dtype=None) -> jax.Array:
    """einsum over a leading batch `b` where either operand may have batch 1 (shared by every row of the other):
    the shared operand enters the product once instead of being copied B times (same arithmetic).
    operand_dtype: see `common.cast_einsum`."""
    if x.shape[0] == y.shape[0]:
        return cast_einsum(spec, x, y, operand_dtype)
    ins, out = spec.split("->")
    a, b = ins.split(",")
    if y.shape[0] == 1:
        return cast_einsum(f"{a},{b[1:]}->{out}", x, y[0], operand_dtype)
    if x.shape[0] == 1:
        return cast_einsum(f"{a[1:]},{b}->{out}", x[0], y, operand_dtype)
    raise ValueError(f"batch sizes {x.shape[0]} and {y.shape[0]} do not broadcast")


class LinearParams(nn.Module):
    """The parameters of a Linear layer, returned rather than applied: kernel (in, out), bias (out,) in the
    compute dtype. Same names, shapes and init as `common.dense`, so checkpoints are unchanged."""

    in_features: int
    features: int
    axes: tuple[str | None, str | None]
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        kernel = self.param("kernel", partitioned(nn.initializers.xavier_uniform(), self.axes),
                            (self.in_features, self.features), f32)
        bias = self.param("bias", partitioned(nn.initializers.zeros_init(), self.axes[1:]), (self.features,), f32)
        return kernel.astype(self.dtype), bias.astype(self.dtype)


def attention_plan(bq: int, nq: int, bk: int, nk: int, c: int, nh: int, hd: int) -> tuple[str, str]:
    """The cheapest association order of the attention products, from the static shapes (multiply-adds).

    Logits q Wq (k Wk)^T can fold Wk into the query side ("k_into_q": (q Wq) Wk^T is (Nq, heads, C), then a
    product with the raw keys) or Wq into the key side ("q_into_k"); the value path can apply softmax weights
    to the raw values and project after ("v_late"), or push the output projection into the values before
    the weights ("o_early"). With 7 prompt tokens x 8 heads against 128 projected channels, the products
    between a prompt's tokens and its 4096 image positions shrink ~2.3x; where the image side is shared by
    all prompts (batch 1) its projection runs once and the standard order stays cheapest. Same maths; only
    the float rounding differs.
    """
    b, d = max(bq, bk), nh * hd
    logits = {
        "standard": bq * nq * c * d + bk * nk * c * d + b * nq * nk * d,
        "k_into_q": bq * nq * c * d + b * nq * d * c + b * nh * nq * nk * c,
        "q_into_k": bk * nk * c * d + b * nk * d * c + b * nh * nq * nk * c,
    }
    values = {
        "standard": bk * nk * c * d + b * nh * nq * nk * hd + b * nq * d * c,
        "v_late": b * nh * nq * nk * c + b * nq * c * d + b * nq * d * c,
        "o_early": bk * nk * c * d + b * nk * d * c + b * nh * nq * nk * c,
    }
    return min(logits, key=logits.get), min(values, key=values.get)


class Attention(nn.Module):
    """Attention with q/k/v projections down to `embedding_dim // downsample_rate` channels.

    q and k/v may differ in batch when one has batch 1 (the image side before it becomes prompt-specific):
    its projections then run once for all prompts. The products run in the order `attention_plan` picks.
    operand_dtype: of the products between the query and the key side (`_batched_einsum`), None: `dtype`."""

    embedding_dim: int
    num_heads: int
    downsample_rate: int = 1
    dtype: jnp.dtype = f32
    operand_dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None = None,
                 projected: dict | None = None, factored: dict | None = None) -> jax.Array:
        """q (B, Nq, C), k and v (B, Nk, C), key_mask (B, Nk) bool or None -> (B, Nq, C).

        projected: projections made once per image (`models.sam.image_cache`), head-major (1, heads, head_dim, N)
        each: "q" stands for q @ Wq + bq, "k" for k @ Wk + bk, "v" for v @ Wv + bv (the others are computed here).
        factored: inputs given as x = s + h F with s (1, N, C) shared by the batch, h (B, N, m) and F (m, C), m << C
        (the image side plus a mask prompt's dense embedding): "q" / "k" / "v" -> (s, h, F). Their projection is
        s W + b once and h (F W) per row: the same sums as x W + b, without the (N, C) x (C, C') product per row."""
        c, internal, dt = self.embedding_dim, self.embedding_dim // self.downsample_rate, self.dtype
        nh, hd, od = self.num_heads, internal // self.num_heads, self.operand_dtype
        axes = ("prompt_embed", "prompt_attn")
        wq, bq = LinearParams(c, internal, axes, dt, name="q_proj")()
        wk, bk = LinearParams(c, internal, axes, dt, name="k_proj")()
        wv, bv = LinearParams(c, internal, axes, dt, name="v_proj")()
        wo, bo = LinearParams(internal, c, axes[::-1], dt, name="out_proj")()
        q, k, v = q.astype(dt), k.astype(dt), v.astype(dt)
        heads = lambda x: x.reshape(*x.shape[:-1], nh, hd)  # noqa: E731
        projected = projected or {}

        factored = factored or {}

        def side(name, x, w, b):  # -> (einsum spec, projected heads); keys and values are both indexed by key (k)
            pos = "q" if name == "q" else "k"
            if name in projected:  # cached head-major (1, nh, hd, N): the layout the products read
                return f"bnd{pos}", projected[name].astype(dt)
            if name in factored:
                s, h, f = factored[name]
                return f"b{pos}nd", heads(s.astype(dt) @ w + b + h.astype(dt) @ (f.astype(dt) @ w))
            return f"b{pos}nd", heads(x @ w + b)

        plan_logits, plan_values = attention_plan(q.shape[0], q.shape[1], k.shape[0], k.shape[1], c, nh, hd)
        if projected or factored:  # the image side is projected from its cache or factors: nothing left to fold
            plan_logits = "standard"
            plan_values = "standard" if ("v" in projected or "v" in factored) else plan_values

        # Where batch (b), query (q), head (n) and key (k) lie in the logits (2-core CPU timings, float32):
        # - prompt tokens attending to the image, its keys and values cached head-major: "bnqk", head-major too,
        #   the softmax over the contiguous keys;
        # - image positions attending to the tokens, values folded into the output projection ("o_early"): "bnkq",
        #   the softmax over each position's few tokens vectorised across the positions. With the tokens last,
        #   softmax + product over 4096 positions x 8 heads x 6 tokens took 1.41 ms against 0.82;
        # - prompt tokens attending to the raw image (no key mask, values not folded first): key-major "bkqn", so
        #   the image side stays the row-major left operand of both products. With keys last, XLA:CPU wrote a
        #   transposed copy of the keys (4096 x 256) first: one prompt decoded in 18.6 instead of 21.3 ms.
        if "k" in projected:
            layout = "bnqk"
        elif plan_values == "o_early" and k.shape[1] < q.shape[1]:
            layout = "bnkq"
        elif (key_mask is None and k.shape[1] > q.shape[1] and plan_logits in ("standard", "k_into_q")
              and plan_values in ("standard", "v_late")):
            layout = "bkqn"
        else:
            layout = "bqnk"
        if plan_logits == "standard":
            (qs, qp), (ks, kp) = side("q", q, wq, bq), side("k", k, wk, bk)
            logits = (_batched_einsum(f"{ks},{qs}->{layout}", kp, qp, od) if layout == "bkqn"
                      else _batched_einsum(f"{qs},{ks}->{layout}", qp, kp, od))
        elif plan_logits == "k_into_q":  # q.bk is the same for every key: softmax drops it
            q_in_k = jnp.einsum("bqnd,cnd->bqnc", heads(q @ wq + bq), heads(wk))
            logits = _batched_einsum(f"bkc,bqnc->{layout}", k, q_in_k, od)
        else:  # q_into_k
            kp = heads(k @ wk + bk)
            # (B, C, heads, Nk): the image side's product with it is a plain (Nq, C) x (C, heads Nk). Made as
            # (B, Nk, heads, C), XLA:CPU transposed the image side (4096 x 256) instead. For the same reason the
            # logits are made query-major and only then put in `layout` (a transpose of Nq x heads x Nk, not of the
            # image).
            k_in_q = jnp.einsum("bknd,cnd->bcnk", kp, heads(wq))
            logits = (_batched_einsum("bqc,bcnk->bqnk", q, k_in_q, od)
                      + jnp.einsum("bknd,nd->bnk", kp, heads(bq))[:, None])
            logits = jnp.einsum(f"bqnk->{layout}", logits)
        logits = logits.astype(f32) / jnp.sqrt(jnp.asarray(hd, f32))
        if key_mask is not None:
            shape = [{"b": key_mask.shape[0], "k": key_mask.shape[1]}.get(a, 1) for a in layout]
            logits = jnp.where(key_mask.reshape(shape), logits, jnp.finfo(f32).min)
        attn = jax.nn.softmax(logits, axis=layout.index("k")).astype(dt)

        if plan_values == "o_early":  # (weights v Wv) Wo = weights (v Wv Wo): per head, into C channels first
            v_out = jnp.einsum("bknd,ndc->bknc", heads(v @ wv + bv), wo.reshape(nh, hd, c))
            return _batched_einsum(f"{layout},bknc->bqc", attn, v_out, od) + bo
        if plan_values == "v_late":  # weights (v Wv + bv) = (weights v) Wv + bv: each row of weights sums to 1
            mixed = _batched_einsum(f"{layout},bkc->bqnc", attn, v, od)
            out = jnp.einsum("bqnc,cnd->bqnd", mixed, heads(wv)) + heads(bv)
        else:
            vs, vp = side("v", v, wv, bv)
            out = _batched_einsum(f"{layout},{vs}->bqnd", attn, vp, od)
        return out.reshape(*out.shape[:2], internal) @ wo + bo


class TwoWayAttentionBlock(nn.Module):
    """Self-attn on tokens, token->image cross-attn, MLP on tokens, image->token cross-attn."""

    config: SamConfig
    skip_first_layer_pe: bool = False

    @nn.compact
    def __call__(self, queries, keys, query_pe, key_pe, token_mask=None, cache: dict | None = None,
                 factored: tuple | None = None):
        """cache: this layer's image-side projections (`models.sam.image_cache`), valid while keys are the image's.
        factored: keys = s + h F as (s (1, N, C), h (B, N, m), F (m, C)) (`Attention`'s factored inputs), for the
        projections of this layer's image side; `keys` itself is still the residual stream."""
        cfg, dt, od = self.config, self.config.jnp_dtype, self.config.decoder_operand_dtype
        cache = cache or {}
        to_image = to_token = None  # the factored inputs of the two cross attentions
        if factored is not None:
            s, h, f = factored
            s_pe = s + key_pe.astype(s.dtype)
            to_image, to_token = {"k": (s_pe, h, f), "v": (s, h, f)}, {"q": (s_pe, h, f)}
        c, nh, rate = cfg.prompt_embed_dim, cfg.decoder_num_heads, cfg.attention_downsample_rate
        if self.skip_first_layer_pe:
            queries = Attention(c, nh, dtype=dt, name="self_attn")(queries, queries, queries, token_mask)
        else:
            q = queries + query_pe
            queries = queries + Attention(c, nh, dtype=dt, name="self_attn")(q, q, queries, token_mask)
        queries = layer_norm("prompt_embed", eps=cfg.decoder_norm_eps, name="norm1", dtype=dt)(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = queries + Attention(c, nh, rate, dt, od, name="cross_attn_token_to_image")(
            q, k, keys, projected=cache.get("cross_attn_token_to_image"),
            factored=to_image)
        queries = layer_norm("prompt_embed", eps=cfg.decoder_norm_eps, name="norm2", dtype=dt)(queries)

        mlp = MLPBlock(c, cfg.decoder_mlp_dim, ("prompt_embed", "prompt_mlp"), act=nn.relu, dtype=dt, name="mlp")
        queries = layer_norm("prompt_embed", eps=cfg.decoder_norm_eps, name="norm3", dtype=dt)(queries + mlp(queries))

        q, k = queries + query_pe, keys + key_pe
        keys = keys + Attention(c, nh, rate, dt, od, name="cross_attn_image_to_token")(
            k, q, queries, token_mask, projected=cache.get("cross_attn_image_to_token"),
            factored=to_token)
        keys = layer_norm("prompt_embed", eps=cfg.decoder_norm_eps, name="norm4", dtype=dt)(keys)
        return queries, keys


class TwoWayTransformer(nn.Module):
    config: SamConfig

    @nn.compact
    def __call__(self, image_embedding: jax.Array, image_pe: jax.Array, point_embedding: jax.Array,
                 token_mask: jax.Array | None = None, cache: dict | None = None,
                 outputs: tuple[int, ...] | None = None, factored: tuple | None = None) -> tuple[jax.Array, jax.Array]:
        """cache: the first layer's image-side projections of this image_embedding (`models.sam.image_cache`).
        factored: the image side as s + h F (`TwoWayAttentionBlock`), for the first layer's projections.
        outputs: the tokens whose queries are returned (None: all), (B, len(outputs), C); the final token->image
        attention is made for those only (each token's row of it is independent of the others)."""
        cfg, dt = self.config, self.config.jnp_dtype
        b, n, c = point_embedding.shape
        # Batch 1 (one image, no per-prompt mask prompt) stays batch 1 until the first image->token attention makes
        # the keys prompt-specific: the image-side projections before it are computed once, not once per prompt.
        keys = image_embedding.reshape(image_embedding.shape[0], -1, c)
        key_pe = image_pe.reshape(image_pe.shape[0], -1, c)
        queries = point_embedding
        for i in range(cfg.decoder_depth):
            queries, keys = TwoWayAttentionBlock(cfg, skip_first_layer_pe=(i == 0), name=f"layers_{i}")(
                queries, keys, point_embedding, key_pe, token_mask, cache if i == 0 else None,
                factored if i == 0 else None)
        if outputs is not None:
            queries, point_embedding = queries[:, list(outputs)], point_embedding[:, list(outputs)]
        q, k = queries + point_embedding, keys + key_pe
        attn = Attention(c, cfg.decoder_num_heads, cfg.attention_downsample_rate, dt, cfg.decoder_operand_dtype,
                         name="final_attn_token_to_image")(q, k, keys)
        queries = layer_norm("prompt_embed", eps=cfg.decoder_norm_eps, name="norm_final_attn", dtype=dt)(queries + attn)
        return queries, jnp.broadcast_to(keys, (b, *keys.shape[1:]))
