"""PyTorch state dicts <-> Flax variables: the key table every converter shares (weights/sam.py, hq_sam.py,
mobile_sam.py, efficientvit_sam.py, clip.py, owlvit.py).

Flax module names follow the torch state_dict, so a variable's torch key is its path with `_<n>` suffixes turned
into `.<n>` segments and the leaf renamed:

    flax collection / path                                  torch key, then its layout where it changes
    params/image_encoder/layers_1/blocks_0/attn/qkv/kernel  image_encoder.layers.1.blocks.0.attn.qkv.weight
                                                              (out, in) <-> (in, out)
    params/.../aggreg_0_1/kernel                            ....aggreg.0.1.weight
                                                              Conv2d (O, I/g, kh, kw) <-> (kh, kw, I/g, O)
    params/mask_decoder/compress_vit_feat_0/kernel          mask_decoder.compress_vit_feat.0.weight
                                                              ConvTranspose2d (I, O, kh, kw) <-> (kh, kw, I, O)
    params/.../bn/scale, .../norm/scale, */embedding        *.weight
    batch_stats/.../bn/mean, .../bn/var                     *.running_mean, *.running_var
    (every BatchNorm)                                       *.num_batches_tracked (int64 scalar, see below)

`num_batches_tracked` only matters to torch's BatchNorm with momentum=None (a cumulative average); TinyViT and
EfficientViT use momentum 0.1, so it has no effect on any output. It is required in (and checked against) a state
dict like every other key, not stored, and written as 0 by `to_torch`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import flax
import jax
import numpy as np


class CheckpointMismatchError(ValueError):
    """A state dict that does not fit the config: lists missing, unexpected and mis-shaped keys."""

_LEAVES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "mean": "running_mean",
           "var": "running_var"}
_INDEX = re.compile(r"_(\d+)(?=(?:_\d+)*$)")
PIXEL_BUFFERS = ("pixel_mean", "pixel_std")
COUNTER = "num_batches_tracked"


def torch_key(path: tuple[str, ...], renames: Mapping[str, str] | None = None) -> str:
    """('image_encoder', 'layers_1', 'blocks_0', 'attn', 'qkv', 'kernel')
    -> 'image_encoder.layers.1.blocks.0.attn.qkv.weight'; `renames` maps whole module names first
    (e.g. {'pre_layernorm': 'pre_layrnorm'})."""
    *modules, leaf = path
    modules = [_INDEX.sub(r".\1", (renames or {}).get(m, m)) for m in modules]
    return ".".join([*modules, _LEAVES.get(leaf, leaf)])


def relayout(path: tuple[str, ...], w: np.ndarray, to_flax: bool, transposed: tuple[str, ...] = ()) -> np.ndarray:
    """Kernel layouts: Linear (out, in) <-> (in, out); Conv2d (O, I/g, kh, kw) <-> (kh, kw, I/g, O);
    ConvTranspose2d (modules whose name starts with one of `transposed`) (I, O, kh, kw) <-> (kh, kw, I, O)."""
    if path[-1] != "kernel":
        return w
    if w.ndim == 2:
        return w.T
    if transposed and any(m.startswith(transposed) for m in path[:-1]):
        return w.transpose(2, 3, 0, 1)  # its own inverse
    return w.transpose(2, 3, 1, 0) if to_flax else w.transpose(3, 2, 0, 1)


def torch_shape(path: tuple[str, ...], shape: tuple[int, ...], transposed: tuple[str, ...] = ()) -> tuple[int, ...]:
    """The torch-side shape of a variable of flax shape `shape` (see `relayout`)."""
    return relayout(path, np.empty(shape, np.uint8), False, transposed).shape


def contiguous(x: np.ndarray) -> np.ndarray:
    """C-contiguous, keeping 0-d arrays 0-d (np.ascontiguousarray makes them 1-d: CLIP's logit_scale is a scalar)."""
    return np.asarray(x, order="C")


def _flat(variables: Mapping) -> dict[tuple[str, tuple[str, ...]], Any]:
    return {(col, path): leaf for col, tree in variables.items()
            for path, leaf in flax.traverse_util.flatten_dict(tree).items()}


def bn_prefixes(variables: Mapping) -> list[str]:
    """Torch prefixes (with trailing dot) of every BatchNorm: the modules that hold batch_stats/mean."""
    return sorted(torch_key(path)[: -len("running_mean")] for (col, path) in _flat(variables)
                  if col == "batch_stats" and path[-1] == "mean")


def torch_shapes(abstract: Mapping, transposed: tuple[str, ...] = ()) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the official state_dict of a model whose (abstract) variables are `abstract`."""
    shapes = {torch_key(path): torch_shape(path, leaf.shape, transposed) for (_, path), leaf in _flat(abstract).items()}
    shapes.update({p + COUNTER: () for p in bn_prefixes(abstract)})
    return shapes


def as_numpy(value: Any, dtype=None) -> np.ndarray:
    """A torch tensor (without importing torch; floats of any width as float32) or array-like -> numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        value = value.float().numpy() if value.is_floating_point() else value.numpy()
    return np.asarray(value, dtype=dtype)


def mismatch(state_dict: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]],
             pixel: tuple[Iterable[float], Iterable[float]] | None = None) -> list[str]:
    """Blocks of text naming missing, unexpected and mis-shaped keys (empty: the state dict fits). pixel_mean /
    pixel_std (non-persistent buffers officially) may be present if they equal `pixel` = (mean, std)."""
    buffers = []
    for k, want in zip(PIXEL_BUFFERS, pixel or ((), ())):
        if k in state_dict:
            have = as_numpy(state_dict[k]).astype(np.float64).reshape(-1)
            if pixel is None or have.shape != (len(tuple(want)),) or not np.allclose(have, want, atol=1e-3):
                buffers.append(f"{k} {have.tolist()} differs from the config's {list(want) if pixel else None}")
    got = {k: tuple(np.shape(v)) for k, v in state_dict.items() if k not in PIXEL_BUFFERS}
    return shape_mismatch(got, expected, buffers)


