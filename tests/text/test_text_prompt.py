"""The SAM paper's text prompt (section 7.5, appendix D.5): the text token of SAM's prompt encoder (off by default),
CLIP's last-layer class-token attention restricted to a mask, the on-device mask crops, and a smoke run of the
"text_prompt" objective (experiments/text_prompt.py) on a tiny SAM with a tiny random CLIP whose export answers text
prompts through samjax.infer.text_prompt. Random weights: the tests check the plumbing and the rules the paper
states, never what the models find (no public weights exist for SAM's text prompt)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax import infer, parallel
from samjax.infer.text_prompt import TextPrompter
from samjax.infer.validate import check_text_embedding
from samjax.models import IGNORE, Sam, abstract_params
from samjax.models.clip import VisionTransformer
from samjax.training import config as config_lib
from samjax.training import objectives
from samjax.training import state as state_lib
from samjax.training import text_prompt as tp
from samjax.training.step import compiled_step
from samjax.weights import clip as wclip
from samjax.weights import store
from tests.test_family_training import synthetic_batch
from tests.text import tiny

TEXT_SAM = tiny.SAM_CONFIG.replace(text_embed_dim=tiny.CLIP_CONFIG.embed_dim)
SMALL = ["--config.data.batch_size=2", "--config.data.max_masks_per_image=2", "--config.optim.warmup_steps=0",
         "--config.optim.lr=3e-3", "--config.prompts.num_click_rounds=1", "--config.prompts.no_click_rounds=0",
         "--config.prompts.unroll_rounds=True", "--config.objective.min_mask_area=0.0"]


@functools.partial(jax.jit, static_argnames=("config",))
def _variants(params, emb, coords, labels, text, *, config):
    """Mask logits of the same prompts: without text, with the text token masked, with it, with it scaled x3, and
    with text alone (point slots IGNORE): one compile."""
    model, b = Sam(config), coords.shape[0]

    def run(text_embedding=None, text_valid=None, lab=labels):
        return model.apply({"params": params}, emb, coords, lab, text_embedding=text_embedding, text_valid=text_valid,
                           method=Sam.decode)[0]

    return (run(), run(text, jnp.zeros(b, bool)), run(text, jnp.ones(b, bool)), run(3.0 * text),
            run(text, lab=jnp.full(labels.shape, IGNORE)))


def test_text_token_is_off_by_default_and_a_masked_token_changes_nothing():
    assert "text_projection" not in abstract_params(tiny.SAM_CONFIG)["prompt_encoder"]  # converters, parity unchanged
    pe = abstract_params(TEXT_SAM)["prompt_encoder"]
    assert pe["text_projection"]["kernel"].shape == (32, 32) and pe["text_embed"]["embedding"].shape == (1, 32)
    params = tiny.random_params(abstract_params(TEXT_SAM), 5)
    rng = np.random.default_rng(0)
    emb = jnp.asarray(rng.standard_normal((1, 8, 8, 32)), jnp.float32)
    coords = jnp.asarray([[[20.0, 30.0], [0.0, 0.0]]] * 2)
    labels = jnp.asarray([[1, -1], [1, -1]], jnp.int32)
    text = jnp.asarray(rng.standard_normal((2, 32)), jnp.float32)
    without, masked, with_text, scaled, text_only = _variants(params, emb, coords, labels, text, config=TEXT_SAM)
    np.testing.assert_allclose(masked, without, atol=1e-5)  # text_valid False: as if absent
    assert np.abs(np.asarray(with_text) - np.asarray(without)).max() > 1e-3
    np.testing.assert_allclose(scaled, with_text, atol=1e-4)  # l2-normalised: the norm carries nothing
    assert np.isfinite(np.asarray(text_only)).all()
    with pytest.raises(ValueError, match="no text prompt"):
        Sam(tiny.SAM_CONFIG).apply({"params": tiny.sam_params()}, emb, coords, labels, text_embedding=text,
                                   method=Sam.decode)
    with pytest.raises(ValueError, match="text_embed_dim must be >= 0"):
        tiny.SAM_CONFIG.replace(text_embed_dim=-1)


def test_clip_class_token_attends_only_to_the_allowed_patches():
    """With one layer (tiny CLIP), the class token's output depends on the allowed patches only; all allowed = CLIP."""
    cfg, params = tiny.CLIP_CONFIG, tiny.clip_params()["vision_model"]
    vit = jax.jit(lambda p, x, a: VisionTransformer(cfg).apply({"params": p}, x, a)[:, 0])
    plain = jax.jit(lambda p, x: VisionTransformer(cfg).apply({"params": p}, x)[:, 0])
    x = jnp.asarray(np.random.default_rng(1).standard_normal((1, 32, 32, 3)), jnp.float32)
    allowed = np.zeros((1, 16), bool)
    allowed[0, [0, 1, 4, 5]] = True  # the top-left 2 x 2 patches (8 px each)
    np.testing.assert_allclose(vit(params, x, jnp.ones((1, 16), bool)), plain(params, x), atol=1e-5)
    base = vit(params, x, allowed)
    np.testing.assert_allclose(vit(params, x.at[:, 20:, 20:].add(3.0), allowed), base, atol=1e-5)  # outside
    assert np.abs(np.asarray(vit(params, x.at[:, :8, :8].add(3.0), allowed) - base)).max() > 1e-3  # inside


