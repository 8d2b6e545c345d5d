"""Trained parameters moved to another input size: `grow_params(params, src_config, dst_config)`.

Only two kinds of image-encoder parameters depend on the token grid (image_size / patch_size = n):

    image_encoder/pos_embed                      (1, n, n, C)    absolute position embedding
    image_encoder/blocks_i/attn/rel_pos_{h,w}    (2n - 1, hd)    relative positions of the global-attention blocks

Both are resampled so that each entry keeps its place in the image: the position embedding bicubically over the
grid (half-pixel centres, as `samjax.weights.mae.resize_pos_embed` does for MAE checkpoints), each relative-position
table linearly with the offsets scaled by the grid ratio (offset d of an n-grid becomes offset d x n'/n; the ends
are held). Windowed blocks' tables (2 x window_size - 1 rows), the prompt encoder (Fourier features of
normalised coordinates) and the mask decoder (convolutions) do not depend on the grid and are copied.

Used by training's low-resolution stages (`config.low_res`, samjax.train): most steps at small image sizes, where
a step costs a quarter (half the side) or about half (three quarters), then the rest at the target size, each stage
from the grown parameters of the one before.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from samjax.models import SamConfig
from samjax.weights.mae import resize_pos_embed

# SamConfig fields free to differ: the one that is resampled, then those that shape no parameter.
_FREE = ("image_size", "dtype", "decoder_matmul_dtype", "attention", "encoder_drop_path_rate", "encoder_remat",
         "pixel_mean", "pixel_std", "image_format", "mask_threshold")


def resample_rel_pos(table: np.ndarray, rows: int) -> np.ndarray:
    """(2n - 1, hd) relative-position table -> (rows, hd), rows = 2n' - 1: offset d of the n-grid lands on offset
    d x n'/n (linear in between; offsets beyond the old range take the end rows)."""
    table = np.asarray(table, np.float32)
    old = table.shape[0]
    if old % 2 == 0 or rows % 2 == 0:
        raise ValueError(f"relative-position tables have 2n - 1 rows (odd); got {old} -> {rows}")
    if old == rows:
        return table
    ratio = (rows + 1) / (old + 1)
    x = np.clip((np.arange(rows) - (rows - 1) / 2) / ratio + (old - 1) / 2, 0, old - 1)
    return np.stack([np.interp(x, np.arange(old), table[:, c]) for c in range(table.shape[1])], 1).astype(np.float32)


def grow_params(params: dict, src: SamConfig, dst: SamConfig) -> dict:
    """Parameters of a model with config `src` -> the same model at `dst.image_size` (a new tree of numpy arrays).

    `src` and `dst` may differ only in image_size and the fields that shape no parameter (`_FREE`); anything else
    is a ValueError naming the field."""
    for f in dataclasses.fields(SamConfig):
        a, b = getattr(src, f.name), getattr(dst, f.name)
        if f.name not in _FREE and a != b:
            raise ValueError(f"grow_params: the configs may differ only in image_size (and {', '.join(_FREE[1:])}); "
                             f"{f.name} is {a!r} against {b!r}")
    if src.image_size % src.patch_size or dst.image_size % dst.patch_size:
        raise ValueError(f"image_size must be a multiple of patch_size {src.patch_size}: got {src.image_size} and "
                         f"{dst.image_size}")
    n_dst = dst.image_size // dst.patch_size
    global_blocks = {f"blocks_{i}" for i in src.encoder_global_attn_indexes}
    out = jax.tree.map(np.asarray, params)  # new containers: the caller's tree is left as it was
    enc = out["image_encoder"]
    if "pos_embed" in enc:
        pos = np.asarray(enc["pos_embed"], np.float32)
        enc["pos_embed"] = resize_pos_embed(pos.reshape(1, -1, pos.shape[-1]), n_dst)
    for name, block in enc.items():
        if name in global_blocks and "rel_pos_h" in block.get("attn", {}):
            attn = block["attn"]
            for k in ("rel_pos_h", "rel_pos_w"):
                attn[k] = resample_rel_pos(attn[k], 2 * n_dst - 1)
    return out

