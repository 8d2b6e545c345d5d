"""CLIP: configs, converters for both checkpoint layouts, and parity with the references on random weights.

References: transformers' CLIPModel (Hugging Face layout) and clip-anytorch's clip.model.CLIP (OpenAI layout), tiny
configs, every weight random, converted through samjax.weights.clip. Text and image features (unnormalised),
normalised embeddings and logits agree within 1e-4 absolute in float32.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from samjax.models.clip import Clip, ClipConfig, abstract_params, param_logical_axes
from samjax.weights import clip as wclip
from samjax.weights.hf import read_state_dict
from samjax.weights.keys import CheckpointMismatchError
from tests.text.reference import openai_clip_model, random_ids, randomize_, state_dict_numpy

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.torch
ATOL = 1e-4

# A: legacy eos_token_id 2 (pools at the largest id), exact GELU text tower, QuickGELU vision tower.
# B: pools at the first eos_token_id (50, not the largest id), tanh-GELU vision tower, eps 1e-6, 1 text head.
HF_CONFIGS = {
    "A": dict(text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=2, max_position_embeddings=12, hidden_act="gelu", eos_token_id=2),
              vision_config=dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=3,
                                 image_size=32, patch_size=8, hidden_act="quick_gelu"), projection_dim=24),
    "B": dict(text_config=dict(vocab_size=99, hidden_size=16, intermediate_size=40, num_hidden_layers=1,
                               num_attention_heads=1, max_position_embeddings=10, eos_token_id=50,
                               layer_norm_eps=1e-6),
              vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                                 image_size=24, patch_size=12, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
              projection_dim=20),
}
OPENAI_KW = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128, vision_patch_size=8,
                 context_length=12, vocab_size=99, transformer_width=64, transformer_heads=2, transformer_layers=2)


def _features_and_logits(config, params, pixels, ids):
    """(text features, image features, logits_per_image) in one compiled call."""
    def everything(model, pixels, ids):
        return model.encode_text(ids), model.encode_image(pixels), model(pixels, ids)

    run = jax.jit(lambda p, x, t: Clip(config).apply({"params": p}, x, t, method=everything))
    return [np.asarray(a) for a in run(params, pixels, ids.astype(np.int32))]


@pytest.fixture(scope="module", params=sorted(HF_CONFIGS))
def hf_pair(request):
    hf_cfg = transformers.CLIPConfig(**HF_CONFIGS[request.param])
    torch.manual_seed(0)
    model = transformers.CLIPModel(hf_cfg).eval()
    randomize_(model, seed=1)
    config = ClipConfig.from_hf_config(hf_cfg.to_dict())
    return request.param, model, config, wclip.from_torch(model.state_dict(), config)


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    return rng.standard_normal((3, 32, 32, 3)).astype(np.float32), rng


def _hf_ids(name, config, rng, n=4):
    if name == "A":
        return random_ids(rng, n, config.context_length, config.vocab_size)
    ids = rng.integers(1, config.vocab_size, (n, config.context_length))  # ids above the eos id 50 too
    ids[ids == 50] = 51
    for i, pos in enumerate(rng.integers(1, config.context_length, n)):
        ids[i, pos] = 50
        ids[i, min(pos + 2, config.context_length - 1)] = 50  # only the first one counts
    return ids


def test_hf_config_reading(hf_pair):
    name, model, config, _ = hf_pair
    assert config.text_width == model.config.text_config.hidden_size
    assert config.vision_heads == model.config.vision_config.num_attention_heads
    assert config.eos_token_id == (None if name == "A" else 50)
    assert config.vision_act == ("quick_gelu" if name == "A" else "gelu_tanh")
    assert ClipConfig.from_dict(json.loads(config.to_json())) == config


def test_hf_parity(hf_pair, inputs):
    name, model, config, params = hf_pair
    pixels, rng = inputs
    s = config.image_size
    pixels = pixels[:, :s, :s]
    ids = _hf_ids(name, config, rng)
    with torch.no_grad():
        px = torch.as_tensor(pixels.transpose(0, 3, 1, 2).copy())
        ref_text = model.get_text_features(input_ids=torch.as_tensor(ids)).pooler_output.numpy()
        ref_image = model.get_image_features(pixel_values=px).pooler_output.numpy()
        ref = model(input_ids=torch.as_tensor(ids), pixel_values=px)
    text, image, logits = _features_and_logits(config, params, pixels, ids)
    assert text.shape == ref_text.shape == (len(ids), config.embed_dim)
    np.testing.assert_allclose(text, ref_text, atol=ATOL, rtol=0)
    np.testing.assert_allclose(image, ref_image, atol=ATOL, rtol=0)
    np.testing.assert_allclose(logits, ref.logits_per_image.numpy(), atol=ATOL, rtol=0)
    assert np.abs(ref_text).max() > 0.1 and np.abs(ref_image).max() > 0.1
    assert np.abs(logits).max() > 0.1


def test_hf_round_trip_and_key_errors(hf_pair):
    _, model, config, params = hf_pair
    sd = state_dict_numpy(model)
    back = wclip.to_hf(params)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(1\):\n    text_model.final_layer_norm.bias"):
        wclip.from_hf({k: v for k, v in sd.items() if k != "text_model.final_layer_norm.bias"}, config)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys \(1\):\n    extra.weight"):
        wclip.from_hf({**sd, "extra.weight": np.zeros(3)}, config)
    with pytest.raises(CheckpointMismatchError, match="mis-shaped keys"):
        wclip.from_hf(sd, config.replace(text_mlp_dim=config.text_mlp_dim + 1))
    # older transformers saved position_ids buffers: accepted when they are 0..n-1
    legacy = {**sd, "text_model.embeddings.position_ids": np.arange(config.context_length)[None]}
    assert wclip.from_hf(legacy, config).keys() == params.keys()


def test_hf_directory_and_shape_inference(hf_pair, tmp_path):
    name, model, config, params = hf_pair
    model.save_pretrained(tmp_path)  # config.json + model.safetensors
    loaded_config, loaded = wclip.load_clip(tmp_path)
    assert loaded_config == config
    jax.tree.map(np.testing.assert_array_equal, loaded, params)
    inferred = wclip.config_from_state_dict(read_state_dict(tmp_path / "model.safetensors"))
    for field in ("embed_dim", "text_width", "text_layers", "text_mlp_dim", "vision_width", "vision_layers",
                  "image_size", "patch_size", "context_length", "vocab_size"):
        assert getattr(inferred, field) == getattr(config, field), field
    out = wclip.save_clip(tmp_path / "ours", config, params)
    again_config, again = wclip.load_clip(out)
    assert again_config == config
    jax.tree.map(np.testing.assert_array_equal, again, params)


@pytest.fixture(scope="module")
def openai_pair():
    clip_model = openai_clip_model()
    torch.manual_seed(0)
    model = clip_model.CLIP(**OPENAI_KW).eval()
    randomize_(model, seed=2)
    config = ClipConfig.openai(**OPENAI_KW)
    return model, config, wclip.from_torch(model.state_dict(), config)


def test_openai_parity(openai_pair, inputs):
    model, config, params = openai_pair
    pixels, rng = inputs
    ids = random_ids(rng, 4, config.context_length, config.vocab_size)
    with torch.no_grad():
        px = torch.as_tensor(pixels.transpose(0, 3, 1, 2).copy())
        ref_text = model.encode_text(torch.as_tensor(ids)).numpy()
        ref_image = model.encode_image(px).numpy()
        ref_logits = model(px, torch.as_tensor(ids))[0].numpy()
    text, image, logits = _features_and_logits(config, params, pixels, ids)
    np.testing.assert_allclose(text, ref_text, atol=ATOL, rtol=0)
    np.testing.assert_allclose(image, ref_image, atol=ATOL, rtol=0)
    np.testing.assert_allclose(logits, ref_logits, atol=ATOL, rtol=0)
    assert np.abs(ref_text).max() > 0.1 and np.abs(ref_image).max() > 0.1


def test_openai_round_trip_layouts_and_errors(openai_pair, inputs, tmp_path):
    model, config, params = openai_pair
    sd = state_dict_numpy(model)
    assert wclip.detect_layout(sd) == "openai"
    # heads are not in the weights: width / 64 unless told (this tiny model has 2 heads of 32)
    assert wclip.config_from_state_dict(sd).text_heads == 1
    assert wclip.config_from_state_dict(sd, text_heads=2) == config
    back = wclip.to_openai(params, config)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])
    # the same weights in the HF layout drive transformers' CLIPModel to the OpenAI model's outputs
    hf = transformers.CLIPModel(transformers.CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=12, eos_token_id=2),
        vision_config=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8), projection_dim=32)).eval()
    hf.load_state_dict({k: torch.as_tensor(v) for k, v in wclip.to_hf(params).items()}, strict=True)
    pixels, _ = inputs
    with torch.no_grad():
        px = torch.as_tensor(pixels.transpose(0, 3, 1, 2).copy())
        np.testing.assert_allclose(hf.get_image_features(pixel_values=px).pooler_output.numpy(),
                                   model.encode_image(px).numpy(), atol=ATOL, rtol=0)
    # OpenAI's released files carry three integer buffers; they are checked against the config
    buffers = {"input_resolution": np.array(32), "context_length": np.array(12), "vocab_size": np.array(99)}
    wclip.from_openai({**sd, **buffers}, config)
    with pytest.raises(CheckpointMismatchError, match="context_length = 77"):
        wclip.from_openai({**sd, **buffers, "context_length": np.array(77)}, config)
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(1\):\n    visual.proj"):
        wclip.from_openai({k: v for k, v in sd.items() if k != "visual.proj"}, config)
    # a plain torch.save file is read without torch; the layout and config come from the keys and shapes
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    loaded_config, loaded = wclip.load_clip(tmp_path / "tiny.pt", config)
    assert loaded_config == config
    jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_not_a_clip_checkpoint():
    with pytest.raises(CheckpointMismatchError, match="OWL-ViT / OWLv2 detector checkpoint"):
        wclip.detect_layout({"owlvit.logit_scale": np.zeros(())})
    with pytest.raises(CheckpointMismatchError, match="not a CLIP checkpoint"):
        wclip.detect_layout({"image_encoder.pos_embed": np.zeros(3)})
    with pytest.raises(CheckpointMismatchError, match="ResNet image tower"):
        wclip.config_from_state_dict({"token_embedding.weight": np.zeros((3, 2)), "visual.layer1.0.conv1.weight": 0})


def test_configs_presets_and_axes():
    b32 = ClipConfig.from_name("ViT-B/32")
    assert (b32.grid_size, b32.num_positions, b32.vision_heads, b32.text_heads) == (7, 50, 12, 8)
    assert ClipConfig.from_name("ViT-L/14@336px").image_size == 336
    assert ClipConfig.from_name("vit_b16") == ClipConfig.vit_b16()
    # the presets are OpenAI's build_model of the released models' sizes
    assert ClipConfig.vit_l14() == ClipConfig.openai(
        embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024, vision_patch_size=14,
        context_length=77, vocab_size=49408, transformer_width=768, transformer_heads=12, transformer_layers=12)
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_params(b32)))
    assert n == 151_277_313  # OpenAI ViT-B/32: 151.28M parameters
    with pytest.raises(ValueError, match="text_width .* must divide by text_heads"):
        ClipConfig(text_heads=7)
    with pytest.raises(ValueError, match="unknown ClipConfig fields"):
        ClipConfig.from_dict({"widht": 3})
    with pytest.raises(ValueError, match="model_type 'sam'"):
        ClipConfig.from_hf_config({"model_type": "sam"})
    from samjax import parallel as sharding

    tiny = ClipConfig.from_hf_config(HF_CONFIGS["A"])
    specs = jax.tree.leaves(param_logical_axes(tiny), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert len(specs) == len(jax.tree.leaves(abstract_params(tiny)))
    sharding.check_axes(a for s in specs for a in s)
    assert param_logical_axes(tiny)["text_model"]["embeddings"]["token_embedding"]["embedding"] == \
        jax.sharding.PartitionSpec("vocab", "embed")
