"""Train SAM: `python -m samjax.train --experiment=NAME --workdir=DIR [--config.FIELD=VALUE ...]`.

NAME is a file in experiments/ (sa1b_vith, sa1b_vitl, sa1b_vitb, finetune, tiny_synthetic) or a path to one.
Re-running the same command with the same workdir resumes from the latest checkpoint, bit-identically.
Everything is written under WORKDIR: config.json, checkpoints/, tensorboard/, model/ (samjax.infer.load format),
eval.json, and for synthetic experiments data/ and demo.png. With config.low_res (progressive resizing) a first
stage at a smaller image size runs in WORKDIR/low_res (the same layout, plus done.json once it has finished;
re-running skips it; a stage before that one in WORKDIR/low_res/low_res, and so on), and the main stage starts
from its parameters, position tables grown (samjax.resolution).

One step: images (B, S, S, 3) uint8 -> normalise -> image encoder once per image -> for the B x M masks, the
11-round prompt simulation through the mask decoder (samjax.prompts) -> loss -> AdamW or Muon (samjax.optim). The
step is one jax.jit over the (data, fsdp, tensor) mesh with explicit in/out shardings and the state donated.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from samjax import compilation_cache, experiment, metrics as metrics_lib, optim, prompts, sharding, train_state
from samjax.models import Sam, SamConfig, abstract_params, init_params
from samjax.models import transforms as T


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


# ================================================================================================== mesh
def maybe_initialize_distributed() -> None:
    """jax.distributed.initialize() on a pod / cluster (detected from the environment); no-op on one host."""
    # Must not touch the backend first (jax.process_count() would start it, and initialize() then refuses).
    if jax.distributed.is_initialized() or os.environ.get("SAMJAX_NO_DISTRIBUTED"):
        return
    markers = ("TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "SLURM_NTASKS", "JAX_COORDINATOR_ADDRESS")
    multi = any(os.environ.get(k) for k in markers) and os.environ.get("SLURM_NTASKS", "2") != "1"
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if multi and (not hosts or "," in hosts):
        jax.distributed.initialize()


# ================================================================================================= input
def prepare_synthetic(cfg, workdir: str) -> tuple[str, str]:
    """Synthetic SA-1B images -> the real converter -> TFRecords in WORKDIR/data/{train,eval} (made once)."""
    from samjax.data.sa1b import convert  # noqa: PLC0415
    from samjax.data.synthetic import write_synthetic  # noqa: PLC0415

    s = cfg.data.synthetic
    out = {}
    for split, n, first in (("train", s.num_train, 1), ("eval", s.num_eval, 1_000_000)):
        dst = os.path.join(workdir, "data", split)
        if not os.path.exists(os.path.join(dst, "done")):
            raw = os.path.join(workdir, "data", f"{split}_raw")
            # every core for thousands of images (tiny_synthetic's: 56 s -> 30 s on 2); small sets skip the spawns
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            workers = cores if n >= 1000 else 1
            write_synthetic(raw, n, seed=cfg.seed, size=(s.height, s.width), first_id=first,
                            num_objects=s.objects or None, min_object_frac=s.get("min_object_frac", 0.04),
                            min_mask_area=s.get("min_mask_area", 0), workers=workers)
            convert([raw], dst, num_shards=max(1, min(s.shards, n)), workers=workers, progress=False)
            open(os.path.join(dst, "done"), "w").close()
        out[split] = os.path.join(dst, "*.tfrecord")
    return out["train"], out["eval"]


def make_input(cfg, model_cfg: SamConfig, files: str):
    from samjax.data.pipeline import PipelineConfig, make_iterator  # noqa: PLC0415

    nproc = jax.process_count()
    if cfg.data.batch_size % (nproc * cfg.train.grad_accum):
        raise ValueError(f"global batch {cfg.data.batch_size} must divide by processes x grad_accum "
                         f"({nproc} x {cfg.train.grad_accum})")
    pcfg = PipelineConfig(files=files, image_size=model_cfg.image_size, mask_size=model_cfg.mask_input_size,
                          max_masks_per_image=cfg.data.max_masks_per_image,
                          max_mask_area_fraction=cfg.data.max_mask_area_fraction,
                          batch_size=cfg.data.batch_size // nproc, shuffle_window=cfg.data.shuffle_window,
                          seed=cfg.seed, num_epochs=None, worker_count=cfg.data.worker_count,
                          cycle_length=cfg.data.cycle_length, skip_corrupt=cfg.data.skip_corrupt)
    return make_iterator(pcfg)


TRAIN_KEYS = ("image", "input_hw", "masks", "mask_valid", "boxes")


def batch_spec(cfg, model_cfg: SamConfig, mesh) -> dict:
    """The global training batch as jax.ShapeDtypeStructs sharded like `to_global` (ahead-of-time compilation)."""
    b, m, s, k = cfg.data.batch_size, cfg.data.max_masks_per_image, model_cfg.image_size, model_cfg.mask_input_size
    sh = NamedSharding(mesh, P(train_state.BATCH_AXES))
    shapes = {"image": ((b, s, s, 3), np.uint8), "input_hw": ((b, 2), np.int32), "masks": ((b, m, k, k), np.bool_),
              "mask_valid": ((b, m), np.bool_), "boxes": ((b, m, 4), np.float32)}
    return {key: jax.ShapeDtypeStruct(*shapes[key], sharding=sh) for key in TRAIN_KEYS}


def to_global(batch: dict, mesh) -> dict:
    """This process's numpy batch -> global arrays sharded over (data, fsdp) on the batch axis."""
    sh = NamedSharding(mesh, P(train_state.BATCH_AXES))
    return {k: jax.make_array_from_process_local_data(sh, np.asarray(batch[k])) for k in TRAIN_KEYS}


