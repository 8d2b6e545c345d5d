"""Official PyTorch SAM checkpoints <-> samjax parameters.

    python -m samjax.convert --checkpoint sam_vit_h_4b8939.pth --model vit_h --out ckpt/sam_vit_h

Module names follow the official state_dict, so the mapping is a key table plus transposes:

    flax path                                      torch key                                      transform
    image_encoder/blocks_3/attn/qkv/kernel      <- image_encoder.blocks.3.attn.qkv.weight         (out, in) -> (in, out)
    image_encoder/neck_0/kernel                 <- image_encoder.neck.0.weight                    (O, I, kh, kw) -> (kh, kw, I, O)
    mask_decoder/output_upscaling_0/kernel      <- mask_decoder.output_upscaling.0.weight         (I, O, kh, kw) -> (kh, kw, I, O)
    */norm*/scale, */embedding                  <- *.weight                                       none
    everything else (bias, pos_embed, rel_pos_*, positional_encoding_gaussian_matrix): same name, no transform.

`pixel_mean` / `pixel_std` are non-persistent buffers officially; if a checkpoint carries them anyway they are
checked against the config, not stored as parameters.
"""

from __future__ import annotations

import argparse
import functools
import pickle
import re
import sys
from pathlib import Path
from typing import Any, Mapping

import flax
import jax
import numpy as np

from samjax.models import SamConfig, abstract_params

_TRANSPOSED_CONVS = ("output_upscaling",)  # ConvTranspose2d weights are (in, out, kh, kw)
_BUFFERS = ("pixel_mean", "pixel_std")
PRESETS = ("vit_b", "vit_l", "vit_h")


class CheckpointMismatchError(ValueError):
    """A state dict that does not fit the config: lists missing, unexpected and mis-shaped keys."""


def torch_key(path: tuple[str, ...]) -> str:
    """('image_encoder', 'blocks_3', 'attn', 'qkv', 'kernel') -> 'image_encoder.blocks.3.attn.qkv.weight'."""
    *modules, leaf = path
    modules = [re.sub(r"_(\d+)$", r".\1", m) for m in modules]
    leaf = {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(leaf, leaf)
    return ".".join([*modules, leaf])


def _relayout(path: tuple[str, ...], w: np.ndarray, to_flax: bool) -> np.ndarray:
    """Kernel layouts: Linear (out, in) <-> (in, out); Conv2d (O, I, kh, kw) <-> (kh, kw, I, O);
    ConvTranspose2d (I, O, kh, kw) <-> (kh, kw, I, O). Everything else is stored alike."""
    if path[-1] != "kernel":
        return w
    if w.ndim == 2:
        return w.T
    if any(m.startswith(_TRANSPOSED_CONVS) for m in path):
        return w.transpose(2, 3, 0, 1)  # its own inverse
    return w.transpose(2, 3, 1, 0) if to_flax else w.transpose(3, 2, 0, 1)


@functools.lru_cache(maxsize=16)
def _torch_shapes(config: SamConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    flat = flax.traverse_util.flatten_dict(abstract_params(config))
    return tuple((torch_key(p), _relayout(p, np.empty(leaf.shape, np.uint8), to_flax=False).shape) for p, leaf in flat.items())


def torch_shapes(config: SamConfig) -> dict[str, tuple[int, ...]]:
    """The official `Sam.state_dict()` keys and shapes for `config`."""
    return dict(_torch_shapes(config))


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor, without importing torch
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def detect_model(state_dict: Mapping[str, Any]) -> str | None:
    """Name of the official preset whose keys and shapes match `state_dict`, or None."""
    for name in PRESETS:
        expected = torch_shapes(SamConfig.from_name(name))
        if all(k in state_dict and tuple(np.shape(state_dict[k])) == s for k, s in expected.items()):
            return name
    return None


OFFICIAL_CHECKPOINTS = ("an official SAM checkpoint (sam_vit_h_4b8939.pth, sam_vit_l_0b3195.pth or sam_vit_b_01ec64.pth "
                        "from github.com/facebookresearch/segment-anything#model-checkpoints)")
_SAM_PREFIXES = ("image_encoder.", "prompt_encoder.", "mask_decoder.")


def check_state_dict(state_dict: Mapping[str, Any], config: SamConfig) -> None:
    """Raise CheckpointMismatchError listing missing, unexpected and mis-shaped keys, if any. A state dict with no
    SAM key at all (some other model's weights) gets one line instead of a list of every key."""
    if not any(str(k).startswith(_SAM_PREFIXES) for k in state_dict):
        some = ", ".join(repr(k) for k in list(state_dict)[:3])
        raise CheckpointMismatchError(f"not a SAM checkpoint: none of its {len(state_dict)} keys ({some}, ...) "
                                      f"belongs to image_encoder / prompt_encoder / mask_decoder; use {OFFICIAL_CHECKPOINTS}")
    expected = torch_shapes(config)
    got = {k: tuple(np.shape(v)) for k, v in state_dict.items() if k not in _BUFFERS}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    misshaped = sorted(f"{k}: checkpoint {got[k]}, expected {expected[k]}"
                       for k in set(expected) & set(got) if got[k] != expected[k])
    problems = []
    for k in _BUFFERS:
        if k in state_dict:
            want = getattr(config, k)
            if not np.allclose(_as_numpy(state_dict[k]).reshape(-1), want, atol=1e-3):
                problems.append(f"{k} {_as_numpy(state_dict[k]).reshape(-1).tolist()} differs from the config's {list(want)}")
    if not (missing or unexpected or misshaped or problems):
        return

    def block(title, items, limit=12):
        more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
        return f"  {title} ({len(items)}):\n" + "\n".join(f"    {i}" for i in items[:limit]) + more

    parts = [block(t, items) for t, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                               ("mis-shaped keys", misshaped), ("buffers", problems)) if items]
    hint = ""
    if missing or unexpected or misshaped:
        guess = detect_model(state_dict)
        hint = (f"\n  This checkpoint looks like {guess}: use --model {guess} (SamConfig.{guess}())." if guess else
                "\n  It matches none of vit_b / vit_l / vit_h; is it an official SAM checkpoint (not SAM 2, HQ-SAM"
                " or MobileSAM)?")
    raise CheckpointMismatchError("the state dict does not match the model config:\n" + "\n".join(parts) + hint)


def from_torch(state_dict: Mapping[str, Any], config: SamConfig) -> dict:
    """Official state dict (torch tensors or numpy arrays, official key names) -> samjax params (float32)."""
    check_state_dict(state_dict, config)
    flat = flax.traverse_util.flatten_dict(abstract_params(config))
    params = {path: _relayout(path, _as_numpy(state_dict[torch_key(path)]), to_flax=True) for path in flat}
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


def _unreadable(path: Path, e: Exception) -> str:
    """One line: torch's unpickling errors run to a dozen lines; the first says enough."""
    first = (str(e).strip().splitlines() or [""])[0][:160]
    return f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {first}); use {OFFICIAL_CHECKPOINTS}"


