"""Subprocess body for the multi-device and multi-process training tests (not collected by pytest).

    python tests/_train_worker.py mesh FILES WORKDIR            # 1 device vs 8 simulated devices (fsdp, tensor)
    python tests/_train_worker.py proc FILES WORKDIR I N PORT    # process I of N over loopback (N=1: one process)
Prints one JSON line prefixed RESULT.
"""

import json
import os
import sys

import numpy as np

mode, files, workdir = sys.argv[1:4]
if mode == "proc":
    i, n, port = (int(a) for a in sys.argv[4:7])
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if n > 1:
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=n, process_id=i)
import jax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from samjax import train  # noqa: E402
from tests.test_train import as_iterator, fixed_batches, tiny_config  # noqa: E402


def checksum(params) -> float:
    return float(sum(np.abs(p).sum() for p in params))


def run(tag, mesh, n_proc=1, index=0):
    cfg = tiny_config(files, num_steps=3, ckpt_every=100, async_ckpt=False, log_every=1)
    cfg.data.batch_size = 8
    cfg.eval.num_images = 0
    cfg.mesh.update(mesh)
    per = cfg.data.batch_size // n_proc
    rows = slice(index * per, (index + 1) * per)
    s = train.train(cfg, os.path.join(workdir, tag), data_iter=as_iterator(fixed_batches(cfg, files, 3, rows)))
    params = jax.tree.leaves(s["state"]["params"])
    gathered = [np.asarray(jax.experimental.multihost_utils.process_allgather(p, tiled=True)) for p in params]
    return [h["loss"] for h in s["history"]], gathered


if mode == "mesh":
    assert jax.device_count() == 8, jax.devices()
    ref_loss, ref = run("one", {"data": 1, "fsdp": 1, "tensor": 1, "num_devices": 1})
    res = {"one": ref_loss, "one_checksum": checksum(ref)}
    meshes = {"fsdp8": {"data": 1, "fsdp": 8, "tensor": 1}, "d2f2t2": {"data": 2, "fsdp": 2, "tensor": 2}}
    for tag in sys.argv[4:] or ["fsdp8"]:
        loss, params = run(tag, meshes[tag])
        res[tag] = loss
        res[tag + "_mean_param_diff"] = float(np.mean([np.mean(np.abs(a - b)) for a, b in zip(ref, params)]))
    print("RESULT " + json.dumps(res), flush=True)
else:
    loss, params = run(f"proc{n}", {"data": -1, "fsdp": 1, "tensor": 1}, n, i)
    print("RESULT " + json.dumps({"loss": loss, "checksum": checksum(params)}), flush=True)