# ================================================================================================= model
def initial_params(cfg, model_cfg: SamConfig) -> dict:
    """Host copy (numpy) of the initial parameters: from scratch (seeded; the same on every process), or loaded."""
    kind = cfg.init.kind
    if kind == "scratch":
        k_params = jax.random.split(jax.random.PRNGKey(cfg.seed))[0]
        params = jax.tree.map(np.asarray, init_params(model_cfg, k_params))
        return tie_decoder_qk(params, cfg.init.get("decoder_qk_gain", 0.0))
    if kind in ("sam", "mae"):
        return jax.tree.map(np.asarray, load_init_params(cfg, model_cfg))
    raise ValueError(f"config.init.kind must be scratch, sam or mae, got {kind!r}")


def tie_decoder_qk(params: dict, gain: float) -> dict:
    """From-scratch init option (gain > 0): every mask-decoder attention starts with k_proj = q_proj = sqrt(gain) x
    q_proj (biases zero), so q.k = gain x (x W)(y W)^T with W W^T ~ a scaled identity: the point's Fourier PE matches
    the image PE of its own cell from step 0 instead of after hundreds of steps of learning W_q^T W_k. Same modules
    and parameter names (only the initial values change); gain 0 leaves the init untouched."""
    if not gain:
        return params
    params = jax.tree.map(lambda x: x, params)  # new containers: the caller's tree is left as it was
    scale = float(np.sqrt(gain))

    def visit(tree):
        for name, sub in tree.items():
            if not isinstance(sub, dict):
                continue
            if "q_proj" in sub and "k_proj" in sub:
                w = np.asarray(sub["q_proj"]["kernel"]) * scale
                sub["q_proj"] = dict(sub["q_proj"], kernel=w)
                sub["k_proj"] = dict(sub["k_proj"], kernel=w.copy())
            else:
                visit(sub)

    visit(params["mask_decoder"])
    return params


def load_init_params(cfg, model_cfg: SamConfig) -> dict:
    path = cfg.init.path
    if not path:
        raise ValueError(f"config.init.kind={cfg.init.kind!r} needs --config.init.path=... (a samjax model dir, an "
                         "official SAM .pth, or for mae an official MAE .pth)")
    if cfg.init.kind == "mae":
        from samjax import mae  # noqa: PLC0415

        return mae.init_from_mae(path, model_cfg, jax.random.PRNGKey(cfg.seed))
    if str(path).endswith((".pth", ".pt")):
        from samjax import convert  # noqa: PLC0415

        return convert.from_torch(convert.load_torch_checkpoint(path), model_cfg)
    from samjax.checkpoint import load_model  # noqa: PLC0415

    _, params = load_model(path)
    return params


