"""SAM 2's mask decoder: SAM's two-way transformer and hypernetworks, plus an object-score token and head,
high-resolution skips in the output upscaling, an optional sigmoid on the IoU head, and dynamic multimask selection.

Official: sam2/modeling/sam/mask_decoder.py. The two-way transformer is samjax's `TwoWayTransformer` (the same
function; its MLP's parameters are named `mlp/lin1`, `mlp/lin2` where SAM 2's state_dict says `mlp.layers.0/1`:
the converter's key table renames them).

Output tokens: [obj_score_token (with pred_obj_scores)], iou_token, mask_tokens (1 + num_multimask), then the
prompt tokens. Mask output 0 is the single-mask output, 1..3 the multimask outputs.

Shapes (at 1024): image_embeddings (B|1, 64, 64, 256), image_pe (1, 64, 64, 256), sparse (B, N, 256), dense
(B|1, 64, 64, 256), high-res features (B|1, 256, 256, 32) and (B|1, 128, 128, 64)
-> masks (B, 4, 256, 256), iou (B, 4), mask tokens (B, 4, 256), object score logits (B, 1).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.models import TwoWayTransformer
from samjax.models.common import (
    MLP,
    ConvTranspose2x2,
    Embedding,
    conv,
    dense,
    gelu,
    layer_norm,
)
from samjax.models.sam2.config import Sam2Config

f32 = jnp.float32


class MaskDecoder(nn.Module):
    config: Sam2Config

    def setup(self):
        cfg, dt = self.config, self.config.jnp_dtype
        c, n = cfg.d_model, cfg.num_mask_tokens
        self.transformer = TwoWayTransformer(cfg.sam_config)
        self.iou_token = Embedding(1, c, dt)
        self.mask_tokens = Embedding(n, c, dt)
        if cfg.pred_obj_scores:
            self.obj_score_token = Embedding(1, c, dt)
        # Official nn.Sequential indices: 0 ConvT, 1 LN2d, 2 GELU, 3 ConvT, 4 GELU.
        self.output_upscaling_0 = ConvTranspose2x2(c // 4, ("prompt_embed", "mask_channels"), dt)
        self.output_upscaling_1 = layer_norm("mask_channels", eps=1e-6, dtype=dt)
        self.output_upscaling_3 = ConvTranspose2x2(c // 8, ("mask_channels", "mask_channels"), dt)
        if cfg.use_high_res_features_in_sam:
            self.conv_s0 = conv(c // 8, 1, axes=("neck", "mask_channels"), dtype=dt)
            self.conv_s1 = conv(c // 4, 1, axes=("neck", "mask_channels"), dtype=dt)
        self.output_hypernetworks_mlps = [MLP(c, c // 8, 3, dtype=dt) for _ in range(n)]
        self.iou_prediction_head = MLP(cfg.iou_head_hidden_dim, n, cfg.iou_head_depth,
                                       sigmoid_output=cfg.iou_prediction_use_sigmoid, dtype=dt)
        if cfg.pred_obj_scores:
            self.pred_obj_score_head = (MLP(c, 1, 3, dtype=dt) if cfg.pred_obj_scores_mlp
                                        else dense(1, ("prompt_embed", None), dtype=dt))

    def project_high_res(self, feat_s0: jax.Array, feat_s1: jax.Array) -> tuple[jax.Array, jax.Array]:
        """conv_s0 / conv_s1 on FPN levels 0 (B, 4g, 4g, C) and 1 (B, 2g, 2g, C) -> (.., C/8), (.., C/4): done once
        per image (SAM2Base.forward_image), not per prompt."""
        return self.conv_s0(feat_s0), self.conv_s1(feat_s1)

    def predict_masks(self, image_embeddings: jax.Array, image_pe: jax.Array, sparse: jax.Array, dense: jax.Array,
                      token_mask: jax.Array | None = None,
                      high_res_features: tuple[jax.Array, jax.Array] | None = None):
        """All outputs: masks (B, M, 4g, 4g) logits, iou (B, M), mask tokens (B, M, C), object score logits (B, 1),
        M = 1 + num_multimask. token_mask (B, N) bool: False marks IGNORE prompt slots (padding)."""
        cfg, dt = self.config, self.config.jnp_dtype
        n = cfg.num_mask_tokens
        b = sparse.shape[0]
        parts = ([self.obj_score_token()] if cfg.pred_obj_scores else []) + [self.iou_token(), self.mask_tokens()]
        output_tokens = jnp.concatenate(parts, axis=0)
        s = 1 if cfg.pred_obj_scores else 0
        tokens = jnp.concatenate([jnp.broadcast_to(output_tokens, (b, *output_tokens.shape)), sparse.astype(dt)], 1)
        if token_mask is not None:
            token_mask = jnp.concatenate([jnp.ones((b, output_tokens.shape[0]), bool), token_mask], axis=1)
        src = image_embeddings.astype(dt) + dense.astype(dt)
        if src.shape[0] not in (1, b):
            raise ValueError(f"image embeddings / dense prompts of batch {src.shape[0]} for {b} prompts")
        g = src.shape[1]
        hs, src = self.transformer(src, image_pe.astype(dt), tokens, token_mask, None, tuple(range(s + 1 + n)))
        iou_token_out = hs[:, s]
        mask_tokens_out = hs[:, s + 1:s + 1 + n]

        src = src.reshape(b, g, g, -1)
        up = self.output_upscaling_0(src)
        if cfg.use_high_res_features_in_sam:
            if high_res_features is None:
                raise ValueError("this SAM 2 config uses high-resolution features: pass high_res_features")
            feat_s0, feat_s1 = high_res_features
            up = gelu(self.output_upscaling_1(up + feat_s1.astype(dt)))
            up = gelu(self.output_upscaling_3(up) + feat_s0.astype(dt))
        else:
            up = gelu(self.output_upscaling_3(gelu(self.output_upscaling_1(up))))
        hyper_in = jnp.stack([mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], 1)
        masks = jnp.einsum("bmc,bhwc->bmhw", hyper_in, jnp.broadcast_to(up, (b, *up.shape[1:])))
        iou_pred = self.iou_prediction_head(iou_token_out)
        if cfg.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0])
        else:  # officially: 10, "the object is present" (sigmoid(10) ~ 1)
            object_score_logits = jnp.full((b, 1), 10.0, iou_pred.dtype)
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def __call__(self, image_embeddings, image_pe, sparse, dense, multimask_output: bool, token_mask=None,
                 high_res_features=None, train: bool = False):
        """MaskDecoder.forward: masks (B, M', 4g, 4g), iou (B, M'), sam tokens (B, T, C), object scores (B, 1), with
        M' = num_multimask (multimask_output) or 1, T = num_multimask where multimask_output and
        use_multimask_token_for_obj_ptr, else 1 (the single-mask token)."""
        outs = self.predict_masks(image_embeddings, image_pe, sparse, dense, token_mask, high_res_features)
        return select_outputs(self.config, *outs, multimask_output=multimask_output, train=train)


def stability_scores(mask_logits: jax.Array, delta: float) -> jax.Array:
    """(..., H, W) logits -> (...,): area(logits > delta) / area(logits > -delta), 1 where the latter is empty."""
    area_i = jnp.sum(mask_logits > delta, axis=(-2, -1)).astype(f32)
    area_u = jnp.sum(mask_logits > -delta, axis=(-2, -1)).astype(f32)
    return jnp.where(area_u > 0, area_i / jnp.maximum(area_u, 1.0), 1.0)


def select_outputs(config: Sam2Config, masks, iou_pred, mask_tokens_out, object_score_logits, *,
                   multimask_output: bool, train: bool = False):
    """The official output selection of MaskDecoder.forward (see `MaskDecoder.__call__`). multimask_output is a
    Python bool (it changes shapes). Without multimask and with dynamic_multimask_via_stability (inference only), a
    single-mask output whose stability score is below the threshold is replaced by the multimask output with the
    highest predicted IoU."""
    if multimask_output:
        out_masks, out_iou = masks[:, 1:], iou_pred[:, 1:]
    elif config.dynamic_multimask_via_stability and not train:
        best = jnp.argmax(iou_pred[:, 1:], axis=-1)
        best_masks = jnp.take_along_axis(masks[:, 1:], best[:, None, None, None], axis=1)
        best_iou = jnp.take_along_axis(iou_pred[:, 1:], best[:, None], axis=1)
        stable = stability_scores(masks[:, 0], config.dynamic_multimask_stability_delta) >= \
            config.dynamic_multimask_stability_thresh
        out_masks = jnp.where(stable[:, None, None, None], masks[:, :1], best_masks)
        out_iou = jnp.where(stable[:, None], iou_pred[:, :1], best_iou)
    else:
        out_masks, out_iou = masks[:, :1], iou_pred[:, :1]
    if multimask_output and config.use_multimask_token_for_obj_ptr:
        tokens = mask_tokens_out[:, 1:]
    else:  # the single-mask token, always (the object-memory token seen in training)
        tokens = mask_tokens_out[:, :1]
    return out_masks, out_iou, tokens, object_score_logits
