"""Conversion: the key table against the official model, mismatch errors, the CLI, and ViT-B at 1024."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from samjax import convert, infer
from samjax.models import SamConfig
from samjax.weights import store
from tests.conftest import TINY_CONFIGS
from tests.official import build_official, import_official, randomize_

torch, segment_anything = import_official()


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_presets_have_the_official_keys_and_shapes(name):
    with torch.device("meta"):  # no memory: only keys and shapes
        sam = segment_anything.sam_model_registry[name]()
    official = {k: tuple(v.shape) for k, v in sam.state_dict().items()}
    ours = convert.torch_shapes(SamConfig.from_name(name))
    assert ours == official


def test_round_trip_is_exact():
    cfg = TINY_CONFIGS["tiny_windowed"]
    sd = {k: v.numpy() for k, v in build_official(cfg).state_dict().items()}
    back = convert.to_torch(convert.from_torch(sd, cfg), cfg)
    assert back.keys() == sd.keys()
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k].reshape(back[k].shape), err_msg=k)


def test_mismatch_lists_missing_unexpected_and_misshaped_keys():
    cfg = TINY_CONFIGS["tiny_windowed"]
    sd = dict(convert.random_state_dict(cfg))
    del sd["image_encoder.blocks.0.attn.qkv.weight"]
    sd["image_encoder.blocks.9.attn.qkv.weight"] = np.zeros((3, 3), np.float32)
    sd["mask_decoder.iou_token.weight"] = np.zeros((2, 32), np.float32)
    with pytest.raises(convert.CheckpointMismatchError) as e:
        convert.from_torch(sd, cfg)
    msg = str(e.value)
    assert "missing keys (1)" in msg and "image_encoder.blocks.0.attn.qkv.weight" in msg
    assert "unexpected keys (1)" in msg and "image_encoder.blocks.9.attn.qkv.weight" in msg
    assert "mask_decoder.iou_token.weight: checkpoint (2, 32), expected (1, 32)" in msg


def test_wrong_model_size_says_which_size_it_is():
    sd = convert.random_state_dict(SamConfig.vit_b())
    assert convert.detect_model(sd) == "vit_b"
    with pytest.raises(ValueError, match="looks like vit_b"):
        convert.from_torch(sd, SamConfig.vit_l())


def test_pixel_stats_are_checked():
    cfg = TINY_CONFIGS["tiny_windowed"]
    sd = dict(convert.random_state_dict(cfg))
    sd["pixel_std"] = np.array(cfg.pixel_std, np.float32).reshape(3, 1, 1)  # accepted when it matches the config
    convert.from_torch(sd, cfg)
    sd["pixel_mean"] = np.zeros((3, 1, 1), np.float32)
    with pytest.raises(ValueError, match="pixel_mean"):
        convert.from_torch(sd, cfg)


def test_cli_errors(tmp_path, capsys):
    assert convert.main(["--checkpoint", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    torch.save({"linear.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    assert convert.main(["--checkpoint", str(tmp_path / "other.pth"), "--out", str(tmp_path / "o")]) == 2
    assert "not a SAM checkpoint" in capsys.readouterr().err  # one line, not a list of 300 missing keys
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert convert.main(["--checkpoint", str(tmp_path / "junk.pth"), "--out", str(tmp_path / "o")]) == 2
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err


def test_load_rejects_params_of_another_size(tmp_path):
    small, other = TINY_CONFIGS["tiny_windowed"], TINY_CONFIGS["tiny_noabs_deep"]
    params = convert.from_torch(convert.random_state_dict(small), small)
    store.save_model(tmp_path / "ck", params, small)
    (tmp_path / "ck" / "config.json").write_text(other.to_json())
    with pytest.raises(ValueError, match="do not match"):
        infer.load(tmp_path / "ck")
    with pytest.raises(FileNotFoundError, match="samjax.convert"):
        infer.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a samjax checkpoint"):
        infer.load(tmp_path)


@pytest.mark.slow
def test_vit_b_1024_official_pth_through_cli_matches_official(tmp_path, photo):
    """The real ViT-B architecture at 1024: official model -> .pth -> CLI -> orbax dir -> load -> same masks."""
    torch.manual_seed(0)
    sam = segment_anything.sam_model_registry["vit_b"]()
    randomize_(sam, seed=0)
    sam.eval()
    torch.save(sam.state_dict(), tmp_path / "sam_vit_b_random.pth")
    assert convert.main(["--checkpoint", str(tmp_path / "sam_vit_b_random.pth"), "--out", str(tmp_path / "ck")]) == 0
    ours = infer.load(tmp_path / "ck")
    assert ours.config == SamConfig.vit_b()

    ref = segment_anything.SamPredictor(sam)
    with torch.no_grad():
        ref.set_image(photo)
        r_logits, r_iou, r_low = ref.predict(point_coords=np.array([[200.0, 120.0]]), point_labels=np.array([1]),
                                             return_logits=True)
        b_logits, b_iou, b_low = ref.predict(box=np.array([60, 30, 350, 280]), multimask_output=False,
                                             return_logits=True)
    ours.set_image(photo)
    np.testing.assert_allclose(ours.get_image_embedding(), ref.get_image_embedding().numpy().transpose(0, 2, 3, 1),
                               atol=1e-4, rtol=0)
    o_logits, o_iou, o_low = ours.predict(point_coords=np.array([[200.0, 120.0]]), point_labels=np.array([1]),
                                          return_logits=True)
    np.testing.assert_allclose(o_low, r_low, atol=1e-4, rtol=0)
    np.testing.assert_allclose(o_iou, r_iou, atol=1e-4, rtol=0)
    np.testing.assert_allclose(o_logits, r_logits, atol=1e-4, rtol=0)
    o_masks, _, _ = ours.predict(point_coords=np.array([[200.0, 120.0]]), point_labels=np.array([1]))
    decided = np.abs(r_logits) > 1e-4
    assert ((o_masks == (r_logits > 0)) | ~decided).all()
    ob_logits, ob_iou, ob_low = ours.predict(box=np.array([60, 30, 350, 280]), multimask_output=False,
                                             return_logits=True)
    np.testing.assert_allclose(ob_low, b_low, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ob_iou, b_iou, atol=1e-4, rtol=0)


def test_pth_reader_matches_torch_load(tmp_path):
    """samjax.weights.pth reads what torch.save writes, without torch: every dtype, views, non-contiguous tensors."""
    from samjax.weights import pth

    sd = {k: v for k, v in build_official(TINY_CONFIGS["tiny_windowed"]).state_dict().items()}
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd.update({"t.transposed": base.t(), "t.slice": base[1:3, 2:], "t.half": base.half(), "t.bf16": base.bfloat16(),
               "t.long": torch.arange(5), "t.bool": base > 3, "t.scalar": torch.tensor(2.5)})
    torch.save(sd, tmp_path / "x.pth")
    got = pth.load_state_dict(tmp_path / "x.pth")
    assert got.keys() == sd.keys()
    for k, v in sd.items():
        ref = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
        np.testing.assert_array_equal(np.asarray(got[k], dtype=ref.dtype), ref, err_msg=k)
    # the converter path uses it: same params as converting the in-memory state dict
    cfg = TINY_CONFIGS["tiny_windowed"]
    torch.save({"model": build_official(cfg).state_dict()}, tmp_path / "wrapped.pth")
    a = convert.from_torch(convert.load_torch_checkpoint(tmp_path / "wrapped.pth"), cfg)
    b = convert.from_torch(build_official(cfg).state_dict(), cfg)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_pth_reader_refuses_code(tmp_path):
    import pickle
    import zipfile

    from samjax.weights import pth

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with zipfile.ZipFile(tmp_path / "evil.pth", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}))
    with pytest.raises(pth.UnsupportedCheckpoint, match="builtins.print"):
        pth.load_state_dict(tmp_path / "evil.pth")
