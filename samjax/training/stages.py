"""Progressive resizing (config.low_res): stages at smaller image sizes before model.image_size, each a training run
of its own inside the next one's workdir, the parameters carried over with their position tables grown."""

from __future__ import annotations

import json
import os
from typing import Callable

import jax
import ml_collections

LOW_RES_FIELDS = ("max_seconds", "num_steps", "lr")


def low_res_stages(cfg) -> list[dict]:
    """config.low_res as a checked list of stages, smallest first: [{"image_size", "max_seconds", "num_steps",
    "lr"}, ...] ([] without any). A clear error for sizes that are not increasing multiples of patch_size below
    model.image_size, or a per-stage field whose length is not the number of stages."""
    lo = cfg.get("low_res")
    sizes = tuple(int(x) for x in (lo.image_size if lo else ()))
    if sizes == (0,):  # --config.low_res.image_size=0 (ml_collections makes it (0,)): none, as before tuples
        sizes = ()
    if not sizes:  # (also: configs of other families, whose fields differ, never read)
        return []
    patch, full = int(cfg.model.patch_size), int(cfg.model.image_size)
    if any(x % patch for x in sizes) or any(not 0 < a < b for a, b in zip(sizes, (*sizes[1:], full))):
        raise ValueError(f"config.low_res.image_size must be increasing multiples of patch_size {patch} below "
                         f"model.image_size {full}, e.g. (64,) or (64, 96) (or () / 0: no low-resolution stage); "
                         f"got {sizes}")
    stages = [{"image_size": x} for x in sizes]
    for field in LOW_RES_FIELDS:
        values = tuple(lo[field]) if sizes else ()
        if values and len(values) != len(sizes):
            raise ValueError(f"config.low_res.{field} must be empty or one value per stage of low_res.image_size "
                             f"{sizes}; got {values}")
        for stage, v in zip(stages, values or (0,) * len(sizes)):
            stage[field] = v
    return stages


def low_res_stage(cfg, workdir: str, train_files: str, eval_files: str, train: Callable) -> dict:
    """config.low_res: the stages at smaller image sizes before model.image_size. The last of them (the largest size)
    runs in WORKDIR/low_res as a training run of its own, with its checkpoints (it resumes); the ones before it run
    the same way inside it (WORKDIR/low_res/low_res, ...), so each starts from the one before, grown. A stage that
    has ended other than by SIGTERM writes done.json and is skipped from then on.

    train: the training run itself (`samjax.training.loop.train`), called with the stage's config and workdir.
    Same model, data, prompts and loss; model.image_size = the stage's size; lr = its lr (0: optim.lr), the same
    warmup, no decay; its max_seconds / num_steps (0: train.num_steps) end it; no eval, no demo.
    Returns {"model_dir", "stopped", "step", "image_size"}: stopped "preempted" when a SIGTERM ended a stage."""
    stages = low_res_stages(cfg)
    last = stages[-1]
    stage_dir = os.path.join(workdir, "low_res")
    model_dir = os.path.join(stage_dir, "model")
    if os.path.isfile(os.path.join(stage_dir, "done.json")):
        with open(os.path.join(stage_dir, "done.json")) as f:
            return dict(json.load(f), model_dir=model_dir)
    if not train_files:
        raise ValueError("config.low_res needs training files (config.data.train_files or synthetic data): the "
                         "low-resolution stages read them at their own image sizes")
    s = ml_collections.ConfigDict(cfg.to_dict())
    s.model.image_size = last["image_size"]
    s.low_res.update({k: tuple(cfg.low_res[k])[:-1] for k in ("image_size", *LOW_RES_FIELDS)})  # the stages before
    s.optim.update(lr=last["lr"] or cfg.optim.lr, decay_steps=())
    s.train.update(max_seconds=last["max_seconds"], num_steps=last["num_steps"] or cfg.train.num_steps)
    s.data.update(train_files=train_files, eval_files=eval_files)
    s.eval.update(every=0, num_images=0)
    s.export.demo = False
    print(f"low_res stage: image_size {last['image_size']} in {stage_dir}, then {cfg.model.image_size}", flush=True)
    out = train(s, stage_dir)
    res = {"stopped": out["stopped"], "step": int(out["step"]), "image_size": last["image_size"]}
    if out["stopped"] != "preempted" and jax.process_index() == 0:
        with open(os.path.join(stage_dir, "done.json"), "w") as f:
            json.dump(res, f)
    print(f"low_res stage: {res['stopped']} at step {res['step']}", flush=True)
    return dict(res, model_dir=model_dir)
