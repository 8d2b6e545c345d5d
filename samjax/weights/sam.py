"""Official SAM checkpoints (segment_anything `Sam.state_dict()`) <-> samjax parameters.

The key table is the generic one of `samjax.weights.keys` (names follow the official state_dict; the output
upscaling's ConvTranspose2d kernels are the only transposed convolutions); the variables are parameters only.
`pixel_mean` / `pixel_std` are non-persistent buffers officially; if a checkpoint carries them anyway they are checked
against the config, not stored as parameters.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import numpy as np

from samjax.models import SamConfig, abstract_params
from samjax.weights import keys
from samjax.weights.keys import CheckpointMismatchError
from samjax.weights.pth import OFFICIAL_CHECKPOINTS

TRANSPOSED_CONVS = ("output_upscaling",)  # ConvTranspose2d weights are (in, out, kh, kw)
PRESETS = ("vit_b", "vit_l", "vit_h")
PREFIXES = ("image_encoder.", "prompt_encoder.", "mask_decoder.")


@functools.lru_cache(maxsize=16)
def _torch_shapes(config: SamConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple(keys.torch_shapes({"params": abstract_params(config)}, TRANSPOSED_CONVS).items())


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
                                      f"belongs to image_encoder / prompt_encoder / mask_decoder; "
                                      f"use {OFFICIAL_CHECKPOINTS}")
    problems = keys.mismatch(state_dict, torch_shapes(config), (config.pixel_mean, config.pixel_std))
    if not problems:
        return
    hint = ""
    if any("keys (" in p for p in problems):
        guess = detect_model(state_dict)
        hint = (f"\n  This checkpoint looks like {guess}: use --model {guess} (SamConfig.{guess}())." if guess else
                "\n  It matches none of vit_b / vit_l / vit_h; is it an official SAM checkpoint (not SAM 2, HQ-SAM"
                " or MobileSAM)?")
    raise CheckpointMismatchError("the state dict does not match the model config:\n" + "\n".join(problems) + hint)


def from_torch(state_dict: Mapping[str, Any], config: SamConfig) -> dict:
    """Official state dict (torch tensors or numpy arrays, official key names) -> samjax params (float32)."""
    check_state_dict(state_dict, config)
    return keys.from_torch(state_dict, {"params": abstract_params(config)}, TRANSPOSED_CONVS)["params"]


def to_torch(params: Mapping, config: SamConfig) -> dict[str, np.ndarray]:
    """samjax params -> an official-format state dict of numpy arrays (what official `Sam.state_dict()` holds)."""
    return keys.to_torch({"params": params}, TRANSPOSED_CONVS)


def random_state_dict(config: SamConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """A randomly initialised state dict in the official format (keys, shapes, layouts), without torch
    (`keys.random_variables`: kernels ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.1^2), the Fourier matrix ~ N(0, 1)
    as officially, the rest ~ N(0, 0.1^2)). Random weights give meaningless masks."""
    return to_torch(keys.random_variables({"params": abstract_params(config)}, seed)["params"], config)