# ============================================================================================ update step
_STEP_CACHE: dict = {}
_RUN_ONLY = ("num_steps", "log_every", "ckpt_every", "keep_ckpts", "async_ckpt", "max_seconds",
             "max_nonfinite_in_row", "debug_nonfinite_steps", "peak_flops")


def compiled_step(cfg, model_cfg: SamConfig, mesh):
    """(tx, jitted step, abstract state, shardings), cached per (config that shapes the step, mesh): repeated runs in
    one process (tests, resumes) compile once."""
    shaping = cfg.to_dict()
    for k in _RUN_ONLY:
        shaping["train"].pop(k, None)
    for k in ("eval", "export", "init", "data", "low_res"):
        shaping.pop(k, None)
    shaping["batch"] = (cfg.data.batch_size, cfg.data.max_masks_per_image)
    key = (json.dumps(shaping, sort_keys=True, default=str), tuple(d.id for d in mesh.devices.flat), mesh.axis_names,
           mesh.devices.shape)
    if key not in _STEP_CACHE:
        tx = optim.make_optimizer(cfg.optim, abstract_params(model_cfg), model_cfg.encoder_depth)
        abstract, shardings = train_state.abstract_state(model_cfg, tx, mesh)
        _STEP_CACHE[key] = (tx, make_train_step(cfg, model_cfg, tx, mesh, shardings), abstract, shardings)
    return _STEP_CACHE[key]


def make_train_step(cfg, model_cfg: SamConfig, tx, mesh, shardings):
    """jit(state, batch, nan_steps) -> (state, metrics). nan_steps (K,) int32: steps whose loss is forced to NaN
    (tests of the non-finite path; pass [-1] normally)."""
    model = Sam(model_cfg)
    pcfg = prompts.PromptConfig(**cfg.prompts.to_dict())
    loss_kwargs = cfg.loss.to_dict()
    lr_fn = optim.schedule(cfg.optim.lr, cfg.optim.warmup_steps, tuple(cfg.optim.decay_steps), cfg.optim.decay_factor)
    freeze = cfg.optim.freeze_image_encoder
    accum = cfg.train.grad_accum
    batch_sh = NamedSharding(mesh, P(train_state.BATCH_AXES))

    def loss_fn(params, batch, rng):
        k_drop, k_prompt = jax.random.split(rng)
        images = T.normalize(batch["image"], batch["input_hw"], model_cfg.pixel_mean, model_cfg.pixel_std)
        emb = model.apply({"params": params}, images, True, rngs={"dropout": k_drop}, method=Sam.embed_images)
        if freeze:
            emb = jax.lax.stop_gradient(emb)
        b, m = batch["masks"].shape[:2]
        emb = jax.lax.with_sharding_constraint(jnp.repeat(emb, m, axis=0), batch_sh)  # (B*M, g, g, C)
        flat = lambda x: jax.lax.with_sharding_constraint(x.reshape(b * m, *x.shape[2:]), batch_sh)  # noqa: E731

        def decode(coords, labels, prev, prev_valid):
            return model.apply({"params": params}, emb, coords, labels, prev, prev_valid, all_outputs=True,
                               method=Sam.decode)

        return prompts.simulate(decode, flat(batch["masks"]), flat(batch["boxes"]), flat(batch["mask_valid"]),
                                k_prompt, model_cfg.image_size, pcfg, loss_kwargs)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step_fn(state, batch, nan_steps):
        rng = jax.random.fold_in(state["rng"], state["step"])
        params = state["params"]
        if accum == 1:
            (loss, aux), grads = grad_fn(params, batch, rng)
        else:  # microbatch i = rows i, i + accum, ... (keeps each device's rows local)
            micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1), batch)
            shapes = jax.eval_shape(lambda: grad_fn(params, jax.tree.map(lambda x: x[0], micro), rng))

            def body(acc, xs):
                i, mb = xs
                (l, a), g = grad_fn(params, mb, jax.random.fold_in(rng, i))
                return jax.tree.map(jnp.add, acc, ((l, a), g)), None

            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            ((loss, aux), grads), _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro))
            loss, aux, grads = jax.tree.map(lambda x: x / accum, (loss, aux, grads))
        loss = jnp.where(jnp.isin(state["step"], nan_steps), jnp.nan, loss)
        gnorm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(gnorm)
        updates, new_opt = tx.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        new_state = {
            "step": state["step"] + 1, "params": keep(new_params, params), "opt_state": keep(new_opt, state["opt_state"]),
            "rng": state["rng"], "nonfinite": state["nonfinite"] + (~finite).astype(jnp.int32),
            "streak": jnp.where(finite, 0, state["streak"] + 1).astype(jnp.int32),
        }
        out = dict(aux, loss=loss, grad_norm=gnorm, lr=lr_fn(state["step"]), finite=finite,
                   streak=new_state["streak"] + 0, nonfinite=new_state["nonfinite"] + 0)
        return new_state, out

    def traced(state, batch, nan_steps):
        with nn.logical_axis_rules(sharding.DEFAULT_RULES):
            return step_fn(state, batch, nan_steps)

    rep = NamedSharding(mesh, P())
    batch_shardings = {k: batch_sh for k in TRAIN_KEYS}
    return jax.jit(traced, in_shardings=(shardings, batch_shardings, rep), out_shardings=(shardings, None),
                   donate_argnums=(0,))


