"""Accelerator benchmark: encoder images/s and MFU, decoder prompts/s, one training step's MFU, bf16 agreement.

    python -m benchmarks.device                  # on a GPU / TPU host: real sizes, about 4 minutes on one H100
    python -m benchmarks.device --tiny           # any machine (CPU too): tiny shapes, checks the script runs

Prints one table and writes it to benchmarks/results/device.json (--out; a --tiny run writes only to an explicit
--out), with benchmarks.record's commit, command, device and date:
- attention: each encoder attention implementation against the float32 reference at a global block's shape;
- encoder: ViT-B and ViT-H in bfloat16 at batch 1 and 8, per attention implementation; images/s and MFU
  (analytic FLOPs, samjax.training.metrics.encoder_flops, over the device's bf16 dense peak);
- decoder: prompts/s for a batch of 64 single-point prompts on a cached embedding (prompt encoder + mask decoder);
- train: one ViT-B training step with the paper's full 11-round prompt simulation; MFU counts model FLOPs only
  (forward + backward, no rematerialisation);
- bf16 vs float32: thresholded-mask IoU of ViT-B (random weights) on the same image and prompts.
Each section is timed against --budget seconds; what does not fit is reported as skipped, never silently dropped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import record
from samjax import parallel
from samjax.models import Sam, SamConfig, decode_prompts, image_cache, init_params
from samjax.models import attention as A
from samjax.training import config as training_config
from samjax.training import metrics
from samjax.training.input import to_global
from samjax.training.state import init_state
from samjax.training.step import compiled_step

ROWS: list[dict] = []


def row(section: str, what: str, value, unit: str, mfu: float | None = None, note: str = "") -> None:
    ROWS.append(dict(section=section, what=what, value=value, unit=unit, mfu=mfu, note=note))
    v = f"{value:.4g}" if isinstance(value, float) else str(value)
    m = f"  MFU {100 * mfu:.1f}%" if mfu is not None else ""
    print(f"[{section}] {what}: {v} {unit}{m} {note}", flush=True)


def timeit(fn, iters: int, warmup: int = 2) -> tuple[float, float]:
    """(first-call seconds incl. compile, median seconds per call after warm-up)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        jax.block_until_ready(fn())
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def models(tiny: bool) -> dict[str, SamConfig]:
    if tiny:
        t = dict(image_size=64, encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, window_size=2,
                 encoder_global_attn_indexes=(1,), prompt_embed_dim=32, decoder_mlp_dim=64, iou_head_hidden_dim=32)
        return {"vit_b": SamConfig(**t), "vit_h": SamConfig(**{**t, "encoder_embed_dim": 80, "encoder_depth": 3,
                                                               "encoder_global_attn_indexes": (2,)})}
    return {"vit_b": SamConfig.vit_b(), "vit_h": SamConfig.vit_h()}


def impls() -> list[str]:
    on_gpu = jax.default_backend() == "gpu"
    return ["xla", "chunked"] + (["cudnn", "cudnn_bias"] if on_gpu else ["folded"])


def bench_attention(cfgs, budget) -> None:
    cfg = cfgs["vit_b"]
    g, nh = cfg.grid_size, cfg.encoder_num_heads
    hd = cfg.encoder_embed_dim // nh
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((2, g * g, nh, hd)), jnp.float32) for _ in range(3))
    rel = tuple(jnp.asarray(rng.standard_normal((2 * g - 1, hd)) * 0.2, jnp.float32) for _ in range(2))
    ref = np.asarray(jax.jit(lambda *a: A.attention(*a, rel, (g, g), "xla"))(q, k, v), np.float64)
    for impl in impls():
        if budget.out():
            return row("attention", impl, "skipped", "", note="(budget)")
        try:
            out = jax.jit(lambda *a, i=impl: A.attention(*a, rel, (g, g), i))(
                *(x.astype(jnp.bfloat16) for x in (q, k, v)))
            err = float(np.linalg.norm(np.asarray(out, np.float64) - ref) / np.linalg.norm(ref))
            row("attention", f"{impl} bf16 vs f32 reference, {g}x{g} grid", err, "rel. L2 error")
        except Exception as e:  # noqa: BLE001 - report and go on: an implementation may not exist on this backend
            row("attention", impl, "failed", "", note=f"{type(e).__name__}: {str(e)[:160]}")


