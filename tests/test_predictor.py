"""Predictor behaviour: bad input, the cached embedding, compile buckets, the one-liner. No torch needed."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from samjax import infer
from samjax.infer import predictor as predictor_lib
from samjax.models import SamConfig, init_params
from samjax.weights import default as default_model
from samjax.weights import store
from tests.conftest import TINY_CONFIGS, stand_in_params

CFG = TINY_CONFIGS["tiny_windowed"]


@pytest.fixture(scope="module")
def predictor() -> infer.Predictor:
    return infer.Predictor(CFG, init_params(CFG, jax.random.key(0)))


@pytest.fixture
def ready(predictor, photo) -> infer.Predictor:
    predictor.set_image(photo)
    return predictor


@pytest.mark.parametrize("image, exc, match", [
    ([[0, 0, 0]], TypeError, "numpy array"),
    (np.zeros((8, 8, 3), np.float32), TypeError, "uint8"),
    (np.zeros((8, 8), np.uint8), ValueError, "grayscale"),
    (np.zeros((8, 8, 1), np.uint8), ValueError, "grayscale"),
    (np.zeros((8, 8, 4), np.uint8), ValueError, "RGBA"),
    (np.zeros((8, 8, 3, 1), np.uint8), ValueError, r"\(H, W, 3\)"),
    (np.zeros((0, 8, 3), np.uint8), ValueError, "empty"),
])
def test_bad_images(predictor, image, exc, match):
    with pytest.raises(exc, match=match):
        predictor.set_image(image)


def test_bad_image_format(predictor, photo):
    with pytest.raises(ValueError, match="'RGB' or 'BGR'"):
        predictor.set_image(photo, image_format="HSV")


def test_predict_before_set_image():
    p = infer.Predictor(CFG, init_params(CFG, jax.random.key(0)))
    for exc in (ValueError, RuntimeError):  # ours promises ValueError; the official raises RuntimeError
        with pytest.raises(exc, match="set_image"):
            p.predict(point_coords=np.array([[1, 1]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match="set_image"):
        p.get_image_embedding()


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(), ValueError, "no prompt"),
    (dict(point_coords=np.zeros((0, 2)), point_labels=np.zeros((0,))), ValueError, "empty"),
    (dict(point_coords=np.array([[10, 10]])), ValueError, "point_labels are required"),
    (dict(point_labels=np.array([1])), ValueError, "without point_coords"),
    (dict(point_coords=np.array([[10, 10], [20, 20]]), point_labels=np.array([1])), ValueError, "must have shape"),
    (dict(point_coords=np.array([10, 10]), point_labels=np.array([1])), ValueError, r"\(N, 2\)"),
    (dict(point_coords=np.array([[500, 10]]), point_labels=np.array([1])), ValueError, "outside the 451x300"),
    (dict(point_coords=np.array([[10, -1]]), point_labels=np.array([1])), ValueError, "outside"),
    (dict(point_coords=np.array([[np.nan, 1]]), point_labels=np.array([1])), ValueError, "NaN"),
    (dict(point_coords=np.array([[1, 1]]), point_labels=np.array([2])), ValueError, "1 \\(foreground\\)"),
    (dict(point_coords=[["a", "b"]], point_labels=[1]), TypeError, "numeric"),
    (dict(box=np.array([1, 2, 3])), ValueError, r"\(4,\)"),
    (dict(box=np.array([50, 50, 10, 10])), ValueError, "x0 <= x1"),
    (dict(box=np.array([0, 0, 460, 10])), ValueError, "outside"),
    (dict(mask_input=np.zeros((256, 256))), ValueError, r"\(1, 32, 32\)"),
])
def test_bad_prompts(ready, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ready.predict(**kwargs)


def test_bad_batch_prompts(ready):
    with pytest.raises(ValueError, match="batch sizes differ"):
        ready.predict_batch(point_coords=np.ones((2, 1, 2)), point_labels=np.ones((2, 1)), boxes=np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"\(B, N, 2\)"):
        ready.predict_batch(point_coords=np.ones((2, 2)), point_labels=np.ones((2,)))


def test_shapes_and_types(ready, photo):
    masks, iou, low = ready.predict(point_coords=np.array([[100, 100]]), point_labels=np.array([1]))
    assert masks.shape == (3, 300, 451) and masks.dtype == bool
    assert iou.shape == (3,) and low.shape == (3, 32, 32)
    masks, iou, low = ready.predict(box=np.array([10, 10, 200, 200]), multimask_output=False, return_logits=True)
    assert masks.shape == (1, 300, 451) and masks.dtype == np.float32
    bm, bi, bl = ready.predict_batch(point_coords=np.ones((5, 2, 2)), point_labels=np.ones((5, 2)))
    assert bm.shape == (5, 3, 300, 451) and bi.shape == (5, 3) and bl.shape == (5, 3, 32, 32)
    assert ready.get_image_embedding().shape == (1, CFG.grid_size, CFG.grid_size, CFG.prompt_embed_dim)


def test_prompts_never_rerun_the_encoder_and_buckets_limit_compiles(photo):
    cfg = CFG.replace(iou_head_hidden_dim=16)  # a config no other test compiled for: a fresh compile cache
    p = infer.Predictor(cfg, init_params(cfg, jax.random.key(1)))
    calls = []
    encode = p._encode
    p._encode = lambda *a: calls.append(1) or encode(*a)
    p.set_image(photo)
    before = predictor_lib._decode._cache_size()
    rng = np.random.default_rng(0)
    for n in range(1, 8):  # 1..7 clicks -> 2..8 tokens -> buckets 2, 4, 8: three compiles
        p.predict(point_coords=rng.uniform(0, 299, (n, 2)), point_labels=np.ones(n))
    assert len(calls) == 1
    assert predictor_lib._decode._cache_size() - before == 3


def test_padding_to_a_bucket_changes_nothing(ready):
    """2 clicks (3 tokens) run in a 4-token bucket with one IGNORE slot; 3 clicks fill it exactly. The padded
    call must equal the same call made with the padding slot removed from the model's input."""
    from samjax.models import Sam

    pts, lbl = np.array([[100.0, 80.0], [300.0, 200.0]]), np.array([1, 0])
    _, iou, low = ready.predict(point_coords=pts, point_labels=lbl)
    tok_c, tok_l = ready._tokens(pts[None], lbl[None].astype(np.int32), None, 1)
    assert (tok_l == -2).sum() == 1
    keep = tok_l[0] != -2
    low2, iou2 = Sam(CFG).apply({"params": ready.params}, ready.features, tok_c[:, keep], tok_l[:, keep],
                                method=Sam.decode)
    np.testing.assert_allclose(low, np.asarray(low2)[0], atol=1e-5)
    np.testing.assert_allclose(iou, np.asarray(iou2)[0], atol=1e-5)


