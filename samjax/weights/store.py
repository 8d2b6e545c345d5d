"""Model checkpoints on disk: the config beside an orbax checkpoint of each variable collection, for every family.

    DIR/config.json    {"family": "sam" | "hq_sam" | "mobile_sam" | "efficientvit_sam" | "sam2", ...config fields}
    DIR/params/        orbax StandardCheckpointer tree of float32 arrays (the family's params)
    DIR/batch_stats/   BatchNorm running statistics, for the families that have them (MobileSAM, EfficientViT-SAM,
                       HQ-SAM's TinyViT variant)

Written by `python -m samjax.convert` (and by training); read by `samjax.infer.load(DIR)`. A config.json without
"family" (written before families existed) is SAM's. `save_model` / `load_model` take and give the tree each
family's converter gives: SAM's and SAM 2's params dict, the other families' variables {"params"(, "batch_stats")}.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from samjax.models import (
    SamConfig,
    abstract_params,
    efficientvit_sam,
    hq_sam,
    mobile_sam,
    sam2,
)

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
COLLECTIONS = ("params", "batch_stats")

# family name -> (config class, abstract tree in the family's own form, whether that form is a params dict)
FAMILIES = {
    "sam": (SamConfig, abstract_params, True),
    "hq_sam": (hq_sam.HQSamConfig, hq_sam.abstract_variables, False),
    "mobile_sam": (mobile_sam.MobileSamConfig, mobile_sam.abstract_variables, False),
    "efficientvit_sam": (efficientvit_sam.EfficientViTSamConfig, efficientvit_sam.abstract_variables, False),
    "sam2": (sam2.Sam2Config, sam2.abstract_params, True),
}


def family_name(config) -> str:
    """The family of a config object ("sam", "hq_sam", ...); ValueError for anything else."""
    for name, (cls, *_) in FAMILIES.items():
        if type(config) is cls:
            return name
    raise ValueError(f"not a model config of a known family: {type(config).__name__} (families: {list(FAMILIES)})")


def config_to_dict(config) -> dict:
    """The config's fields with its family named first (what config.json holds)."""
    d = config.to_dict()
    d.pop("family", None)
    return {"family": family_name(config), **d}


def config_from_dict(d: dict):
    """config.json's dict -> the family's config object (no "family": SAM)."""
    d = dict(d)
    family = d.pop("family", "sam")
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {list(FAMILIES)}")
    cls = FAMILIES[family][0]
    return cls.from_dict(d if family in ("sam", "sam2") else {"family": family, **d})


def override(config, **changes):
    """A config with compute options changed (dtype, decoder_matmul_dtype): on the config itself (SAM, SAM 2), or
    on the SamConfig of its prompt encoder and decoder (the other families: `config.sam`)."""
    if not changes:
        return config
    if hasattr(config, "sam") and isinstance(config.sam, SamConfig):
        return config.replace(sam=config.sam.replace(**changes))
    return config.replace(**changes)


def _collections(config, tree: dict) -> dict:
    """The tree the family's converter gives -> {collection: tree}."""
    return {"params": tree} if FAMILIES[family_name(config)][2] else dict(tree)


def abstract_tree(config) -> dict:
    """Shapes of the tree `load_model` gives for `config` (ShapeDtypeStructs)."""
    return FAMILIES[family_name(config)][1](config)


def save_model(directory: str | Path, params: dict, config) -> Path:
    """Write params (SAM, SAM 2) or variables (other families) + config to `directory` (created; existing
    collections are replaced). Returns the path."""
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    collections = _collections(config, params)
    unknown = sorted(set(collections) - set(COLLECTIONS))
    if unknown or "params" not in collections:
        raise ValueError(f"expected variables with collections {COLLECTIONS} (params required), "
                         f"got {sorted(collections)}")
    ckptr = ocp.StandardCheckpointer()
    for name, tree in collections.items():
        ckptr.save(directory / name, tree, force=True)
    ckptr.wait_until_finished()
    (directory / CONFIG_FILE).write_text(json.dumps(config_to_dict(config), indent=2))
    return directory


def load_config(directory: str | Path):
    """The config object in DIR/config.json (SamConfig, HQSamConfig, MobileSamConfig, EfficientViTSamConfig,
    Sam2Config)."""
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"checkpoint directory {str(directory)!r} does not exist; convert an official "
                                "checkpoint with: python -m samjax.convert --checkpoint sam_vit_h_4b8939.pth --out DIR")
    if directory.is_file():
        raise ValueError(f"{str(directory)!r} is a file; expected a samjax checkpoint directory "
                         "(for an official .pth, run python -m samjax.convert first, or pass it to samjax.infer.load)")
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file() or not (directory / PARAMS_DIR).is_dir():
        raise ValueError(f"{str(directory)!r} is not a samjax checkpoint: "
                         f"expected {CONFIG_FILE} and {PARAMS_DIR}/ in it")
    try:
        return config_from_dict(json.loads(cfg_path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ValueError(f"{cfg_path} is not a valid model config: {e}") from e


def load_model(directory: str | Path, **config_overrides) -> tuple:
    """Read (config, params or variables) from `directory`, the tree in the family's form (see the module
    docstring). `config_overrides` change compute options, e.g. the dtype (`override`)."""
    config = override(load_config(directory), **config_overrides)
    target = _collections(config, abstract_tree(config))
    ckptr = ocp.StandardCheckpointer()
    out = {}
    for name, tree in target.items():
        path = Path(directory).absolute() / name
        if not path.is_dir():
            raise ValueError(f"{directory} has no {name}/: its {CONFIG_FILE} names a {family_name(config)} model, "
                             f"whose variables include {name}")
        try:
            out[name] = ckptr.restore(path, tree)
        except Exception as e:  # orbax raises a variety of types for tree/shape mismatches
            raise ValueError(f"{name} in {directory} do not match its {CONFIG_FILE}: {e}") from e
        bad = [f"{jax.tree_util.keystr(p)}: {a.shape} vs {b.shape}" for (p, a), b in
               zip(jax.tree_util.tree_leaves_with_path(out[name]), jax.tree.leaves(tree)) if a.shape != b.shape]
        if bad:
            raise ValueError(f"{name} in {directory} do not match its {CONFIG_FILE}: " + "; ".join(bad[:5]))
    return config, (out["params"] if FAMILIES[family_name(config)][2] else out)
