"""Initialise SAM's image encoder from an official MAE-pretrained ViT checkpoint (facebookresearch/mae).

    params = init_from_mae("mae_pretrain_vit_huge.pth", SamConfig.vit_h(), jax.random.PRNGKey(0))
    python -m samjax.train --experiment=sa1b_vith --config.init.kind=mae --config.init.path=mae_pretrain_vit_huge.pth

MAE state dict (timm VisionTransformer; a {"model": ...} wrapper is unwrapped) -> samjax params:

    patch_embed.proj.weight (C, 3, p, p)      -> image_encoder/patch_embed/proj/kernel (p, p, 3, C)
    pos_embed (1, 1 + n*n, C) (cls first)     -> image_encoder/pos_embed (1, g, g, C): cls dropped, the n x n grid
                                                 resized to g x g (bicubic, as ViTDet / SAM)
    blocks.i.norm1/norm2.{weight,bias}        -> blocks_i/norm1|norm2/{scale,bias}
    blocks.i.attn.qkv.{weight,bias}           -> blocks_i/attn/qkv/{kernel (transposed), bias}
    blocks.i.attn.proj.*, mlp.fc1.*, mlp.fc2.*-> blocks_i/attn/proj, mlp/lin1, mlp/lin2
Everything else (relative-position tables, neck, prompt encoder, mask decoder) keeps its fresh initialisation;
cls_token, the final norm and any decoder_* keys of the MAE checkpoint are unused.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np
from PIL import Image

from samjax.models import SamConfig, init_params

_LINEAR = {"attn.qkv": ("attn", "qkv"), "attn.proj": ("attn", "proj"), "mlp.fc1": ("mlp", "lin1"),
           "mlp.fc2": ("mlp", "lin2")}


def resize_pos_embed(pos: np.ndarray, grid: int) -> np.ndarray:
    """(1, 1 + n*n, C) or (1, n*n, C) -> (1, grid, grid, C); per channel bicubic (PIL, float32)."""
    pos = np.asarray(pos, np.float32)[0]
    n = int(round(np.sqrt(pos.shape[0])))
    if n * n != pos.shape[0]:
        pos, n = pos[1:], int(round(np.sqrt(pos.shape[0] - 1)))  # drop the cls token
    if n * n != pos.shape[0]:
        raise ValueError(f"pos_embed has {pos.shape[0]} tokens: not a square grid (+ optional cls token)")
    pos = pos.reshape(n, n, -1)
    if n == grid:
        return pos[None]
    out = np.stack([np.asarray(Image.fromarray(pos[..., c]).resize((grid, grid), Image.BICUBIC))
                    for c in range(pos.shape[-1])], -1)
    return out[None].astype(np.float32)


def mae_to_encoder(state_dict: Mapping[str, Any], config: SamConfig) -> dict[str, np.ndarray]:
    """MAE state dict -> {"a/b/c": array} for the image encoder parameters it provides (see module docstring)."""
    sd = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, np.float32)
          for k, v in state_dict.items()}
    out = {}
    w = sd["patch_embed.proj.weight"]
    if w.shape != (config.encoder_embed_dim, config.in_chans, config.patch_size, config.patch_size):
        raise ValueError(f"MAE patch embedding {w.shape} does not fit the config (embed "
                         f"{config.encoder_embed_dim}, patch {config.patch_size})")
    out["image_encoder/patch_embed/proj/kernel"] = w.transpose(2, 3, 1, 0)
    out["image_encoder/patch_embed/proj/bias"] = sd["patch_embed.proj.bias"]
    if config.encoder_use_abs_pos:
        out["image_encoder/pos_embed"] = resize_pos_embed(sd["pos_embed"], config.grid_size)
    depth = sum(1 for k in sd if k.startswith("blocks.") and k.endswith(".norm1.weight"))
    if depth != config.encoder_depth:
        raise ValueError(f"MAE checkpoint has {depth} blocks, the config {config.encoder_depth}")
    for i in range(depth):
        pre, dst = f"blocks.{i}.", f"image_encoder/blocks_{i}/"
        for norm in ("norm1", "norm2"):
            out[dst + f"{norm}/scale"] = sd[pre + f"{norm}.weight"]
            out[dst + f"{norm}/bias"] = sd[pre + f"{norm}.bias"]
        for src, (a, b) in _LINEAR.items():
            out[dst + f"{a}/{b}/kernel"] = sd[pre + f"{src}.weight"].T
            if pre + f"{src}.bias" in sd:
                out[dst + f"{a}/{b}/bias"] = sd[pre + f"{src}.bias"]
    return out


def init_from_mae(path_or_state_dict, config: SamConfig, rng: jax.Array) -> dict:
    """Fresh SAM params with the image encoder taken from an MAE checkpoint (path to .pth, or a state dict)."""
    sd = path_or_state_dict
    if not isinstance(sd, Mapping):
        import torch  # noqa: PLC0415 (the [torch] extra)

        sd = torch.load(sd, map_location="cpu", weights_only=True)
    sd = sd.get("model", sd)
    params = jax.tree.map(np.asarray, init_params(config, rng))
    mapped = mae_to_encoder(sd, config)

    def take(path, leaf):
        key = "/".join(str(k.key) for k in path)
        if key not in mapped:
            return leaf
        if mapped[key].shape != leaf.shape:
            raise ValueError(f"{key}: MAE gives {mapped[key].shape}, the model needs {leaf.shape}")
        return mapped.pop(key)

    params = jax.tree_util.tree_map_with_path(take, params)
    return params
