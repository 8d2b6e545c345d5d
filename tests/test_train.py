"""Training end to end on tiny configs (CPU): loss falls, exact resume, non-finite skips, TensorBoard, CLI."""

from __future__ import annotations

import glob
import json
import os
import shutil

import grain
import jax
import numpy as np
import pytest

from samjax import parallel, train
from samjax.data.pipeline import PipelineConfig, make_iterator
from samjax.data.sa1b import convert
from samjax.data.synthetic import write_synthetic
from samjax.models import SamConfig
from samjax.training import config as training_config
from samjax.training import init as train_init
from samjax.training import stages
from samjax.training.loop import NonFiniteError

TINY_MODEL = SamConfig(image_size=32, patch_size=8, encoder_embed_dim=16, encoder_depth=2, encoder_num_heads=2,
                       window_size=2, encoder_global_attn_indexes=(1,), prompt_embed_dim=16, mask_in_chans=4,
                       decoder_depth=1, decoder_num_heads=2, decoder_mlp_dim=32, iou_head_hidden_dim=16)


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    write_synthetic(raw, 8, seed=1, size=(48, 48), num_objects=4)
    out = tmp_path_factory.mktemp("rec")
    convert([str(raw)], str(out), num_shards=2, workers=1, progress=False)
    return os.path.join(out, "*.tfrecord")


def tiny_config(files: str, **train_overrides):
    c = training_config.base_config()
    c.model = TINY_MODEL.replace(encoder_drop_path_rate=0.1).to_dict()
    c.data.update(train_files=files, eval_files=files, batch_size=4, max_masks_per_image=4, worker_count=0,
                  shuffle_window=4, cycle_length=2)
    c.optim.update(lr=1e-2, warmup_steps=2, decay_steps=(1000,), layer_decay=0.8)
    c.prompts.update(num_click_rounds=2, no_click_rounds=1)
    c.train.update(**{**dict(num_steps=4, log_every=1, ckpt_every=2, async_ckpt=True, peak_flops=1e10),
                      **train_overrides})
    c.eval.update(every=0, num_images=2, max_masks_per_image=4, batch_masks=4, clicks=(1, 2))
    return c


def fixed_batches(cfg, files: str, count: int, rows=slice(None)):
    """`count` global batches read by one pipeline reader (the same for every mesh layout), this process's `rows` of
    each, as a checkpointable grain iterator (what `train(data_iter=)` takes)."""
    mc = training_config.model_config(cfg)
    it = make_iterator(PipelineConfig(files=files, image_size=mc.image_size, mask_size=mc.mask_input_size,
                                      max_masks_per_image=cfg.data.max_masks_per_image, batch_size=cfg.data.batch_size,
                                      shuffle_window=4, process_index=0, process_count=1))
    batches = [{k: v[rows] for k, v in next(it).items()} for _ in range(count)]
    return batches


def as_iterator(batches: list[dict]):
    return iter(grain.MapDataset.source(batches).to_iter_dataset())


def _params(summary):
    return [np.asarray(x) for x in jax.tree.leaves(summary["state"]["params"])]


def test_loss_falls_and_exports(tfrecords, tmp_path):
    cfg = tiny_config(tfrecords, num_steps=30, log_every=1, ckpt_every=100)
    s = train.train(cfg, str(tmp_path / "run"))
    first = np.mean([h["loss"] for h in s["history"][:3]])
    last = np.mean([h["loss"] for h in s["history"][-3:]])
    assert last < 0.7 * first, (first, last)
    assert all(0 < h["mfu"] and h["images_per_s"] > 0 for h in s["history"])
    # exported in the samjax.infer format; evaluated; TensorBoard events written
    import samjax.infer

    samjax.infer.load(s["model_dir"])
    assert {"miou_1pt", "miou_1pt_oracle", "miou_click1", "miou_click2"} <= set(s["eval"])
    events = glob.glob(str(tmp_path / "run" / "tensorboard" / "events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/grad_norm", "train/images_per_s", "train/mfu",
            "eval/miou_1pt"} <= set(tags)
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 31))


