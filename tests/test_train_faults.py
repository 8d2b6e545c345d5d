"""Preemption: SIGTERM makes the CLI save a checkpoint and exit cleanly; re-running resumes from it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.subprocess_env import repo_env
from tests.test_train import tfrecords  # noqa: F401  (module fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPERIMENT = '''
import sys
sys.path.insert(0, {root!r})
from tests.test_train import tiny_config

def get_config():
    c = tiny_config({files!r}, num_steps=10000, log_every=1, ckpt_every=10000)
    c.eval.num_images = 0
    return c
'''


def test_sigterm_saves_and_exits_cleanly(tfrecords, tmp_path):  # noqa: F811
    exp = tmp_path / "exp.py"
    exp.write_text(EXPERIMENT.format(root=ROOT, files=tfrecords))
    workdir = tmp_path / "work"
    env = repo_env()
    cmd = [sys.executable, "-m", "samjax.train", f"--experiment={exp}", f"--workdir={workdir}"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines, deadline = [], time.time() + 400
    for line in p.stdout:
        lines.append(line)
        if line.startswith("step 2/"):
            p.send_signal(signal.SIGTERM)
            break
        assert time.time() < deadline, "".join(lines[-20:])
    out = "".join(lines) + p.stdout.read()
    assert p.wait(timeout=300) == 0, out[-3000:]
    assert "preempted" in out, out[-3000:]
    saved = [int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()]
    assert saved and min(saved) >= 2, saved
    assert not (workdir / "model").exists()  # a preempted run is not finished