def test_set_image_resets_state(predictor, photo, tall_photo):
    predictor.set_image(photo)
    predictor.set_image(tall_photo)
    assert predictor.original_size == (200, 120) and predictor.input_size == (64, 38)
    masks, _, _ = predictor.predict(point_coords=np.array([[50, 50]]), point_labels=np.array([1]))
    assert masks.shape == (3, 200, 120)
    predictor.reset_image()
    assert not predictor.is_image_set


def test_one_liner_from_a_converted_checkpoint(tmp_path, photo, monkeypatch):
    params = init_params(CFG, jax.random.key(2))
    store.save_model(tmp_path / "ck", params, CFG)
    masks, scores, logits = infer.predict(photo, [[100, 100], [200, 150]], checkpoint=tmp_path / "ck")
    assert masks.shape == (3, 300, 451) and scores.shape == (3,)
    ref = infer.Predictor(CFG, params)
    ref.set_image(photo)
    _, ref_scores, _ = ref.predict(point_coords=np.array([[100, 100], [200, 150]]), point_labels=np.ones(2))
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)
    monkeypatch.delenv("SAMJAX_CHECKPOINT", raising=False)  # no checkpoint: the shipped model, if installed
    monkeypatch.setattr(default_model, "DIR", tmp_path / "not_shipped")
    with pytest.raises(FileNotFoundError, match="make default-model"):
        infer.predict(photo, [[1, 1]])
    loaded = infer.load(tmp_path / "ck", decoder_matmul_dtype="bfloat16")
    assert loaded.config == CFG.replace(decoder_matmul_dtype="bfloat16")
    assert infer.load(tmp_path / "ck").config == CFG


def test_bfloat16_compute_keeps_float32_params(photo):
    cfg = CFG.replace(dtype="bfloat16")
    params = init_params(cfg, jax.random.key(0))
    assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype("float32")}
    p32, p16 = infer.Predictor(CFG, params), infer.Predictor(cfg, params)
    p32.set_image(photo)
    p16.set_image(photo)
    assert p16.features.dtype == jax.numpy.bfloat16
    e32, e16 = p32.get_image_embedding(), p16.get_image_embedding().astype(np.float32)
    assert np.abs(e32 - e16).max() < 0.1 * np.abs(e32).max()


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        SamConfig(image_size=100, patch_size=16)
    with pytest.raises(ValueError, match="outside 0..11"):
        SamConfig.vit_b(encoder_global_attn_indexes=(12,))
    with pytest.raises(ValueError, match="unknown model"):
        SamConfig.from_name("vit_x")
    assert SamConfig.from_dict(SamConfig.vit_h().to_dict()) == SamConfig.vit_h()


