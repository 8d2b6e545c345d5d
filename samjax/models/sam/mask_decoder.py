"""MaskDecoder: IoU token + mask tokens through the TwoWayTransformer, hypernetwork MLPs, IoU head.

Official: segment_anything/modeling/mask_decoder.py. Output token 0 is the single-mask output, tokens 1..3
the multimask outputs (whole / part / subpart).

Shapes: image_embeddings (B|1, g, g, C), image_pe (1, g, g, C), sparse (B, N, C), dense (B|1, g, g, C)
-> masks (B, M, 4g, 4g) low-res logits, iou_pred (B, M), with M = 3 (multimask) or 1.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.models.common import MLP, ConvTranspose2x2, Embedding, gelu, layer_norm
from samjax.models.sam.config import SamConfig
from samjax.models.sam.transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    config: SamConfig

    @nn.compact
    def predict_masks(self, image_embeddings: jax.Array, image_pe: jax.Array, sparse: jax.Array, dense: jax.Array,
                      token_mask: jax.Array | None = None, cache: dict | None = None, upscale: bool = True,
                      outputs: tuple[int, ...] | None = None, factored: tuple | None = None):
        """All num_mask_tokens outputs: masks (B, 1 + num_multimask, 4g, 4g), iou_pred (B, 1 + num_multimask).
        cache: `models.sam.image_cache` of these image embeddings with the no-mask dense embedding, or None.
        upscale=False stops before the output upscaling and returns (src (B, g, g, C), the transformer's image side;
        hyper_in (B, 1 + num_multimask, C/8); iou_pred): `upscale_masks` of the first two gives the masks, for the
        prompts that need them (the automatic generator skips those whose every predicted IoU fails its filter).
        outputs: only these of the 1 + num_multimask outputs, in this order (None: all). The others' mask tokens are
        left out of the final token->image attention and the hypernetworks (the official code makes all and
        drops the unused: the same values for the kept ones); the parameters are made for all of them.
        factored: image_embeddings + dense as (s, h, F) for the first layer's projections (`TwoWayTransformer`)."""
        cfg, dt = self.config, self.config.jnp_dtype
        c, n_masks = cfg.prompt_embed_dim, cfg.num_mask_tokens
        if outputs is None or self.is_initializing():
            outputs = tuple(range(n_masks))
        b = sparse.shape[0]
        output_tokens = jnp.concatenate([Embedding(1, c, dt, name="iou_token")(),
                                         Embedding(n_masks, c, dt, name="mask_tokens")()], axis=0)
        tokens = jnp.concatenate([jnp.broadcast_to(output_tokens, (b, *output_tokens.shape)), sparse.astype(dt)], 1)
        if token_mask is not None:
            token_mask = jnp.concatenate([jnp.ones((b, 1 + n_masks), bool), token_mask], axis=1)
        # (1|B, g, g, C): batch 1 when one image serves every prompt without mask prompts; the transformer keeps
        # it shared until it becomes prompt-specific (the official code repeats it per prompt: same values).
        src = image_embeddings.astype(dt) + dense.astype(dt)
        if src.shape[0] not in (1, b):
            raise ValueError(f"image embeddings / dense prompts of batch {src.shape[0]} for {b} prompts")
        pos_src = image_pe.astype(dt)
        g = src.shape[1]

        # The transformer's token outputs that are read: the IoU token (0) and the kept outputs' mask tokens.
        hs, src = TwoWayTransformer(cfg, name="transformer")(src, pos_src, tokens, token_mask, cache,
                                                             (0, *(1 + i for i in outputs)), factored)
        iou_token_out = hs[:, 0, :]
        hyper_in = jnp.stack([MLP(c, c // 8, 3, dtype=dt, name=f"output_hypernetworks_mlps_{i}")(hs[:, 1 + j])
                              for j, i in enumerate(outputs)], axis=1)  # (B, M, C/8)
        iou_pred = MLP(cfg.iou_head_hidden_dim, n_masks, cfg.iou_head_depth, dtype=dt,
                       name="iou_prediction_head")(iou_token_out)[:, list(outputs)]
        src = src.reshape(b, g, g, c)
        if not upscale:
            return src, hyper_in, iou_pred
        return _upscale(src, hyper_in, *_upscaling_layers(cfg)), iou_pred

    def __call__(self, image_embeddings, image_pe, sparse, dense, token_mask=None, multimask_output: bool = True,
                 cache: dict | None = None, upscale: bool = True):
        """The official selection: the num_multimask outputs (multimask_output) or the single-mask output 0."""
        outputs = tuple(range(1, self.config.num_mask_tokens)) if multimask_output else (0,)
        return self.predict_masks(image_embeddings, image_pe, sparse, dense, token_mask, cache, upscale, outputs)


def _upscaling_layers(config: SamConfig) -> tuple[nn.Module, nn.Module, nn.Module]:
    """output_upscaling 0 (ConvT), 1 (LN2d), 3 (ConvT) (official nn.Sequential indices; 2 and 4 are GELUs), made in
    the calling module's scope (bound) or outside any (unbound, for `upscale_masks`)."""
    c, dt, od = config.prompt_embed_dim, config.jnp_dtype, config.decoder_operand_dtype
    return (ConvTranspose2x2(c // 4, ("prompt_embed", "mask_channels"), dt, od, name="output_upscaling_0"),
            layer_norm("mask_channels", eps=1e-6, name="output_upscaling_1", dtype=dt),
            ConvTranspose2x2(c // 8, ("mask_channels", "mask_channels"), dt, od, name="output_upscaling_3"))


def _upscale(src: jax.Array, hyper_in: jax.Array, conv0, norm1, conv3) -> jax.Array:
    """src (B, g, g, C), hyper_in (B, M, C/8) -> masks (B, M, 4g, 4g), through the output upscaling layers.

    Every layer is per pixel, so the 2x2 blocks of both transposed convolutions stay in axes of their own, (B, g, g,
    a, c, d, e, C/8) for output pixel (4h + 2a + d, 4w + 2c + e), and only the M masks are interleaved at the end."""
    b, g = src.shape[:2]
    x = gelu(norm1(conv0(src, blocks=True)))
    x = gelu(conv3(x, blocks=True))
    masks = jnp.einsum("bmo,bhwacdeo->bmhadwce", hyper_in, x)
    return masks.reshape(b, hyper_in.shape[1], 4 * g, 4 * g)


def upscale_masks(decoder_params: dict, config: SamConfig, src: jax.Array, hyper_in: jax.Array) -> jax.Array:
    """The masks of `MaskDecoder.predict_masks(upscale=False)`'s outputs: src (B, g, g, C), hyper_in (B, M, C/8)
    -> low-res mask logits (B, M, 4g, 4g). decoder_params: the "mask_decoder" subtree of the parameters."""
    layers = [functools.partial(m.apply, {"params": decoder_params[m.name]}) for m in _upscaling_layers(config)]
    return _upscale(src, hyper_in, *layers)
