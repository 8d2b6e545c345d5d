"""Reading Hugging Face / PyTorch checkpoints as numpy state dicts (key tables: samjax.weights.keys).

A checkpoint is a file (`model.safetensors`, `pytorch_model.bin`, an OpenAI CLIP `.pt`, ...) or a Hugging Face
model directory (config.json beside one of those, or beside a sharded `*.index.json`). `.safetensors` are read with
`safetensors.numpy`; zip-format torch files with samjax.pth (no torch needed); TorchScript archives (OpenAI's
released CLIP `.pt` files) and legacy pickles need torch.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file as load_safetensors

from samjax.weights import pth
from samjax.weights.keys import CheckpointMismatchError

# Weight files of a HF model directory, in the order they are looked for.
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")






def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip holding compiled code (`*/code/`) beside its data."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in n for n in archive.namelist())


def _torch_file(path: Path) -> dict[str, Any]:
    try:
        return pth.load_state_dict(path)
    except pth.UnsupportedCheckpoint as unsupported:
        try:
            import torch
        except ImportError:
            raise ValueError(f"{path} is not a plain zip-format state dict ({unsupported}); installing torch "
                             "(pip install 'samjax[torch]') may read it") from unsupported
        try:
            if _is_torchscript(path):  # OpenAI's released CLIP models are TorchScript archives
                return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
            return torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, ValueError, pickle.UnpicklingError) as e:
            raise ValueError(f"{path} is neither a state dict nor a TorchScript archive torch can read "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from e


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint file (or a sharded checkpoint's *.index.json) as float32 numpy arrays (integer
    buffers keep their dtype). Unwraps {"state_dict": ...} / {"model": ...} and DDP's "module." prefix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    if path.name.endswith(".index.json"):
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        sd: dict[str, Any] = {}
        for shard in shards:
            sd.update(read_state_dict(path.parent / shard))
        return sd
    if path.suffix == ".safetensors":
        sd = load_safetensors(str(path))
    else:
        sd = _torch_file(path)
    for wrapper in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, Mapping) or not sd:
        raise ValueError(f"{path} holds no state dict (a dict of tensors)")
    if all(str(k).startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}

    def convert(v):
        if hasattr(v, "detach"):
            v = v.detach().cpu()
            return v.numpy() if not v.is_floating_point() else v.float().numpy()
        v = np.asarray(v)
        return v if v.dtype.kind in "iub" else v.astype(np.float32)

    return {str(k): convert(v) for k, v in sd.items()}


def hf_weights_file(directory: str | Path) -> Path:
    """The weights file of a HF model directory (see HF_WEIGHT_FILES)."""
    directory = Path(directory)
    for name in HF_WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{directory} holds none of {', '.join(HF_WEIGHT_FILES)}: not a Hugging Face model "
                            "directory")


def read_hf_config(directory: str | Path) -> dict:
    """A HF model directory's config.json as a dict."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no config.json: not a Hugging Face model directory")
    return json.loads(path.read_text())


# ----- key tables -----









def drop_position_ids(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Without the `*.embeddings.position_ids` buffers older transformers saved (each must be arange(n))."""
    out = {}
    for k, v in state_dict.items():
        if k.endswith("embeddings.position_ids"):
            ids = np.asarray(v).reshape(-1)
            if not np.array_equal(ids, np.arange(ids.size)):
                raise CheckpointMismatchError(f"{k} is not 0, 1, 2, ...: custom position ids are not supported")
            continue
        out[k] = v
    return out
