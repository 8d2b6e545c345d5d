"""Shared fixtures: tiny configs that together cover every constructor option, and test images."""

from __future__ import annotations

import atexit
import gc
import os
import shutil
import tempfile

import numpy as np
import pytest

# CLIs turn on JAX's persistent compilation cache (samjax.runtime); in tests it lives in a temp dir shared
# by this session's subprocesses and removed at exit (nothing is written to ~/.cache).
if "SAMJAX_COMPILATION_CACHE" not in os.environ:
    os.environ["SAMJAX_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="samjax-test-xla-cache-")
    atexit.register(shutil.rmtree, os.environ["SAMJAX_COMPILATION_CACHE"], ignore_errors=True)

# The suite is compile-bound: most of its time is XLA compiling small programs that then run for milliseconds. The
# CPU backend's LLVM code generation at -O0 compiles them faster and computes the same values: optimisation levels
# change how the code is scheduled, not the arithmetic. Subprocesses started by tests inherit it
# (tests/subprocess_env.py); a run that sets the flag itself keeps its own.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

import jax  # noqa: E402  (after XLA_FLAGS: the backend reads them when it starts)

from samjax.models import SamConfig, abstract_params  # noqa: E402

# Small configs for parity tests. Together they cover: windows that need padding (grid 8, window 3), all-global
# attention, no relative / no absolute positions, no qkv bias, mlp_ratio != 4, decoder depth 1 and 3,
# attention_downsample_rate 1, 2 multimask outputs, iou head depth 2, image sizes 64 / 96 / 128.
TINY_CONFIGS = {
    "tiny_windowed": SamConfig(image_size=64, patch_size=8, encoder_embed_dim=32, encoder_depth=2,
                               encoder_num_heads=2, window_size=3, encoder_global_attn_indexes=(1,),
                               prompt_embed_dim=32, mask_in_chans=8, decoder_depth=2, decoder_num_heads=2,
                               decoder_mlp_dim=64, iou_head_hidden_dim=32),
    "tiny_global_norel": SamConfig(image_size=96, patch_size=16, encoder_embed_dim=48, encoder_depth=3,
                                   encoder_num_heads=3, window_size=0, encoder_global_attn_indexes=(),
                                   encoder_use_rel_pos=False, encoder_qkv_bias=False, encoder_mlp_ratio=2.0,
                                   prompt_embed_dim=64, mask_in_chans=16, decoder_depth=1, decoder_num_heads=4,
                                   decoder_mlp_dim=32, attention_downsample_rate=1, num_multimask_outputs=2,
                                   iou_head_depth=2, iou_head_hidden_dim=16),
    "tiny_noabs_deep": SamConfig(image_size=128, patch_size=16, encoder_embed_dim=32, encoder_depth=4,
                                 encoder_num_heads=4, window_size=4, encoder_global_attn_indexes=(0, 3),
                                 encoder_use_abs_pos=False, prompt_embed_dim=32, mask_in_chans=4, decoder_depth=3,
                                 decoder_num_heads=2, decoder_mlp_dim=48, iou_head_hidden_dim=24),
}


def stand_in_params(config: SamConfig, scale: float = 1.0, seed: int = 0) -> dict:
    """Random numpy values (normal x scale) in the shapes and dtypes of config's parameters, without compiling the
    model's init: for tests where the shapes, or any values, are what count."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (scale * rng.standard_normal(s.shape)).astype(s.dtype), abstract_params(config))


@pytest.fixture(autouse=True, scope="module")
def _free_each_modules_programs():
    """The suite runs in one process: when a test module ends, its compiled programs and the arrays its fixtures
    held are freed (jit caches cleared, garbage collected), so XLA's executables do not pile up over the run."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(params=sorted(TINY_CONFIGS))
def tiny_config(request) -> SamConfig:
    return TINY_CONFIGS[request.param]


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photo from scikit-image's bundled data: (300, 451, 3) uint8, non-square."""
    from skimage import data

    return data.chelsea()


@pytest.fixture(scope="session")
def tall_photo() -> np.ndarray:
    """A portrait crop of a real photo: (200, 120, 3) uint8."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[40:240, 200:320])