def shape_mismatch(got: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]],
                   extra: list[str] = ()) -> list[str]:
    """`mismatch` on key -> shape tables; `extra` problems are listed as "buffers"."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    misshaped = sorted(f"{k}: checkpoint {tuple(got[k])}, expected {tuple(expected[k])}"
                       for k in set(expected) & set(got) if tuple(got[k]) != tuple(expected[k]))

    def block(title, items, limit=12):
        more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
        return f"  {title} ({len(items)}):\n" + "\n".join(f"    {i}" for i in items[:limit]) + more

    return [block(t, items) for t, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                               ("mis-shaped keys", misshaped), ("buffers", list(extra))) if items]


def raise_mismatch(problems: list[str], what: str, hint: str = "") -> None:
    if problems:
        raise CheckpointMismatchError(f"the state dict does not match the {what} config:\n" + "\n".join(problems)
                                      + (f"\n  {hint}" if hint else ""))


def check_keys(got: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]], what: str,
               hint: str = "") -> None:
    """Raise CheckpointMismatchError listing missing, unexpected and mis-shaped keys of `got` (key -> shape)."""
    raise_mismatch(shape_mismatch(got, expected), what, hint)


def from_torch(state_dict: Mapping[str, Any], abstract: Mapping, transposed: tuple[str, ...] = ()) -> dict:
    """Official state dict (already checked) -> variables {collection: nested dict of float32 numpy arrays}."""
    out: dict[str, dict] = {}
    for (col, path) in _flat(abstract):
        w = as_numpy(state_dict[torch_key(path)]).astype(np.float32)
        out.setdefault(col, {})[path] = np.ascontiguousarray(relayout(path, w, True, transposed))
    return {col: flax.traverse_util.unflatten_dict(flat) for col, flat in out.items()}


def to_torch(variables: Mapping, transposed: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Variables -> an official-format state dict of numpy arrays (what the official module's state_dict() holds,
    every `num_batches_tracked` 0)."""
    flat = _flat(jax.device_get(variables))
    sd = {torch_key(path): np.ascontiguousarray(relayout(path, np.asarray(w, np.float32), False, transposed))
          for (_, path), w in flat.items()}
    sd.update({p + COUNTER: np.zeros((), np.int64) for p in bn_prefixes(variables)})
    return sd


def random_variables(abstract: Mapping, seed: int = 0) -> dict:
    """Random values in the shapes of `abstract` (numpy, float32), all of them non-trivial: kernels ~ N(0, 1/fan_in),
    norm scales ~ 1 + N(0, 0.1^2), BatchNorm running variances ~ U(0.5, 1.5), everything else ~ N(0, 0.1^2)
    (N(0, 1) for SAM's Fourier matrix). Random weights give meaningless masks; for tests and benchmarks."""
    rng = np.random.default_rng(seed)

    def draw(col, path, shape):
        name = path[-1]
        if name == "kernel":
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 2 else shape[0]
            return rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))
        if name == "scale":
            return 1.0 + 0.1 * rng.standard_normal(shape)
        if col == "batch_stats" and name == "var":
            return rng.uniform(0.5, 1.5, shape)
        if name == "positional_encoding_gaussian_matrix":
            return rng.standard_normal(shape)
        return 0.1 * rng.standard_normal(shape)

    out: dict[str, dict] = {}
    for (col, path), leaf in _flat(abstract).items():
        out.setdefault(col, {})[path] = draw(col, path, leaf.shape).astype(np.float32)
    return {col: flax.traverse_util.unflatten_dict(flat) for col, flat in out.items()}