def test_tied_decoder_qk_init_keeps_the_layout():
    cfg = training_config.base_config()
    cfg.model = TINY_MODEL.to_dict()
    plain = train_init.initial_params(cfg, TINY_MODEL)
    cfg.init.decoder_qk_gain = 4.0
    tied = train_init.initial_params(cfg, TINY_MODEL)
    # same tree, names and shapes (official checkpoints still load); only decoder q/k kernels change
    assert jax.tree.structure(plain) == jax.tree.structure(tied)
    assert jax.tree.map(np.shape, plain) == jax.tree.map(np.shape, tied)
    attn = tied["mask_decoder"]["transformer"]["layers_0"]["cross_attn_token_to_image"]
    ref = plain["mask_decoder"]["transformer"]["layers_0"]["cross_attn_token_to_image"]
    np.testing.assert_array_equal(attn["k_proj"]["kernel"], attn["q_proj"]["kernel"])
    np.testing.assert_allclose(attn["q_proj"]["kernel"], 2.0 * ref["q_proj"]["kernel"], rtol=1e-6)
    np.testing.assert_array_equal(attn["v_proj"]["kernel"], ref["v_proj"]["kernel"])
    np.testing.assert_array_equal(tied["image_encoder"]["patch_embed"]["proj"]["kernel"],
                                  plain["image_encoder"]["patch_embed"]["proj"]["kernel"])
    assert not np.array_equal(ref["k_proj"]["kernel"], ref["q_proj"]["kernel"])  # gain 0: untouched


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_is_bit_identical(tfrecords, tmp_path, optimizer):
    cfg = tiny_config(tfrecords, num_steps=4)
    cfg.optim.kind = optimizer  # muon: its state is partitioned (Muon momenta and Adam moments, masked trees)
    whole = train.train(cfg, str(tmp_path / "a"))
    # an "interrupted" run: the same workdir as it was after step 2
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "4")
    resumed = train.train(cfg, str(tmp_path / "b"))
    assert int(resumed["state"]["step"]) == 4
    for a, b in zip(_params(whole), _params(resumed)):
        np.testing.assert_array_equal(a, b)
    assert whole["last"]["loss"] == resumed["last"]["loss"]
    assert sorted(os.listdir(tmp_path / "b" / "checkpoints")) == ["2", "4"]
    if optimizer != "adamw":
        return
    # resuming with another input-pipeline layout (a grain worker process) is refused with a clear message
    other = tiny_config(tfrecords, num_steps=6)
    other.data.worker_count = 1
    with pytest.raises(ValueError, match="worker_count"):
        train.train(other, str(tmp_path / "b"))


def test_low_res_stage_then_the_grown_model(tfrecords, tmp_path):
    from samjax.weights.resolution import grow_params
    from samjax.weights.store import load_model

    cfg = tiny_config(tfrecords, num_steps=0)
    cfg.low_res.update(image_size=(16,), num_steps=(3,), lr=(2e-2,))
    s = train.train(cfg, str(tmp_path / "run"))
    assert s["low_res"]["stopped"] == "done" and s["low_res"]["step"] == 3
    low_cfg, low = load_model(tmp_path / "run" / "low_res" / "model")
    assert low_cfg.image_size == 16 and low["image_encoder"]["pos_embed"].shape == (1, 2, 2, 16)
    # the main stage starts from the stage's parameters, position tables grown (0 steps: exported as it started)
    main_cfg, start = load_model(s["model_dir"])
    assert main_cfg.image_size == 32
    for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(grow_params(low, low_cfg, main_cfg))):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(start["mask_decoder"]["iou_token"]["embedding"],
                              train_init.initial_params(cfg, main_cfg)["mask_decoder"]["iou_token"]["embedding"])
    # the stage ran with its own lr, held after the warmup (no decay), and without eval
    with open(tmp_path / "run" / "low_res" / "config.json") as f:
        stage = json.load(f)
    assert stage["optim"]["lr"] == 2e-2 and not stage["optim"]["decay_steps"] and stage["model"]["image_size"] == 16
    assert not (tmp_path / "run" / "low_res" / "eval.json").exists()
    # re-running (here with 2 main steps) skips the finished stage and trains the main one from the grown params
    mtime = os.path.getmtime(tmp_path / "run" / "low_res" / "done.json")
    cfg.train.num_steps = 2
    resumed = train.train(cfg, str(tmp_path / "run"))
    assert int(resumed["state"]["step"]) == 2 and resumed["low_res"]["step"] == 3
    assert os.path.getmtime(tmp_path / "run" / "low_res" / "done.json") == mtime
    assert sorted(os.listdir(tmp_path / "run" / "low_res" / "checkpoints")) == ["2", "3"]
    cfg.low_res.image_size = (20,)  # not a multiple of the 8 px patches: refused before anything trains
    with pytest.raises(ValueError, match="multiples of patch_size 8"):
        train.train(cfg, str(tmp_path / "bad"))
    assert not os.path.exists(tmp_path / "bad" / "low_res")


