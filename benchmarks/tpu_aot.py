"""TPU on paper: compile for TPU ahead of time on a CPU-only machine and read the cost model's estimates.

    python -m venv /tmp/tpuvenv && /tmp/tpuvenv/bin/pip install -e ".[tpu]"
    JAX_PLATFORMS=cpu /tmp/tpuvenv/bin/python -m benchmarks.tpu_aot [--tiny] [--json FILE]

Inference on one v5e chip (the free Colab TPU): ViT-B / ViT-H encoder in bfloat16 at batch 1 and 8, per attention
implementation, and the decoder on 64 prompts. Training on a v5p:2x2x1 slice (4 chips): one ViT-B step with the
full 11-round prompt simulation, 2 images x 64 masks per chip. For each executable: the cost model's estimated
seconds (`optimal_seconds`), its FLOP count, the implied rate, and MFU = analytic model FLOPs / (estimated time x
chips x bf16 peak). These are XLA's estimates, not measurements: a lower bound on time when memory-bound phases are
modelled optimistically.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import topologies
from jax.sharding import NamedSharding, PartitionSpec as P, SingleDeviceSharding

from benchmarks.device import models, train_step_flops, vitb_train_config
from samjax.training import metrics
from samjax.models import Sam, abstract_params, attention as A

ROWS: list[dict] = []
# (model, attention implementation, batch) compiled for one v5e chip. Compiling ViT-H for TPU takes minutes on a
# 2-core CPU, so the list is short; add rows as needed.
ENCODERS = [("vit_b", "xla", 8), ("vit_h", "xla", 8), ("vit_b", "chunked", 8), ("vit_b", "xla", 1)]


# HBM bandwidth per chip (bytes/s), for the roofline bound below.
HBM_BW = {"v5e": 819e9, "v5p": 2765e9}


def bytes_in_use(compiled) -> int:
    """Device memory an executable needs per chip: arguments + outputs + temporaries - donated (aliased) buffers."""
    mem = compiled.memory_analysis()
    return mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes


def cost(compiled, chip: str) -> tuple[float, float, float, float]:
    """(estimated seconds, cost-model FLOPs, bytes accessed, bytes per chip in use) of one executable.

    The estimate is XLA's `optimal_seconds` when it is a positive number, else the roofline bound
    max(FLOPs / peak, bytes accessed / HBM bandwidth) from the cost model's own counts."""
    c = compiled.cost_analysis()
    c = c[0] if isinstance(c, list) else c
    used = bytes_in_use(compiled)
    flops, accessed = float(c.get("flops", float("nan"))), float(c.get("bytes accessed", float("nan")))
    est = float(c.get("optimal_seconds", -1.0))
    if not est > 0:
        kind = "v5p" if "v5p" in chip else "v5e"
        est = max(flops / metrics.PEAK_FLOPS[kind], accessed / HBM_BW[kind])
    return est, flops, accessed, float(used)


def report(chip, what, model_flops, chips, compiled, compile_s, per="images", count=1.0) -> None:
    est, flops, accessed, used = cost(compiled, chip)
    peak = metrics.PEAK_FLOPS["v5p" if "v5p" in chip else "v5e"]
    mfu = model_flops / (est * chips * peak) if est > 0 else float("nan")
    ROWS.append(dict(chip=chip, what=what, est_s=est, rate=count / est if est > 0 else float("nan"), per=per,
                     mfu=mfu, xla_tflop=flops / 1e12, gb_accessed=accessed / 1e9, mem_gib=used / 2 ** 30,
                     compile_s=compile_s))
    print(f"[{chip}] {what}: estimated {est * 1e3:.2f} ms -> {count / est:.1f} {per}/s, MFU {100 * mfu:.1f}%, "
          f"memory {used / 2 ** 30:.2f} GiB/chip, compile {compile_s:.0f} s", flush=True)


def abstract_on(tree, sharding):
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), tree)