def test_demo_with_a_checkpoint_dir(tmp_path):
    from samjax import demo

    store.save_model(tmp_path / "ck", init_params(CFG, jax.random.key(3)), CFG)
    assert demo.main(["--checkpoint", str(tmp_path / "ck"), "--out", str(tmp_path / "out"), "--point", "100,80"]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "out" / "overlay.png").size == (3 * 451, 300)
    assert Image.open(tmp_path / "out" / "mask_best.png").size == (451, 300)


def test_demo_errors(tmp_path, capsys):
    from samjax import demo

    assert demo.main(["--image", str(tmp_path / "nope.jpg"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert demo.main(["--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "samjax.convert" in capsys.readouterr().err
    assert demo.main(["--point", "1,2,3", "--out", str(tmp_path)]) == 2
    assert "--point" in capsys.readouterr().err


def test_params_of_another_config_are_rejected():
    other = TINY_CONFIGS["tiny_noabs_deep"]
    with pytest.raises(ValueError, match="another model size"):
        infer.Predictor(CFG, stand_in_params(other))  # its shapes are what count


@pytest.mark.parametrize("per_prompt", [False, True])
def test_decoding_in_groups_equals_one_call(per_prompt):
    """decode_prompts in groups (lax.map; the CPU default) gives what one call over all prompts gives: shared or
    per-prompt embeddings, with mask prompts, all outputs."""
    from samjax.models.sam import sam  # noqa: PLC0415

    params = init_params(CFG, jax.random.key(1))
    rng = np.random.default_rng(0)
    p, g, c = 8, CFG.grid_size, CFG.prompt_embed_dim
    emb = rng.standard_normal((p if per_prompt else 1, g, g, c)).astype(np.float32)
    coords = rng.uniform(0, CFG.image_size, (p, 3, 2)).astype(np.float32)
    labels = rng.integers(0, 2, (p, 3)).astype(np.int32)
    masks = rng.standard_normal((p, 4 * g, 4 * g)).astype(np.float32)
    run = lambda group: sam.decode_prompts(params, CFG, emb, coords, labels, masks, all_outputs=True,  # noqa: E731
                                           group=group)
    assert sam.decode_group_size(p, 2) == 2 and sam.decode_group_size(3, 2) == 3 and sam.decode_group_size(p, p) == p
    assert sam.decode_group_size(p) == sam.DECODE_GROUP["cpu"]  # the platform's default (this suite runs on CPU)
    grouped = run(2)
    whole = run(p)
    assert grouped[0].shape == whole[0].shape == (p, 4, 4 * g, 4 * g)
    for a, b in zip(grouped, whole):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("low, input_hw, out_hw", [
    (256, (683, 1024), (400, 600)),   # landscape photo, downscaled
    (256, (1024, 768), (2000, 1500)),  # portrait, upscaled past the model's input size
    (32, (128, 85), (37, 25)),        # tiny model, output smaller than the low-res grid
    (64, (256, 256), (256, 256)),     # square, exact 4x
])
def test_tiled_upsampling_equals_the_dense_interpolation(low, input_hw, out_hw):
    """postprocess_masks multiplies only the non-zero band of each axis' interpolation matrix (row tiles with
    their input windows); it must give the dense product up to float rounding, for any size and tile count."""
    from samjax import transforms as T  # noqa: PLC0415

    image_size = low * 4
    x = np.random.default_rng(0).standard_normal((2, 3, low, low)).astype(np.float32)
    m_h = T.postprocess_matrix(low, image_size, input_hw[0], out_hw[0])
    m_w = T.postprocess_matrix(low, image_size, input_hw[1], out_hw[1])
    dense = m_h.astype(np.float64) @ x @ m_w.astype(np.float64).T
    ours = np.asarray(T.postprocess_masks(x, input_hw, out_hw, image_size))
    assert ours.shape == (2, 3, *out_hw)
    np.testing.assert_allclose(ours, dense, rtol=0, atol=1e-5)
    starts, blocks = T.interpolation_tiles(m_w)
    assert blocks.shape[-1] <= 24 or low < 64  # a band, not the whole row (16 for 600 px from 256 cells)


def test_image_cache_gives_the_uncached_decode(photo):
    """The decoder's image-only work done once per image (`models.image_cache`, what the Predictor and the AMG
    pass) gives the same masks as computing it in each decode; it is ignored for prompts with mask prompts and
    refused for a batch of embeddings."""
    from samjax.models import Sam, decode_prompts, image_cache  # noqa: PLC0415

    params = init_params(CFG, jax.random.key(3))
    rng = np.random.default_rng(1)
    g, c, p = CFG.grid_size, CFG.prompt_embed_dim, 5
    emb = rng.standard_normal((1, g, g, c)).astype(np.float32)
    pe = Sam(CFG).apply({"params": params}, method=Sam.get_dense_pe)
    cache = image_cache(params, CFG, emb, pe)
    coords = rng.uniform(0, CFG.image_size, (p, 2, 2)).astype(np.float32)
    labels = rng.integers(0, 2, (p, 2)).astype(np.int32)
    for masks in (None, rng.standard_normal((p, 4 * g, 4 * g)).astype(np.float32)):
        plain = decode_prompts(params, CFG, emb, coords, labels, masks, image_pe=pe, all_outputs=True)
        cached = decode_prompts(params, CFG, emb, coords, labels, masks, image_pe=pe, all_outputs=True,
                                image_cache=cache)
        for a, b in zip(cached, plain):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    # the cached path really runs: a cache of other embeddings changes the masks
    other = image_cache(params, CFG, emb + 1.0, pe)
    moved = decode_prompts(params, CFG, emb, coords, labels, image_pe=pe, image_cache=other)[0]
    assert np.abs(np.asarray(moved) - np.asarray(decode_prompts(params, CFG, emb, coords, labels)[0])).max() > 1e-3
    with pytest.raises(ValueError, match="batch 1"):
        image_cache(params, CFG, np.repeat(emb, 2, 0), pe)
    with pytest.raises(ValueError, match="batch 1"):
        decode_prompts(params, CFG, np.repeat(emb, p, 0), coords, labels, image_pe=pe, image_cache=cache)
    predictor = infer.Predictor(CFG, params)
    predictor.set_image(photo)
    assert predictor.image_cache is not None
    predictor.reset_image()
    assert predictor.image_cache is None


def test_bfloat16_decoder_products_agree_with_float32(photo):
    """SamConfig.decoder_matmul_dtype="bfloat16": the decoder's image-side products take bf16 operands (in the
    compiled program), the encoder's compiled code is the float32 Predictor's, and the masks agree with float32."""
    from samjax.models import decode_prompts  # noqa: PLC0415

    with pytest.raises(ValueError, match="decoder_matmul_dtype"):
        CFG.replace(decoder_matmul_dtype="float16")
    cfg = CFG.replace(decoder_matmul_dtype="bfloat16")
    params = init_params(CFG, jax.random.key(5))
    p32, pbf = infer.Predictor(CFG, params), infer.Predictor(cfg, params)
    p32.set_image(photo)
    compiled = predictor_lib._encode._cache_size()
    pbf.set_image(photo)
    assert predictor_lib._encode._cache_size() == compiled
    np.testing.assert_array_equal(pbf.get_image_embedding(), p32.get_image_embedding())

    g = CFG.grid_size
    args = (np.zeros((1, g, g, CFG.prompt_embed_dim), np.float32), np.zeros((2, 1, 2), np.float32),
            np.ones((2, 1), np.int32))
    text = {c.decoder_matmul_dtype: str(jax.make_jaxpr(lambda e, xy, lab, c=c: decode_prompts(params, c, e, xy, lab))(
        *args)) for c in (CFG, cfg)}
    assert "bf16" in text["bfloat16"] and "bf16" not in text["float32"]

    rng = np.random.default_rng(0)
    pts = rng.uniform(0, min(photo.shape[:2]), (16, 1, 2))
    labels = np.ones((16, 1))
    m32, iou32, low32 = p32.predict_batch(pts, labels)
    mbf, ioubf, lowbf = pbf.predict_batch(pts, labels)
    # Measured here (seed 5): logits within 1.5% of their largest value, IoU predictions within 0.005, thresholded
    # masks' IoU 0.993 at least (ViT-B, `make bench`: 0.994 at least over 192 masks).
    assert np.abs(lowbf - low32).max() < 0.03 * np.abs(low32).max()
    np.testing.assert_allclose(ioubf, iou32, atol=0.01)
    inter, union = (m32 & mbf).sum((-2, -1)), (m32 | mbf).sum((-2, -1))
    assert (union > 0).all() and (inter / union).mean() > 0.99 and (inter / union).min() > 0.98, inter / union