def test_mask_crops_follow_the_box_blank_the_background_and_pick_the_patches():
    clip = tiny.CLIP_CONFIG  # 32 px crops, 8 px patches: a 4 x 4 grid
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:32, 16:48] = (200, 40, 40)  # the box: 32 wide, 16 high
    mask = np.zeros((1, 32, 32), bool)  # low-res grid, 2 px cells: the box's left half
    mask[0, 8:16, 8:16] = True
    box = np.array([[16.0, 16.0, 48.0, 32.0]], np.float32)
    opts = tp.TextPromptOptions(clip=clip, expand=(1.0, 1.0), zero_out_prob=0.0, min_mask_area=0.0)
    red = (np.array([200, 40, 40]) / 255 - np.asarray(clip.pixel_mean)) / np.asarray(clip.pixel_std)
    crops = jax.jit(tp.mask_crops, static_argnums=(5, 6))
    pixels, attend = crops(jax.random.key(0), image, np.array([64, 64]), mask, box, clip, opts)
    # square crop of side 32 centred on the box: rows 8..40 of the image, so the red band is the crop's middle half
    np.testing.assert_allclose(pixels[0, 12:20, 4:28], np.broadcast_to(red, (8, 24, 3)), atol=1e-4)
    black = -np.asarray(clip.pixel_mean) / np.asarray(clip.pixel_std)
    np.testing.assert_allclose(pixels[0, :6], np.broadcast_to(black, (6, 32, 3)), atol=1e-4)
    assert attend[0].reshape(4, 4)[:, 2:].sum() == 0 and attend[0].reshape(4, 4)[1:3, :2].all()
    zero = tp.TextPromptOptions(clip=clip, expand=(1.0, 1.0), zero_out_prob=1.0, min_mask_area=0.0)
    blanked, _ = crops(jax.random.key(0), image, np.array([64, 64]), mask, box, clip, zero)
    assert np.abs(np.asarray(blanked[0, 12:20, 20:])).max() < 1e-6  # the right half: outside the mask, blanked
    np.testing.assert_allclose(blanked[0, 12:20, 2:14], pixels[0, 12:20, 2:14], atol=1e-5)
    # a crop reaching past the valid image (input_hw 64 x 40): CLIP's mean colour (normalised 0) there
    edge, _ = crops(jax.random.key(0), image, np.array([64, 40]), mask, box, clip, opts)
    assert np.abs(np.asarray(edge[0, :, 26:])).max() < 1e-5
    assert np.abs(np.asarray(edge[0, 12:20, 4:10] - red)).max() < 1e-4
    with pytest.raises(ValueError, match="expand"):
        tp.TextPromptOptions(clip=clip, expand=(0.5, 2.0))
    with pytest.raises(ValueError, match="unknown fields"):
        tp.TextPromptOptions.from_objective({"kind": "text_prompt", "clip": clip.to_dict(), "clip_pth": "x"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """experiments/text_prompt.py shrunk to the tiny models: 6 steps on one synthetic batch, SAM from a checkpoint
    without text layers (config.init.path, as the experiment), CLIP from a save_clip directory (objective.clip_path)."""
    clip_dir = wclip.save_clip(tmp_path_factory.mktemp("clip"), tiny.CLIP_CONFIG, tiny.clip_params())
    sam_dir = store.save_model(tmp_path_factory.mktemp("sam") / "sam", tiny.sam_params(), tiny.SAM_CONFIG)
    paths = [f"--config.objective.clip_path={clip_dir}", f"--config.init.path={sam_dir}"]
    cfg = config_lib.apply_overrides(config_lib.load_experiment("text_prompt"), SMALL + paths)
    cfg.model = TEXT_SAM.to_dict()
    cfg.objective.clip = tiny.CLIP_CONFIG.to_dict()
    model_cfg = config_lib.model_config(cfg)
    objective = objectives.get("text_prompt")
    mesh = parallel.make_mesh(cfg.mesh.to_dict(), jax.devices()[:1])
    tx, step, _, shardings = compiled_step(cfg, mesh)
    params, model_state = objective.initial(cfg, model_cfg)
    batch = synthetic_batch(model_cfg.image_size, model_cfg.mask_input_size)
    outs = []
    with jax.set_mesh(mesh):
        state = state_lib.init_state(params, tx, cfg.seed, shardings, model_state)
        first = jax.device_get(state)
        for _ in range(6):
            state, out = step(state, batch)
            outs.append(jax.device_get(out))
    last = jax.device_get(state)
    export_cfg, tree = objective.export(model_cfg, last["params"], last.get("model_state"))
    model_dir = store.save_model(tmp_path_factory.mktemp("model") / "model", tree, export_cfg)
    return {"cfg": cfg, "first": first, "last": last, "outs": outs, "model_dir": model_dir, "clip_dir": clip_dir}


def test_text_prompt_objective_trains_sam_with_clip_crops(trained):
    losses = [float(o["loss"]) for o in trained["outs"]]
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
    assert all(float(o["text_prompts"]) == float(o["num_masks"]) == 4 for o in trained["outs"])  # text_prob 1
    first, last = trained["first"]["params"], trained["last"]["params"]
    np.testing.assert_array_equal(first["mask_decoder"]["iou_token"]["embedding"],
                                  tiny.sam_params()["mask_decoder"]["iou_token"]["embedding"])  # SAM's checkpoint
    np.testing.assert_array_equal(first["clip"]["visual_projection"]["kernel"],
                                  tiny.clip_params()["visual_projection"]["kernel"])  # clip_path's CLIP
    leaves = lambda t: jax.tree_util.tree_leaves_with_path(t)  # noqa: E731
    moved = {jax.tree_util.keystr(p) for (p, a), b in zip(leaves(first), jax.tree.leaves(last))
             if not np.array_equal(a, b)}
    assert not any(k.startswith("['clip']") for k in moved)  # CLIP rides along frozen
    assert {"['prompt_encoder']['text_projection']['kernel']", "['prompt_encoder']['text_embed']['embedding']"} <= moved
    assert any(k.startswith("['mask_decoder']") for k in moved)
    assert any(k.startswith("['image_encoder']") for k in moved)
    assert "['prompt_encoder']['pe_layer']['positional_encoding_gaussian_matrix']" not in moved  # as SAM's recipe
    with pytest.raises(ValueError, match="text_embed_dim .* must equal"):
        objectives.get("text_prompt").abstract_params(tiny.SAM_CONFIG, tiny.CLIP_CONFIG)


def test_exported_model_answers_text_prompts(trained):
    predictor = infer.load(trained["model_dir"])
    assert predictor.config.text_embed_dim == 32 and "clip" not in predictor.params
    prompter = TextPrompter.load(predictor, clip=str(trained["clip_dir"]))  # tokenizer: the clip package's
    image = tiny.images(sizes=((48, 64),))[0]
    prompter.set_image(image)
    masks, scores, logits = prompter.predict("a red square")
    assert masks.shape == (3, 48, 64) and scores.shape == (3,) and logits.shape == (3, 32, 32)
    emb = prompter.embed(["a red square", "sky"])
    assert emb.shape == (2, 32) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    batch_masks, batch_scores, _ = prompter.predict_batch(["a red square", "sky"])
    assert batch_masks.shape == (2, 3, 48, 64)
    np.testing.assert_allclose(batch_scores[0], scores, atol=1e-4)  # one decode per prompt, batched or not
    with_point = prompter.predict("a red square", point_coords=np.array([[10, 10]]), point_labels=np.array([1]))
    assert not np.allclose(with_point[1], scores)  # the point is a second prompt beside the text
    with pytest.raises(ValueError, match="text_embedding must be"):
        predictor.predict(text_embedding=np.ones(16))
    with pytest.raises(ValueError, match="non-empty texts"):
        prompter.predict("  ")
    with pytest.raises(ValueError, match="no public weights exist"):  # what Predictor.predict says of SAM without one
        check_text_embedding(emb[0], infer.Predictor(tiny.SAM_CONFIG, tiny.sam_params()).config.text_embed_dim, False)
    with pytest.raises(ValueError, match="no text prompt"):
        TextPrompter.load(infer.Predictor(tiny.SAM_CONFIG, tiny.sam_params()),
                          clip=(tiny.CLIP_CONFIG, tiny.clip_params()))
