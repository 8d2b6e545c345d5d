"""The environment of a Python subprocess started by a test: this process's, with the repository first on PYTHONPATH
and XLA's flags kept (the suite's, see conftest), a host device count replaced by the one asked for, if any."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def repo_env(device_count: int | None = None) -> dict[str, str]:
    """os.environ + PYTHONPATH=ROOT:... ; device_count: XLA:CPU simulates that many devices (else whatever XLA_FLAGS
    said about it is dropped: the subprocess sees one)."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    if device_count:
        flags.append(f"--xla_force_host_platform_device_count={device_count}")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "XLA_FLAGS": " ".join(flags)}
