"""TPU on paper: the dry runs of the training commands for the slices people rent, and the Colab chip's inference.

    JAX_PLATFORMS=cpu .venv-tpu/bin/python -m benchmarks.tpu_aot [--only NAME ...] [--out FILE]   # make bench-tpu

Each row is exactly what `python -m samjax.train --experiment=E --workdir=W --aot=TOPOLOGY` (or, for inference,
`python -m samjax.amg --aot=v5e:1x1 --model-type vit_h`) prints: what the fit rule chose, the memory per chip, the
compile time on this host, and the loop-counting cost model's step time and MFU (samjax.aot: a roofline per
kernel, not a measurement). Results go to benchmarks/results/tpu_aot.json (--out) with benchmarks.record's commit,
command, host and date.
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks import record
from samjax.amg import aot as amg_aot
from samjax.models import SamConfig
from samjax.training import aot as train_aot
from samjax.training import config as training_config

# (row name, experiment, topology): the slices: v5p-128 (64 chips) and v5e-256 (256 chips)
TRAINING = [("sa1b_vith on v5p-128", "sa1b_vith", "v5p:4x4x4"), ("sa1b_vith on v5e-256", "sa1b_vith", "v5e:16x16"),
            ("sa1b_vitb on v5p-128", "sa1b_vitb", "v5p:4x4x4"), ("sa1b_vitb on v5e-256", "sa1b_vitb", "v5e:16x16")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="row names (substrings) to run")
    record.add_out_argument(ap, "tpu_aot")
    args = ap.parse_args(argv)
    rows = []
    for name, experiment, topology in TRAINING:
        if args.only and not any(o in name for o in args.only):
            continue
        print(f"== {name}: python -m samjax.train --experiment={experiment} --workdir=W --aot={topology}", flush=True)
        t = time.perf_counter()
        res = train_aot.dry_run(training_config.load_experiment(experiment), topology)
        print(train_aot.summary(res), flush=True)
        rows.append(dict(res, name=name, wall_seconds=round(time.perf_counter() - t, 1),
                         command=f"python -m samjax.train --experiment={experiment} --workdir=W --aot={topology}"))
    if not args.only or any("colab" in o for o in args.only):
        print("== colab v5e chip: python -m samjax.amg --aot=v5e:1x1 --model-type vit_h", flush=True)
        res = amg_aot.dry_run(SamConfig.vit_h(dtype="bfloat16"), "v5e:1x1")
        rows.append(dict(res, name="vit_h serving on one v5e chip (Colab)",
                         command="python -m samjax.amg --aot=v5e:1x1 --model-type vit_h"))
    gib = 2 ** 30
    print("\n| slice | chose | memory / chip | compile | modelled step | modelled MFU |\n|---|---|---|---|---|---|")
    for r in rows:
        if "functions" in r:
            print(f"| {r['name']} | serving (largest function) | {r['per_chip_bytes'] / gib:.1f} of "
                  f"{r['hbm_bytes'] / gib:.0f} GiB | | | |")
        elif r["fits"]:
            print(f"| {r['name']} | mesh {r['mesh']}, {r['rung']} | {r['per_chip_bytes'] / gib:.1f} of "
                  f"{r['hbm_bytes'] / gib:.0f} GiB | {r['compile_seconds']:.0f} s | "
                  f"{r['modelled_step_seconds']:.2f} s | "
                  f"{100 * r['modelled_mfu']:.1f}% |")
        else:
            print(f"| {r['name']} | does not fit | | {r['compile_seconds']:.0f} s | | |")
    record.write(record.out_path(args.out, "tpu_aot"), "tpu_aot", argv,
                 device_name=f"no TPU: libtpu ahead-of-time compilation on {record.device()}", rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
