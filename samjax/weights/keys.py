"""PyTorch state dicts <-> Flax parameter trees: the generic half of every converter.

Module names in samjax follow each reference's state_dict, so a converter is a key table plus kernel layouts:

    flax path                                   torch key                                   transform
    image_encoder/blocks_3/attn/qkv/kernel   <-> image_encoder.blocks.3.attn.qkv.weight       Linear (out, in) <-> (in, out)
    image_encoder/neck_0/kernel              <-> image_encoder.neck.0.weight                  Conv2d (O, I, kh, kw) <-> (kh, kw, I, O)
    mask_decoder/output_upscaling_0/kernel   <-> mask_decoder.output_upscaling.0.weight       ConvTranspose2d (I, O, kh, kw) <-> (kh, kw, I, O)
    */norm*/scale, */embedding               <-> *.weight                                     none
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import numpy as np


class CheckpointMismatchError(ValueError):
    """A state dict that does not fit the config: lists missing, unexpected and mis-shaped keys."""


def torch_key(path: tuple[str, ...]) -> str:
    """('image_encoder', 'blocks_3', 'attn', 'qkv', 'kernel') -> 'image_encoder.blocks.3.attn.qkv.weight'."""
    *modules, leaf = path
    modules = [re.sub(r"_(\d+)$", r".\1", m) for m in modules]
    leaf = {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(leaf, leaf)
    return ".".join([*modules, leaf])


def relayout(path: tuple[str, ...], w: np.ndarray, to_flax: bool, transposed_convs: Iterable[str] = ()) -> np.ndarray:
    """Kernel layouts: Linear (out, in) <-> (in, out); Conv2d (O, I, kh, kw) <-> (kh, kw, I, O);
    ConvTranspose2d (I, O, kh, kw) <-> (kh, kw, I, O) for modules whose name starts with one of `transposed_convs`.
    Everything else is stored alike."""
    if path[-1] != "kernel":
        return w
    if w.ndim == 2:
        return w.T
    if any(m.startswith(tuple(transposed_convs)) for m in path):
        return w.transpose(2, 3, 0, 1)  # its own inverse
    return w.transpose(2, 3, 1, 0) if to_flax else w.transpose(3, 2, 0, 1)


def as_numpy(value: Any) -> np.ndarray:
    """A torch tensor (without importing torch) or array-like -> float32 numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def mismatch(expected: Mapping[str, tuple[int, ...]], state_dict: Mapping[str, Any], ignore: Iterable[str] = (),
             extra_problems: Iterable[str] = ()) -> str | None:
    """The differences between a state dict and the expected keys and shapes, as an indented report (None when it
    fits): missing, unexpected and mis-shaped keys, plus `extra_problems` (e.g. buffers that disagree)."""
    ignore = set(ignore)
    got = {k: tuple(np.shape(v)) for k, v in state_dict.items() if k not in ignore}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    misshaped = sorted(f"{k}: checkpoint {got[k]}, expected {expected[k]}"
                       for k in set(expected) & set(got) if got[k] != tuple(expected[k]))
    extra = list(extra_problems)
    if not (missing or unexpected or misshaped or extra):
        return None

    def block(title, items, limit=12):
        more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
        return f"  {title} ({len(items)}):\n" + "\n".join(f"    {i}" for i in items[:limit]) + more

    return "\n".join(block(t, items) for t, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                                       ("mis-shaped keys", misshaped), ("buffers", extra)) if items)
