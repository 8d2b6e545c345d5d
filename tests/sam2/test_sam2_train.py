"""SAM 2 image-level fine-tuning (the "sam2" objective): experiments/sam2_finetune.py through samjax.train on a tiny
SAM 2 (every module, tests/sam2/tiny.py) and synthetic SA-1B data; the object-score loss of the prompt simulation;
SAM 2's parameters in the optimizer's layer-wise decay and freezing."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samjax.infer
from samjax import train
from samjax.data.sa1b import convert
from samjax.data.synthetic import write_synthetic
from samjax.models import sam2 as S
from samjax.training import config as training_config
from samjax.training import objectives, optim, prompts
from samjax.weights import store
from tests.sam2.tiny import TINY, stand_in_params


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    write_synthetic(raw, 4, seed=2, size=(48, 64), num_objects=3)
    out = tmp_path_factory.mktemp("rec")
    convert([str(raw)], str(out), num_shards=1, workers=1, progress=False)
    return os.path.join(out, "*.tfrecord")


def test_finetune_experiment_runs_and_exports_a_sam2_model(tfrecords, tmp_path):
    """The experiment as shipped (SAM 2.1's loss weights and optimizer), made tiny: 3 steps from a samjax SAM 2
    directory; the loss is finite, the parameters move, the exported model loads as a Sam2Predictor."""
    cfg = training_config.load_experiment("sam2_finetune")
    assert isinstance(training_config.model_config(cfg), S.Sam2Config)
    assert isinstance(objectives.get(cfg.objective.kind), objectives.Sam2Objective)
    assert (cfg.loss.iou_loss, cfg.loss.choose_by, cfg.loss.object_score_weight) == ("l1", "mask", 1.0)
    init = jax.tree.map(np.asarray, stand_in_params(TINY))
    store.save_model(tmp_path / "init", init, TINY)
    cfg.model = store.config_to_dict(TINY.replace(drop_path_rate=0.1))
    cfg.init.path = str(tmp_path / "init")
    cfg.data.update(train_files=tfrecords, batch_size=2, max_masks_per_image=2, worker_count=0, shuffle_window=2,
                    cycle_length=1)
    cfg.prompts.update(num_click_rounds=1, no_click_rounds=1)
    cfg.optim.update(lr=1e-3, warmup_steps=1)
    cfg.train.update(num_steps=3, log_every=1, ckpt_every=3, async_ckpt=False)
    s = train.train(cfg, str(tmp_path / "run"))
    assert s["stopped"] == "done" and len(s["history"]) == 3
    assert all(np.isfinite(h["loss"]) and h["finite"] for h in s["history"])
    predictor = samjax.infer.load(s["model_dir"])
    assert isinstance(predictor, samjax.infer.Sam2Predictor)
    assert predictor.config.drop_path_rate == 0.0 and predictor.config.image_size == 64
    moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), jax.device_get(predictor.params), init)
    assert moved["sam_mask_decoder"]["pred_obj_score_head"]["layers_1"]["kernel"]  # the object-score loss trains
    assert moved["image_encoder"]["trunk"]["blocks_0"]["mlp"]["layers_0"]["kernel"]
    assert not moved["sam_prompt_encoder"]["pe_layer"]["positional_encoding_gaussian_matrix"]  # a buffer, frozen
    assert not any(jax.tree.leaves(moved["memory_attention"]))  # off the image path: frozen (no weight decay)
    assert not any(jax.tree.leaves(moved["obj_ptr_proj"]))


def test_object_score_loss_in_the_prompt_simulation():
    """A decode with a third output (object score logits) adds weight x BCE(score, mask present) per round, and
    keeps the mask / IoU losses only where the target mask is present."""
    rng = np.random.default_rng(0)
    p, m = 4, 8
    masks = jnp.asarray(rng.random((p, m, m)) > 0.6).at[3].set(False)  # the last target is empty
    boxes = jnp.tile(jnp.array([[2.0, 2.0, 6.0, 6.0]]), (p, 1))
    logits = jnp.asarray(rng.standard_normal((p, 4, m, m)), jnp.float32)
    iou = jnp.asarray(rng.random((p, 4)), jnp.float32)
    scores = jnp.array([[2.0], [-1.0], [0.5], [3.0]])
    cfg = prompts.PromptConfig(num_click_rounds=1, no_click_rounds=0)
    key = jax.random.key(0)

    def run(outs, valid=(1, 1, 1, 1), **loss):
        single = tuple(o[:, :1] for o in outs[:2]) + tuple(outs[2:])  # rounds 1..: the single-mask output
        sim = jax.jit(lambda outs, single, valid: prompts.simulate(lambda *_: outs, lambda *_: single, masks, boxes,
                                                                   valid, key, 32, cfg, loss)[0])
        return float(sim(outs, single, jnp.asarray(valid, bool)))

    present = np.array([1, 1, 1, 0], np.float32)
    bce = np.log1p(np.exp(-np.asarray(scores)[:, 0] * (2 * present - 1)))
    only_scores = run((logits, iou, scores), object_score_weight=2.0, focal_weight=0.0, dice_weight=0.0,
                      iou_weight=0.0)
    assert only_scores == pytest.approx(2.0 * bce.mean(), rel=1e-5)
    # weight 0: the empty target's mask and IoU losses are dropped (the mean is still over the 4 valid masks)
    assert run((logits, iou, scores), object_score_weight=0.0) == pytest.approx(
        0.75 * run((logits, iou), valid=(1, 1, 1, 0)), rel=1e-5)
    assert run((logits, iou, scores)) != pytest.approx(run((logits, iou)))


def test_sam2_parameters_in_the_optimizer():
    """Hiera's blocks get their own layer ids (layer-wise decay), its embeddings id 0, the neck and heads the top;
    the prompt encoder's Fourier matrix is frozen; freeze_image_encoder covers trunk and neck."""
    params = S.abstract_params(TINY)
    objective = objectives.get("sam2")
    depth = objective.encoder_depth(TINY)
    assert depth == 4
    ids = {"/".join(optim._names(path)): optim.layer_id(optim._names(path), depth)
           for path, _ in jax.tree_util.tree_leaves_with_path(params)}
    assert ids["image_encoder/trunk/patch_embed/proj/kernel"] == 0 and ids["image_encoder/trunk/pos_embed"] == 0
    assert ids["image_encoder/trunk/blocks_2/mlp/layers_0/kernel"] == 3
    assert ids["image_encoder/neck/convs_0/conv/kernel"] == depth + 1 == ids["sam_mask_decoder/iou_token/embedding"]
    mult = optim.lr_multipliers(params, depth, 0.9, freeze_image_encoder=True)
    assert mult["sam_prompt_encoder"]["pe_layer"]["positional_encoding_gaussian_matrix"] == 0.0
    assert mult["image_encoder"]["neck"]["convs_0"]["conv"]["kernel"] == 0.0
    assert mult["memory_encoder"]["pix_feat_proj"]["kernel"] == 1.0
    assert not optim.decay_mask(params)["image_encoder"]["trunk"]["pos_embed_window"]
    trainable = objective.trainable(params)
    assert trainable["image_encoder"]["trunk"]["pos_embed"] and trainable["sam_mask_decoder"]["iou_token"]["embedding"]
    assert not any(jax.tree.leaves(trainable["memory_encoder"])) and not trainable["maskmem_tpos_enc"]
