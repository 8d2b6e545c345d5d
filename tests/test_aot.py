"""samjax.aot without a TPU: the loop-counting cost model, the out-of-memory parse, and clear errors for slices
this host cannot compile for. (The dry run itself on a TPU topology: tests/test_train_tpu_aot.py, needs libtpu.)"""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import pytest

from samjax import aot, parallel
from samjax.models import SamConfig
from samjax.training import config as training_config
from samjax.training import metrics, prompts
from samjax.training.input import batch_spec
from samjax.training.step import compiled_step


def test_loops_are_counted_with_their_trip_counts():
    """XLA's cost analysis counts a scan's body once; loop_cost counts it 5 times (and the backward pass's 5 more),
    in the optimised HLO and in the lowered one alike."""
    def f(w, x):
        return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=5)[0].sum()

    lowered = jax.jit(jax.grad(f)).lower(jnp.ones((8, 8)), jnp.ones((4, 8)))
    compiled = lowered.compile()
    expect = 3 * 5 * 2 * 4 * 8 * 8  # forward, and two products per step backward
    for source in (compiled, lowered.as_text(dialect="hlo")):
        cost = aot.loop_cost(source, "TPU v5 lite")
        assert cost.flops == expect and sorted(cost.trips.values()) == [5, 5]
        assert cost.seconds >= cost.flops / aot.PEAK_FLOPS["v5 lite"]
    assert aot.xla_cost(compiled)["flops"] < expect / 2  # what the correction is for


def test_train_step_flops_match_the_analytic_count():
    """The corrected count of a small training step (scanned encoder, the rounds after the first as a scan) is within
    10% of samjax.training.metrics' analytic model FLOPs."""
    cfg = training_config.base_config()
    mc = SamConfig(image_size=128, patch_size=16, encoder_embed_dim=128, encoder_depth=2, encoder_num_heads=4,
                   window_size=4, encoder_global_attn_indexes=(1,), prompt_embed_dim=64, mask_in_chans=8,
                   decoder_depth=2, decoder_num_heads=4, decoder_mlp_dim=256, iou_head_hidden_dim=64)
    cfg.model = mc.to_dict()
    cfg.data.update(batch_size=2, max_masks_per_image=4)
    cfg.prompts.update(num_click_rounds=2, no_click_rounds=1)
    mesh = parallel.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    _, step, abstract, _ = compiled_step(cfg, mesh)
    with jax.set_mesh(mesh):
        hlo = step.lower(abstract, batch_spec(cfg, mc, mesh)).as_text(dialect="hlo")
    pc = prompts.PromptConfig(**cfg.prompts.to_dict())
    analytic = metrics.train_flops_per_step(mc, 2, 4, pc.num_rounds, pc.num_tokens)
    cost = aot.loop_cost(hlo, "TPU v5")
    assert 0.9 < cost.flops / analytic < 1.1, (cost.flops, analytic)
    assert pc.num_rounds - 1 in cost.trips.values()  # the scan of the rounds after the first was found and counted


def test_out_of_memory_message():
    msg = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries (186.38G) "
           "exceeds available HBM (95.74G).")
    assert aot.out_of_memory_bytes(msg) == int(186.38 * 2**30)
    assert aot.out_of_memory_bytes("INVALID_ARGUMENT: something else") is None


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is not None, reason="libtpu is installed: it can compile")
def test_topologies_this_host_cannot_compile_for():
    with pytest.raises(ValueError, match="needs libtpu"):
        aot.topology_devices("v5p:4x4x4")
    with pytest.raises(ValueError, match="expects KIND:SHAPE"):
        aot.topology_devices("v5p")
    with pytest.raises(ValueError, match="CUDA PJRT plugin"):
        aot.topology_devices("h100:8")