def test_two_low_res_stages_each_from_the_one_before(tfrecords, tmp_path):
    """low_res (16, 24) before 32 px: 16 px in WORKDIR/low_res/low_res, 24 px in WORKDIR/low_res, each stage (and the
    main one) starting from the stage before it, grown; each with its own lr and step count."""
    from samjax.weights.resolution import grow_params
    from samjax.weights.store import load_model

    cfg = tiny_config(tfrecords, num_steps=0)
    cfg.low_res.update(image_size=(16, 24), num_steps=(2, 1), lr=(2e-2, 1e-2))
    s = train.train(cfg, str(tmp_path / "run"))
    outer, inner = tmp_path / "run" / "low_res", tmp_path / "run" / "low_res" / "low_res"
    assert s["low_res"]["stopped"] == "done" and s["low_res"]["step"] == 1 and s["low_res"]["image_size"] == 24
    assert json.loads((inner / "done.json").read_text())["step"] == 2
    for d, size, lr, steps in ((inner, 16, 2e-2, 2), (outer, 24, 1e-2, 1)):
        c = json.loads((d / "config.json").read_text())
        assert (c["model"]["image_size"], c["optim"]["lr"], c["train"]["num_steps"]) == (size, lr, steps)
    inner_cfg, first = load_model(inner / "model")
    outer_cfg, second = load_model(outer / "model")
    main_cfg, start = load_model(s["model_dir"])
    assert (inner_cfg.image_size, outer_cfg.image_size, main_cfg.image_size) == (16, 24, 32)
    # the 24 px stage trained (1 step) from the grown 16 px parameters; the main stage starts from the grown 24 px ones
    assert not np.array_equal(second["mask_decoder"]["iou_token"]["embedding"],
                              grow_params(first, inner_cfg, outer_cfg)["mask_decoder"]["iou_token"]["embedding"])
    for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(grow_params(second, outer_cfg, main_cfg))):
        np.testing.assert_array_equal(a, b)
    for bad, match in (({"image_size": (24, 16)}, "increasing"), ({"lr": (1e-2,)}, "low_res.lr must be empty or one"),
                       ({"image_size": (16, 32)}, "below model.image_size 32")):
        other = tiny_config(tfrecords, num_steps=0)
        other.low_res.update(dict({"image_size": (16, 24)}, **bad))
        with pytest.raises(ValueError, match=match):
            train.train(other, str(tmp_path / "bad"))


def test_nonfinite_steps_are_skipped_then_abort(tfrecords, tmp_path):
    """Corrupt batches (NaN boxes; every first prompt a box) make their steps' loss NaN: the update is skipped and
    counted, later steps train on; too many in a row stop the run with NonFiniteError."""
    cfg = tiny_config(tfrecords, num_steps=3)
    cfg.prompts.box_prob = 1.0
    batches = fixed_batches(cfg, tfrecords, 6)
    poisoned = [dict(b, boxes=np.full_like(b["boxes"], np.nan)) for b in batches]
    s = train.train(cfg, str(tmp_path / "skip"), data_iter=as_iterator([batches[0], poisoned[1], batches[2]]))
    assert int(s["state"]["nonfinite"]) == 1 and int(s["state"]["streak"]) == 0
    assert [h["finite"] for h in s["history"]] == [1.0, 0.0, 1.0]
    assert np.all([np.isfinite(p).all() for p in _params(s)])
    cfg.train.update(num_steps=6, max_nonfinite_in_row=2)
    with pytest.raises(NonFiniteError, match="2 consecutive"):
        train.train(cfg, str(tmp_path / "abort"), data_iter=as_iterator([batches[0], *poisoned[1:]]))


