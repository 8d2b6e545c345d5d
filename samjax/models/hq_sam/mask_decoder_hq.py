"""MaskDecoderHQ: SAM's mask decoder plus HQ-SAM's high-quality output token and global-local feature fusion.

Official: segment_anything_hq/modeling/mask_decoder_hq.py. Parameter names follow its state_dict: SAM's decoder
(`iou_token`, `mask_tokens`, `transformer`, `output_upscaling`, `output_hypernetworks_mlps`, `iou_prediction_head`)
and HQ-SAM's `hf_token`, `hf_mlp`, `compress_vit_feat`, `embedding_encoder`, `embedding_maskfeature`.

Shapes: image_embeddings (B|1, g, g, C), interm (B|1, g, g, vit_dim) (the encoder's early feature), image_pe
(1, g, g, C), sparse (B, N, C), dense (B|1, g, g, C) -> masks (B, 1, 4g, 4g), iou (B, 1).

Output selection as the reference's `forward`: with multimask_output the SAM mask is the one of the multimask
outputs (1..3) with the highest predicted IoU, and that IoU is returned; without, output 0 and its IoU. The HQ
token's mask is added to it (hq_token_only=False) or returned alone (hq_token_only=True). Either way one mask.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.models.common import MLP, ConvTranspose2x2, Embedding, gelu, layer_norm
from samjax.models.conv_layers import conv2d
from samjax.models.sam.config import SamConfig
from samjax.models.sam.transformer import TwoWayTransformer


class MaskDecoderHQ(nn.Module):
    config: SamConfig
    vit_dim: int

    def setup(self):
        cfg, dt, od = self.config, self.config.jnp_dtype, self.config.decoder_operand_dtype
        c, n = cfg.prompt_embed_dim, cfg.num_mask_tokens
        self.iou_token = Embedding(1, c, dt)
        self.mask_tokens = Embedding(n, c, dt)
        self.hf_token = Embedding(1, c, dt)
        self.transformer = TwoWayTransformer(cfg)
        # nn.Sequential indices as officially (2 and 4 are GELUs)
        self.output_upscaling_0 = ConvTranspose2x2(c // 4, ("prompt_embed", "mask_channels"), dt, od)
        self.output_upscaling_1 = layer_norm("mask_channels", eps=1e-6, dtype=dt)
        self.output_upscaling_3 = ConvTranspose2x2(c // 8, ("mask_channels", "mask_channels"), dt, od)
        self.output_hypernetworks_mlps = [MLP(c, c // 8, 3, dtype=dt) for _ in range(n)]
        self.iou_prediction_head = MLP(cfg.iou_head_hidden_dim, n, cfg.iou_head_depth, dtype=dt)
        self.hf_mlp = MLP(c, c // 8, 3, dtype=dt)
        self.compress_vit_feat_0 = ConvTranspose2x2(c, ("embed", "prompt_embed"), dt)
        self.compress_vit_feat_1 = layer_norm("prompt_embed", eps=1e-6, dtype=dt)
        self.compress_vit_feat_3 = ConvTranspose2x2(c // 8, ("prompt_embed", "mask_channels"), dt)
        self.embedding_encoder_0 = ConvTranspose2x2(c // 4, ("prompt_embed", "mask_channels"), dt)
        self.embedding_encoder_1 = layer_norm("mask_channels", eps=1e-6, dtype=dt)
        self.embedding_encoder_3 = ConvTranspose2x2(c // 8, ("mask_channels", "mask_channels"), dt)
        self.embedding_maskfeature_0 = conv2d(c // 4, 3, use_bias=True, axes=("mask_channels", "mask_channels"),
                                              dtype=dt)
        self.embedding_maskfeature_1 = layer_norm("mask_channels", eps=1e-6, dtype=dt)
        self.embedding_maskfeature_3 = conv2d(c // 8, 3, use_bias=True, axes=("mask_channels", "mask_channels"),
                                              dtype=dt)

    def hq_features(self, image_embeddings: jax.Array, interm: jax.Array) -> jax.Array:
        """The fused global-local feature of an image, independent of the prompts: embedding_encoder(image
        embeddings) + compress_vit_feat(early feature). (B, g, g, C), (B, g, g, vit_dim) -> (B, 4g, 4g, C/8)."""
        if interm.shape[-1] != self.vit_dim or interm.shape[1:3] != image_embeddings.shape[1:3]:
            raise ValueError(f"interm features must be (B, {image_embeddings.shape[1]}, {image_embeddings.shape[2]}, "
                             f"{self.vit_dim}), got {tuple(interm.shape)}")
        e = gelu(self.embedding_encoder_1(self.embedding_encoder_0(image_embeddings)))
        v = gelu(self.compress_vit_feat_1(self.compress_vit_feat_0(interm)))
        return self.embedding_encoder_3(e) + self.compress_vit_feat_3(v)

    def __call__(self, image_embeddings, image_pe, sparse, dense, token_mask=None, multimask_output: bool = True,
                 hq_token_only: bool = False, interm: jax.Array | None = None, hq_features: jax.Array | None = None,
                 all_outputs: bool = False):
        """Masks (B, 1, 4g, 4g) and IoU (B, 1) selected as the reference does (module docstring).

        token_mask (B, N) bool: False for IGNORE tokens (see samjax.models.transformer). Give `interm` (the early
        encoder feature) or `hq_features` (`hq_features(...)` of this image, made once per image).
        all_outputs: every output instead, masks (B, num_mask_tokens + 1, 4g, 4g) (SAM's outputs, then the HQ
        token's) and the IoU head's (B, num_mask_tokens), as the reference's `predict_masks`."""
        cfg, dt = self.config, self.config.jnp_dtype
        c, n = cfg.prompt_embed_dim, cfg.num_mask_tokens
        if hq_features is None:
            if interm is None:
                raise ValueError("MaskDecoderHQ needs the early encoder feature (interm) or hq_features")
            hq_features = self.hq_features(image_embeddings.astype(dt), interm.astype(dt))
        b = sparse.shape[0]
        output_tokens = jnp.concatenate([self.iou_token(), self.mask_tokens(), self.hf_token()], axis=0)
        tokens = jnp.concatenate([jnp.broadcast_to(output_tokens, (b, *output_tokens.shape)), sparse.astype(dt)], 1)
        if token_mask is not None:
            token_mask = jnp.concatenate([jnp.ones((b, n + 2), bool), token_mask], axis=1)
        src = image_embeddings.astype(dt) + dense.astype(dt)
        if src.shape[0] not in (1, b):
            raise ValueError(f"image embeddings / dense prompts of batch {src.shape[0]} for {b} prompts")
        g = src.shape[1]
        hs, src = self.transformer(src, image_pe.astype(dt), tokens, token_mask)
        iou_pred = self.iou_prediction_head(hs[:, 0])  # (B, n)
        up = self.output_upscaling_0(src.reshape(b, g, g, c))
        up_sam = gelu(self.output_upscaling_3(gelu(self.output_upscaling_1(up))))  # (B, 4g, 4g, C/8)
        up_hq = self.embedding_maskfeature_0(up_sam)
        up_hq = self.embedding_maskfeature_3(gelu(self.embedding_maskfeature_1(up_hq))) + hq_features.astype(dt)
        hyper_hq = self.hf_mlp(hs[:, 1 + n])  # (B, C/8)
        mask_hq = jnp.einsum("bc,bhwc->bhw", hyper_hq, up_hq)[:, None]
        if all_outputs or self.is_initializing():  # (init makes every hypernetwork's parameters)
            hyper = jnp.stack([mlp(hs[:, 1 + i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], axis=1)
            return jnp.concatenate([jnp.einsum("bmc,bhwc->bmhw", hyper, up_sam), mask_hq], axis=1), iou_pred
        if multimask_output:
            ious = iou_pred[:, 1:n]
            best = jnp.argmax(ious, axis=1)  # the first of equal maxima, as torch.max
            iou = jnp.take_along_axis(ious, best[:, None], axis=1)
            if hq_token_only:
                return mask_hq, iou
            hyper = jnp.stack([self.output_hypernetworks_mlps[i](hs[:, 1 + i]) for i in range(1, n)], axis=1)
            hyper_sam = jnp.take_along_axis(hyper, best[:, None, None], axis=1)[:, 0]
        else:
            iou = iou_pred[:, :1]
            if hq_token_only:
                return mask_hq, iou
            hyper_sam = self.output_hypernetworks_mlps[0](hs[:, 1])
        mask_sam = jnp.einsum("bc,bhwc->bhw", hyper_sam, up_sam)[:, None]
        return mask_sam + mask_hq, iou
