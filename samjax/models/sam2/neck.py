"""SAM 2's FPN neck, its sine position encoding, and the image encoder (Hiera trunk + neck).

Official: sam2/modeling/backbones/image_encoder.py (ImageEncoder, FpnNeck), position_encoding.py
(PositionEmbeddingSine). Names follow the state_dict (`neck.convs.0.conv.weight` <-> `neck/convs_0/conv/kernel`;
`convs_0` reads the lowest-resolution stage, as officially).

FPN: a 1x1 lateral convolution per stage to d_model channels; top-down, from the lowest resolution, the previous
level upsampled 2x (nearest, or bilinear) is added to the lateral features of the levels in
`fpn_top_down_levels` (the others are their lateral features alone). `scalp` drops the lowest-resolution levels.

Shapes (sam2.1_hiera_t at 1024): backbone_fpn (B, 256, 256, 256), (B, 128, 128, 256), (B, 64, 64, 256) with
position encodings (1, h, w, 256) of the same grids; vision_features = the last level (B, 64, 64, 256).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.models.common import conv
from samjax.models.sam2.config import Sam2Config
from samjax.models.sam2.hiera import Hiera
from samjax.models.sam2.layers import bilinear_matrix, resize_hw, sine_position_encoding

f32 = jnp.float32


class _Lateral(nn.Module):
    """One `neck.convs.{i}` nn.Sequential holding a 1x1 `conv`."""

    features: int
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return conv(self.features, 1, axes=("embed", "neck"), name="conv", dtype=self.dtype)(x)


class FpnNeck(nn.Module):
    """Trunk outputs (highest resolution first) -> (features, position encodings), both highest resolution first:
    features (B, h_i, w_i, d_model), position encodings (1, h_i, w_i, d_model) (constants of the shapes)."""

    config: Sam2Config

    @nn.compact
    def __call__(self, xs: list[jax.Array]) -> tuple[list[jax.Array], list[jax.Array]]:
        cfg, dt = self.config, self.config.jnp_dtype
        n = len(xs) - 1
        out, pos = [None] * len(xs), [None] * len(xs)
        prev = None
        for i in range(n, -1, -1):  # top-down: lowest resolution first
            lateral = _Lateral(cfg.d_model, dt, name=f"convs_{n - i}")(xs[i])
            if i in cfg.fpn_top_down_levels and prev is not None:
                prev = lateral + upsample2x(prev.astype(f32), cfg.fpn_interp_model).astype(lateral.dtype)
                if cfg.fuse_type == "avg":
                    prev = prev / 2
            else:
                prev = lateral
            out[i] = prev
            h, w = prev.shape[1:3]
            pos[i] = jnp.asarray(sine_position_encoding(h, w, cfg.d_model, cfg.pos_temperature)).astype(prev.dtype)
        return out, pos


def upsample2x(x: jax.Array, mode: str) -> jax.Array:
    """F.interpolate(scale_factor=2.0, mode) on (B, H, W, C): "nearest" repeats, "bilinear" (align_corners=False)."""
    if mode == "nearest":
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    h, w = x.shape[1:3]
    return resize_hw(x, bilinear_matrix(h, 2 * h), bilinear_matrix(w, 2 * w))


class ImageEncoder(nn.Module):
    """images (B, S, S, 3) normalised -> (backbone_fpn, vision_pos_enc): the `config.num_levels` FPN levels kept
    after `scalp`, highest resolution first (the official ImageEncoder.forward's lists, NHWC)."""

    config: Sam2Config

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> tuple[list[jax.Array], list[jax.Array]]:
        cfg = self.config
        s = cfg.image_size
        if images.ndim != 4 or images.shape[1:] != (s, s, 3):
            raise ValueError(f"the SAM 2 image encoder expects (B, {s}, {s}, 3) normalised images, "
                             f"got {tuple(images.shape)}")
        features, pos = FpnNeck(cfg, name="neck")(Hiera(cfg, name="trunk")(images, train))
        if cfg.scalp > 0:
            features, pos = features[:-cfg.scalp], pos[:-cfg.scalp]
        return features, pos
