"""Experiments: Python files whose `get_config()` returns an ml_collections ConfigDict, and `--config.a.b=value`
overrides parsed by `ml_collections.config_flags` (the same parser the command line uses).

    config = load_experiment("sa1b_vith")            # experiments/sa1b_vith.py, or a path to any .py file
    config = apply_overrides(config, ["--config.optim.lr=1e-4", "--config.model.encoder_global_attn_indexes=(1,3)"])

An override must match the field's type (ints are accepted for float fields; tuples as `(1,3)` or `1,3`); an
unknown field or a value of the wrong type is a ValueError naming the field. `base_config()` holds every field with
the paper's defaults; experiments change what they need.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import ml_collections
from absl import flags
from ml_collections import config_flags

from samjax import parallel
from samjax.models import SamConfig
from samjax.weights import store

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"


def base_config() -> ml_collections.ConfigDict:
    """Every training field (SAM paper recipe for ViT-H where the paper gives a value)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = SamConfig.vit_h(encoder_drop_path_rate=0.4, dtype="bfloat16").to_dict()
    # kind: scratch | sam (samjax dir or .pth) | mae. decoder_qk_gain > 0 (scratch only): tied q/k init of the mask
    # decoder's attentions (samjax.train.tie_decoder_qk); 0 is the plain init.
    c.init = ml_collections.ConfigDict({"kind": "scratch", "path": "", "decoder_qk_gain": 0.0})
    c.data = ml_collections.ConfigDict({
        "train_files": "", "eval_files": "", "batch_size": 256,  # global batch (images)
        "max_masks_per_image": 64, "max_mask_area_fraction": 0.9, "shuffle_window": 256, "worker_count": 8,
        "cycle_length": 8, "skip_corrupt": True,
        # Synthetic SA-1B data made in WORKDIR/data when train_files is empty (tiny_synthetic).
        "synthetic": {"num_train": 0, "num_eval": 0, "height": 128, "width": 128, "objects": 0, "shards": 4,
                      "min_object_frac": 0.04,  # objects' smallest height / shorter side
                      "min_mask_area": 0},  # pixels; smaller visible masks are not annotated (0: generator default)
    })
    c.optim = ml_collections.ConfigDict({
        "kind": "adamw",  # "muon": Muon for dense kernels, Adam for the rest (samjax.training.optim.direction)
        "muon_beta": 0.95, "muon_rms": 0.2,
        "lr": 8e-4, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.1, "layer_decay": 0.8,
        "warmup_steps": 250, "decay_steps": (60000, 86666), "decay_factor": 0.1, "freeze_image_encoder": False,
    })
    c.prompts = ml_collections.ConfigDict({"num_click_rounds": 8, "no_click_rounds": 2, "box_prob": 0.5,
                                           "box_noise_frac": 0.1, "box_noise_max": 20.0, "point_depth": 0.0,
                                           "point_depth_max": 16, "remat_rounds": False,
                                           "remat_policy": "nothing_saveable", "unroll_rounds": False})
    c.loss = ml_collections.ConfigDict({"focal_weight": 20.0, "dice_weight": 1.0, "iou_weight": 1.0,
                                        "focal_alpha": 0.25, "focal_gamma": 2.0,
                                        "iou_loss": "mse",  # "l1": SAM 2's absolute error
                                        "choose_by": "total"})  # lowest-loss output by "total" or "mask" loss
    # Low-resolution stages (progressive resizing; none while image_size is empty): train first at these smaller
    # image sizes, smallest first, same patch size (half the side: a quarter of the tokens, a step ~1/4 the cost),
    # each at its lr (0 or empty: optim.lr) held after the warmup, until its max_seconds or num_steps (0 or empty:
    # train.num_steps); between stages the position tables grow (samjax.weights.resolution) and the optimizer state
    # starts fresh; the last stage is model.image_size with the main schedule. max_seconds, num_steps and lr are empty
    # or one value per stage. Each stage runs inside the next one's workdir (samjax.train.low_res_stage): with (64, 96)
    # the 96 px stage in WORKDIR/low_res and the 64 px one in WORKDIR/low_res/low_res.
    c.low_res = ml_collections.ConfigDict({"image_size": (), "max_seconds": (), "num_steps": (), "lr": ()})
    # Mesh sizes (-1: the remaining devices; num_devices 0: all devices) and the logical-axis rule table, MaxText-style:
    # pairs (logical name, mesh axis or axes or None) replacing samjax.parallel.DEFAULT_RULES when not empty.
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1, "num_devices": 0, "rules": ()})
    c.train = ml_collections.ConfigDict({
        "num_steps": 90000, "grad_accum": 1, "log_every": 50, "ckpt_every": 1000, "keep_ckpts": 3,
        "async_ckpt": True, "max_nonfinite_in_row": 10, "peak_flops": 0.0,  # 0: from the device table
        "max_seconds": 0.0,  # > 0: stop (and save) after this much training time
    })
    # Fitting the run to its accelerators (samjax.training.fit): with auto, the mesh, the rematerialisation of
    # encoder blocks and prompt rounds, and gradient accumulation are chosen by one rule (least recomputation that
    # leaves `headroom` of each chip's memory free) on TPU / GPU; `fixed` lists the fields the user set (the
    # command line records its --config overrides of them) which the rule keeps. CPU runs use the config as is.
    c.fit = ml_collections.ConfigDict({"auto": True, "headroom": 0.15, "fixed": ()})
    c.eval = ml_collections.ConfigDict({"every": 5000, "num_images": 64, "max_masks_per_image": 16,
                                        "clicks": (1, 3, 5), "batch_masks": 64})
    c.export = ml_collections.ConfigDict({"demo": False})
    # What the step optimises (samjax.training.objectives): "sam" (the paper's recipe), "hq_sam" (HQ-SAM's: config.model
    # an HQSamConfig dict), "distill" (MobileSAM's encoder distillation: config.model a MobileSamConfig dict, the
    # teacher a SamConfig dict in objective.teacher). Each objective reads its own options from this dict.
    c.objective = ml_collections.ConfigDict({"kind": "sam"})
    return c


