"""An experiment's training step under two or more sets of config overrides, timed side by side (an A/B).

    python -m benchmarks.train_ab                          # tiny_synthetic: prompt rounds scanned vs unrolled
    python -m benchmarks.train_ab --variant "full=" --variant "dots=--config.prompts.remat_policy=dots_saveable" \
        --experiment sa1b_vitb --steps 8 --config.data.batch_size=2 --config.prompts.remat_rounds=True

`--variant NAME=OVERRIDES` (repeatable; OVERRIDES space-separated `--config.FIELD=VALUE`, may be empty) names one
step; arguments after the options are overrides shared by every variant. Default: `scan` and `unrolled`
(`prompts.unroll_rounds` False / True: the same values, compiled differently, tests/test_prompts.py).

Every variant starts from the same random parameters, made on the host's CPU (`benchmarks.device.host_params`;
one set per distinct model config), and the synthetic batch of benchmarks.device. The steps are lowered one after
another and compiled in parallel threads (a ViT-B step compiles in 84-127 s on an H200: serially that is most of
a device run). Then the calls alternate between the variants, so machine
noise hits all alike. Variants whose overrides leave the compiled program unchanged are named in a warning.
Prints, per variant: median and minimum ms per step, images/s, MFU where the device's peak
is known, compile seconds, XLA's temporary memory, the last loss; and each median relative to the first variant
timed. A variant whose compiled step needs more memory than the device has (arguments + outputs + temporaries, from
XLA's memory analysis; `--memory-gib` to pretend a smaller card), or that runs out of it when called, is listed as
skipped and the others are timed (on an H200 the ViT-B step without rematerialised rounds needs 175 GiB).
Results: benchmarks/results/train_ab.json (--out), with benchmarks.record's commit, command, device and date.
"""

from __future__ import annotations

import argparse
import shlex
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np

from benchmarks import record
from benchmarks.device import host_params, train_step_flops, train_step_inputs
from samjax import parallel
from samjax.aot import footprint as bytes_in_use
from samjax.training import config as training_config
from samjax.training import metrics

DEFAULT_VARIANTS = ("scan=--config.prompts.unroll_rounds=False", "unrolled=--config.prompts.unroll_rounds=True")


def parse_variant(text: str) -> tuple[str, list[str]]:
    """"NAME=OVERRIDES" -> (NAME, [override, ...]); a clear error for anything else."""
    name, sep, rest = text.partition("=")
    overrides = shlex.split(rest)
    if not sep or not name.strip() or name.startswith("-"):
        raise ValueError(f"--variant expects NAME=OVERRIDES (e.g. 'dots=--config.prompts.remat_policy=dots_saveable'),"
                         f" got {text!r}")
    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
        raise ValueError(f"variant {name!r}: overrides must look like --config.FIELD=VALUE, got {bad}")
    return name.strip(), overrides


def build(name: str, experiment_name: str, overrides: list[str], params_cache: dict) -> dict:
    """One variant: its config, mesh, initial state, batch and the lowered (not yet compiled) step."""
    cfg = training_config.apply_overrides(training_config.load_experiment(experiment_name), overrides)
    mc = training_config.model_config(cfg)
    mesh = parallel.make_mesh(cfg.mesh.to_dict())
    if mc not in params_cache:
        params_cache[mc] = host_params(mc)
    step, state, args = train_step_inputs(cfg, mc, mesh, params_cache[mc], cfg.seed)
    with jax.set_mesh(mesh):
        lowered = step.lower(state, *args)
    return dict(name=name, cfg=cfg, mc=mc, mesh=mesh, state=state, args=args, lowered=lowered, times=[])


def same_programs(runs: list[dict]) -> list[list[str]]:
    """Groups of variant names whose lowered steps are the same program (overrides that change nothing compiled,
    e.g. a remat policy while prompts.remat_rounds is off)."""
    programs: dict[str, list[str]] = {}
    for v in runs:
        programs.setdefault(v["lowered"].as_text(), []).append(v["name"])
    return [names for names in programs.values() if len(names) > 1]


def compile_variant(v: dict) -> None:
    t = time.perf_counter()
    v["compiled"] = v["lowered"].compile()
    v["compile_s"] = time.perf_counter() - t
    mem = v["compiled"].memory_analysis()
    v["temp_gib"] = mem.temp_size_in_bytes / 2**30 if mem is not None else float("nan")
    v["need_gib"] = bytes_in_use(v["compiled"]) / 2**30 if mem is not None else 0.0


def device_memory_gib() -> float | None:
    """The first device's memory for buffers (the allocator's limit), None where the backend does not say (CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    return stats["bytes_limit"] / 2**30 if "bytes_limit" in stats else None


def call(v: dict) -> dict:
    """One training step of variant v under its mesh (its state advances); the step's outputs, computed."""
    with jax.set_mesh(v["mesh"]):
        v["state"], out = v["compiled"](v["state"], *v["args"])
        return jax.block_until_ready(out)