def host_params(cfg: SamConfig, seed: int = 0) -> dict:
    """Random parameters made on the host's CPU, as numpy arrays (jax.device_put them before timing).

    On a GPU the jitted init is one more large compile per configuration: a ViT-B training-step variant spent ~50 s
    in init and lowering with an H100 making its parameters, ~6 s with the CPU making them."""
    with jax.default_device(jax.devices("cpu")[0]):
        return jax.tree.map(np.asarray, init_params(cfg, jax.random.PRNGKey(seed)))


def encoder_call(cfg: SamConfig, batch: int):
    """The image encoder on `batch` random images in cfg's dtype -> (jitted fn, args)."""
    params = jax.device_put(host_params(cfg))
    images = jnp.asarray(np.random.default_rng(0).standard_normal((batch, cfg.image_size, cfg.image_size, 3)),
                         cfg.jnp_dtype)
    return jax.jit(lambda p, x: Sam(cfg).apply({"params": p}, x, method=Sam.embed_images)), (params, images)


def decoder_call(cfg: SamConfig, prompts: int):
    """`prompts` single-point prompts on one cached embedding, decoded as Predictor.predict does (the embedding
    shared by the prompts, image_pe and the image-only first-layer projections, `image_cache`, computed once per
    image, `decode_prompts`) -> (jitted fn, args)."""
    params = jax.device_put(host_params(cfg))
    g = cfg.grid_size
    emb = jnp.asarray(np.random.default_rng(0).standard_normal((1, g, g, cfg.prompt_embed_dim)), jnp.float32)
    coords = jnp.asarray(np.random.default_rng(1).uniform(0, cfg.image_size, (prompts, 1, 2)), jnp.float32)
    labels = jnp.ones((prompts, 1), jnp.int32)
    pe = jax.jit(lambda p: Sam(cfg).apply({"params": p}, method=Sam.get_dense_pe))(params)  # as the Predictor's
    cache = jax.jit(lambda p, e, pe: image_cache(p, cfg, e, pe))(params, emb, pe)
    fn = jax.jit(lambda p, e, xy, lab, pe, c: decode_prompts(p, cfg, e, xy, lab, image_pe=pe, image_cache=c))
    return fn, (params, emb, coords, labels, pe, cache)


def bench_encoder(name, cfg, batch, impl, iters, peak, budget) -> float | None:
    if budget.out():
        row("encoder", f"{name} b{batch} {impl}", "skipped", "", note="(budget)")
        return None
    cfg = cfg.replace(dtype="bfloat16", attention=impl)
    try:
        fn, args = encoder_call(cfg, batch)
        first, sec = timeit(lambda: fn(*args), iters)
    except Exception as e:  # noqa: BLE001
        row("encoder", f"{name} b{batch} {impl}", "failed", "", note=f"{type(e).__name__}: {str(e)[:160]}")
        return None
    flops = metrics.encoder_flops(cfg) * batch
    row("encoder", f"{name} bf16 b{batch} {impl}", batch / sec, "images/s", flops / sec / peak if peak else None,
        f"(first call {first:.1f} s)")
    return batch / sec


def bench_decoder(cfg, iters, peak, budget, prompts=64) -> None:
    if budget.out():
        return row("decoder", f"{prompts} prompts", "skipped", "", note="(budget)")
    for dtype in ("bfloat16", "float32"):
        c = cfg.replace(dtype=dtype)
        fn, args = decoder_call(c, prompts)
        first, sec = timeit(lambda: fn(*args), iters)
        flops = metrics.decoder_flops(c, 2, mask_prompt=False) * prompts
        row("decoder", f"{dtype} {prompts} prompts/call", prompts / sec, "prompts/s",
            flops / sec / peak if peak and dtype == "bfloat16" else None, f"(first call {first:.1f} s)")


def vitb_train_config(tiny: bool, images: int):
    """The sa1b_vitb experiment at `images` per step with rematerialised prompt rounds (tiny: the tiny ViT-B, 4 masks
    per image). -> (config, SamConfig)."""
    cfg = training_config.load_experiment("sa1b_vitb")
    cfg.data.batch_size = images
    cfg.prompts.remat_rounds = True
    if tiny:
        cfg.model = {**cfg.model, **models(True)["vit_b"].replace(dtype="bfloat16").to_dict(),
                     "encoder_drop_path_rate": 0.6}
        cfg.data.max_masks_per_image = 4
    return cfg, training_config.model_config(cfg)


