"""Official SAM checkpoints (segment_anything `Sam.state_dict()`) <-> samjax parameters.

The key table is the generic one of `samjax.weights.keys` (names follow the official state_dict; the output
upscaling's ConvTranspose2d kernels are the only transposed convolutions). `pixel_mean` / `pixel_std` are
non-persistent buffers officially; if a checkpoint carries them anyway they are checked against the config, not
stored as parameters.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import flax
import jax
import numpy as np

from samjax.models import SamConfig, abstract_params
from samjax.weights.pth import OFFICIAL_CHECKPOINTS
from samjax.weights.keys import CheckpointMismatchError, as_numpy, mismatch, relayout, torch_key

TRANSPOSED_CONVS = ("output_upscaling",)  # ConvTranspose2d weights are (in, out, kh, kw)
BUFFERS = ("pixel_mean", "pixel_std")
PRESETS = ("vit_b", "vit_l", "vit_h")
PREFIXES = ("image_encoder.", "prompt_encoder.", "mask_decoder.")


def _relayout(path: tuple[str, ...], w: np.ndarray, to_flax: bool) -> np.ndarray:
    return relayout(path, w, to_flax, TRANSPOSED_CONVS)


@functools.lru_cache(maxsize=16)
def _torch_shapes(config: SamConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    flat = flax.traverse_util.flatten_dict(abstract_params(config))
    return tuple((torch_key(p), _relayout(p, np.empty(leaf.shape, np.uint8), to_flax=False).shape) for p, leaf in flat.items())


def torch_shapes(config: SamConfig) -> dict[str, tuple[int, ...]]:
    """The official `Sam.state_dict()` keys and shapes for `config`."""
    return dict(_torch_shapes(config))


def detect_model(state_dict: Mapping[str, Any]) -> str | None:
    """Name of the official preset whose keys and shapes match `state_dict`, or None."""
    for name in PRESETS:
        expected = torch_shapes(SamConfig.from_name(name))
        if all(k in state_dict and tuple(np.shape(state_dict[k])) == s for k, s in expected.items()):
            return name
    return None


def check_state_dict(state_dict: Mapping[str, Any], config: SamConfig) -> None:
    """Raise CheckpointMismatchError listing missing, unexpected and mis-shaped keys, if any. A state dict with no
    SAM key at all (some other model's weights) gets one line instead of a list of every key."""
    if not any(str(k).startswith(PREFIXES) for k in state_dict):
        some = ", ".join(repr(k) for k in list(state_dict)[:3])
        raise CheckpointMismatchError(f"not a SAM checkpoint: none of its {len(state_dict)} keys ({some}, ...) "
                                      f"belongs to image_encoder / prompt_encoder / mask_decoder; use {OFFICIAL_CHECKPOINTS}")
    buffers = []
    for k in BUFFERS:
        if k in state_dict:
            want = getattr(config, k)
            if not np.allclose(as_numpy(state_dict[k]).reshape(-1), want, atol=1e-3):
                buffers.append(f"{k} {as_numpy(state_dict[k]).reshape(-1).tolist()} differs from the config's {list(want)}")
    report = mismatch(torch_shapes(config), state_dict, ignore=BUFFERS, extra_problems=buffers)
    if report is None:
        return
    hint = ""
    if "keys (" in report:
        guess = detect_model(state_dict)
        hint = (f"\n  This checkpoint looks like {guess}: use --model {guess} (SamConfig.{guess}())." if guess else
                "\n  It matches none of vit_b / vit_l / vit_h; is it an official SAM checkpoint (not SAM 2, HQ-SAM"
                " or MobileSAM)?")
    raise CheckpointMismatchError("the state dict does not match the model config:\n" + report + hint)


def from_torch(state_dict: Mapping[str, Any], config: SamConfig) -> dict:
    """Official state dict (torch tensors or numpy arrays, official key names) -> samjax params (float32)."""
    check_state_dict(state_dict, config)
    flat = flax.traverse_util.flatten_dict(abstract_params(config))
    params = {path: _relayout(path, as_numpy(state_dict[torch_key(path)]), to_flax=True) for path in flat}
    return jax.tree.map(np.ascontiguousarray, flax.traverse_util.unflatten_dict(params))


def to_torch(params: Mapping, config: SamConfig) -> dict[str, np.ndarray]:
    """samjax params -> an official-format state dict of numpy arrays (what official `Sam.state_dict()` holds)."""
    flat = flax.traverse_util.flatten_dict(jax.device_get(params))
    return {torch_key(p): np.ascontiguousarray(_relayout(p, np.asarray(w, np.float32), to_flax=False)) for p, w in flat.items()}


def random_state_dict(config: SamConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """A randomly initialised state dict in the official format (keys, shapes, layouts), without torch.

    Kernels ~ N(0, 1/fan_in); norm scales ~ 1 + N(0, 0.1^2); the Fourier matrix ~ N(0, 1) as officially;
    everything else (biases, tokens, position tables) ~ N(0, 0.1^2). Random weights give meaningless masks.
    """
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        shape, name = leaf.shape, path[-1]
        if name == "kernel":
            return rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
        if name == "scale":
            return 1.0 + 0.1 * rng.standard_normal(shape)
        if name == "positional_encoding_gaussian_matrix":
            return rng.standard_normal(shape)
        return 0.1 * rng.standard_normal(shape)

    flat = flax.traverse_util.flatten_dict(abstract_params(config))
    params = {path: draw(path, leaf).astype(np.float32) for path, leaf in flat.items()}
    return to_torch(flax.traverse_util.unflatten_dict(params), config)
