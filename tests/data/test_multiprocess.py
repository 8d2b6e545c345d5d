"""Two simulated JAX processes (jax.distributed on localhost) read disjoint files that cover everything."""

import json
import os
import socket
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent("""
    import json, sys
    import jax
    jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
    from samjax.data.pipeline import PipelineConfig, files_for_process, make_iterator
    cfg = PipelineConfig(files=sys.argv[3], image_size=32, batch_size=1, shuffle_window=1, num_epochs=1)
    ids = [int(b["image_id"][0]) for b in make_iterator(cfg)]
    print(json.dumps({"index": jax.process_index(), "files": files_for_process(cfg), "ids": ids}))
    jax.distributed.shutdown()
""")


def test_two_processes_read_disjoint_files(tfrecord_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, f"127.0.0.1:{port}", str(i),
                               str(tfrecord_dir / "*.tfrecord")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env, text=True) for i in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(o["index"] for o in outs) == [0, 1]
    f0, f1 = (set(o["files"]) for o in outs)
    assert f0 and f1 and not f0 & f1 and len(f0 | f1) == 4
    i0, i1 = (set(o["ids"]) for o in outs)
    assert not i0 & i1 and i0 | i1 == set(range(1, 9))
