"""Sharded and multi-process training equal single-device training (subprocesses; CPU)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.subprocess_env import repo_env
from tests.test_train import tfrecords  # noqa: F401  (module fixture)

WORKER = os.path.join(os.path.dirname(__file__), "_train_worker.py")


def _result(out: str) -> dict:
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, out[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def mesh_run(tfrecords, tmp_path_factory):  # noqa: F811
    """One worker process with 8 simulated devices: the single-device run ("one") and the fsdp8 run of the same
    global batches. "one" is also the reference of the two-process test (the same computation on one device)."""
    workdir = tmp_path_factory.mktemp("mesh")
    p = subprocess.run([sys.executable, WORKER, "mesh", tfrecords, str(workdir)], capture_output=True, text=True,
                       env=repo_env(device_count=8), timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return _result(p.stdout)


def test_fsdp_8_devices_equals_1_device(mesh_run):
    r = mesh_run
    # the loss of every step (each after the previous updates) matches; parameters agree up to float
    # reassociation, which Adam's normalised first steps can amplify for near-zero gradients, hence the mean
    assert r["fsdp8"] == pytest.approx(r["one"], rel=1e-5), r
    assert r["fsdp8_mean_param_diff"] < 1e-4, r


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tfrecords, mesh_run, tmp_path):  # noqa: F811
    """2 processes over loopback, each feeding half of every global batch, against the one-device run of the same
    batches (mesh_run's "one")."""
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, WORKER, "proc", tfrecords, str(tmp_path / "two"), str(i), "2",
                               str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=repo_env())
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out[-2000:] + err[-4000:]
    r0, r1 = _result(outs[0][0]), _result(outs[1][0])
    assert r0["loss"] == pytest.approx(mesh_run["one"], rel=1e-5) and r1["loss"] == pytest.approx(r0["loss"])
    assert r0["checksum"] == pytest.approx(mesh_run["one_checksum"], rel=1e-5)
