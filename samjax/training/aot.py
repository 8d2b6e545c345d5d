"""The dry run of a training command for a slice you have not rented: compile its exact step, run nothing.

    JAX_PLATFORMS=cpu python -m samjax.train --experiment=sa1b_vith --workdir=/tmp/dry --aot=v5p:4x4x4

Takes the same config the real run would take (experiment + overrides), fits it to the slice with the real run's
rule (samjax.training.fit: the mesh, remat and accumulation, each rung compiled by libtpu for that topology on this
CPU), reads no data files and runs no step. Prints what the rule chose and why, a short summary, and one JSON line
(`dry_run`'s dict). The figures are XLA's and a cost model's (samjax.aot.loop_cost), not measurements.
"""

from __future__ import annotations

import json
import time

from samjax import aot, parallel
from samjax.training import config as config_lib
from samjax.training import fit, metrics, prompts
from samjax.training.step import compile_step


def dry_run(cfg, topology: str) -> dict:
    """{"topology", "chips", "device_kind", "mesh", "rung", "per_chip_bytes", "hbm_bytes", "fits",
    "compile_seconds", "model_flops_per_step", "loop_flops_per_chip", "xla_flops_per_chip", "modelled_step_seconds",
    "modelled_mfu", "fit"}; raises ValueError for a config that cannot fit (fit.check) or an unknown topology."""
    devices = aot.topology_devices(topology)
    kind = devices[0].device_kind
    platform = devices[0].platform
    hbm = fit.device_memory(devices[0])
    t0 = time.perf_counter()

    def compile_rung(run_cfg, shape):
        return compile_step(run_cfg, parallel.make_mesh(shape, devices), platform)

    out = {"topology": topology, "chips": len(devices), "device_kind": kind, "hbm_bytes": hbm}
    try:
        choice = fit.choose(cfg, devices, compile_rung, hbm, log=lambda line: print(line, flush=True))
    except ValueError as e:
        if "no rung" not in str(e):
            raise
        return dict(out, fits=False, compile_seconds=time.perf_counter() - t0, fit=[str(e)])
    compile_s = time.perf_counter() - t0
    run_cfg, mc = choice.config, config_lib.model_config(choice.config)
    pc = prompts.PromptConfig(**run_cfg.prompts.to_dict())
    model_flops = metrics.train_flops_per_step(mc, run_cfg.data.batch_size, run_cfg.data.max_masks_per_image,
                                               pc.num_rounds, pc.num_tokens, run_cfg.optim.freeze_image_encoder)
    cost = aot.loop_cost(choice.compiled, kind)
    peak = aot.by_kind(aot.PEAK_FLOPS, kind)
    return dict(out, mesh=choice.mesh, rung=choice.rung.describe(), per_chip_bytes=choice.per_chip_bytes,
                fits=True, compile_seconds=round(compile_s, 1), model_flops_per_step=model_flops,
                loop_flops_per_chip=cost.flops, xla_flops_per_chip=aot.xla_cost(choice.compiled)["flops"],
                modelled_step_seconds=cost.seconds,
                modelled_mfu=model_flops / (cost.seconds * len(devices) * peak) if peak and cost.seconds else None,
                fit=choice.lines)


def summary(res: dict) -> str:
    """A few lines for people (the fit lines were printed as they came); the JSON line is for programs."""
    gib = 2 ** 30
    lines = []
    if not res["fits"]:
        return "\n".join(res.get("fit", []) + [f"does NOT fit {res['chips']} x {res['device_kind']}"])
    lines.append(f"{res['topology']}: {res['chips']} x {res['device_kind']}, mesh {res['mesh']}, {res['rung']}: "
                 f"{res['per_chip_bytes'] / gib:.1f} of {res['hbm_bytes'] / gib:.1f} GiB per chip; compiled in "
                 f"{res['compile_seconds']:.0f} s")
    lines.append(f"cost model (loops counted): {res['loop_flops_per_chip'] / 1e12:.1f} TFLOP per chip per step, "
                 f"modelled step {res['modelled_step_seconds']:.2f} s, modelled MFU "
                 f"{100 * (res['modelled_mfu'] or 0):.1f}% of the model's "
                 f"{res['model_flops_per_step'] / 1e15:.2f} PFLOP "
                 "(a roofline per kernel: no overlap, no collective latency; not a measurement)")
    return "\n".join(lines)


def main(cfg, topology: str) -> int:
    """Prints the summary and the JSON line; 0 when the run fits, 1 when it does not, 2 for a bad request."""
    try:
        res = dry_run(cfg, topology)
    except ValueError as e:
        print(f"error: {e}", flush=True)
        return 2
    print(summary(res), flush=True)
    print(json.dumps({k: v for k, v in res.items() if k != "fit"}), flush=True)
    return 0 if res["fits"] else 1
