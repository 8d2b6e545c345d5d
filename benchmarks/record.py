"""Results as data: every benchmark writes one JSON file with what was measured, where, when and by which command.

    record.add_out_argument(parser, "cpu")    # --out FILE (alias --json); default benchmarks/results/cpu.json
    record.write(record.out_path(args.out, "cpu"), "cpu", argv, rows=...)
    # -> {commit, command, device, host, versions, date, rows: ...}

One current file per benchmark (benchmarks/results/<name>.json), overwritten by each run; older runs live in git.
`commit` is `git rev-parse HEAD`, with "+dirty" when tracked files outside benchmarks/results/ differ from it (a
results file rewritten by an earlier run does not make the code dirty). `device` names the accelerator (jax's
device kind) where jax runs on one, else the CPU model and core count from /proc/cpuinfo; `host` adds the CPU,
its cores and the load average when the file was written (this project's 2-core VMs are shared).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# Versions worth knowing for a timing, recorded where the package is imported by the benchmark.
ENVIRONMENT = ("JAX_PLATFORMS", "XLA_FLAGS")  # shown before the command where set
PACKAGES = ("jax", "jaxlib", "flax", "numpy", "torch", "transformers", "segment-anything", "libtpu")


def default_path(name: str) -> Path:
    """benchmarks/results/<name>.json: the one current results file of benchmark `name`."""
    return RESULTS / f"{name}.json"


def add_out_argument(parser: argparse.ArgumentParser, name: str, check: str = "") -> None:
    """--out FILE (alias --json, the older spelling): where the results JSON goes; resolve it with out_path. `check`
    names the script's flag for a quick check (e.g. "--tiny"), whose runs write only to an explicit --out so that
    they never overwrite real figures."""
    unless = f"; {check} runs write only to an explicit --out" if check else ""
    parser.add_argument("--out", "--json", dest="out", default=None, metavar="FILE",
                        help=f"write the results as JSON here (default: benchmarks/results/{name}.json{unless})")


def out_path(out: str | None, name: str, check: bool = False) -> Path | None:
    """The results file of a run: --out as given, else default_path(name); None for a check run without --out."""
    if out:
        return Path(out)
    return None if check else default_path(name)


def commit() -> str:
    """HEAD's hash, "+dirty" if tracked files outside benchmarks/results/ are modified; "unknown" outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout

    try:
        head = git("rev-parse", "HEAD").strip()
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if changed.strip() else "")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host() -> dict:
    """CPU model, cores visible to this process, and the 1/5/15-minute load average now (None where unknown)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu": cpu_model(), "cores": cores, "load_average": load}


def device() -> str:
    """The accelerator jax runs on ("NVIDIA H100 80GB HBM3", "TPU v5 lite"), or "<CPU model>, <n> cores" where
    jax runs on the CPU or is not imported."""
    jax = sys.modules.get("jax")
    if jax is not None:
        dev = jax.devices()[0]
        if dev.platform != "cpu":
            return f"{jax.device_count()} x {dev.device_kind}" if jax.device_count() > 1 else dev.device_kind
    h = host()
    return f"{h['cpu']}, {h['cores']} cores"


def versions() -> dict:
    """Installed versions of PACKAGES this process imported (the distribution's name may differ from the module's)."""
    out = {}
    for dist in PACKAGES:
        if dist.replace("-", "_") in sys.modules:
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                pass
    return out


def command(name: str, argv: list[str] | None) -> str:
    """The command line that reproduces this run: `python -m benchmarks.<name> ARGS` (argv None: sys.argv's), after
    the ENVIRONMENT variables that change what jax runs, where set."""
    args = sys.argv[1:] if argv is None else list(argv)
    env = [f"{v}={shlex.quote(os.environ[v])}" for v in ENVIRONMENT if os.environ.get(v)]
    return " ".join([*env, "python", "-m", f"benchmarks.{name}", *(shlex.quote(a) for a in args)])


def metadata(name: str, argv: list[str] | None, device_name: str | None = None) -> dict:
    """commit, command, device, host, versions and date (UTC, ISO 8601) of a run of benchmark `name`."""
    return {"commit": commit(), "command": command(name, argv), "device": device_name or device(), "host": host(),
            "versions": versions(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def write(path: str | os.PathLike, name: str, argv: list[str] | None, *, device_name: str | None = None,
          **results) -> dict:
    """Writes metadata(...) and `results` (JSON-serialisable keyword fields) to `path` as JSON; returns the dict."""
    out = {**metadata(name, argv, device_name), **results}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=_plain) + "\n")
    print(f"wrote {path}", flush=True)
    return out


def _plain(x):
    """numpy scalars and arrays (and anything else with .tolist / .item) as plain JSON values."""
    for attr in ("tolist", "item"):
        if hasattr(x, attr):
            return getattr(x, attr)()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")
