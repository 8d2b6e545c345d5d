"""The training run: mesh, input, initial or restored state, the loop with logging, checkpoints, evaluation and
preemption, then the export of the model. `python -m samjax.train` (samjax/train.py) calls `train`.

Re-running the same command with the same workdir resumes from the latest checkpoint, bit-identically.
Everything is written under WORKDIR: config.json, checkpoints/, tensorboard/, model/ (samjax.infer.load format),
eval.json, and for synthetic experiments data/ and demo.png. With config.low_res (progressive resizing) a first
stage at a smaller image size runs in WORKDIR/low_res (the same layout, plus done.json once it has finished;
re-running skips it; a stage before that one in WORKDIR/low_res/low_res, and so on), and the main stage starts
from its parameters, position tables grown (samjax.weights.resolution). The step itself: samjax.training.step.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import jax

from samjax import evaluate, parallel
from samjax.models import SamConfig
from samjax.training import config as config_lib
from samjax.training import fit, objectives, prompts, stages
from samjax.training import metrics as metrics_lib
from samjax.training import state as state_lib
from samjax.training.checkpointing import Checkpoints
from samjax.training.init import grown_low_res_params, initial_params
from samjax.training.input import make_input, prepare_synthetic, to_global
from samjax.training.step import compile_step, compiled_step
from samjax.weights import store


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


# ============================================================================================ preemption
class Preemption:
    """SIGTERM sets a flag; the loop saves a checkpoint and exits cleanly at the next step boundary."""

    def __init__(self):
        self.requested = False
        self._old = signal.signal(signal.SIGTERM, self._handle) if _main_thread() else None

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# ================================================================================================= evals
def run_eval(cfg, model_cfg: SamConfig, params, eval_files: str) -> dict:
    examples = evaluate.load_examples(eval_files, model_cfg, cfg.eval.num_images, cfg.eval.max_masks_per_image,
                                      seed=cfg.seed)
    return evaluate.evaluate(params, model_cfg, examples, clicks=tuple(cfg.eval.clicks),
                             batch_masks=cfg.eval.batch_masks)


# ================================================================================================== loop
def train(cfg, workdir: str, data_iter=None) -> dict:
    """Runs (or resumes) training; returns a summary dict (final metrics, eval results, paths, final state).

    data_iter: optional checkpointable grain iterator of this process's batches (tests); default: the pipeline.
    """
    workdir = config_lib.workdir_path(workdir)
    os.makedirs(workdir, exist_ok=True)
    main_proc = jax.process_index() == 0
    n_dev = cfg.mesh.get("num_devices", 0)
    devices = jax.devices()[:n_dev] if n_dev else jax.devices()
    executable = None
    if cfg.fit.auto and devices[0].platform != "cpu":  # the mesh, remat and accumulation that fit (training.fit)
        choice = fit.choose(cfg, devices, lambda c, shape: compile_step(c, parallel.make_mesh(shape, devices)),
                            log=(lambda line: print(line, flush=True)) if main_proc else None)
        cfg, executable = choice.config, choice.compiled
    if main_proc:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(cfg.to_json(indent=2))
    model_cfg = config_lib.model_config(cfg)
    objective = objectives.get(cfg.objective.kind)
    sam_recipe = cfg.objective.kind == "sam"  # other objectives: no SAM evaluation, FLOP count or demo
    mesh = parallel.make_mesh(cfg.mesh.to_dict(), devices)

    train_files, eval_files = cfg.data.train_files, cfg.data.eval_files
    if data_iter is not None:
        pass
    elif not train_files:
        if not cfg.data.synthetic.num_train:
            raise ValueError("set config.data.train_files (TFRecord glob) or config.data.synthetic.num_train")
        train_files, eval_files = prepare_synthetic(cfg, workdir)
    low_res = None
    if stages.low_res_stages(cfg):
        low_res = stages.low_res_stage(cfg, workdir, train_files, eval_files, train)
        if low_res["stopped"] == "preempted":
            return {"workdir": workdir, "stopped": "preempted", "step": 0, "low_res": low_res}
    if data_iter is None:
        data_iter = make_input(cfg, objective.data_config(model_cfg), train_files)

    tx, step_fn, abstract, shardings = compiled_step(cfg, mesh)
    step_fn = executable or step_fn
    ckpts = Checkpoints(os.path.join(workdir, "checkpoints"), cfg.train.keep_ckpts, cfg.train.async_ckpt)
    with jax.set_mesh(mesh):
        if ckpts.latest_step() is not None:
            try:
                state = ckpts.restore(abstract, data_iter)
            except Exception:
                ckpts.close()
                raise
            print(f"resumed from step {int(state['step'])} in {ckpts.directory}", flush=True)
        elif not sam_recipe:
            params, model_state = objective.initial(cfg, model_cfg)
            state = state_lib.init_state(params, tx, cfg.seed, shardings, model_state)
        else:
            params = grown_low_res_params(low_res, model_cfg) if low_res else initial_params(cfg, model_cfg)
            state = state_lib.init_state(params, tx, cfg.seed, shardings)

    tb = metrics_lib.TensorBoard(os.path.join(workdir, "tensorboard")) if main_proc else None
    peak = cfg.train.peak_flops or metrics_lib.peak_flops_per_device()
    pc = prompts.PromptConfig(**cfg.prompts.to_dict())
    flops = metrics_lib.train_flops_per_step(model_cfg, cfg.data.batch_size, cfg.data.max_masks_per_image,
                                             pc.num_rounds, pc.num_tokens, cfg.optim.freeze_image_encoder) \
        if sam_recipe else 0.0
    total, start = cfg.train.num_steps, int(state["step"])
    preempt = Preemption()
    t_start, t_log, step_log, last, pending = time.time(), time.time(), start, {}, None
    summary = {"workdir": workdir, "stopped": "done", "low_res": low_res}
    history: list[dict] = []

    def check(out, step):  # host side of a finished step: non-finite accounting
        if not bool(out["finite"]):
            print(f"step {step}: non-finite loss or gradient, update skipped", file=sys.stderr, flush=True)
        if int(out["streak"]) >= cfg.train.max_nonfinite_in_row:
            ckpts.wait()
            raise NonFiniteError(f"{int(out['streak'])} consecutive steps with a non-finite loss or gradient "
                                 f"(last at step {step}); lower the learning rate or check the data. The last good "
                                 f"checkpoint is in {ckpts.directory}")

    try:
        step = start
        with jax.set_mesh(mesh):
            while step < total:
                batch = to_global(next(data_iter), mesh)
                state, out = step_fn(state, batch)
                step += 1
                if pending is not None:  # the previous step's host checks overlap this step's compute
                    check(*pending)
                pending = (out, step)
                stop = preempt.requested or (cfg.train.max_seconds and time.time() - t_start > cfg.train.max_seconds)
                if step % cfg.train.log_every == 0 or step == total or stop:
                    check(*pending)
                    pending = None
                    now = time.time()
                    m = {k: float(v) for k, v in out.items()}
                    dt = (now - t_log) / max(step - step_log, 1)
                    m["images_per_s"] = cfg.data.batch_size / dt
                    if peak and flops:
                        m["mfu"] = flops / (dt * jax.device_count() * peak)
                    t_log, step_log, last = now, step, m
                    history.append(dict(m, step=step))
                    if main_proc:
                        eta = dt * (total - step)  # to num_steps, or to the time limit when that comes first
                        if cfg.train.max_seconds:
                            eta = min(eta, max(cfg.train.max_seconds - (now - t_start), 0.0))
                        print(metrics_lib.progress_line(step, total, m, eta), flush=True)
                        tb.scalars(step, {f"train/{k}": v for k, v in m.items() if k not in ("finite", "streak")})
                if step % cfg.train.ckpt_every == 0 or step == total or stop:
                    ckpts.save(step, state, data_iter, force=True)
                if cfg.eval.every and step % cfg.eval.every == 0 and step < total and eval_files \
                        and jax.process_count() == 1 and sam_recipe:
                    res = run_eval(cfg, model_cfg, state["params"], eval_files)
                    if main_proc:
                        print(f"eval step {step}: " + json.dumps(res), flush=True)
                        tb.scalars(step, {f"eval/{k}": v for k, v in res.items()})
                if stop:
                    summary["stopped"] = "preempted" if preempt.requested else "time limit"
                    print(f"stopping at step {step} ({summary['stopped']}); checkpoint saved, re-run to resume",
                          flush=True)
                    break
            if pending is not None:
                check(*pending)
    finally:
        ckpts.wait()
        ckpts.close()
        preempt.restore()
        if tb is not None:
            tb.flush()
    summary.update(step=step, last=last, history=history, state=state, model_config=model_cfg, eval_files=eval_files)
    if summary["stopped"] != "preempted":
        finish(cfg, model_cfg, state, workdir, eval_files, summary, tb)
    if tb is not None:
        tb.close()
    return summary


def finish(cfg, model_cfg, state, workdir, eval_files, summary, tb) -> None:
    """Final eval, export of the model in the samjax.infer.load format, demo image for synthetic runs."""
    params = state["params"]
    export_cfg, tree = objectives.get(cfg.objective.kind).export(model_cfg, jax.device_get(params),
                                                                  jax.device_get(state.get("model_state")))
    summary["model_dir"] = str(store.save_model(os.path.join(workdir, "model"), tree, export_cfg))
    if cfg.objective.kind != "sam":
        return
    if eval_files and cfg.eval.num_images and jax.process_count() == 1:
        res = run_eval(cfg, model_cfg, params, eval_files)
        summary["eval"] = res
        if jax.process_index() == 0:
            with open(os.path.join(workdir, "eval.json"), "w") as f:
                json.dump(res, f, indent=2)
            print("eval: " + json.dumps(res), flush=True)
            if tb is not None:
                tb.scalars(summary["step"], {f"eval/{k}": v for k, v in res.items()})
    if cfg.export.demo and eval_files and jax.process_index() == 0:
        summary["demo"] = evaluate.demo_image(summary["model_dir"], eval_files, os.path.join(workdir, "demo.png"))
        print(f"demo: {summary['demo']}", flush=True)
