"""Where the time goes: a profiler trace of one workload, summarised per XLA op and per device kernel.

    python -m benchmarks.profile --what encoder --model vit_h --batch 8     # GPU / TPU host
    python -m benchmarks.profile --what train                               # one ViT-B training step
    python -m benchmarks.profile --what decoder --tiny                      # any machine (a test runs this)

Runs the workload (built by the functions `benchmarks.device` times: encoder_call, decoder_call, train_step_call),
traces `--iters` calls with `jax.profiler`, reads the trace back (`jax.profiler.ProfileData`) and prints, per call:
wall time, the time the device was busy, the kinds of op (fusion names without their number), and the ops (the
`hlo_op` of each event: fusion names of the optimised HLO) and kernels that took longest, with their share.
`--hlo DIR` also writes the optimised HLO text of the workload there (gzip), to read fusions by name.
The summary goes to benchmarks/results/profile.json (--out; a --tiny run writes only to an explicit --out), with
benchmarks.record's commit, command, device and date: the last workload profiled, as the other results files.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import os
import re
import sys
import tempfile
import time
import warnings

import jax
import numpy as np

from benchmarks import device as D
from benchmarks import record


def workload(what: str, model: str, batch: int, impl: str, tiny: bool, dtype: str = "bfloat16",
             decoder_matmul: str = "float32"):
    """-> (jitted fn, args): one call of the workload."""
    cfgs = D.models(tiny)
    if what == "encoder":
        return D.encoder_call(cfgs[model].replace(dtype=dtype, attention=impl), batch)
    if what == "decoder":
        return D.decoder_call(cfgs[model].replace(dtype=dtype, decoder_matmul_dtype=decoder_matmul), batch)
    if what == "train":
        return D.train_step_call(tiny, batch)[:2]
    raise ValueError(f"--what must be encoder, decoder or train, got {what!r}")


def summarise(trace_dir: str, iters: int, top: int) -> dict:
    """Prints the busiest ops and kernels of the trace in `trace_dir`, per call; returns them (ms per call)."""
    paths = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    if not paths:
        print("no trace written (profiler unavailable?)")
        return {}
    data = jax.profiler.ProfileData.from_file(max(paths, key=os.path.getmtime))
    planes = [p for p in data.planes if p.name.startswith("/device:")] or \
        [p for p in data.planes if p.name == "/host:CPU"]
    by_op, by_kernel = collections.Counter(), collections.Counter()
    count = collections.Counter()
    spans = []
    for plane in planes:
        for line in plane.lines:
            if line.name in ("XLA Modules", "XLA Ops", "Steps", "Framework Ops", "Framework Name Scope",
                             "Source code", "XLA TraceMe"):
                continue
            for ev in line.events:
                with warnings.catch_warnings():  # the profiler's stats type warns on iteration (jax 0.11)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    stats = dict(ev.stats)
                op = stats.get("hlo_op")
                if op is None:
                    continue
                by_op[op] += ev.duration_ns
                count[op] += 1
                by_kernel[ev.name] += ev.duration_ns
                spans.append((ev.start_ns, ev.start_ns + ev.duration_ns))
    busy = 0.0
    end = -np.inf
    for s, e in sorted(spans):  # union of the kernels' intervals
        if e > end:
            busy += e - max(s, end)
            end = e
    total = sum(by_op.values())
    print(f"planes: {[p.name for p in planes]}; device busy {busy / iters / 1e6:.2f} ms per call "
          f"(kernel time summed over streams {total / iters / 1e6:.2f} ms)")
    by_kind = collections.Counter()
    for op, ns in by_op.items():  # "loop_add_fusion.5" -> "loop_add_fusion": what kind of work, all instances
        by_kind[re.sub(r"[._]\d+$", "", op)] += ns
    summary = {"device_busy_ms": busy / iters / 1e6, "kernel_ms_summed_over_streams": total / iters / 1e6}
    for key, title, counter in (("kinds", "kind of op", by_kind), ("ops", "op (hlo_op)", by_op),
                                ("kernels", "kernel", by_kernel)):
        print(f"\n| {title} | ms per call | share | calls per call |\n|---|---|---|---|")
        summary[key] = []
        for name, ns in counter.most_common(top):
            n = count[name] if counter is by_op else ""
            print(f"| {name[:110]} | {ns / iters / 1e6:.3f} | {100 * ns / max(total, 1):.1f}% | "
                  f"{n / iters if n != '' else ''} |")
            summary[key].append({"name": name, "ms_per_call": ns / iters / 1e6, "share": ns / max(total, 1),
                                 **({"calls_per_call": n / iters} if n != "" else {})})
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--what", default="encoder", help="encoder | decoder | train")
    ap.add_argument("--model", default="vit_b", help="vit_b | vit_h (encoder, decoder)")
    ap.add_argument("--batch", type=int, default=0, help="images (encoder, train) or prompts (decoder); 0: default")
    ap.add_argument("--impl", default="auto", help="encoder attention implementation")
    ap.add_argument("--dtype", default="bfloat16", help="compute dtype (encoder, decoder); float32 as on CPU")
    ap.add_argument("--decoder-matmul", default="float32",
                    help="decoder: SamConfig.decoder_matmul_dtype (bfloat16: image-side products in bf16)")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--tiny", action="store_true", help="tiny shapes: checks the script on any machine")
    ap.add_argument("--hlo", default="", help="write the optimised HLO text (gzip) into this folder")
    record.add_out_argument(ap, "profile", check="--tiny")
    args = ap.parse_args(argv)
    batch = args.batch or {"encoder": 8, "decoder": 64, "train": 1 if args.tiny else 2}[args.what]
    fn, call_args = workload(args.what, args.model, batch, args.impl, args.tiny, args.dtype, args.decoder_matmul)
    label = f"{args.what}_{args.model}_b{batch}_{args.impl}" + ("" if args.dtype == "bfloat16" else f"_{args.dtype}")
    label += "" if args.decoder_matmul == "float32" else f"_matmul_{args.decoder_matmul}"
    t0 = time.perf_counter()
    compiled = fn.lower(*call_args).compile()
    compile_s = time.perf_counter() - t0
    print(f"{label}: compiled in {compile_s:.1f} s", flush=True)
    if args.hlo:
        os.makedirs(args.hlo, exist_ok=True)
        with gzip.open(os.path.join(args.hlo, f"{label}.hlo.txt.gz"), "wt") as f:
            f.write(compiled.as_text())
    for _ in range(2):
        jax.block_until_ready(fn(*call_args))
    t0 = time.perf_counter()
    for _ in range(args.iters):
        jax.block_until_ready(fn(*call_args))
    wall = (time.perf_counter() - t0) / args.iters
    print(f"{label}: {wall * 1e3:.2f} ms per call (untraced, median-free mean of {args.iters})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            for _ in range(args.iters):
                jax.block_until_ready(fn(*call_args))
        summary = summarise(tmp, args.iters, args.top)
    out = record.out_path(args.out, "profile", check=args.tiny)
    if out:
        record.write(out, "profile", argv, workload=label, batch=batch, iters=args.iters, compile_s=compile_s,
                     wall_ms_per_call=wall * 1e3, **summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