def test_overrides_and_experiments():
    c = training_config.load_experiment("tiny_synthetic")
    c = training_config.apply_overrides(c, ["--config.optim.lr=1e-4", "--config.model.encoder_global_attn_indexes=(1,)",
                                   "--config.train.async_ckpt=false", "--config.data.train_files=/x/*.tfrecord",
                                   "--config.optim.warmup_steps=7", "--config.optim.decay_steps=(5,9)"])
    assert c.optim.lr == 1e-4 and c.train.async_ckpt is False and c.data.train_files == "/x/*.tfrecord"
    assert training_config.model_config(c).encoder_global_attn_indexes == (1,) and c.optim.decay_steps == (5, 9)
    with pytest.raises(ValueError, match="no field 'nope' in config.optim"):
        training_config.apply_overrides(c, ["--config.optim.nope=1"])
    with pytest.raises(ValueError, match="num_steps=abc"):
        training_config.apply_overrides(c, ["--config.train.num_steps=abc"])
    rules = training_config.apply_overrides(c, ['--config.mesh.rules=(("embed","tensor"),("mlp",None))'])
    assert training_config.sharding_rules(rules) == (("embed", "tensor"), ("mlp", None))
    assert training_config.sharding_rules(c) == parallel.DEFAULT_RULES
    with pytest.raises(ValueError, match="not in samjax.parallel's vocabulary"):
        training_config.sharding_rules(training_config.apply_overrides(c, ['--config.mesh.rules=(("embd","fsdp"),)']))
    vith, vitl, vitb = (training_config.load_experiment(n) for n in ("sa1b_vith", "sa1b_vitl", "sa1b_vitb"))
    assert (vith.optim.lr, vitl.optim.lr, vitb.optim.lr) == (8e-4, 4e-4, 8e-4)
    assert (vith.optim.layer_decay, vitl.optim.layer_decay, vitb.optim.layer_decay) == (0.8, 0.8, 0.6)
    assert (vith.model.encoder_drop_path_rate, vitb.model.encoder_drop_path_rate) == (0.4, 0.6)
    assert (vith.data.batch_size, vitl.data.batch_size, vitb.data.batch_size) == (256, 128, 128)
    assert vith.train.num_steps == 90000 and tuple(vith.optim.decay_steps) == (60000, 86666)
    assert vitl.train.num_steps == 180000 and tuple(vitl.optim.decay_steps) == (120000, 173332)
    assert vith.optim.warmup_steps == 250 and vith.data.max_masks_per_image == 64
    assert training_config.model_config(vith).encoder_embed_dim == 1280
    for paper in (vith, vitl, vitb):  # tiny_synthetic's deviations stay in its own file
        assert (paper.prompts.num_click_rounds, paper.prompts.no_click_rounds, paper.prompts.box_prob) == (8, 2, 0.5)
        assert (paper.loss.focal_weight, paper.loss.dice_weight, paper.loss.iou_weight) == (20.0, 1.0, 1.0)
    ft = training_config.load_experiment("finetune")
    assert ft.init.kind == "sam"
    # progressive resizing from the command line: a tuple per field, a bare number is one stage, 0 is none
    tiny = training_config.load_experiment("tiny_synthetic")
    assert [st["image_size"] for st in stages.low_res_stages(tiny)] == [64, 96] and not stages.low_res_stages(vith)
    one = training_config.apply_overrides(tiny, ["--config.low_res.image_size=64", "--config.low_res.num_steps=300"])
    assert stages.low_res_stages(one) == [{"image_size": 64, "max_seconds": 0, "num_steps": 300, "lr": 0}]
    assert stages.low_res_stages(training_config.apply_overrides(tiny, ["--config.low_res.image_size=0"])) == []
    with pytest.raises(FileNotFoundError, match="tiny_synthetic"):
        training_config.load_experiment("no_such_experiment")
