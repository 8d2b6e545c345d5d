"""Smoke runs of the family training experiments through samjax.training's compiled step (StepConfig.kind): HQ-SAM's
recipe (experiments/hq_finetune.py: SAM frozen, HQ layers trained with HQ's loss) and MobileSAM's distillation
(experiments/mobilesam_distill.py: TinyViT student, SAM teacher, embedding MSE), each on a tiny model for a few steps
on one synthetic batch: the loss is finite and falls, exactly the layers the recipe trains change, BatchNorm
statistics move in the student, and the exported model is served by samjax.infer. Then one run of the distillation
end to end through `samjax.train.train` (input pipeline, loop, checkpoint, export).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from samjax import infer, parallel
from samjax.models import SamConfig
from samjax.models.family_config import sam_config_for
from samjax.models.hq_sam import HQSamConfig
from samjax.models.mobile_sam import MobileSamConfig, TinyViTConfig
from samjax.training import config as config_lib
from samjax.training import objectives
from samjax.training import state as state_lib
from samjax.training.step import compiled_step
from tests.conftest import TINY_CONFIGS

TINY_HQ = HQSamConfig(TINY_CONFIGS["tiny_windowed"])
TINY_STUDENT = MobileSamConfig(
    TinyViTConfig(image_size=64, embed_dims=(16, 32, 48, 320), depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 10),
                  window_sizes=(7, 7, 14, 7), num_classes=10),
    sam_config_for(4, image_size=64, decoder_mlp_dim=64, iou_head_hidden_dim=32))
TINY_TEACHER = SamConfig(image_size=64, patch_size=16, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                         window_size=0, encoder_global_attn_indexes=(), decoder_mlp_dim=64, iou_head_hidden_dim=32)
SMALL = ["--config.data.batch_size=2", "--config.data.max_masks_per_image=2", "--config.optim.warmup_steps=0",
         "--config.optim.lr=3e-3", "--config.train.grad_accum=1"]


def experiment(name: str, model, **objective):
    cfg = config_lib.apply_overrides(config_lib.load_experiment(name), SMALL)
    cfg.model = model.to_dict()
    cfg.objective.update(objective)
    return cfg


def synthetic_batch(size: int, mask_size: int, b: int = 2, m: int = 2) -> dict:
    """Images with a bright square per mask; masks on the low-res grid, boxes in the S x S frame."""
    rng = np.random.default_rng(0)
    image = (rng.uniform(0, 60, (b, size, size, 3))).astype(np.uint8)
    masks = np.zeros((b, m, mask_size, mask_size), bool)
    boxes = np.zeros((b, m, 4), np.float32)
    r = size / mask_size
    for i in range(b):
        for j in range(m):
            y0, x0 = rng.integers(0, mask_size // 2, 2)
            h, w = rng.integers(mask_size // 4, mask_size // 2, 2)
            masks[i, j, y0:y0 + h, x0:x0 + w] = True
            image[i, int(y0 * r):int((y0 + h) * r), int(x0 * r):int((x0 + w) * r)] = 200 + 20 * j
            boxes[i, j] = [x0 * r, y0 * r, (x0 + w) * r, (y0 + h) * r]
    return {"image": image, "input_hw": np.full((b, 2), size, np.int32), "masks": masks,
            "mask_valid": np.ones((b, m), bool), "boxes": boxes}


def run_steps(cfg, n: int = 6):
    model_cfg = config_lib.model_config(cfg)
    objective = objectives.get(cfg.objective.kind)
    mesh = parallel.make_mesh(cfg.mesh.to_dict(), jax.devices()[:1])
    tx, step, _, shardings = compiled_step(cfg, mesh)
    params, model_state = objective.initial(cfg, model_cfg)
    data = objective.data_config(model_cfg)
    batch = synthetic_batch(data.image_size, data.mask_input_size)
    with jax.set_mesh(mesh):
        state = state_lib.init_state(params, tx, cfg.seed, shardings, model_state)
        first = jax.device_get(state)
        losses = []
        for _ in range(n):
            state, out = step(state, batch)
            losses.append(float(out["loss"]))
    return model_cfg, objective, first, jax.device_get(state), losses


def changed(a, b) -> dict[str, bool]:
    return {jax.tree_util.keystr(p): not np.array_equal(x, y)
            for (p, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b))}


def test_hq_finetune_trains_only_the_hq_layers():
    cfg = experiment("hq_finetune", TINY_HQ, num_points=64)
    model_cfg, objective, first, last, losses = run_steps(cfg)
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
    moved = changed(first["params"], last["params"])
    trained = {k for k, v in moved.items() if v}
    assert trained and all(any(t in k for t in ("hf_token", "hf_mlp", "compress_vit_feat", "embedding_encoder",
                                                "embedding_maskfeature")) for k in trained), sorted(trained)
    assert len(trained) == sum(jax.tree.leaves(objective.trainable(last["params"])))  # every HQ layer moved
    export_cfg, tree = objective.export(model_cfg, last["params"], last.get("model_state"))
    predictor = infer.Predictor(export_cfg, tree)
    predictor.set_image(np.zeros((40, 50, 3), np.uint8))
    assert predictor.predict(box=np.array([5, 5, 30, 30]))[0].shape == (1, 40, 50)


def test_mobilesam_distill_learns_the_teacher_embeddings():
    cfg = experiment("mobilesam_distill", TINY_STUDENT, teacher=TINY_TEACHER.to_dict())
    model_cfg, objective, first, last, losses = run_steps(cfg)
    assert np.isfinite(losses).all() and losses[-1] < 0.9 * losses[0], losses
    moved = changed(first["params"]["student"], last["params"]["student"])
    assert all(v != ("head" in k) for k, v in moved.items())  # the whole TinyViT trains, not its ImageNet head
    assert not any(changed(first["params"]["teacher"], last["params"]["teacher"]).values())
    assert any(changed(first["model_state"], last["model_state"]).values())  # BatchNorm statistics in train mode
    export_cfg, tree = objective.export(model_cfg, last["params"], last["model_state"])
    predictor = infer.Predictor(export_cfg, tree)  # a MobileSAM with the teacher's decoder
    predictor.set_image(np.zeros((40, 50, 3), np.uint8))
    assert predictor.predict(point_coords=np.array([[10, 10]]), point_labels=np.array([1]))[0].shape == (3, 40, 50)


@pytest.mark.slow
def test_distill_through_the_training_loop(tmp_path):
    """python -m samjax.train --experiment=mobilesam_distill on tiny synthetic data: the loop, its checkpoint and the
    exported MobileSAM directory."""
    from samjax import train

    cfg = experiment("mobilesam_distill", TINY_STUDENT, teacher=TINY_TEACHER.to_dict())
    cfg = config_lib.apply_overrides(cfg, ["--config.train.num_steps=3", "--config.train.log_every=1",
                                           "--config.data.synthetic.num_train=4", "--config.data.synthetic.num_eval=0",
                                           "--config.data.synthetic.height=64", "--config.data.synthetic.width=64",
                                           "--config.data.synthetic.shards=1", "--config.data.worker_count=0",
                                           "--config.train.async_ckpt=False"])
    summary = train.train(cfg, str(tmp_path / "run"))
    assert summary["step"] == 3 and np.isfinite(summary["last"]["loss"])
    predictor = infer.load(summary["model_dir"])
    assert predictor.family.NAME == "mobile_sam"
