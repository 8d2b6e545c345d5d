"""Ahead-of-time compile of the ViT-H train step for a TPU v5p slice, without TPU hardware.

Needs libtpu, which must not be installed in the CPU test environment; run it in a separate one, e.g.

    python -m venv /tmp/tpuvenv && /tmp/tpuvenv/bin/pip install -e ".[tpu,dev]"
    JAX_PLATFORMS=cpu /tmp/tpuvenv/bin/python -m pytest -m tpu_aot tests/test_train_tpu_aot.py -s

SAMJAX_AOT_TOPOLOGY (default v5p:4x4x4, 64 chips) and SAMJAX_AOT_MESH (default "8,8,1": data, fsdp, tensor) pick
the slice; the paper's global batch of 256 images x 64 masks is spread over it. Prints per-chip memory and the
cost model's step time; asserts the step fits a v5p chip's 95 GiB of HBM.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = pytest.mark.tpu_aot
pytest.importorskip("libtpu")

V5P_HBM = 95 * 2**30


def test_vith_train_step_compiles_and_fits_v5p():
    import jax
    from jax.experimental import topologies
    from jax.sharding import NamedSharding, PartitionSpec as P

    from benchmarks.tpu_aot import bytes_in_use, cost
    from samjax import train
    from samjax.training import config as training_config
    from samjax.models import attention

    topo = topologies.get_topology_desc(topology_name=os.environ.get("SAMJAX_AOT_TOPOLOGY", "v5p:4x4x4"),
                                        platform="tpu")
    shape = tuple(int(s) for s in os.environ.get("SAMJAX_AOT_MESH", "8,8,1").split(","))
    mesh = jax.sharding.Mesh(np.asarray(topo.devices).reshape(shape), parallel.MESH_AXES,
                             axis_types=(jax.sharding.AxisType.Auto,) * 3)
    cfg = training_config.load_experiment("sa1b_vith")
    cfg.model.encoder_remat = True
    cfg.prompts.remat_rounds = True
    mc = training_config.model_config(cfg)
    tx, step, abstract, _ = train.compiled_step(cfg, mc, mesh)  # eager setup runs on CPU (JAX_PLATFORMS=cpu)
    with jax.set_mesh(mesh), attention.for_platform("tpu"):  # `auto` resolved as on a TPU host
        nan = jax.ShapeDtypeStruct((8,), np.int32, sharding=NamedSharding(mesh, P()))
        compiled = step.lower(abstract, train.batch_spec(cfg, mc, mesh), nan).compile()
    per_chip = bytes_in_use(compiled)
    est, flops, _, _ = cost(compiled, "v5p")
    temp = compiled.memory_analysis().temp_size_in_bytes
    print(f"\nper-chip memory {per_chip / 2**30:.1f} GiB (temp {temp / 2**30:.1f}); cost model: {flops / 1e12:.1f} TFLOP per chip "
          f"(loop bodies counted once), estimated step {est:.3f} s")
    assert per_chip < V5P_HBM