# ============================================================================================ checkpoint
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
    import threading  # noqa: PLC0415

    return threading.current_thread() is threading.main_thread()


# ================================================================================================= evals
def run_eval(cfg, model_cfg: SamConfig, params, eval_files: str) -> dict:
    from samjax import evaluate  # noqa: PLC0415

    examples = evaluate.load_examples(eval_files, model_cfg, cfg.eval.num_images, cfg.eval.max_masks_per_image,
                                      seed=cfg.seed)
    return evaluate.evaluate(params, model_cfg, examples, clicks=tuple(cfg.eval.clicks),
                             batch_masks=cfg.eval.batch_masks)


# ================================================================================================== loop
def train(cfg, workdir: str, data_iter=None) -> dict:
    """Runs (or resumes) training; returns a summary dict (final metrics, eval results, paths, final state).

    data_iter: optional checkpointable grain iterator of this process's batches (tests); default: the pipeline.
    """
    workdir = experiment.workdir_path(workdir)
    os.makedirs(workdir, exist_ok=True)
    main_proc = jax.process_index() == 0
    if main_proc:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(cfg.to_json(indent=2))
    model_cfg = experiment.model_config(cfg)
    n_dev = cfg.mesh.get("num_devices", 0)
    mesh = train_state.make_mesh(cfg.mesh.to_dict(), jax.devices()[:n_dev] if n_dev else None)

    train_files, eval_files = cfg.data.train_files, cfg.data.eval_files
    if data_iter is not None:
        pass
    elif not train_files:
        if not cfg.data.synthetic.num_train:
            raise ValueError("set config.data.train_files (TFRecord glob) or config.data.synthetic.num_train")
        train_files, eval_files = prepare_synthetic(cfg, workdir)
    low_res = None
    if low_res_stages(cfg):
        low_res = low_res_stage(cfg, workdir, train_files, eval_files)
        if low_res["stopped"] == "preempted":
            return {"workdir": workdir, "stopped": "preempted", "step": 0, "low_res": low_res}
    if data_iter is None:
        data_iter = make_input(cfg, model_cfg, train_files)

    tx, step_fn, abstract, shardings = compiled_step(cfg, model_cfg, mesh)
    nan_steps = np.full((8,), -1, np.int32)  # fixed shape: no recompile
    nan_steps[:len(cfg.train.debug_nonfinite_steps)] = cfg.train.debug_nonfinite_steps
    ckpts = train_state.Checkpoints(os.path.join(workdir, "checkpoints"), cfg.train.keep_ckpts, cfg.train.async_ckpt)
    with jax.set_mesh(mesh):
        if ckpts.latest_step() is not None:
            try:
                state = ckpts.restore(abstract, data_iter)
            except Exception:
                ckpts.close()
                raise
            print(f"resumed from step {int(state['step'])} in {ckpts.directory}", flush=True)
        else:
            params = grown_low_res_params(low_res, model_cfg) if low_res else initial_params(cfg, model_cfg)
            state = train_state.init_state(params, tx, cfg.seed, shardings)

    tb = metrics_lib.TensorBoard(os.path.join(workdir, "tensorboard")) if main_proc else None
    peak = cfg.train.peak_flops or metrics_lib.peak_flops_per_device()
    pc = prompts.PromptConfig(**cfg.prompts.to_dict())
    flops = metrics_lib.train_flops_per_step(model_cfg, cfg.data.batch_size, cfg.data.max_masks_per_image,
                                             pc.num_rounds, pc.num_tokens, cfg.optim.freeze_image_encoder)
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
                state, out = step_fn(state, batch, nan_steps)
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
                    if peak:
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
                        and jax.process_count() == 1:
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