def train_step_flops(cfg, mc: SamConfig) -> tuple[float, int]:
    """(model FLOPs of one step over the global batch, no rematerialisation counted; prompt rounds)."""
    rounds = cfg.prompts.num_click_rounds + cfg.prompts.no_click_rounds + 1
    tokens = 2 + cfg.prompts.num_click_rounds  # decoder tokens per prompt (box corners / point + clicks)
    flops = metrics.train_flops_per_step(mc.replace(encoder_remat=False), cfg.data.batch_size,
                                         cfg.data.max_masks_per_image, rounds, tokens)
    return flops, rounds


class StatefulStep:
    """A donated-state train step as a callable of its other arguments: each call continues from the last state.
    `lower` lowers the underlying jitted step (for HLO and compile time)."""

    def __init__(self, step, state):
        self.step, self.state = step, state

    def lower(self, *args):
        return self.step.lower(self.state, *args)

    def __call__(self, *args):
        self.state, out = self.step(self.state, *args)
        return out["loss"]


def train_step_inputs(cfg, mc: SamConfig, mesh, params: dict, seed: int = 0):
    """cfg's training step on `mesh` and what it starts from: (jitted step, initial state from `params`, (the
    synthetic batch of cfg.data.batch_size images as a global array,)). Used here and by train_ab."""
    tx, step, _, shardings = compiled_step(cfg, mesh)
    with jax.set_mesh(mesh):
        state = init_state(params, tx, seed, shardings)
    batch = synthetic_train_batch(cfg.data.batch_size, cfg.data.max_masks_per_image, mc.image_size,
                                  mc.mask_input_size)
    return step, state, (to_global(batch, mesh),)


def train_step_call(tiny: bool, images: int):
    """One ViT-B training step on a synthetic batch of `images` -> (StatefulStep, (batch,), cfg, mc)."""

    cfg, mc = vitb_train_config(tiny, images)
    mesh = parallel.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    step, state, args = train_step_inputs(cfg, mc, mesh, host_params(mc))
    return StatefulStep(step, state), args, cfg, mc


