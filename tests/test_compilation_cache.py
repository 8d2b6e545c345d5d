"""samjax.runtime.enable_compilation_cache: a second process finds the first one's compiled programs on disk."""

import os
import subprocess
import sys

from samjax import runtime

PROGRAM = """
import jax, jax.numpy as jnp
from samjax import runtime
print(runtime.enable_compilation_cache(min_compile_seconds=0.0))
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
print(float(f(jnp.ones((64, 64)))))
"""


def test_second_process_reads_the_cache(tmp_path):
    env = dict(os.environ, SAMJAX_COMPILATION_CACHE=str(tmp_path / "cache"))
    first = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, check=True)
    assert first.stdout.splitlines()[0] == str(tmp_path / "cache")
    entries = set(os.listdir(tmp_path / "cache"))
    assert any(e.startswith("jit__lambda") for e in entries), entries
    second = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, check=True)
    assert second.stdout == first.stdout
    assert set(os.listdir(tmp_path / "cache")) == entries  # nothing recompiled, nothing new written


def test_off_disables(monkeypatch):
    monkeypatch.setenv(runtime.CACHE_ENV, "off")
    assert runtime.enable_compilation_cache() is None
