"""This checkout's training step against another commit's, side by side in one run.

    python -m benchmarks.vs_commit --base 4d3f357                       # sa1b_vitb's decoder at its real size
    python -m benchmarks.vs_commit --base 4d3f357 --encoder real --masks 8 --pairs 2   # the whole ViT-B step

Two worker processes, one per tree (the base commit is unpacked with `git archive` into a temporary directory;
both import their own `samjax` and `benchmarks.device`, and run in this interpreter's environment), each build
the experiment's step for one device with the same overrides, the same synthetic batch (benchmarks.device) and
their own random parameters. They compile one after the other (lowering and compile seconds are reported: the
compile-time comparison), then the driver calls them in ABBA order, one step at a time, so the machine's mood
falls on both alike, and prints each pair's ratio and the median ratio.

`--encoder cheap` (default) keeps the image side at its real size (1024 px input, 64x64x256 embedding) but makes the
encoder one global block of width 256: the step's time is then the prompt simulation's (the 11 rounds of prompt
encoder + mask decoder for every mask), which is what the training-step issue's CPU target measures. `--encoder
real` is the experiment's ViT as configured. Prompt rounds are rematerialised in both trees (without it the base
step at 64 masks needs ~85 GiB per image). Results go to benchmarks/results/vs_commit.json (--out), with
benchmarks.record's commit, command, device and date, and the base commit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from benchmarks import record
except ImportError:  # a worker in a base tree older than benchmarks/record.py (workers never use it)
    record = None

ROOT = Path(__file__).resolve().parents[1]
CHEAP_ENCODER = {"encoder_depth": 1, "encoder_embed_dim": 256, "encoder_num_heads": 4,
                 "encoder_global_attn_indexes": (0,), "encoder_drop_path_rate": 0.0}


def worker(args) -> None:
    """Runs in one tree: builds the step, says `ready`, then answers each `step` line with its time and loss."""
    import jax
    import numpy as np

    from benchmarks.device import host_params, train_step_inputs
    try:  # this layout
        from samjax.parallel import make_mesh
        from samjax.training import config as experiments
    except ImportError:  # the layout before samjax.training (e.g. 4d3f357)
        from samjax import experiment as experiments
        from samjax.train_state import make_mesh

    cfg = experiments.load_experiment(args.experiment)
    cfg.data.batch_size = args.images
    cfg.data.max_masks_per_image = args.masks
    cfg.prompts.remat_rounds = True
    if args.encoder == "cheap":
        cfg.model.update(CHEAP_ENCODER)
    mc = experiments.model_config(cfg)
    mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    step, state, inputs = train_step_inputs(cfg, mc, mesh, host_params(mc), cfg.seed)
    t = time.perf_counter()
    with jax.set_mesh(mesh):
        lowered = step.lower(state, *inputs)
    lower_s = time.perf_counter() - t
    t = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t
    dev = jax.devices()[0]
    print(json.dumps({"ready": True, "lower_s": lower_s, "compile_s": compile_s,
                      "device": dev.device_kind if dev.platform != "cpu" else None}), flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        t = time.perf_counter()
        with jax.set_mesh(mesh):
            state, out = compiled(state, *inputs)
            out = jax.block_until_ready(out)
        ms = (time.perf_counter() - t) * 1e3
        loss = float(np.asarray(out["loss"])) if isinstance(out, dict) and "loss" in out else float("nan")
        print(json.dumps({"ms": ms, "loss": loss}), flush=True)


class Worker:
    """A worker process in `tree`, spoken to line by line."""

    def __init__(self, name: str, tree: Path, argv: list[str]):
        env = {**os.environ, "PYTHONPATH": str(tree), "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
        self.name = name
        run = f"import runpy; runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')"
        # -c, not the file: sys.path[0] is then the tree, not benchmarks/ (whose profile.py would shadow the stdlib's)
        self.proc = subprocess.Popen([sys.executable, "-c", run, "--worker", *argv], cwd=tree,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker exited with {self.proc.wait()} (its stderr is above)")
        return json.loads(line)

    def step(self) -> dict:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def resolve(revision: str) -> str:
    """The full hash of the commit `revision` names in this repository; ValueError if it names none."""
    try:
        return git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    except subprocess.CalledProcessError:
        raise ValueError(f"--base {revision!r} names no commit of this repository ({ROOT})") from None


def unpack(full: str, into: Path) -> None:
    """The tree of commit `full` written into `into` (git archive)."""
    archive = subprocess.run(["git", "archive", full], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base", required=True, help="the commit to compare against (any git revision)")
    p.add_argument("--experiment", default="sa1b_vitb")
    p.add_argument("--images", type=int, default=1, help="images per step")
    p.add_argument("--masks", type=int, default=64, help="masks per image")
    p.add_argument("--encoder", choices=("cheap", "real"), default="cheap")
    p.add_argument("--pairs", type=int, default=3, help="timed ABBA pairs (after one warm-up call each)")
    if record is not None:  # None only in a worker of a base tree that predates it
        record.add_out_argument(p, "vs_commit")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    shared = ["--base", args.base, "--experiment", args.experiment, "--images", str(args.images), "--masks",
              str(args.masks), "--encoder", args.encoder]
    if args.worker:
        return worker(args)
    if args.pairs < 1:
        p.error(f"--pairs must be at least 1, got {args.pairs}")
    try:
        base_commit = resolve(args.base)
    except ValueError as e:
        p.error(str(e))

    with tempfile.TemporaryDirectory(prefix="samjax-base-") as tmp:
        unpack(base_commit, Path(tmp))
        workers = {}
        try:
            compile_info = {}
            for name, tree in (("head", ROOT), ("base", Path(tmp))):  # one compile at a time
                workers[name] = Worker(name, tree, shared)
                compile_info[name] = workers[name].read()
                print(f"{name}: lowered in {compile_info[name]['lower_s']:.1f} s, compiled in "
                      f"{compile_info[name]['compile_s']:.1f} s", flush=True)
            for name, w in workers.items():
                warm = w.step()
                print(f"{name}: warm-up step {warm['ms']:.0f} ms, loss {warm['loss']:.4f}", flush=True)
            times = {"head": [], "base": []}
            for i in range(args.pairs):
                order = ("head", "base") if i % 2 == 0 else ("base", "head")
                for name in order:
                    times[name].append(workers[name].step()["ms"])
                print(f"pair {i + 1}: head {times['head'][-1]:.0f} ms, base {times['base'][-1]:.0f} ms, "
                      f"base / head {times['base'][-1] / times['head'][-1]:.2f}", flush=True)
        finally:
            for w in workers.values():
                w.close()
    ratios = [b / h for b, h in zip(times["base"], times["head"])]
    result = {"base_commit": base_commit, "config": vars(args) | {"worker": None},
              "head_ms": times["head"], "base_ms": times["base"], "speedup_per_pair": ratios,
              "median_speedup": statistics.median(ratios),
              "compile_s": {k: v["compile_s"] for k, v in compile_info.items()},
              "lower_s": {k: v["lower_s"] for k, v in compile_info.items()},
              "compile_speedup": compile_info["base"]["compile_s"] / compile_info["head"]["compile_s"]}
    print(f"step: base / head = {result['median_speedup']:.2f}x (median of {args.pairs} pairs; "
          f"head {statistics.median(times['head']):.0f} ms, base {statistics.median(times['base']):.0f} ms); "
          f"compile: base / head = {result['compile_speedup']:.2f}x")
    return record.write(record.out_path(args.out, "vs_commit"), "vs_commit", argv,
                        device_name=compile_info["head"].get("device"), **result)


if __name__ == "__main__":
    main()
