"""samjax.weights.sam2: the official key sets of every preset, detection, round trips and clear errors."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from samjax.models import sam2 as S
from samjax.weights import sam2 as W
from samjax.weights.keys import CheckpointMismatchError
from tests.sam2.tiny import TINY, stand_in_params


def shapes_only(shapes: dict) -> dict:
    """A state dict of zero-memory arrays with the given shapes (detection reads shapes only)."""
    return {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}


@pytest.mark.torch
@pytest.mark.parametrize("name", S.PRESETS)
def test_official_key_set_and_detection(name):
    """Our converter's keys and shapes are exactly the official model's (built from its yaml on the meta device),
    and a state dict of those shapes is recognised as this preset (SAM 2.0 and 2.1 of a size differ in keys)."""
    pytest.importorskip("sam2.build_sam")
    from tests.sam2.official_sam2 import official_shapes

    official = official_shapes(name)
    assert W.torch_shapes(S.Sam2Config.from_name(name)) == official
    assert W.detect_model(shapes_only(official)) == name
    assert W.detect_model({"model": shapes_only(official)}) == name  # the file's wrapper


def test_round_trip_and_layouts():
    params = jax.tree.map(np.asarray, stand_in_params(TINY))
    sd = W.to_torch(params, TINY)
    back = W.from_torch({"model": sd}, TINY)
    assert jax.tree.all(jax.tree.map(np.array_equal, back, params))
    trunk = params["image_encoder"]["trunk"]
    np.testing.assert_array_equal(sd["image_encoder.trunk.pos_embed"], trunk["pos_embed"].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(sd["image_encoder.trunk.blocks.0.attn.qkv.weight"],
                                  trunk["blocks_0"]["attn"]["qkv"]["kernel"].T)
    dw = params["memory_encoder"]["fuser"]["layers_0"]["dwconv"]["kernel"]  # (7, 7, 1, C) depthwise
    assert sd["memory_encoder.fuser.layers.0.dwconv.weight"].shape == (dw.shape[3], 1, 7, 7)
    mlp = params["sam_mask_decoder"]["transformer"]["layers_0"]["mlp"]
    np.testing.assert_array_equal(sd["sam_mask_decoder.transformer.layers.0.mlp.layers.1.weight"],
                                  mlp["lin2"]["kernel"].T)
    assert W.detect_model(sd) is None  # a tiny model is no preset


def test_mismatches_are_listed():
    sd = W.to_torch(jax.tree.map(np.asarray, stand_in_params(TINY)), TINY)
    broken = dict(sd)
    del broken["no_obj_ptr"]
    broken["memory_encoder.extra.weight"] = np.zeros(3, np.float32)
    broken["obj_ptr_tpos_proj.weight"] = np.zeros((4, 4), np.float32)
    with pytest.raises(CheckpointMismatchError) as e:
        W.from_torch(broken, TINY)
    msg = str(e.value)
    assert "missing keys (1):\n    no_obj_ptr" in msg and "unexpected keys (1):\n    memory_encoder.extra.weight" in msg
    assert "obj_ptr_tpos_proj.weight: checkpoint (4, 4), expected (8, 32)" in msg
    with pytest.raises(CheckpointMismatchError, match="not a SAM 2 checkpoint: none of its 2 keys"):
        W.from_torch({"image_encoder.blocks.0.attn.qkv.weight": np.zeros(1), "mask_decoder.iou_token.weight": 0}, TINY)
    with pytest.raises(CheckpointMismatchError, match="looks like sam2.1_hiera_t"):
        W.check_state_dict(shapes_only(W.torch_shapes(S.Sam2Config.from_name("sam2.1_hiera_t"))),
                           S.Sam2Config.from_name("sam2.1_hiera_s"))


@pytest.mark.torch
def test_load_checkpoint_file(tmp_path):
    """An official-format file ({"model": state_dict} saved by torch) read back through samjax's .pt reader."""
    torch = pytest.importorskip("torch")
    params = jax.tree.map(np.asarray, stand_in_params(TINY, seed=3))
    sd = {k: torch.as_tensor(np.array(v)) for k, v in W.to_torch(params, TINY).items()}
    path = tmp_path / "tiny.pt"
    torch.save({"model": sd}, path)
    loaded, config = W.load_checkpoint(path, TINY)
    assert config == TINY and jax.tree.all(jax.tree.map(np.array_equal, loaded, params))
    with pytest.raises(CheckpointMismatchError, match="does not match the SAM 2 config"):
        W.load_checkpoint(path)  # no preset has these shapes: the differences from sam2.1_hiera_t are listed
