"""The data engine's loop end to end on a few synthetic images and a tiny SAM, through the documented commands:

    python -m samjax.annotate --images photos/ --checkpoint ckpt/sam_vit_b --out labels/       (here: in process)
    python -m samjax.data.sa1b --input labels/ --output labels_tfrecord/ --num-shards 1
    python -m samjax.train --experiment=finetune --workdir=ft_round1 --config.init.path=ckpt/sam_vit_b \\
        --config.data.train_files='labels_tfrecord/*.tfrecord' --config.optim.freeze_image_encoder=True
    python -m samjax.annotate --images photos/ --checkpoint ft_round1/model --out labels/

The training command gets, besides the documented flags, the tiny model's fields and a 2-step schedule. The
annotation server's command line itself (security defaults, token) runs with uvicorn.run replaced by a stub.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from samjax.weights import store
from tests.annotate_helpers import CFG, client, object_point, save_checkpoint, write_images

pytest.importorskip("fastapi")


def finetune_overrides() -> list[str]:
    """--config.model.* for the tiny model (the fields where it differs from the finetune experiment's ViT-B) and a
    tiny 2-step schedule on CPU."""
    from samjax.training import config as training_config

    base = training_config.load_experiment("finetune").model
    want = CFG.replace(dtype="float32").to_dict()
    model = [f"--config.model.{k}={tuple(v) if isinstance(v, (list, tuple)) else v}" for k, v in want.items()
             if (tuple(base[k]) if isinstance(base[k], (list, tuple)) else base[k]) != v]
    return model + ["--config.data.batch_size=2", "--config.data.max_masks_per_image=2", "--config.data.worker_count=0",
                    "--config.data.shuffle_window=4", "--config.data.cycle_length=1", "--config.train.num_steps=2",
                    "--config.train.log_every=1", "--config.train.ckpt_every=2", "--config.train.async_ckpt=False",
                    "--config.train.peak_flops=1e10", "--config.eval.every=0", "--config.eval.num_images=0",
                    "--config.prompts.num_click_rounds=1", "--config.prompts.no_click_rounds=0",
                    "--config.optim.warmup_steps=1", "--config.optim.decay_steps=(100,)"]


def annotate_round(app, images, annotator: str) -> None:
    c = client(app)
    for name, _, masks in images:
        doc = c.get(f"/api/images/{name}").json()
        c.post(f"/api/images/{name}/embedding")
        for k in np.argsort(-masks.reshape(len(masks), -1).sum(1))[:2]:  # the two largest objects
            pt = object_point(masks[k:k + 1])
            dec = c.post(f"/api/images/{name}/decode", json={"points": [pt], "labels": [1]}).json()
            r = c.post(f"/api/images/{name}/annotations",
                       json={"base_version": doc["version"], "points": [pt], "labels": [1],
                             "candidate": int(np.argmax(dec["scores"])), "annotator": annotator})
            assert r.status_code == 200, r.text
            doc = r.json()


def test_annotate_convert_finetune_annotate_again(tmp_path):
    from samjax import train
    from samjax.annotate.server import build_app
    from samjax.data import sa1b

    images = write_images(tmp_path / "photos", 4)
    ckpt0 = save_checkpoint(tmp_path / "ckpt0")
    labels, tf = tmp_path / "labels", tmp_path / "labels_tfrecord"

    app = build_app(tmp_path / "photos", labels, checkpoint=ckpt0)  # round 1 with the starting model
    annotate_round(app, images, "round1")
    app.app.state.engine.close()
    assert len(list(labels.glob("*.json"))) == 4 and len(list(labels.glob("*.jpg"))) == 4

    assert sa1b.main(["--input", str(labels), "--output", str(tf), "--num-shards", "1", "--no-progress"]) == 0
    made = [min(2, len(m)) for _, _, m in images]
    assert json.loads((tf / "sa1b-00000-of-00001.tfrecord.done.json").read_text())["masks"] == sum(made)

    work = tmp_path / "ft_round1"
    assert train.main(["--experiment=finetune", f"--workdir={work}", f"--config.init.path={ckpt0}",
                       f"--config.data.train_files={tf}/*.tfrecord", "--config.optim.freeze_image_encoder=True",
                       *finetune_overrides()]) == 0
    model = work / "model"
    assert store.config_from_dict(json.loads((model / "config.json").read_text())).grid_size == CFG.grid_size

    app = build_app(tmp_path / "photos", labels, checkpoint=model)  # round 2 with the fine-tuned model
    c = client(app)
    name = images[0][0]
    doc = c.get(f"/api/images/{name}").json()
    n = made[0]
    assert len(doc["doc"]["annotations"]) == n and {a["model"] for a in doc["doc"]["annotations"]} == {"ckpt0"}
    annotate_round(app, images[:1], "round2")
    doc = c.get(f"/api/images/{name}").json()["doc"]
    want = [("ckpt0", "round1")] * n + [("model", "round2")] * n
    assert [(a["model"], a["annotator"]) for a in doc["annotations"]] == want
    assert len({p.parent.name for p in (labels / ".cache" / "embeddings").rglob("*.npz")}) == 2  # one cache per model
    app.app.state.engine.close()


def test_server_command_line(tmp_path, monkeypatch, capsys):
    """`python -m samjax.annotate` as documented, uvicorn.run replaced: loopback by default; another --host gets a
    generated token, printed in the URL, and the served app requires it."""
    import uvicorn

    from samjax.annotate.server import main

    write_images(tmp_path / "photos", 1)
    ckpt = save_checkpoint(tmp_path / "ckpt")
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: served.update(app=app, host=host, port=port))
    args = ["--images", str(tmp_path / "photos"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "labels")]
    monkeypatch.delenv("SAMJAX_COMPILATION_CACHE", raising=False)
    before = jax.config.jax_compilation_cache_dir
    try:
        assert main(args) == 0
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "labels" / ".cache" / "xla")  # inside --out
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
    assert (served["host"], served["port"]) == ("127.0.0.1", 8000)
    assert "open http://127.0.0.1:8000/\n" in capsys.readouterr().out
    assert client(served["app"]).get("/api/images").status_code == 200  # no token needed on loopback
    assert main([*args, "--host", "0.0.0.0", "--port", "8765"]) == 0
    out = capsys.readouterr().out
    assert "every request needs this token" in out
    token = out.split("?token=")[1].split()[0]
    assert len(token) >= 20 and served["host"] == "0.0.0.0"
    c = client(served["app"])
    assert c.get("/api/images").status_code == 401
    assert c.get(f"/api/images?token={token}", headers={"host": "192.168.0.5:8765"}).status_code == 200
