"""Reference implementations for the text-prompt tests: OpenAI CLIP (clip-anytorch) and transformers' torch models,
with random weights everywhere.

clip-anytorch's package `__init__` imports `clip.clip` (the downloader and image transforms), which needs
`pkg_resources` (gone from setuptools >= 81) and torchvision (not loadable beside the CPU torch here). The parity
tests need only `clip.model` and `clip.simple_tokenizer`, which import neither: they are loaded unchanged under an
empty parent package instead of behind stand-ins for modules they never use.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np


def _clip_parent() -> None:
    if "clip" not in sys.modules:
        spec = importlib.util.find_spec("clip")
        if spec is None or spec.origin is None:
            import pytest

            pytest.skip("clip-anytorch is not installed")
        parent = types.ModuleType("clip")
        parent.__path__ = [str(Path(spec.origin).parent)]
        parent.__file__, parent.__spec__ = spec.origin, spec
        sys.modules["clip"] = parent


def openai_simple_tokenizer():
    """clip-anytorch's `clip.simple_tokenizer` module (needs ftfy and regex, not torch)."""
    _clip_parent()
    return importlib.import_module("clip.simple_tokenizer")


def openai_clip_model():
    """clip-anytorch's `clip.model` module (needs torch)."""
    _clip_parent()
    return importlib.import_module("clip.model")


def randomize_(model, seed: int) -> None:
    """Every parameter random: matrices ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.1^2), everything else (biases,
    class / position embeddings, logit scales) ~ N(0, 0.1^2) around its own init's scale."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim >= 2:
                p.copy_(noise * (p.numel() / p.shape[0]) ** -0.5)
            elif name.endswith("weight") and ("norm" in name or "ln_" in name or "layer_norm" in name):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("logit_scale") and p.ndim == 0:
                p.copy_(2.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)


def state_dict_numpy(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def random_ids(rng: np.random.Generator, n: int, length: int, vocab: int, eot: int | None = None,
               lengths=None) -> np.ndarray:
    """(n, length) ids below `eot` (default vocab - 1), each row [tokens..., eot, 0...] of a random length."""
    eot = vocab - 1 if eot is None else eot
    ids = np.zeros((n, length), np.int64)
    lengths = rng.integers(1, length, n) if lengths is None else lengths
    for i, m in enumerate(lengths):
        ids[i, :m] = rng.integers(1, eot, m)
        ids[i, m] = eot
    return ids
