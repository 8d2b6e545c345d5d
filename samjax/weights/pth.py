"""Read PyTorch `.pth` state dicts without PyTorch.

`torch.save` (since 1.6) writes a zip archive: `<name>/data.pkl` is a pickle whose tensors refer, through
pickle's persistent ids, to raw little-endian storages `<name>/data/<key>`. This module unpickles with a
closed list of allowed globals (like `torch.load(weights_only=True)`: no arbitrary code runs) and rebuilds
each tensor as a numpy array from its storage, offset, size and stride. On a TPU VM this converts official SAM
checkpoints without installing torch.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


OFFICIAL_CHECKPOINTS = ("an official SAM checkpoint (sam_vit_h_4b8939.pth, sam_vit_l_0b3195.pth or "
                        "sam_vit_b_01ec64.pth from github.com/facebookresearch/segment-anything#model-checkpoints)")


class UnsupportedCheckpoint(ValueError):
    """Not a zip-format torch checkpoint this reader understands (use torch.load for it)."""


class _StorageType:
    def __init__(self, name: str):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not size:
        return storage[storage_offset].copy()
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[storage_offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride), writeable=False)
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, requires_grad, backward_hooks, *args):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self._archive, self._prefix, self._storages = archive, prefix, {}

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsupportedCheckpoint(f"the checkpoint pickles {module}.{name}, which a plain state dict does not; "
                                    "load it with torch.load")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise UnsupportedCheckpoint(f"unknown storage reference {pid!r}")
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}/data/{key}")
            self._storages[key] = np.frombuffer(raw, dtype=storage_type.dtype.newbyteorder("<"), count=numel)
        return self._storages[key]


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The dict saved in a zip-format `.pth`, tensors as numpy arrays (bfloat16 via ml_dtypes)."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise UnsupportedCheckpoint(f"{path} is not a zip-format torch checkpoint (legacy format, or not a checkpoint)")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise UnsupportedCheckpoint(f"{path} holds {len(pickles)} data.pkl files; expected one")
        prefix = pickles[0][: -len("/data.pkl")]
        has_order = f"{prefix}/byteorder" in archive.namelist()
        order = archive.read(f"{prefix}/byteorder").decode() if has_order else "little"
        if order != "little":
            raise UnsupportedCheckpoint(f"{path} was saved big-endian")
        with archive.open(pickles[0]) as f:
            obj = _Unpickler(f, archive, prefix).load()
    if not isinstance(obj, dict):
        raise UnsupportedCheckpoint(f"{path} holds a {type(obj).__name__}, not a state dict")
    return obj


def _unreadable(path: Path, e: Exception) -> str:
    """One line: torch's unpickling errors run to a dozen lines; the first says enough."""
    first = (str(e).strip().splitlines() or [""])[0][:160]
    return f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {first}); use {OFFICIAL_CHECKPOINTS}"


def load_torch_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an official `.pth` state dict as numpy arrays. Zip-format checkpoints (all official SAM ones) are
    read without torch (`load_state_dict`); anything else falls back to torch.load when torch is installed.
    Unwraps {'model': ...} / {'state_dict': ...} and DDP's 'module.' prefix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist: give the path of {OFFICIAL_CHECKPOINTS}")
    try:
        sd = load_state_dict(path)
    except UnsupportedCheckpoint as unsupported:
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
