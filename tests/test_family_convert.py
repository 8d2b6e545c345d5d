"""`python -m samjax.convert --model auto` on an official-format checkpoint of each family (HQ-SAM, MobileSAM,
EfficientViT-SAM, SAM 2.1), the model directory it writes (config.json naming the family, params/ and batch_stats/),
`samjax.weights.store` round trips, `samjax.infer.load` of the directory and of the file, and
`python -m samjax.amg` on a family's model directory.

The checkpoints are the converters' own `to_torch` of random variables (their key sets and shapes are the official
builders' ones: each family's parity test checks that), saved with torch.save as the official files are (SAM 2's
wrapped in {"model": ...}). No model is run at its real size here: only its conversion and loading.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from samjax import convert, infer
from samjax.amg import cli as amg_cli
from samjax.models import efficientvit_sam as ev_models
from samjax.models import hq_sam as hq_models
from samjax.models import mobile_sam as mb_models
from samjax.models import sam2 as sam2_models
from samjax.weights import detect, keys, store
from samjax.weights import efficientvit_sam as ev_weights
from samjax.weights import hq_sam as hq_weights
from samjax.weights import mobile_sam as mb_weights
from samjax.weights import sam2 as sam2_weights
from tests.conftest import TINY_CONFIGS

torch = pytest.importorskip("torch")

# family -> (preset, config, state dict of random variables in the official layout)
PRESETS = {
    "hq_sam": ("sam_hq_vit_tiny", lambda: hq_models.HQSamConfig.sam_hq_vit_tiny(), hq_models.abstract_variables,
               hq_weights.to_torch),
    "mobile_sam": ("mobile_sam", lambda: mb_models.MobileSamConfig.mobile_sam(), mb_models.abstract_variables,
                   mb_weights.to_torch),
    "efficientvit_sam": ("efficientvit_sam_l0", lambda: ev_models.EfficientViTSamConfig.l0(),
                         ev_models.abstract_variables, ev_weights.to_torch),
    "sam2": ("sam2.1_hiera_t", lambda: sam2_models.Sam2Config.from_name("sam2.1_hiera_t"),
             lambda c: {"params": sam2_models.abstract_params(c)}, lambda v, c: sam2_weights.to_torch(v["params"], c)),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (path of an official-format .pt, config, variables)."""
    d = tmp_path_factory.mktemp("family_ckpts")
    out = {}
    for family, (preset, make_config, abstract, to_torch) in PRESETS.items():
        config = make_config()
        variables = keys.random_variables(abstract(config), seed=3)
        sd = {k: torch.from_numpy(np.asarray(v)) for k, v in to_torch(variables, config).items()}
        path = d / f"{preset}.pt"
        torch.save({"model": sd} if family == "sam2" else sd, path)
        out[family] = (path, config, variables)
    return out


@pytest.mark.parametrize("family", sorted(PRESETS))
def test_convert_auto_writes_a_family_model_dir(family, checkpoints, tmp_path, capsys):
    path, config, variables = checkpoints[family]
    assert convert.main(["--checkpoint", str(path), "--out", str(tmp_path / "m")]) == 0
    assert f"({family}," in capsys.readouterr().out
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["family"] == family
    loaded_config, tree = store.load_model(tmp_path / "m")
    assert loaded_config == config
    has_stats = "batch_stats" in variables
    assert (tmp_path / "m" / "batch_stats").is_dir() == has_stats
    expected = variables["params"] if family == "sam2" else variables
    for (p, a), b in zip(jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(a), b, err_msg=jax.tree_util.keystr(p))
    if family == "sam2":  # SAM 2 serves through its own predictor (SAM2ImagePredictor's calls)
        predictor = infer.load(tmp_path / "m")
        assert type(predictor).__name__ == "Sam2Predictor"
        assert predictor.config.image_size == config.image_size
    else:
        predictor = infer.load(tmp_path / "m", dtype="bfloat16")
        assert predictor.family.NAME == family and predictor.family.sam.dtype == "bfloat16"


def test_detect_and_load_of_official_files(checkpoints):
    """infer.load of an official file converts it in memory; detect names each family's preset."""
    from samjax.weights.pth import load_torch_checkpoint

    for family, (path, config, _) in checkpoints.items():
        assert detect.detect(load_torch_checkpoint(path)) == (family, PRESETS[family][0])
    predictor = infer.load(checkpoints["mobile_sam"][0])
    assert predictor.config == checkpoints["mobile_sam"][1]
    assert predictor.family.encoder_size == 1024
    ev = infer.load(checkpoints["efficientvit_sam"][0], model="efficientvit_sam_l0")
    assert ev.family.encoder_size == 512 and ev.family.sam.image_size == 1024


def test_unknown_or_mismatched_checkpoints_say_what_is_wrong(checkpoints, tmp_path, capsys):
    torch.save({"fc.weight": torch.zeros(3, 2)}, tmp_path / "other.pth")
    assert convert.main(["--checkpoint", str(tmp_path / "other.pth"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a SAM checkpoint" in err and "MobileSAM" in err and "SAM 2" in err and "\n" not in err
    path = checkpoints["hq_sam"][0]
    sd = {k: v for k, v in torch.load(path).items() if not k.startswith("mask_decoder.hf_mlp.")}
    torch.save(sd, tmp_path / "broken_hq.pth")
    assert convert.main(["--checkpoint", str(tmp_path / "broken_hq.pth"), "--out", str(tmp_path / "o")]) == 2
    assert "missing keys" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="unknown model 'vit_q'"):
        detect.convert({}, "vit_q")


def test_sam_dirs_name_their_family_and_old_ones_still_load(tmp_path):
    cfg = TINY_CONFIGS["tiny_windowed"]
    params = convert.from_torch(convert.random_state_dict(cfg), cfg)
    store.save_model(tmp_path / "new", params, cfg)
    assert json.loads((tmp_path / "new" / "config.json").read_text())["family"] == "sam"
    store.save_model(tmp_path / "old", params, cfg)
    (tmp_path / "old" / "config.json").write_text(cfg.to_json())  # written before families existed
    for d in ("new", "old"):
        config, loaded = store.load_model(tmp_path / d)
        assert config == cfg and set(loaded) == {"image_encoder", "prompt_encoder", "mask_decoder"}


def test_amg_cli_on_a_family_model_dir(tmp_path, photo):
    """python -m samjax.amg on an HQ-SAM model directory (tiny, random weights: every threshold 0)."""
    from PIL import Image

    cfg = hq_models.HQSamConfig(TINY_CONFIGS["tiny_windowed"])
    store.save_model(tmp_path / "hq", keys.random_variables(hq_models.abstract_variables(cfg)), cfg)
    Image.fromarray(photo).save(tmp_path / "cat.png")
    counts = amg_cli.main(["--checkpoint", str(tmp_path / "hq"), "--input", str(tmp_path / "cat.png"), "--output",
                           str(tmp_path / "out"), "--convert-to-rle", "--points-per-side", "2", "--pred-iou-thresh",
                           "0", "--stability-score-thresh", "0", "--no-progress"])
    assert counts == {"done": 1, "skipped": 0, "failed": 0}
    records = json.loads((tmp_path / "out" / "cat.json").read_text())
    assert records and records[0]["segmentation"]["size"] == list(photo.shape[:2])
