"""The training step's decode path is exact: the same loss and gradients as decoding every output of every prompt
from a per-mask copy of the embedding (the straightforward reference, built here from public pieces), for the same
batch, rng and prompts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from samjax import parallel
from samjax import transforms as T
from samjax.models import Sam, SamConfig
from samjax.training import config as training_config
from samjax.training import prompts
from samjax.training.step import StepConfig, make_loss_fn
from tests.conftest import stand_in_params

CFG = SamConfig(image_size=64, patch_size=8, encoder_embed_dim=16, encoder_depth=1, encoder_num_heads=2, window_size=0,
                encoder_global_attn_indexes=(), prompt_embed_dim=32, mask_in_chans=8, decoder_depth=1,
                decoder_num_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32)


def reference_loss(params, images, masks, boxes, valid, rng, pcfg):
    """Every output of every prompt, from the embedding copied per mask (the decode the step replaced)."""
    model = Sam(CFG)
    emb = model.apply({"params": params}, images, method=Sam.embed_images)
    b, m = masks.shape[:2]
    emb = jnp.repeat(emb, m, axis=0)
    g = CFG.mask_input_size

    def decode_first(coords, labels):
        zeros = jnp.zeros((b * m, g, g), jnp.float32)
        return model.apply({"params": params}, emb, coords, labels, zeros, jnp.zeros((b * m,), bool),
                           all_outputs=True, method=Sam.decode)

    def decode_next(coords, labels, prev):
        logits, iou = model.apply({"params": params}, emb, coords, labels, prev, jnp.ones((b * m,), bool),
                                  all_outputs=True, method=Sam.decode)
        return logits[:, :1], iou[:, :1]

    flat = lambda x: x.reshape(b * m, *x.shape[2:])  # noqa: E731
    return prompts.simulate(decode_first, decode_next, flat(masks), flat(boxes), flat(valid), rng, CFG.image_size,
                            pcfg)


def test_step_loss_and_gradients_equal_the_reference():
    cfg = training_config.base_config()
    cfg.model = CFG.to_dict()
    cfg.data.update(batch_size=2, max_masks_per_image=3)
    cfg.prompts.update(num_click_rounds=2, no_click_rounds=1, box_prob=0.5)
    mesh = parallel.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    params = stand_in_params(CFG, scale=0.3, seed=1)
    rng = np.random.default_rng(0)
    k = CFG.mask_input_size
    yy, xx = np.mgrid[:k, :k]
    masks = np.stack([np.stack([(yy - 5 - 3 * j) ** 2 + (xx - 6 - 2 * i) ** 2 < (3 + i + j) ** 2 for j in range(3)])
                      for i in range(2)])
    boxes = np.zeros((2, 3, 4), np.float32)
    for i in range(2):
        for j in range(3):
            ys, xs = np.nonzero(masks[i, j])
            boxes[i, j] = [4 * xs.min(), 4 * ys.min(), 4 * xs.max() + 4, 4 * ys.max() + 4]
    valid = np.array([[True, True, True], [True, True, False]])
    images = rng.integers(0, 255, (2, 64, 64, 3)).astype(np.uint8)
    key = jax.random.PRNGKey(7)
    pcfg = prompts.PromptConfig(**cfg.prompts.to_dict())

    normalised = T.normalize(jnp.asarray(images), jnp.full((2, 2), 64, jnp.int32), CFG.pixel_mean, CFG.pixel_std)
    batch = {"image": images, "input_hw": np.full((2, 2), 64, np.int32), "masks": masks, "mask_valid": valid,
             "boxes": boxes}
    loss_fn = make_loss_fn(StepConfig.from_config(cfg), mesh)
    with jax.set_mesh(mesh):
        (l_new, m_new), g_new = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, batch, key)
    _, k_prompt = jax.random.split(key)
    (l_ref, m_ref), g_ref = jax.jit(jax.value_and_grad(
        lambda p: reference_loss(p, normalised, jnp.asarray(masks), jnp.asarray(boxes), jnp.asarray(valid),
                                 k_prompt, pcfg), has_aux=True))(params)
    np.testing.assert_allclose(float(l_new), float(l_ref), rtol=1e-5)
    for name in m_ref:
        np.testing.assert_allclose(float(m_new[name]), float(m_ref[name]), rtol=1e-5, atol=1e-7, err_msg=name)
    flat_new, flat_ref = jax.tree_util.tree_leaves_with_path(g_new), jax.tree.leaves(g_ref)
    scale = max(float(jnp.abs(g).max()) for g in flat_ref)
    for (path, a), b in zip(flat_new, flat_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale, err_msg=jax.tree_util.keystr(path))
    assert scale > 0 and float(l_ref) > 0


def test_rounds_keep_no_float32_image_side_in_bfloat16():
    """In a bfloat16 model the prompt rounds' scan carries and saves no float32 copy of a prompt's image side
    (prompts x g*g x C): LayerNorm keeps its input and two float32 numbers per row (models.common), not float32
    activations. Read from the lowered program, as JAX saves it (a backend may still widen bfloat16 products)."""
    import re

    from samjax.training.input import batch_spec

    cfg = training_config.base_config()
    bf16 = CFG.replace(dtype="bfloat16", decoder_depth=2)
    cfg.model = bf16.to_dict()
    cfg.data.update(batch_size=2, max_masks_per_image=3)
    cfg.prompts.update(num_click_rounds=2, no_click_rounds=1)
    mesh = parallel.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    from samjax.training.step import compiled_step

    _, step, abstract, _ = compiled_step(cfg, mesh)
    with jax.set_mesh(mesh):
        hlo = step.lower(abstract, batch_spec(cfg, bf16, mesh)).as_text(dialect="hlo")
    side = f",{bf16.grid_size ** 2},{bf16.prompt_embed_dim}]"
    states = [re.findall(r"(f32|bf16)\[([0-9,]*\])", m.group(1)) for m in re.finditer(r"= \((.*)\) while\(", hlo)]
    # per-prompt tensors: (..., prompts, g*g, C) (the image PE, (g*g, C), is shared and may stay float32)
    image_side = [dt for state in states for dt, dims in state if ("," + dims).endswith(side) and dims.count(",") >= 2]
    assert image_side and set(image_side) == {"bf16"}, image_side