def load_torch_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an official `.pth` state dict as numpy arrays. Zip-format checkpoints (all official SAM ones) are
    read without torch (samjax.pth); anything else falls back to torch.load when torch is installed.
    Unwraps {'model': ...} / {'state_dict': ...} and DDP's 'module.' prefix."""
    from samjax import pth

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist: give the path of {OFFICIAL_CHECKPOINTS}")
    try:
        sd = pth.load_state_dict(path)
    except pth.UnsupportedCheckpoint as unsupported:
        try:
            import torch
        except ImportError:
            raise ValueError(f"{path} is not a readable PyTorch checkpoint ({unsupported}); "
                             "installing torch (pip install 'samjax[torch]') may read it") from unsupported
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(_unreadable(path, e)) from e
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError) as e:
        raise ValueError(_unreadable(path, e)) from e
    for wrapper in ("model", "state_dict"):
        if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not sd:
        raise ValueError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samjax.convert", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="official SAM .pth (e.g. sam_vit_h_4b8939.pth)")
    parser.add_argument("--model", default="auto", choices=("auto", *PRESETS),
                        help="model size; 'auto' detects it from the checkpoint")
    parser.add_argument("--out", required=True, help="output directory (orbax params + config.json)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="compute dtype recorded in the config (params stay float32)")
    args = parser.parse_args(argv)
    from samjax import checkpoint, runtime

    runtime.check_devices()
    try:
        sd = load_torch_checkpoint(args.checkpoint)
        model = detect_model(sd) if args.model == "auto" else args.model
        if model is None:
            check_state_dict(sd, SamConfig.vit_b())  # raises with the full list of differences
        config = SamConfig.from_name(model, dtype=args.dtype)
        params = from_torch(sd, config)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = checkpoint.save_model(args.out, params, config)
    n = sum(np.size(x) for x in jax.tree.leaves(params))
    print(f"converted {args.checkpoint} ({model}, {n / 1e6:.1f}M parameters) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
