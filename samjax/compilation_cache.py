"""JAX's persistent compilation cache, so a second process does not recompile the same programs.

    samjax.compilation_cache.enable()        # the CLIs and benchmarks call this first

Directory: $SAMJAX_COMPILATION_CACHE if set ("off" disables it), else ~/.cache/samjax/xla. Entries are keyed by the
program, the jax/XLA version and the device, so a stale entry is never used; deleting the directory is always safe.
"""

from __future__ import annotations

import os

import jax

ENV = "SAMJAX_COMPILATION_CACHE"
DEFAULT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "samjax", "xla")


def enable(path: str | None = None, min_compile_seconds: float = 0.5) -> str | None:
    """Turns the cache on (programs that took at least `min_compile_seconds` to compile are stored); returns the
    directory, or None when disabled."""
    path = path if path is not None else os.environ.get(ENV, DEFAULT_DIR)
    if not path or path.lower() in ("off", "0", "none"):
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
