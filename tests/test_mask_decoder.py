"""The mask decoder makes only the outputs it is asked for, with the values it gives when it makes them all."""

import functools

import jax
import numpy as np

from samjax.models import IGNORE, Sam, decode_prompts, image_cache, init_params
from samjax.models.sam.mask_decoder import MaskDecoder
from tests.conftest import TINY_CONFIGS

CFG = TINY_CONFIGS["tiny_windowed"]


def test_selected_outputs_are_those_of_all_outputs():
    params = init_params(CFG, jax.random.key(0))
    rng = np.random.default_rng(0)
    g, c, p = CFG.grid_size, CFG.prompt_embed_dim, 3
    emb = rng.standard_normal((1, g, g, c)).astype(np.float32)
    coords = rng.uniform(0, CFG.image_size, (p, 2, 2)).astype(np.float32)
    labels = np.array([[1, 0], [1, -1], [0, 1]], np.int32)
    pe = Sam(CFG).apply({"params": params}, method=Sam.get_dense_pe)

    def run(cache, **kw):  # jitted: op by op, even the tiny decoder takes seconds per call
        fn = lambda p, c: decode_prompts(p, CFG, emb, coords, labels, image_pe=pe, image_cache=c, **kw)  # noqa: E731
        return jax.jit(fn)(params, cache)

    for cache in (None, image_cache(params, CFG, emb, pe)):  # the decode from the image, and the Predictor's
        masks, iou = run(cache, all_outputs=True)
        assert masks.shape[1] == iou.shape[1] == CFG.num_mask_tokens
        for multimask, sel in ((True, [1, 2, 3]), (False, [0])):
            m, i = run(cache, multimask_output=multimask)
            np.testing.assert_allclose(np.asarray(m), np.asarray(masks)[:, sel], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(np.asarray(i), np.asarray(iou)[:, sel], rtol=1e-5, atol=1e-5)

    # any subset, in the order asked; upscale=False returns the same outputs' hypernetwork inputs
    sparse, dense = Sam(CFG).apply({"params": params}, coords, labels, method=lambda m, a, b: m.prompt_encoder(a, b))
    dp = {"params": params["mask_decoder"]}

    @functools.partial(jax.jit, static_argnums=0)
    def apply(outputs):
        return MaskDecoder(CFG).apply(dp, emb, pe, sparse, dense[:1], labels != IGNORE, upscale=False,
                                      outputs=outputs, method=MaskDecoder.predict_masks)

    full, part = apply(None), apply((3, 0))
    np.testing.assert_allclose(np.asarray(part[0]), np.asarray(full[0]), rtol=1e-5, atol=1e-5)  # the image side
    for k in (1, 2):  # hyper_in, iou_pred
        np.testing.assert_allclose(np.asarray(part[k]), np.asarray(full[k])[:, [3, 0]], rtol=1e-5, atol=1e-5)


def test_every_output_has_parameters():
    """Initialisation makes every hypernetwork, though `Sam.__call__` asks for the multimask outputs only."""
    params = init_params(CFG, jax.random.key(0))["mask_decoder"]
    assert {f"output_hypernetworks_mlps_{i}" for i in range(CFG.num_mask_tokens)} <= set(params)
