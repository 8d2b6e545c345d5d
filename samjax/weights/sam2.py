"""Official SAM 2 / SAM 2.1 checkpoints <-> samjax parameters (samjax.models.sam2).

The official files (`sam2.1_hiera_tiny.pt`, ..., `sam2_hiera_large.pt`) hold `{"model": state_dict}`, exactly the
keys of `SAM2Base.state_dict()`. Module names follow that state_dict, so the mapping is a key table plus transposes:

    flax path <- torch key                                                   transform
    image_encoder/trunk/blocks_3/attn/qkv/kernel <- ...trunk.blocks.3.attn.qkv.weight  (out, in) -> (in, out)
    image_encoder/neck/convs_0/conv/kernel <- ...neck.convs.0.conv.weight              (O, I, kh, kw) -> (kh, kw, I, O)
    memory_encoder/fuser/layers_0/dwconv/kernel <- ...fuser.layers.0.dwconv.weight     (C, 1, 7, 7) -> (7, 7, 1, C)
    sam_mask_decoder/output_upscaling_0/kernel <- ...output_upscaling.0.weight         (I, O, kh, kw) -> (kh, kw, I, O)
    image_encoder/trunk/pos_embed(_window) <- the same names                           (1, C, h, w) -> (1, h, w, C)
    sam_mask_decoder/transformer/layers_0/mlp/lin1|2 <- ...transformer.layers.0.mlp.layers.0|1
        (samjax's shared TwoWayTransformer names its MLP as SAM does)
    */norm*/scale, */embedding <- *.weight                                             none
    everything else (biases, gamma, maskmem_tpos_enc, no_mem_embed, no_mem_pos_enc, no_obj_ptr, no_obj_embed_spatial,
    positional_encoding_gaussian_matrix): same name, same layout.

The checkpoints do not record the image size (nothing in them depends on it): a detected config has the official
1024; `Sam2Config.from_name(name, image_size=...)` gives another.

Converted model directories are samjax.weights.store's (`store.save_model(DIR, params, config)`; family "sam2").
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax
import jax
import numpy as np

from samjax.models.sam2 import PRESETS, Sam2Config, abstract_params
from samjax.weights import keys
from samjax.weights.keys import CheckpointMismatchError
from samjax.weights.pth import load_torch_checkpoint

_TRANSPOSED_CONVS = ("output_upscaling",)   # ConvTranspose2d weights are (in, out, kh, kw)
_CHANNELS_FIRST = ("pos_embed", "pos_embed_window")  # Hiera's (1, C, h, w) position tables
_MLP_RENAME = re.compile(r"^(sam_mask_decoder\.transformer\.layers\.\d+\.mlp)\.lin([12])\.")
_SAM2_PREFIXES = ("image_encoder.trunk.", "memory_attention.", "memory_encoder.", "sam_mask_decoder.")
OFFICIAL_CHECKPOINTS = ("an official SAM 2 / 2.1 checkpoint (sam2.1_hiera_{tiny,small,base_plus,large}.pt or "
                        "sam2_hiera_*.pt from github.com/facebookresearch/sam2)")


def torch_key(path: tuple[str, ...]) -> str:
    """('image_encoder', 'trunk', 'blocks_3', 'attn', 'qkv', 'kernel') ->
    'image_encoder.trunk.blocks.3.attn.qkv.weight'."""
    key = keys.torch_key(path)
    return _MLP_RENAME.sub(lambda m: f"{m.group(1)}.layers.{int(m.group(2)) - 1}.", key)


def _relayout(path: tuple[str, ...], w: np.ndarray, to_flax: bool) -> np.ndarray:
    """Linear (out, in) <-> (in, out); Conv2d (O, I, kh, kw) <-> (kh, kw, I, O); ConvTranspose2d (I, O, kh, kw) <->
    (kh, kw, I, O); Hiera's position tables (1, C, h, w) <-> (1, h, w, C). Everything else is stored alike."""
    if path[-1] in _CHANNELS_FIRST and path[-2] == "trunk":
        return w.transpose(0, 2, 3, 1) if to_flax else w.transpose(0, 3, 1, 2)
    return keys.relayout(path, w, to_flax, _TRANSPOSED_CONVS)


@functools.lru_cache(maxsize=16)
def _torch_shapes(config: Sam2Config) -> tuple[tuple[str, tuple[int, ...]], ...]:
    flat = flax.traverse_util.flatten_dict(abstract_params(config))
    return tuple((torch_key(p), _relayout(p, np.empty(leaf.shape, np.uint8), to_flax=False).shape)
                 for p, leaf in flat.items())


def torch_shapes(config: Sam2Config) -> dict[str, tuple[int, ...]]:
    """The official `SAM2Base.state_dict()` keys and shapes for `config`."""
    return dict(_torch_shapes(config))