LOW_RES_FIELDS = ("max_seconds", "num_steps", "lr")


def low_res_stages(cfg) -> list[dict]:
    """config.low_res as a checked list of stages, smallest first: [{"image_size", "max_seconds", "num_steps",
    "lr"}, ...] ([] without any). A clear error for sizes that are not increasing multiples of patch_size below
    model.image_size, or a per-stage field whose length is not the number of stages."""
    lo = cfg.get("low_res")
    sizes = tuple(int(x) for x in (lo.image_size if lo else ()))
    if sizes == (0,):  # --config.low_res.image_size=0 (ml_collections makes it (0,)): none, as before tuples
        sizes = ()
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


def low_res_stage(cfg, workdir: str, train_files: str, eval_files: str) -> dict:
    """config.low_res: the stages at smaller image sizes before model.image_size. The last of them (the largest size)
    runs in WORKDIR/low_res as a training run of its own, with its checkpoints (it resumes); the ones before it run
    the same way inside it (WORKDIR/low_res/low_res, ...), so each starts from the one before, grown. A stage that
    has ended other than by SIGTERM writes done.json and is skipped from then on.

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


def grown_low_res_params(low_res: dict, model_cfg: SamConfig) -> dict:
    """The low-resolution stage's exported parameters with their position tables resampled to model_cfg's size."""
    from samjax.checkpoint import load_model  # noqa: PLC0415
    from samjax.resolution import grow_params  # noqa: PLC0415

    src_cfg, params = load_model(low_res["model_dir"])
    return grow_params(params, src_cfg, model_cfg)


def finish(cfg, model_cfg, state, workdir, eval_files, summary, tb) -> None:
    """Final eval, export of the model in the samjax.infer.load format, demo image for synthetic runs."""
    from samjax.checkpoint import save_model  # noqa: PLC0415

    params = state["params"]
    export_cfg = model_cfg.replace(encoder_drop_path_rate=0.0, encoder_remat=False, dtype="float32")
    summary["model_dir"] = str(save_model(os.path.join(workdir, "model"), params, export_cfg))
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
        from samjax import evaluate  # noqa: PLC0415

        summary["demo"] = evaluate.demo_image(summary["model_dir"], eval_files, os.path.join(workdir, "demo.png"))
        print(f"demo: {summary['demo']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    exp, workdir, overrides = None, None, []
    for a in argv:
        if a.startswith("--experiment="):
            exp = a.split("=", 1)[1]
        elif a.startswith("--workdir="):
            workdir = a.split("=", 1)[1]
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            overrides.append(a)
    if not exp or not workdir:
        print("usage: python -m samjax.train --experiment=NAME --workdir=DIR [--config.FIELD=VALUE ...]",
              file=sys.stderr)
        return 2
    from samjax import runtime  # noqa: PLC0415

    with runtime.accelerator_errors():  # a TPU held by another process: one line, exit code 2
        maybe_initialize_distributed()
        compilation_cache.enable()
        jax.devices()
    cfg = experiment.apply_overrides(experiment.load_experiment(exp), overrides)
    try:
        s = train(cfg, workdir)
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    print(f"finished: {s['stopped']} at step {s['step']}; workdir {s['workdir']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