def warm_up(v: dict) -> None:
    """3 calls; a variant that runs out of device memory anyway is marked skipped, not the end of the A/B."""
    try:
        for _ in range(3):
            call(v)
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        v["skipped"] = f"out of device memory when run ({str(e).splitlines()[0][:120]})"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="tiny_synthetic")
    p.add_argument("--variant", action="append", default=None, metavar="NAME=OVERRIDES",
                   help="a named set of overrides (repeat; default: scan vs unrolled prompt rounds)")
    p.add_argument("--steps", type=int, default=30, help="timed calls of each step (after 3 warm-up calls)")
    record.add_out_argument(p, "train_ab")
    p.add_argument("--memory-gib", type=float, default=0.0,
                   help="skip variants whose step needs more device memory than this (default: the device's own "
                        "limit where the backend reports one; e.g. 80 to see what fits an H100 from an H200)")
    a, shared = p.parse_known_args(argv)
    if a.steps < 1:
        p.error(f"--steps must be at least 1, got {a.steps}")
    bad = [o for o in shared if not o.startswith("--config.")]
    if bad:
        p.error(f"unrecognised arguments {bad}: shared overrides look like --config.FIELD=VALUE")
    try:
        variants = [parse_variant(v) for v in (a.variant or DEFAULT_VARIANTS)]
    except ValueError as e:
        p.error(str(e))
    names = [n for n, _ in variants]
    if len(variants) < 2 or len(set(names)) != len(names):
        p.error(f"give at least two variants with distinct names, got {names}")

    t0 = time.perf_counter()
    params_cache: dict = {}
    runs = [build(n, a.experiment, shared + ov, params_cache) for n, ov in variants]
    print(f"lowered {len(runs)} variants in {time.perf_counter() - t0:.1f} s; compiling in parallel", flush=True)
    for same in same_programs(runs):
        print(f"warning: variants {same} lower to the same program: their overrides do not change the step",
              flush=True)
    with ThreadPoolExecutor(len(runs)) as ex:
        list(ex.map(compile_variant, runs))
    limit = a.memory_gib or device_memory_gib()
    for v in runs:
        if limit and v["need_gib"] > limit:  # e.g. a step without rematerialisation: say so, time the others
            v["skipped"] = f"does not fit: needs {v['need_gib']:.2f} GiB of device memory, the limit is {limit:.2f}"
        else:
            warm_up(v)
        if "skipped" in v:
            v["state"] = None  # its buffers go back to the device
            print(f"variant {v['name']}: {v['skipped']}; skipped", flush=True)
    timed = [v for v in runs if "skipped" not in v]
    for _ in range(a.steps if timed else 0):
        for v in timed:
            t = time.perf_counter()
            out = call(v)
            v["times"].append(time.perf_counter() - t)
            v["loss"] = float(out["loss"])

    peak = metrics.peak_flops_per_device(jax.devices()[0])
    cfg = runs[0]["cfg"]
    print(f"{a.experiment}: batch {cfg.data.batch_size} images x {cfg.data.max_masks_per_image} masks, "
          f"{jax.device_count()} {jax.devices()[0].platform} device(s) ({jax.devices()[0].device_kind}), "
          f"{a.steps} interleaved steps each; shared overrides: {' '.join(shared) or 'none'}")
    print("| variant | median ms | min ms | images/s | MFU | vs first | compile s | temp GiB | last loss |\n"
          "|---|---|---|---|---|---|---|---|---|")
    rows, skipped = [], [dict(variant=v["name"], skipped=v["skipped"], compile_s=v["compile_s"],
                              temp_gib=v["temp_gib"]) for v in runs if "skipped" in v]
    for v in timed:
        ts = np.array(v["times"]) * 1e3
        med = float(np.median(ts))
        flops, _ = train_step_flops(v["cfg"], v["mc"])
        mfu = flops / (med / 1e3) / (peak * jax.device_count()) if peak else None
        rows.append(dict(variant=v["name"], median_ms=med, min_ms=float(ts.min()),
                         images_per_s=v["cfg"].data.batch_size / med * 1e3, mfu=mfu, compile_s=v["compile_s"],
                         temp_gib=v["temp_gib"], loss=v["loss"]))
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        print(f"| {r['variant']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['images_per_s']:.1f} | {mfu} | "
              f"{r['median_ms'] / rows[0]['median_ms']:.2f} | {r['compile_s']:.1f} | {r['temp_gib']:.2f} | "
              f"{r['loss']:.5f} |")
    for r in skipped:
        print(f"| {r['variant']} | {r['skipped']} | | | | | {r['compile_s']:.1f} | {r['temp_gib']:.2f} | |")
    result = {"experiment": a.experiment, "steps": a.steps, "shared": shared, "variants": dict(variants),
              "rows": rows, "skipped": skipped}
    record.write(record.out_path(a.out, "train_ab"), "train_ab", argv, **result)
    return result


if __name__ == "__main__":
    main()