def synthetic_train_batch(b: int, m: int, s: int, k: int) -> dict:
    """A training batch of b noise images (s x s) with m valid rectangle masks each (k x k grid), the same in
    every image, and a box: the shapes and dtypes of the input pipeline's batch."""
    rng = np.random.default_rng(0)
    masks = np.zeros((b, m, k, k), bool)
    for i in range(m):  # rectangles of varied size, so every prompt round has real error regions
        y0, x0 = rng.integers(0, k // 2, 2)
        hh, ww = rng.integers(max(1, k // 16), k // 2 + 1, 2)
        masks[:, i, y0:y0 + hh, x0:x0 + ww] = True
    ys, xs = np.nonzero(masks[0].any(0))
    boxes = np.stack([[xs.min(), ys.min(), xs.max(), ys.max()]] * m).astype(np.float32) * (s / k)
    return {"image": rng.integers(0, 255, (b, s, s, 3), dtype=np.uint8),
            "input_hw": np.full((b, 2), s, np.int32), "masks": masks,
            "mask_valid": np.ones((b, m), bool), "boxes": np.broadcast_to(boxes, (b, m, 4)).copy()}


def bench_train(tiny, peak, iters, budget) -> None:
    if budget.out():
        return row("train", "vit_b step", "skipped", "", note="(budget)")
    images = 1 if tiny else 2
    try:
        one, args, cfg, mc = train_step_call(tiny, images)
        first, sec = timeit(lambda: one(*args), iters, warmup=2)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        return row("train", "vit_b step", "failed", "", note=f"{type(e).__name__}: {str(e)[:200]}")
    flops, rounds = train_step_flops(cfg, mc)
    row("train", f"vit_b step: {images} images x {cfg.data.max_masks_per_image} masks x {rounds} rounds",
        images / sec, "images/s", flops / sec / peak if peak else None,
        f"({sec * 1e3:.0f} ms/step, first call {first:.1f} s, attention {A.resolve('auto', mc.jnp_dtype, 4096)})")


def bench_agreement(cfg, budget, points=16) -> None:
    """Masks of bf16 vs float32 on the same random weights, image and prompts: IoU of thresholded masks."""
    if budget.out():
        return row("bf16", "agreement", "skipped", "", note="(budget)")
    params = jax.device_put(host_params(cfg, seed=1))
    rng = np.random.default_rng(2)
    image = jnp.asarray(rng.standard_normal((1, cfg.image_size, cfg.image_size, 3)), jnp.float32)
    coords = jnp.asarray(rng.uniform(0, cfg.image_size, (points, 1, 2)), jnp.float32)
    labels = jnp.ones((points, 1), jnp.int32)
    def run(enc_dtype, dec_dtype):
        def fn(p, x, xy, lab):
            emb = Sam(cfg.replace(dtype=enc_dtype)).apply({"params": p}, x, method=Sam.embed_images)  # encoder once
            emb = jnp.broadcast_to(emb.astype(jnp.float32), (xy.shape[0],) + emb.shape[1:])
            return Sam(cfg.replace(dtype=dec_dtype)).apply({"params": p}, emb, xy, lab, None, None, True,
                                                           method=Sam.decode)

        return np.asarray(jax.jit(fn)(params, image, coords, labels)[0], np.float32) > 0

    ref = run("float32", "float32")
    for enc, dec in (("bfloat16", "bfloat16"), ("bfloat16", "float32")):
        got = run(enc, dec)
        inter, union = (ref & got).sum((-1, -2)), (ref | got).sum((-1, -2))
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        row("bf16", f"mask IoU vs float32, encoder {enc} + decoder {dec} ({points} prompts x 3 masks): mean",
            float(iou.mean()), "IoU", note=f"(min {iou.min():.4f}; attention {A.resolve('auto', jnp.bfloat16, 4096)})")


class Budget:
    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def out(self) -> bool:
        return time.perf_counter() > self.end


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes: checks the script on any machine")
    ap.add_argument("--budget", type=float, default=270.0, help="seconds; later sections are skipped past it")
    record.add_out_argument(ap, "device", check="--tiny")
    ap.add_argument("--sections", default="attention,encoder,train,decoder,agreement")
    args = ap.parse_args(argv)
    sections = args.sections.split(",")
    dev = jax.devices()[0]
    peak = metrics.peak_flops_per_device(dev)
    print(f"jax {jax.__version__} on {dev.platform} ({dev.device_kind}); bf16 peak "
          f"{peak / 1e12 if peak else float('nan'):.0f} TFLOP/s; tiny={args.tiny}", flush=True)
    cfgs, budget = models(args.tiny), Budget(args.budget)
    iters = 3 if args.tiny else 10
    try:
        if "attention" in sections:
            bench_attention(cfgs, budget)
        rates: dict = {"vit_b": {}, "vit_h": {}}
        best = lambda name: max(((r, i) for i, r in rates[name].items() if r), default=(0, "auto"))[1]  # noqa: E731
        # Most informative first: each later row is skipped (and says so) once the budget is spent.
        if "encoder" in sections:
            for impl in impls():
                rates["vit_b"][impl] = bench_encoder("vit_b", cfgs["vit_b"], 8, impl, iters, peak, budget)
        if "train" in sections:
            bench_train(args.tiny, peak, 3 if args.tiny else 5, budget)
        if "encoder" in sections:
            first = ["cudnn", "xla"] if "cudnn" in impls() else ["chunked", "xla"]
            for impl in first:
                rates["vit_h"][impl] = bench_encoder("vit_h", cfgs["vit_h"], 8, impl, iters, peak, budget)
        if "decoder" in sections:
            bench_decoder(cfgs["vit_b"], iters, peak, budget)
        if "agreement" in sections:
            bench_agreement(cfgs["vit_b"], budget)
        if "encoder" in sections:
            for name in ("vit_b", "vit_h"):
                bench_encoder(name, cfgs[name], 1, best(name), iters, peak, budget)
            for impl in impls():
                if impl not in rates["vit_h"]:
                    rates["vit_h"][impl] = bench_encoder("vit_h", cfgs["vit_h"], 8, impl, iters, peak, budget)
    finally:
        print("\n| section | measurement | value | unit | MFU | note |\n|---|---|---|---|---|---|")
        for r in ROWS:
            v = f"{r['value']:.4g}" if isinstance(r["value"], float) else r["value"]
            m = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else ""
            print(f"| {r['section']} | {r['what']} | {v} | {r['unit']} | {m} | {r['note']} |")
        out = record.out_path(args.out, "device", check=args.tiny)
        if out:
            record.write(out, "device", argv, tiny=args.tiny, sections=sections, budget_s=args.budget,
                         peak_flops_per_device=peak, rows=ROWS)
    failed = [r for r in ROWS if r["value"] == "failed"]
    return 1 if failed and args.tiny else 0


if __name__ == "__main__":
    sys.exit(main())