def load_experiment(name: str) -> ml_collections.ConfigDict:
    """`name` is a file in experiments/ (with or without .py) or a path to a .py file defining get_config()."""
    path = experiment_path(name)
    spec = importlib.util.spec_from_file_location(f"samjax_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path} does not define get_config()")
    return module.get_config()


def experiment_path(name: str) -> Path:
    """experiments/NAME.py, or NAME itself when it is a path to a .py file; FileNotFoundError listing the known ones."""
    path = Path(name)
    if not (path.suffix == ".py" and path.exists()):
        path = EXPERIMENTS_DIR / (name if name.endswith(".py") else f"{name}.py")
    if not path.exists():
        known = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.py") if not p.stem.startswith("_"))
        raise FileNotFoundError(f"no experiment {name!r}: expected a path to a .py file or one of {known}")
    return path


def apply_overrides(config: ml_collections.ConfigDict, args: list[str]) -> ml_collections.ConfigDict:
    """`--config.a.b=value` strings applied by ml_collections.config_flags; returns the overridden config (a copy)."""
    for arg in args:
        if not arg.startswith("--config.") or "=" not in arg:
            raise ValueError(f"unrecognised argument {arg!r}: expected --config.FIELD=VALUE")
        missing = _missing_field(config, arg[len("--config."):].split("=", 1)[0])
        if missing:
            raise ValueError(f"{arg.split('=', 1)[0]}: {missing}")
    values = flags.FlagValues()
    argv = ["samjax", *args]
    config_flags.DEFINE_config_dict("config", ml_collections.ConfigDict(config.to_dict()), flag_values=values,
                                    sys_argv=argv, lock_config=False)
    try:
        values(argv)
    except flags.Error as e:
        raise ValueError(str(e)) from None
    return values.config


def _missing_field(config: ml_collections.ConfigDict, key: str) -> str | None:
    node = config
    for i, part in enumerate(key.split(".")):
        if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
            where = "config" + "".join(f".{p}" for p in key.split(".")[:i])
            have = sorted(node.keys()) if isinstance(node, (ml_collections.ConfigDict, dict)) else []
            return f"no field {part!r} in {where} (have {have})"
        node = node[part]
    return None


def model_config(config: ml_collections.ConfigDict):
    """config.model -> a SamConfig, or the family's config where the dict names one ({"family": "hq_sam", ...})."""
    return store.config_from_dict(config.model.to_dict())


def sharding_rules(config: ml_collections.ConfigDict) -> parallel.Rules:
    """config.mesh.rules checked against the logical-axis vocabulary, or samjax.parallel.DEFAULT_RULES when empty."""
    rules = config.mesh.get("rules", ())
    return parallel.check_rules(rules) if rules else parallel.DEFAULT_RULES


def workdir_path(workdir: str) -> str:
    return os.path.abspath(os.path.expanduser(workdir))