def inference(tiny: bool) -> None:
    dev = topologies.get_topology_desc(topology_name="v5e:2x2", platform="tpu").devices[0]
    one = SingleDeviceSharding(dev)
    cfgs = models(tiny)
    for name, impl, batch in ENCODERS:
        cfg = cfgs[name].replace(dtype="bfloat16", attention=impl)
        params = abstract_on(abstract_params(cfg), one)
        images = jax.ShapeDtypeStruct((batch, cfg.image_size, cfg.image_size, 3), jnp.bfloat16, sharding=one)
        t0 = time.perf_counter()
        compiled = jax.jit(lambda p, x, c=cfg: Sam(c).apply({"params": p}, x, method=Sam.embed_images)) \
            .lower(params, images).compile()
        report("v5e x1", f"{name} encoder bf16 b{batch} {impl}", metrics.encoder_flops(cfg) * batch, 1,
               compiled, time.perf_counter() - t0, count=batch)
    cfg = cfgs["vit_b"].replace(dtype="bfloat16")
    params = abstract_on(abstract_params(cfg), one)
    g, n = cfg.grid_size, 64
    args = (jax.ShapeDtypeStruct((n, g, g, cfg.prompt_embed_dim), jnp.bfloat16, sharding=one),
            jax.ShapeDtypeStruct((n, 1, 2), jnp.float32, sharding=one),
            jax.ShapeDtypeStruct((n, 1), jnp.int32, sharding=one))
    t0 = time.perf_counter()
    compiled = jax.jit(lambda p, e, xy, lab: Sam(cfg).apply({"params": p}, e, xy, lab, None, None, True,
                                                            method=Sam.decode)).lower(params, *args).compile()
    report("v5e x1", f"decoder bf16 {n} prompts", metrics.decoder_flops(cfg, 2, mask_prompt=False) * n, 1, compiled,
           time.perf_counter() - t0, per="prompts", count=n)


def training(tiny: bool) -> None:
    from samjax import train  # noqa: PLC0415

    topo = topologies.get_topology_desc(topology_name="v5p:2x2x1", platform="tpu")
    chips = len(topo.devices)
    mesh = jax.sharding.Mesh(np.asarray(topo.devices).reshape(chips, 1, 1), parallel.MESH_AXES,
                             axis_types=(jax.sharding.AxisType.Auto,) * 3)
    cfg, mc = vitb_train_config(tiny, 2 * chips)
    b, m = cfg.data.batch_size, cfg.data.max_masks_per_image
    t0 = time.perf_counter()
    _, step, abstract, _ = train.compiled_step(cfg, mc, mesh)
    with jax.set_mesh(mesh):
        nan = jax.ShapeDtypeStruct((1,), np.int32, sharding=NamedSharding(mesh, P()))
        compiled = step.lower(abstract, train.batch_spec(cfg, mc, mesh), nan).compile()
    flops, rounds = train_step_flops(cfg, mc)
    report(f"v5p x{chips}", f"vit_b train step, {b} images x {m} masks x {rounds} rounds", flops, chips, compiled,
           time.perf_counter() - t0, count=b)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (checks the script)")
    ap.add_argument("--json", default="")
    ap.add_argument("--sections", default="inference,training")
    args = ap.parse_args(argv)
    try:
        with A.for_platform("tpu"):  # `auto` attention as a TPU host would resolve it, not as this CPU host
            if "inference" in args.sections:
                inference(args.tiny)
            if "training" in args.sections:
                training(args.tiny)
    finally:
        print("\n| chip | executable | estimated time | rate | MFU | XLA TFLOP | GB accessed | memory/chip |"
              "\n|---|---|---|---|---|---|---|---|")
        for r in ROWS:
            print(f"| {r['chip']} | {r['what']} | {r['est_s'] * 1e3:.2f} ms | {r['rate']:.1f} {r['per']}/s | "
                  f"{100 * r['mfu']:.1f}% | {r['xla_tflop']:.2f} | {r['gb_accessed']:.1f} | {r['mem_gib']:.2f} GiB |")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(ROWS, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
