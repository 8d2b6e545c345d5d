"""OWL-ViT / OWLv2 Hugging Face checkpoints <-> samjax parameters.

samjax's module tree is the HF one (samjax.models.owlvit), so the mapping is the generic key rule plus transposes:

    flax path                                                  HF key
    owlvit/text_model/encoder/layers_0/self_attn/q_proj/kernel
        <- owlvit.text_model.encoder.layers.0.self_attn.q_proj.weight (transposed)
    owlv2/vision_model/pre_layernorm/scale                     <- owlv2.vision_model.pre_layernorm.weight
    class_head/dense0|logit_shift|logit_scale/kernel           <- class_head.*.weight (transposed)
    box_head/dense{0,1,2}, objectness_head/dense{0,1,2} (v2)   <- box_head.*, objectness_head.*
    layer_norm/scale                                           <- layer_norm.weight

The version is detected from the keys (`owlvit.*` -> OWL-ViT, `owlv2.*` + `objectness_head.*` -> OWLv2). Buffers
that are no parameters (legacy `position_ids`, `box_bias`) are checked and dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax
import jax
import numpy as np
from safetensors.numpy import save_file

from samjax.models.owlvit import OwlViTConfig, abstract_params, box_bias
from samjax.weights.hf import (
    drop_position_ids,
    hf_weights_file,
    read_hf_config,
    read_state_dict,
)
from samjax.weights.keys import (
    CheckpointMismatchError,
    as_numpy,
    check_keys,
    contiguous,
    relayout,
    torch_key,
    torch_shape,
)

OWL_CHECKPOINTS = "a Hugging Face OWL-ViT or OWLv2 checkpoint (google/owlvit-* or google/owlv2-*)"


def detect_version(state_dict: Mapping[str, Any]) -> int:
    """1 (OWL-ViT: owlvit.*) or 2 (OWLv2: owlv2.* and objectness_head.*); a clear error for anything else."""
    keys = list(state_dict)
    if any(k.startswith("owlv2.") for k in keys):
        return 2
    if any(k.startswith("owlvit.") for k in keys):
        return 1
    some = ", ".join(repr(k) for k in keys[:3])
    hint = (" (it looks like a CLIP model: samjax.weights.clip loads those)"
            if any(k.startswith(("text_model.", "visual.", "token_embedding")) for k in keys) else "")
    raise CheckpointMismatchError(f"not an OWL-ViT / OWLv2 checkpoint: none of its {len(keys)} keys ({some}, ...) "
                                  f"is under owlvit.* or owlv2.*{hint}; use {OWL_CHECKPOINTS}")


def hf_shapes(config: OwlViTConfig) -> dict[str, tuple[int, ...]]:
    """The HF OwlViTForObjectDetection / Owlv2ForObjectDetection state_dict keys and shapes of `config`."""
    flat = flax.traverse_util.flatten_dict(abstract_params(config))
    return {torch_key(p): torch_shape(p, leaf.shape) for p, leaf in flat.items()}


def _drop_box_bias(state_dict: Mapping[str, Any], config: OwlViTConfig) -> dict[str, Any]:
    sd = dict(state_dict)
    if "box_bias" in sd:
        want = box_bias(config.grid_size, config.grid_size)
        got = as_numpy(sd.pop("box_bias"), np.float32)
        if got.shape != want.shape or not np.allclose(got, want, atol=1e-4):
            raise CheckpointMismatchError(f"box_bias {got.shape} differs from the {want.shape} bias of a "
                                          f"{config.grid_size}x{config.grid_size} patch grid: wrong image/patch size?")
    return sd


def from_hf(state_dict: Mapping[str, Any], config: OwlViTConfig) -> dict:
    """HF OWL-ViT / OWLv2 state dict (torch tensors or numpy) -> samjax params."""
    version = detect_version(state_dict)
    if version != config.version:
        raise CheckpointMismatchError(f"the checkpoint is {'OWLv2' if version == 2 else 'OWL-ViT'} but the config "
                                      f"is version {config.version}: use OwlViTConfig(..., version={version})")
    sd = _drop_box_bias(drop_position_ids(state_dict), config)
    check_keys({k: tuple(np.shape(v)) for k, v in sd.items()}, hf_shapes(config),
               f"{config.model_type} config", hint="Build the config with OwlViTConfig.from_hf_config(config.json).")
    flat = flax.traverse_util.flatten_dict(abstract_params(config))
    params = {p: relayout(p, as_numpy(sd[torch_key(p)], np.float32), to_flax=True) for p in flat}
    return jax.tree.map(contiguous, flax.traverse_util.unflatten_dict(params))


def to_hf(params: Mapping) -> dict[str, np.ndarray]:
    """samjax params -> a HF-format state dict of numpy arrays (OwlViT/Owlv2ForObjectDetection.state_dict())."""
    flat = flax.traverse_util.flatten_dict(jax.device_get(params))
    return {torch_key(p): contiguous(relayout(p, np.asarray(w, np.float32), to_flax=False))
            for p, w in flat.items()}


def load_owlvit(path: str | Path) -> tuple[OwlViTConfig, dict]:
    """A HF OWL-ViT / OWLv2 model directory (config.json + model.safetensors / pytorch_model.bin) -> (config,
    params). A directory of some other model gets a clear error."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory: give {OWL_CHECKPOINTS} directory (config.json and "
                                "model.safetensors or pytorch_model.bin)")
    config = OwlViTConfig.from_hf_config(read_hf_config(path))  # a clear error before reading any weights
    return config, from_hf(read_state_dict(hf_weights_file(path)), config)


def save_owlvit(directory: str | Path, config: OwlViTConfig, params: Mapping, tokenizer: Any = None) -> Path:
    """Write a Hugging Face OWL-ViT / OWLv2 model directory: config.json (`OwlViTConfig.to_hf_config`), the
    parameters as model.safetensors in the HF layout (`to_hf`) and, if given, the tokenizer (anything with
    `save_pretrained(directory)`, e.g. samjax.text.ClipTokenizer). `load_owlvit` and transformers'
    `Owlv2ForObjectDetection.from_pretrained` both read it. Returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = to_hf(params)
    check_keys({k: v.shape for k, v in state.items()}, hf_shapes(config), f"{config.model_type} config",
               hint="the params are not those of this config")
    save_file(state, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config.to_hf_config(), indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory
