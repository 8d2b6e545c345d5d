"""Where samjax runs: one line describing the JAX runtime, a clear exit when the accelerator is taken, and JAX's
persistent compilation cache.

    from samjax import runtime
    print(runtime.describe())      # "TPU: 1 x TPU v5 lite (jax 0.10.2)" / "GPU: ..." / "CPU: ... no accelerator"
    runtime.check_devices()        # at a CLI's start: a TPU held by another process -> one line, exit code 2

libtpu lets one process own the TPU. A second one fails when JAX first touches the devices, with a RuntimeError
like "Unable to initialize backend 'tpu': ABORTED: The TPU is already in use by process with pid 1234" or
"TPU initialization failed: open(/dev/accel0): Device or resource busy". A notebook kernel left running is the
usual holder. `check_devices` turns that into one line naming the process and how to free the chip.

Compilation cache: $SAMJAX_COMPILATION_CACHE if set ("off" disables it), else ~/.cache/samjax/xla, so a second
process does not recompile the same programs. Entries are keyed by the program, the jax/XLA version and the device,
so a stale entry is never used; deleting the directory is always safe.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys

import jax

CACHE_ENV = "SAMJAX_COMPILATION_CACHE"
CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "samjax", "xla")

# Substrings of the errors libtpu / JAX raise when another process holds the TPU (case-insensitive).
_TPU_BUSY = ("already in use", "tpu initialization failed", "/dev/accel", "/dev/vfio", "device or resource busy")


def accelerator_busy_message(error_text: str) -> str | None:
    """One line saying what to do when `error_text` is libtpu's "TPU in use" error; None for any other error."""
    low = error_text.lower()
    if not any(s in low for s in _TPU_BUSY):
        return None
    pid = re.search(r"pid[ =:]*(\d+)", error_text)
    who = f"process {pid.group(1)}" if pid else "another process (often a notebook kernel or an earlier run)"
    kill = f"`kill {pid.group(1)}`" if pid else "kill it"
    return (f"the TPU is in use by {who}: find the holder with `sudo lsof -w /dev/accel*` (or /dev/vfio/*), stop it "
            f"({kill}, or restart that notebook's runtime), then run this again")


@contextlib.contextmanager
def accelerator_errors():
    """Inside: libtpu's "TPU in use" RuntimeError becomes one line on stderr and exit code 2; others pass."""
    try:
        yield
    except RuntimeError as e:
        line = accelerator_busy_message(str(e))
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        raise SystemExit(2) from None


def check_devices():
    """jax.devices(), or exit with one line (code 2) when the TPU is held by another process. CLIs call it before
    their first use of JAX (after jax.distributed.initialize where there is one). Also turns on the persistent
    compilation cache."""
    enable_compilation_cache()  # a second run of the same CLI does not recompile
    with accelerator_errors():
        return jax.devices()


def describe() -> str:
    """One line: the platform JAX runs on, its devices and the JAX version; says so when there is no accelerator."""
    devices = check_devices()
    platform = devices[0].platform
    kinds = sorted({d.device_kind for d in devices})
    where = f"{len(devices)} x {', '.join(kinds)}"
    if jax.process_count() > 1:
        where += f" over {jax.process_count()} hosts"
    if platform == "cpu":
        return (f"CPU: {os.cpu_count()} cores, no accelerator (jax {jax.__version__}); everything works, slowly. "
                "In Colab: Runtime > Change runtime type > TPU or GPU.")
    return f"{platform.upper()}: {where} (jax {jax.__version__})"


def enable_compilation_cache(path: str | None = None, min_compile_seconds: float = 0.5) -> str | None:
    """Turns JAX's persistent compilation cache on (programs that took at least `min_compile_seconds` to compile are
    stored); returns the directory, or None when disabled."""
    path = path if path is not None else os.environ.get(CACHE_ENV, CACHE_DIR)
    if not path or path.lower() in ("off", "0", "none"):
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


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
