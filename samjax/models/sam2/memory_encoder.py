"""SAM 2's memory encoder: a frame's features fused with its (predicted) mask into a compact spatial memory.

Official: sam2/modeling/memory_encoder.py (MaskDownSampler, CXBlock, Fuser, MemoryEncoder). Names follow the
state_dict (`memory_encoder.mask_downsampler.encoder.3.weight` <-> `memory_encoder/mask_downsampler/encoder_3/kernel`,
`memory_encoder.fuser.layers.0.dwconv.weight` <-> `.../fuser/layers_0/dwconv/kernel`).

mask (B, 1, S, S) in [0, 1] (after SAM2Base's sigmoid, scale and bias) -> MaskDownSampler: log2(16) x [3x3 stride-2
conv, LayerNorm2d, GELU] with 1 -> 4 -> 16 -> 64 -> 256 channels, then a 1x1 conv -> (B, g, g, C);
pix_feat (B, g, g, C) -> 1x1 pix_feat_proj, + masks, -> Fuser (ConvNeXt blocks: 7x7 depthwise conv, LayerNorm2d,
Linear 4C, GELU, Linear C, layer scale `gamma`, residual) -> 1x1 out_proj to mem_dim.

Shapes (at 1024): pix_feat (B, 64, 64, 256), masks (B, 1, 1024, 1024) -> features (B, 64, 64, 64) and the sine
position encoding (1, 64, 64, 64) (a constant of the shape).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.models.common import conv, dense, gelu, layer_norm, partitioned
from samjax.models.sam2.config import Sam2Config
from samjax.models.sam2.layers import sine_position_encoding

f32 = jnp.float32


class MaskDownSampler(nn.Module):
    """masks (B, S, S, 1) -> (B, S/16, S/16, embed_dim); encoder_{3i} conv, encoder_{3i+1} LayerNorm2d, then GELU."""

    config: Sam2Config
    embed_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg, dt = self.config, self.config.jnp_dtype
        stride = cfg.mask_downsampler_stride
        chans = 1
        for i in range(cfg.mask_downsampler_layers):
            out = chans * stride ** 2
            x = conv(out, cfg.mask_downsampler_kernel, stride=stride, padding=cfg.mask_downsampler_padding,
                     axes=("in_channels" if i == 0 else "mask_channels", "mask_channels"), name=f"encoder_{3 * i}",
                     dtype=dt)(x)
            x = gelu(layer_norm("mask_channels", eps=1e-6, name=f"encoder_{3 * i + 1}", dtype=dt)(x))
            chans = out
        last = f"encoder_{3 * cfg.mask_downsampler_layers}"
        return conv(self.embed_dim, 1, axes=("mask_channels", "neck"), name=last, dtype=dt)(x)


class CXBlock(nn.Module):
    """ConvNeXt block on (B, H, W, C): x + gamma * pwconv2(gelu(pwconv1(norm(dwconv(x)))))."""

    dim: int
    kernel_size: int = 7
    layer_scale_init: float = 1e-6
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, dt = self.kernel_size, self.dtype
        y = nn.Conv(self.dim, (k, k), padding=((k // 2, k // 2),) * 2, feature_group_count=self.dim, dtype=dt,
                    param_dtype=f32, name="dwconv",
                    kernel_init=partitioned(nn.initializers.lecun_normal(), ("conv_h", "conv_w", None, "neck")),
                    bias_init=partitioned(nn.initializers.zeros_init(), ("neck",)))(x)
        y = layer_norm("neck", eps=1e-6, name="norm", dtype=dt)(y)
        y = dense(4 * self.dim, ("neck", "memory_mlp"), name="pwconv1", dtype=dt)(y)
        y = dense(self.dim, ("memory_mlp", "neck"), name="pwconv2", dtype=dt)(gelu(y))
        if self.layer_scale_init > 0:
            gamma = self.param("gamma", partitioned(nn.initializers.constant(self.layer_scale_init), ("neck",)),
                               (self.dim,), f32)
            y = gamma.astype(dt) * y
        return x + y


class Fuser(nn.Module):
    config: Sam2Config

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        for i in range(cfg.fuser_layers):
            x = CXBlock(cfg.d_model, cfg.fuser_kernel, cfg.fuser_layer_scale_init, cfg.jnp_dtype, name=f"layers_{i}")(x)
        return x


class MemoryEncoder(nn.Module):
    config: Sam2Config

    @nn.compact
    def __call__(self, pix_feat: jax.Array, masks: jax.Array, skip_mask_sigmoid: bool = False):
        """pix_feat (B, g, g, C), masks (B, 1, S, S) -> (features (B, g, g, mem_dim), pos (1, g, g, mem_dim)).
        Without skip_mask_sigmoid the masks are logits and go through a sigmoid first."""
        cfg, dt = self.config, self.config.jnp_dtype
        c = cfg.d_model
        x = masks.astype(f32) if skip_mask_sigmoid else jax.nn.sigmoid(masks.astype(f32))
        x = MaskDownSampler(cfg, c, name="mask_downsampler")(jnp.moveaxis(x, 1, -1).astype(dt))
        x = conv(c, 1, axes=("neck", "neck"), name="pix_feat_proj", dtype=dt)(pix_feat.astype(dt)) + x
        x = Fuser(cfg, name="fuser")(x)
        if cfg.mem_dim != c:
            x = conv(cfg.mem_dim, 1, axes=("neck", "memory_embed"), name="out_proj", dtype=dt)(x)
        g = x.shape[1]
        pos = jnp.asarray(sine_position_encoding(g, x.shape[2], cfg.mem_dim, cfg.pos_temperature)).astype(x.dtype)
        return x, pos