def is_sam2_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """Whether the keys look like SAM 2's (a Hiera trunk, memory attention or SAM 2 heads)."""
    return any(str(k).startswith(_SAM2_PREFIXES) for k in state_dict)


def unwrap(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    """The state dict of an official file's content ({"model": state_dict}) or the state dict itself."""
    model = checkpoint.get("model") if isinstance(checkpoint, Mapping) else None
    return model if isinstance(model, Mapping) else checkpoint


def detect_model(state_dict: Mapping[str, Any]) -> str | None:
    """The preset ("sam2.1_hiera_t", ..., "sam2_hiera_l") whose exact key set and shapes `state_dict` has, or None."""
    state_dict = unwrap(state_dict)
    got = {k: tuple(np.shape(v)) for k, v in state_dict.items()}
    patch = got.get("image_encoder.trunk.patch_embed.proj.weight")
    blocks = {int(m.group(1)) for k in got if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))}
    for name in PRESETS:
        cfg = Sam2Config.from_name(name)
        # cheap filters first (each full comparison traces the model's shapes once)
        if (patch is None or patch[0] != cfg.embed_dim or len(blocks) != cfg.depth
                or ("no_obj_embed_spatial" in got) != cfg.no_obj_embed_spatial):
            continue
        if torch_shapes(cfg) == got:
            return name
    return None


def check_state_dict(state_dict: Mapping[str, Any], config: Sam2Config) -> None:
    """Raise CheckpointMismatchError listing missing, unexpected and mis-shaped keys, if any. A state dict with no
    SAM 2 key at all (some other model's weights) gets one line instead of a list of every key."""
    if not is_sam2_state_dict(state_dict):
        some = ", ".join(repr(k) for k in list(state_dict)[:3])
        raise CheckpointMismatchError(f"not a SAM 2 checkpoint: none of its {len(state_dict)} keys ({some}, ...) "
                                      f"belongs to a Hiera trunk, memory attention or SAM 2 heads; use "
                                      f"{OFFICIAL_CHECKPOINTS}")
    problems = keys.shape_mismatch({k: tuple(np.shape(v)) for k, v in state_dict.items()}, torch_shapes(config))
    if not problems:
        return
    guess = detect_model(state_dict)
    hint = (f"This checkpoint looks like {guess}: use Sam2Config.from_name({guess!r})." if guess else
            f"It matches none of {', '.join(PRESETS)}; is it {OFFICIAL_CHECKPOINTS}?")
    keys.raise_mismatch(problems, "SAM 2", hint)


def from_torch(state_dict: Mapping[str, Any], config: Sam2Config) -> dict:
    """Official state dict (torch tensors or numpy arrays; the file's {"model": ...} is unwrapped) -> samjax params."""
    state_dict = unwrap(state_dict)
    check_state_dict(state_dict, config)
    flat = flax.traverse_util.flatten_dict(abstract_params(config))
    params = {path: _relayout(path, keys.as_numpy(state_dict[torch_key(path)], np.float32), to_flax=True)
              for path in flat}
    return jax.tree.map(np.ascontiguousarray, flax.traverse_util.unflatten_dict(params))


def to_torch(params: Mapping, config: Sam2Config) -> dict[str, np.ndarray]:
    """samjax params -> an official-format state dict of numpy arrays (what `SAM2Base.state_dict()` holds)."""
    flat = flax.traverse_util.flatten_dict(jax.device_get(dict(params)))
    expected = set(torch_shapes(config))
    out = {torch_key(p): np.ascontiguousarray(_relayout(p, np.asarray(w, np.float32), to_flax=False))
           for p, w in flat.items()}
    if set(out) != expected:
        raise ValueError(f"params do not match the config: {sorted(set(out) ^ expected)[:12]}")
    return out


def load_checkpoint(path: str | Path, config: Sam2Config | None = None) -> tuple[dict, Sam2Config]:
    """Read an official SAM 2 / 2.1 `.pt` -> (params, config); the config is detected from the keys and shapes
    unless given (pass one for another image size or dtype)."""
    return from_state_dict(load_torch_checkpoint(path), config, str(path))


def from_state_dict(state_dict: Mapping[str, Any], config: Sam2Config | None = None,
                    name: str = "checkpoint") -> tuple[dict, Sam2Config]:
    """An official state dict (or the file's {"model": ...}) -> (params, config), the config detected unless given."""
    sd = unwrap(state_dict)
    if config is None:
        preset = detect_model(sd)
        if preset is None:
            check_state_dict(sd, Sam2Config.from_name("sam2.1_hiera_t"))  # raises with the list of differences
            raise CheckpointMismatchError(f"{name}: no SAM 2 preset matches")  # pragma: no cover - check raised
        config = Sam2Config.from_name(preset)
    return from_torch(sd, config), config

