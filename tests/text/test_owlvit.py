"""OWL-ViT and OWLv2: converter and parity with transformers' OwlViTForObjectDetection / Owlv2ForObjectDetection.

Tiny configs, every weight random, converted through samjax.weights.owlvit. Text-query detection (logits of the
valid queries, pred_boxes, class and image embeddings, text embeddings, OWLv2's objectness) and image-guided
detection (logits, target and query boxes, the chosen query box) agree within 1e-4 absolute in float32.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from samjax.models.owlvit import (
    OwlViT,
    OwlViTConfig,
    abstract_params,
    box_bias,
    param_logical_axes,
)
from samjax.weights import owlvit as wowl
from samjax.weights.keys import CheckpointMismatchError
from tests.text.reference import random_ids, randomize_, state_dict_numpy

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.torch
ATOL = 1e-4
B, Q, L = 2, 3, 16

HF_KW = dict(text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2),
             vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=3,
                                image_size=32, patch_size=8),
             projection_dim=32)


@pytest.fixture(scope="module", params=[1, 2], ids=["owlvit", "owlv2"])
def pair(request):
    version = request.param
    cfg_cls, model_cls = ((transformers.OwlViTConfig, transformers.OwlViTForObjectDetection) if version == 1 else
                          (transformers.Owlv2Config, transformers.Owlv2ForObjectDetection))
    hf_cfg = cfg_cls(**HF_KW)
    torch.manual_seed(0)
    model = model_cls(hf_cfg).eval()
    randomize_(model, seed=3 + version)
    config = OwlViTConfig.from_hf_config(hf_cfg.to_dict())
    params = wowl.from_hf(model.state_dict(), config)

    def both(model, pixels, ids, query_pixels):  # one compiled call for text queries and image-guided queries
        return model(pixels, ids), model.image_guided_detection(pixels, query_pixels)

    run = jax.jit(lambda p, *a: OwlViT(config).apply({"params": p}, *a, method=both))
    return model, config, params, run


@pytest.fixture(scope="module")
def outputs(pair, inputs):
    _, _, params, run = pair
    pixels, query_pixels, ids, _ = inputs
    return jax.device_get(run(params, pixels, ids.reshape(B, Q, L).astype(np.int32), query_pixels))


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((B, 32, 32, 3)).astype(np.float32)
    query_pixels = rng.standard_normal((B, 32, 32, 3)).astype(np.float32)
    lengths = rng.integers(1, L - 1, B * Q)
    ids = random_ids(rng, B * Q, L, 99, lengths=lengths)
    ids[Q - 1] = 0  # image 0's last query is padding (first token 0), as the processor pads query lists
    mask = (np.arange(L)[None] <= lengths[:, None]).astype(np.int64)
    mask[Q - 1] = 0
    return pixels, query_pixels, ids, mask


def _nchw(x):
    return torch.as_tensor(x.transpose(0, 3, 1, 2).copy())


def test_text_query_parity(pair, inputs, outputs):
    model, config, _, _ = pair
    pixels, _, ids, mask = inputs
    with torch.no_grad():
        ref = model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), pixel_values=_nchw(pixels))
    out = outputs[0]
    valid = ids.reshape(B, Q, L)[..., 0] > 0
    assert out["logits"].shape == tuple(ref.logits.shape) == (B, config.num_patches, Q)
    np.testing.assert_allclose(out["logits"][valid[:, None, :].repeat(config.num_patches, 1)],
                               ref.logits.numpy()[valid[:, None, :].repeat(config.num_patches, 1)], atol=ATOL, rtol=0)
    assert (out["logits"][0, :, Q - 1] == np.finfo(np.float32).min).all()
    assert (ref.logits.numpy()[0, :, Q - 1] == np.finfo(np.float32).min).all()
    np.testing.assert_allclose(out["pred_boxes"], ref.pred_boxes.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(out["class_embeds"], ref.class_embeds.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(out["image_embeds"], ref.image_embeds.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(out["text_embeds"][valid], ref.text_embeds.numpy()[valid], atol=ATOL, rtol=0)
    if config.version == 2:
        np.testing.assert_allclose(out["objectness_logits"], ref.objectness_logits.numpy(), atol=ATOL, rtol=0)
    else:
        assert "objectness_logits" not in out
    assert np.abs(ref.logits.numpy()[valid[:, None, :].repeat(config.num_patches, 1)]).max() > 0.1
    assert ref.pred_boxes.numpy().std() > 0.01


def test_image_guided_parity(pair, inputs, outputs):
    model, config, _, _ = pair
    pixels, query_pixels, _, _ = inputs
    with torch.no_grad():
        ref = model.image_guided_detection(pixel_values=_nchw(pixels), query_pixel_values=_nchw(query_pixels))
        qmap = model.image_embedder(pixel_values=_nchw(query_pixels))[0]
        _, ref_index, _ = model.embed_image_query(qmap.reshape(B, -1, qmap.shape[-1]), qmap)
    out = outputs[1]
    np.testing.assert_array_equal(out["query_box_index"], np.asarray(ref_index).reshape(-1))
    assert out["logits"].shape == tuple(ref.logits.shape) == (B, config.num_patches, 1)
    for ours, theirs in (("logits", "logits"), ("target_pred_boxes", "target_pred_boxes"),
                         ("query_pred_boxes", "query_pred_boxes"), ("class_embeds", "class_embeds"),
                         ("image_embeds", "image_embeds"), ("query_image_embeds", "query_image_embeds")):
        np.testing.assert_allclose(out[ours], getattr(ref, theirs).numpy(), atol=ATOL, rtol=0, err_msg=ours)
    assert np.abs(ref.logits.numpy()).max() > 0.1


def test_converter_round_trip_files_and_errors(pair, tmp_path):
    model, config, params, _ = pair
    sd = state_dict_numpy(model)
    assert wowl.detect_version(sd) == config.version
    back = wowl.to_hf(params)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])
    np.testing.assert_allclose(box_bias(config.grid_size, config.grid_size), model.box_bias.numpy(), atol=1e-6)
    # a HF directory with a .bin (read without torch) and legacy buffers
    torch.save({**model.state_dict(), "box_bias": model.box_bias}, tmp_path / "pytorch_model.bin")
    model.config.to_json_file(tmp_path / "config.json")
    loaded_config, loaded = wowl.load_owlvit(tmp_path)
    assert loaded_config == config
    jax.tree.map(np.testing.assert_array_equal, loaded, params)
    other = OwlViTConfig(config.clip, 3 - config.version)
    with pytest.raises(CheckpointMismatchError, match=f"version={config.version}"):
        wowl.from_hf(sd, other)
    head = "box_head.dense2.bias"
    with pytest.raises(CheckpointMismatchError, match=rf"missing keys \(1\):\n    {head}"):
        wowl.from_hf({k: v for k, v in sd.items() if k != head}, config)
    with pytest.raises(CheckpointMismatchError, match="box_bias"):
        wowl.from_hf({**sd, "box_bias": np.zeros((4, 4))}, config)


def test_not_an_owl_checkpoint(tmp_path):
    with pytest.raises(CheckpointMismatchError, match="looks like a CLIP model"):
        wowl.detect_version({"text_model.embeddings.token_embedding.weight": np.zeros((3, 2))})
    with pytest.raises(CheckpointMismatchError, match="not an OWL-ViT / OWLv2 checkpoint"):
        wowl.detect_version({"image_encoder.pos_embed": np.zeros(3)})
    (tmp_path / "config.json").write_text('{"model_type": "clip"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not an OWL-ViT / OWLv2 config: model_type is 'clip'"):
        wowl.load_owlvit(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        wowl.load_owlvit(tmp_path / "model.safetensors")


def test_presets_and_axes(pair):
    b32 = OwlViTConfig.owlvit_b32()
    assert (b32.grid_size, b32.num_patches, b32.clip.context_length) == (24, 576, 16)
    assert OwlViTConfig.from_name("owlv2_b16").grid_size == 60
    assert OwlViTConfig.from_dict(OwlViTConfig.owlv2_l14().to_dict()) == OwlViTConfig.owlv2_l14()
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_params(b32)))
    assert n == 153_231_879  # HF OwlViTForObjectDetection at google/owlvit-base-patch32 sizes
    with pytest.raises(ValueError, match="must be equal"):
        OwlViTConfig(b32.clip.replace(embed_dim=256))
    from samjax import parallel as sharding

    tiny = pair[1]
    axes = param_logical_axes(tiny)
    specs = jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert len(specs) == len(jax.tree.leaves(abstract_params(tiny)))
    sharding.check_axes(a for s in specs for a in s)
    assert axes["class_head"]["dense0"]["kernel"] == jax.sharding.PartitionSpec("embed", "joint_embed")
