"""CLIP checkpoints (OpenAI `clip` and Hugging Face `CLIPModel` layouts) <-> samjax parameters.

samjax's names are Hugging Face's (samjax.models.clip), so the HF layout is the generic key rule plus transposes:

    flax path                                           <- HF key, then its transform where there is one
    text_model/encoder/layers_0/self_attn/q_proj/kernel <- text_model.encoder.layers.0.self_attn.q_proj.weight
                                                             (out, in) -> (in, out)
    vision_model/embeddings/patch_embedding/kernel      <- vision_model.embeddings.patch_embedding.weight
                                                             (O, I, kh, kw) -> (kh, kw, I, O)
    vision_model/pre_layernorm/scale                    <- vision_model.pre_layrnorm.weight (CLIPModel's spelling)
    */embedding, */scale                                <- *.weight;  class_embedding, logit_scale, biases alike

OpenAI's layout maps onto the same parameters (`visual.` = vision_model, no prefix = text_model):

    transformer.resblocks.{i}.attn.in_proj_weight (3D, D)   -> q_proj | k_proj | v_proj kernels (rows split in 3)
    transformer.resblocks.{i}.attn.in_proj_bias (3D,)       -> q_proj | k_proj | v_proj biases
    ....attn.out_proj, .ln_1, .ln_2, .mlp.c_fc, .mlp.c_proj -> self_attn/out_proj, layer_norm1, layer_norm2,
                                                               mlp/fc1, mlp/fc2
    token_embedding.weight, positional_embedding, ln_final   -> text_model/embeddings/{token,position}_embedding,
                                                                final_layer_norm
    text_projection (D, E)                                   -> text_projection/kernel (already (in, out))
    visual.conv1, visual.class_embedding, visual.positional_embedding, visual.ln_pre, visual.ln_post, visual.proj (D, E)
                                                             -> vision_model/embeddings/..., pre_layernorm,
                                                                post_layernorm, visual_projection

HF was chosen as the internal naming because OWL-ViT and OWLv2 (HF-only checkpoints) embed exactly this layout under
`owlvit.` / `owlv2.`: one module tree and one key rule serve CLIP and both detectors; OpenAI's fused projections
are split once at conversion. Both layouts are accepted by `from_torch` (detected from the keys); buffers that are
no parameters (HF's legacy `position_ids`; OpenAI's `input_resolution`, `context_length`, `vocab_size`) are checked
and dropped.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import flax
import jax
import numpy as np
from safetensors.numpy import save_file

from samjax.models.clip import ClipConfig, abstract_params
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

LAYOUTS = ("hf", "openai")
HF_RENAMES = {"pre_layernorm": "pre_layrnorm"}  # CLIPModel's spelling of the vision tower's first norm
_OPENAI_BUFFERS = ("input_resolution", "context_length", "vocab_size")


# ----- layout detection and configs from shapes -----

def detect_layout(state_dict: Mapping[str, Any]) -> str:
    """"hf" (CLIPModel: text_model.* / vision_model.*) or "openai" (clip: transformer.* / visual.*)."""
    keys = set(state_dict)
    if "text_model.embeddings.token_embedding.weight" in keys or "vision_model.embeddings.class_embedding" in keys:
        return "hf"
    if "token_embedding.weight" in keys or "visual.class_embedding" in keys or "visual.proj" in keys:
        return "openai"
    if any(k.startswith(("owlvit.", "owlv2.")) for k in keys):
        raise CheckpointMismatchError("this is an OWL-ViT / OWLv2 detector checkpoint: load it with "
                                      "samjax.weights.owlvit, not as a CLIP model")
    some = ", ".join(repr(k) for k in list(keys)[:3])
    raise CheckpointMismatchError(f"not a CLIP checkpoint: none of its {len(keys)} keys ({some}, ...) is a CLIP "
                                  "text or vision tower key of the OpenAI (token_embedding.weight, visual.*) or "
                                  "Hugging Face (text_model.*, vision_model.*) layout")


def _count_layers(keys, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in keys if k.startswith(prefix)})


def config_from_state_dict(state_dict: Mapping[str, Any], layout: str | None = None, **overrides) -> ClipConfig:
    """The ClipConfig a state dict's shapes imply. Attention heads are width / 64 in both towers (every released
    CLIP; OpenAI's build_model assumes the same); the rest (activation, eps) takes the OpenAI defaults: pass a HF
    config.json to `ClipConfig.from_hf_config` where there is one."""
    layout = layout or detect_layout(state_dict)

    def shape(k: str) -> tuple[int, ...]:
        return tuple(np.shape(state_dict[k]))

    keys = list(state_dict)
    if layout == "openai":
        if "visual.proj" not in state_dict:
            raise CheckpointMismatchError("this OpenAI CLIP checkpoint has a ResNet image tower (RN50, RN101, ...); "
                                          "only ViT CLIP models are supported")
        return ClipConfig.openai(
            embed_dim=shape("text_projection")[1], image_resolution=shape("visual.conv1.weight")[-1] * round(
                (shape("visual.positional_embedding")[0] - 1) ** 0.5),
            vision_layers=_count_layers(keys, "visual.transformer.resblocks."),
            vision_width=shape("visual.conv1.weight")[0], vision_patch_size=shape("visual.conv1.weight")[-1],
            context_length=shape("positional_embedding")[0], vocab_size=shape("token_embedding.weight")[0],
            transformer_width=shape("ln_final.weight")[0], transformer_heads=max(shape("ln_final.weight")[0] // 64, 1),
            transformer_layers=_count_layers(keys, "transformer.resblocks."), **overrides)
    t, v = "text_model.", "vision_model."
    tw, vw = shape(t + "final_layer_norm.weight")[0], shape(v + "post_layernorm.weight")[0]
    patch = shape(v + "embeddings.patch_embedding.weight")[-1]
    return ClipConfig(**{**dict(
        embed_dim=shape("text_projection.weight")[0],
        context_length=shape(t + "embeddings.position_embedding.weight")[0],
        vocab_size=shape(t + "embeddings.token_embedding.weight")[0], text_width=tw, text_heads=max(tw // 64, 1),
        text_layers=_count_layers(keys, t + "encoder.layers."),
        text_mlp_dim=shape(t + "encoder.layers.0.mlp.fc1.weight")[0],
        image_size=patch * round((shape(v + "embeddings.position_embedding.weight")[0] - 1) ** 0.5), patch_size=patch,
        in_chans=shape(v + "embeddings.patch_embedding.weight")[1], vision_width=vw, vision_heads=max(vw // 64, 1),
        vision_layers=_count_layers(keys, v + "encoder.layers."),
        vision_mlp_dim=shape(v + "encoder.layers.0.mlp.fc1.weight")[0]), **overrides})


# ----- Hugging Face layout -----

def _flat_abstract(config: ClipConfig) -> dict[tuple[str, ...], Any]:
    return flax.traverse_util.flatten_dict(abstract_params(config))


@functools.lru_cache(maxsize=16)
def _hf_table(config: ClipConfig, prefix: str, renames: tuple) -> tuple:
    return tuple((path, prefix + torch_key(path, dict(renames)), torch_shape(path, leaf.shape))
                 for path, leaf in _flat_abstract(config).items())


def hf_shapes(config: ClipConfig, prefix: str = "", renames: Mapping[str, str] = HF_RENAMES) -> dict[str, tuple]:
    """The HF state_dict keys and shapes of `config` (keys under `prefix`, e.g. "owlvit.")."""
    return {key: shape for _, key, shape in _hf_table(config, prefix, tuple(renames.items()))}


def from_hf(state_dict: Mapping[str, Any], config: ClipConfig, prefix: str = "",
            renames: Mapping[str, str] = HF_RENAMES, strict: bool = True) -> dict:
    """HF CLIPModel state dict -> samjax params. With `prefix` (e.g. "owlvit.") only keys under it are CLIP's;
    strict=False leaves other keys to the caller (it checks them)."""
    sd = drop_position_ids(state_dict)
    table = _hf_table(config, prefix, tuple(renames.items()))
    got = {k: tuple(np.shape(v)) for k, v in sd.items() if strict or k.startswith(prefix)}
    where = f"CLIP config (Hugging Face layout{', ' + prefix if prefix else ''})"
    check_keys(got, {key: shape for _, key, shape in table}, where,
               hint="Build the config with ClipConfig.from_hf_config(config.json) (or config_from_state_dict).")
    params = {path: relayout(path, as_numpy(sd[key], np.float32), to_flax=True) for path, key, _ in table}
    return jax.tree.map(contiguous, flax.traverse_util.unflatten_dict(params))


def to_hf(params: Mapping, prefix: str = "", renames: Mapping[str, str] = HF_RENAMES) -> dict[str, np.ndarray]:
    """samjax params -> a HF CLIPModel state dict of numpy arrays (what CLIPModel.state_dict() holds)."""
    flat = flax.traverse_util.flatten_dict(jax.device_get(params))
    return {prefix + torch_key(p, renames): contiguous(relayout(p, np.asarray(w, np.float32), to_flax=False))
            for p, w in flat.items()}


# ----- OpenAI layout -----

_OPENAI_BLOCK = {  # OpenAI residual-block key -> (flax path inside layers_i, kind)
    "attn.out_proj.weight": (("self_attn", "out_proj", "kernel"), "linear"),
    "attn.out_proj.bias": (("self_attn", "out_proj", "bias"), "same"),
    "ln_1.weight": (("layer_norm1", "scale"), "same"), "ln_1.bias": (("layer_norm1", "bias"), "same"),
    "ln_2.weight": (("layer_norm2", "scale"), "same"), "ln_2.bias": (("layer_norm2", "bias"), "same"),
    "mlp.c_fc.weight": (("mlp", "fc1", "kernel"), "linear"), "mlp.c_fc.bias": (("mlp", "fc1", "bias"), "same"),
    "mlp.c_proj.weight": (("mlp", "fc2", "kernel"), "linear"), "mlp.c_proj.bias": (("mlp", "fc2", "bias"), "same"),
}


def _openai_entries(config: ClipConfig) -> Iterator[tuple[str, tuple[tuple[str, ...], ...], str]]:
    """(OpenAI key, flax paths, kind) for every OpenAI parameter. kind: "same", "linear" (transpose), "conv",
    "qkv" (rows split into q, k, v then transposed), "qkv_bias" (split)."""
    for tower, key_prefix, model in (("text", "", "text_model"), ("vision", "visual.", "vision_model")):
        for i in range(getattr(config, f"{tower}_layers")):
            block = f"{key_prefix}transformer.resblocks.{i}."
            layer = (model, "encoder", f"layers_{i}")
            qkv = [(*layer, "self_attn", f"{n}_proj") for n in ("q", "k", "v")]
            yield block + "attn.in_proj_weight", tuple((*p, "kernel") for p in qkv), "qkv"
            yield block + "attn.in_proj_bias", tuple((*p, "bias") for p in qkv), "qkv_bias"
            for key, (path, kind) in _OPENAI_BLOCK.items():
                yield block + key, ((*layer, *path),), kind
    emb = ("text_model", "embeddings")
    yield "token_embedding.weight", ((*emb, "token_embedding", "embedding"),), "same"
    yield "positional_embedding", ((*emb, "position_embedding", "embedding"),), "same"
    yield "ln_final.weight", (("text_model", "final_layer_norm", "scale"),), "same"
    yield "ln_final.bias", (("text_model", "final_layer_norm", "bias"),), "same"
    yield "text_projection", (("text_projection", "kernel"),), "same"
    yield "logit_scale", (("logit_scale",),), "same"
    vemb = ("vision_model", "embeddings")
    yield "visual.class_embedding", ((*vemb, "class_embedding"),), "same"
    yield "visual.positional_embedding", ((*vemb, "position_embedding", "embedding"),), "same"
    yield "visual.conv1.weight", ((*vemb, "patch_embedding", "kernel"),), "conv"
    for ours, theirs in (("pre_layernorm", "ln_pre"), ("post_layernorm", "ln_post")):
        yield f"visual.{theirs}.weight", (("vision_model", ours, "scale"),), "same"
        yield f"visual.{theirs}.bias", (("vision_model", ours, "bias"),), "same"
    yield "visual.proj", (("visual_projection", "kernel"),), "same"


def _openai_shape(kind: str, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    s = shapes[0]
    if kind == "linear":
        return (s[1], s[0])
    if kind == "conv":
        return (s[3], s[2], s[0], s[1])
    if kind == "qkv":
        return (3 * s[1], s[0])
    if kind == "qkv_bias":
        return (3 * s[0],)
    return tuple(s)


def openai_shapes(config: ClipConfig) -> dict[str, tuple[int, ...]]:
    """The OpenAI `clip.model.CLIP(...).state_dict()` keys and shapes of `config`."""
    flat = _flat_abstract(config)
    return {key: _openai_shape(kind, [flat[p].shape for p in paths]) for key, paths, kind in _openai_entries(config)}


def _check_openai_buffers(state_dict: Mapping[str, Any], config: ClipConfig) -> None:
    want = {"input_resolution": config.image_size, "context_length": config.context_length,
            "vocab_size": config.vocab_size}
    bad = [f"{k} = {int(np.asarray(state_dict[k]))}, the config has {want[k]}"
           for k in _OPENAI_BUFFERS if k in state_dict and int(np.asarray(state_dict[k])) != want[k]]
    if bad:
        raise CheckpointMismatchError("the checkpoint's buffers do not match the config: " + "; ".join(bad))


def from_openai(state_dict: Mapping[str, Any], config: ClipConfig) -> dict:
    """OpenAI `clip` state dict (a ViT model's; torch tensors or numpy) -> samjax params."""
    if config.vision_mlp_dim != 4 * config.vision_width or config.text_mlp_dim != 4 * config.text_width:
        raise ValueError("OpenAI CLIP models have MLPs of 4 x width; this config does not: it cannot be one")
    _check_openai_buffers(state_dict, config)
    sd = {k: v for k, v in state_dict.items() if k not in _OPENAI_BUFFERS}
    check_keys({k: tuple(np.shape(v)) for k, v in sd.items()}, openai_shapes(config), "CLIP config (OpenAI layout)",
               hint="Build the config with samjax.weights.clip.config_from_state_dict(state_dict) or a preset.")
    params = {}
    for key, paths, kind in _openai_entries(config):
        w = as_numpy(sd[key], np.float32)
        if kind in ("qkv", "qkv_bias"):
            for path, part in zip(paths, np.split(w, 3, axis=0)):
                params[path] = part.T if kind == "qkv" else part
        else:
            params[paths[0]] = relayout(paths[0], w, to_flax=True) if kind in ("linear", "conv") else w
    return jax.tree.map(contiguous, flax.traverse_util.unflatten_dict(params))


def to_openai(params: Mapping, config: ClipConfig) -> dict[str, np.ndarray]:
    """samjax params -> an OpenAI `clip` state dict of numpy arrays (the parameters of clip.model.CLIP)."""
    flat = flax.traverse_util.flatten_dict(jax.device_get(params))
    out = {}
    for key, paths, kind in _openai_entries(config):
        ws = [np.asarray(flat[p], np.float32) for p in paths]
        if kind == "qkv":
            w = np.concatenate([x.T for x in ws], axis=0)
        elif kind == "qkv_bias":
            w = np.concatenate(ws, axis=0)
        elif kind in ("linear", "conv"):
            w = relayout(paths[0], ws[0], to_flax=False)
        else:
            w = ws[0]
        out[key] = contiguous(w)
    return out


# ----- either layout -----

def from_torch(state_dict: Mapping[str, Any], config: ClipConfig, layout: str | None = None) -> dict:
    """A CLIP state dict of either layout (detected from its keys unless `layout` is given) -> samjax params."""
    layout = layout or detect_layout(state_dict)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return from_hf(state_dict, config) if layout == "hf" else from_openai(state_dict, config)


def checkpoint_or_pair(clip) -> tuple[Path | None, ClipConfig, dict]:
    """A CLIP argument as the text-side APIs take it: a checkpoint path (`load_clip`) or a loaded (ClipConfig,
    params) pair -> (its path or None, config, params)."""
    if isinstance(clip, (str, os.PathLike)):
        return (Path(clip), *load_clip(Path(clip)))
    if isinstance(clip, tuple) and len(clip) == 2 and isinstance(clip[0], ClipConfig):
        return (None, *clip)
    raise TypeError(f"clip must be a checkpoint path or a (ClipConfig, params) pair, got {type(clip).__name__}")


def load_clip(path: str | Path, config: ClipConfig | None = None) -> tuple[ClipConfig, dict]:
    """A CLIP checkpoint -> (config, params). `path`: a HF model directory (config.json + weights), a samjax
    directory written by `save_clip`, or one weights file of either layout (OpenAI's .pt included; the config then
    comes from the shapes unless given)."""
    path = Path(path)
    if path.is_dir() and (path / "samjax_clip.json").is_file():
        config = config or ClipConfig.from_dict(json.loads((path / "samjax_clip.json").read_text()))
        return config, from_hf(read_state_dict(path / "model.safetensors"), config)
    if path.is_dir():
        hf_config = read_hf_config(path)
        if not {"model_type", "text_config", "vision_config"} & set(hf_config):
            raise ValueError(f"{path}/config.json is not a CLIP config (no model_type, text_config or "
                             "vision_config): give a Hugging Face CLIP directory, save_clip's, or an OpenAI .pt")
        if hf_config.get("model_type", "clip") != "clip":
            raise ValueError(f"{path} holds a {hf_config.get('model_type')!r} model, not CLIP (model_type 'clip')")
        config = config or ClipConfig.from_hf_config(hf_config)
        return config, from_torch(read_state_dict(hf_weights_file(path)), config)
    sd = read_state_dict(path)
    layout = detect_layout(sd)
    config = config or config_from_state_dict(sd, layout)
    return config, from_torch(sd, config, layout)


def save_clip(directory: str | Path, config: ClipConfig, params: Mapping) -> Path:
    """Write params as a HF-layout model.safetensors plus samjax_clip.json (the ClipConfig); `load_clip` reads it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(to_hf(params), str(directory / "model.safetensors"))
    (directory / "samjax_clip.json").write_text(config.to_json())
    return directory
