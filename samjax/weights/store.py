"""Model checkpoints on disk: an orbax checkpoint of the params and the SamConfig beside it.

    DIR/config.json    SamConfig fields
    DIR/params/        orbax StandardCheckpointer tree of float32 arrays (same tree as `init_params`)

Written by `python -m samjax.convert` (and by training); read by `samjax.infer.load(DIR)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from samjax.models import SamConfig, abstract_params

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"


def save_model(directory: str | Path, params: dict, config: SamConfig) -> Path:
    """Write params + config to `directory` (created; an existing params/ is replaced). Returns the path."""
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(directory / PARAMS_DIR, params, force=True)
    ckptr.wait_until_finished()
    (directory / CONFIG_FILE).write_text(config.to_json())
    return directory


def load_config(directory: str | Path) -> SamConfig:
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"checkpoint directory {str(directory)!r} does not exist; convert an official "
                                "checkpoint with: python -m samjax.convert --checkpoint sam_vit_h_4b8939.pth --out DIR")
    if directory.is_file():
        raise ValueError(f"{str(directory)!r} is a file; expected a samjax checkpoint directory "
                         "(for an official .pth, run python -m samjax.convert first, or pass it to samjax.infer.load)")
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file() or not (directory / PARAMS_DIR).is_dir():
        raise ValueError(f"{str(directory)!r} is not a samjax checkpoint: expected {CONFIG_FILE} and {PARAMS_DIR}/ in it")
    try:
        return SamConfig.from_dict(json.loads(cfg_path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ValueError(f"{cfg_path} is not a valid SamConfig: {e}") from e


def load_model(directory: str | Path, **config_overrides) -> tuple[SamConfig, dict]:
    """Read (config, params) from `directory`. `config_overrides` change e.g. the compute dtype."""
    config = load_config(directory)
    if config_overrides:
        config = config.replace(**config_overrides)
    target = abstract_params(config)
    try:
        params = ocp.StandardCheckpointer().restore(Path(directory).absolute() / PARAMS_DIR, target)
    except Exception as e:  # orbax raises a variety of types for tree/shape mismatches
        raise ValueError(f"params in {directory} do not match its {CONFIG_FILE}: {e}") from e
    bad = [f"{jax.tree_util.keystr(p)}: {a.shape} vs {b.shape}" for (p, a), b in
           zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(target)) if a.shape != b.shape]
    if bad:
        raise ValueError(f"params in {directory} do not match its {CONFIG_FILE}: " + "; ".join(bad[:5]))
    return config, params
