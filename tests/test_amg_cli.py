"""python -m samjax.amg: PNG masks + metadata.csv or COCO JSON per image, skipping done and unreadable files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from samjax.amg import AutomaticMaskGenerator
from samjax.amg.__main__ import main
from samjax.convert import from_torch
from samjax.infer import Predictor
from samjax.weights import store
from tests.amg_model import AMG_CONFIG, synthetic_image, trained_official
from tests.subprocess_env import repo_env

OPTS = ["--points-per-side", "6", "--pred-iou-thresh", "0.1", "--stability-score-thresh", "0.3", "--no-progress"]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(checkpoint dir, input folder, {stem: image}, generator with the CLI's options)."""
    root = tmp_path_factory.mktemp("amg_cli")
    params = from_torch(trained_official().state_dict(), AMG_CONFIG)
    ckpt = store.save_model(root / "ckpt", jax.device_get(params), AMG_CONFIG)
    inp = root / "in"
    inp.mkdir()
    a, b = synthetic_image(3, 1, 120, 160, 10)[0], synthetic_image(3, 2, 144, 112, 10)[0]
    Image.fromarray(a).save(inp / "a.png")
    Image.fromarray(b).save(inp / "b.png")
    (inp / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (inp / "notes.txt").write_text("not an image")
    gen = AutomaticMaskGenerator(Predictor(AMG_CONFIG, params), points_per_side=6, pred_iou_thresh=0.1,
                                 stability_score_thresh=0.3)
    return ckpt, inp, {"a": a, "b": b}, gen


def test_folder_to_png_masks_then_rerun_skips(setup, tmp_path, capsys):
    ckpt, inp, images, gen = setup
    out = tmp_path / "out"
    counts = main(["--checkpoint", str(ckpt), "--input", str(inp), "--output", str(out), *OPTS])
    assert counts == {"done": 2, "skipped": 0, "failed": 2}
    err = capsys.readouterr()
    assert "broken.jpg" in err.err and "notes.txt" in err.err and "unsupported" in err.err
    assert "done 2, skipped 0" in err.out and "failed 2" in err.out
    for stem, image in images.items():
        ref = gen.generate(image)
        rows = list(csv.DictReader((out / stem / "metadata.csv").open()))
        assert len(rows) == len(ref) > 0
        for i, (row, r) in enumerate(zip(rows, ref)):
            mask = np.asarray(Image.open(out / stem / f"{i}.png")) > 0
            np.testing.assert_array_equal(mask, r["segmentation"])
            assert int(row["area"]) == r["area"]
            assert [int(row[k]) for k in ("bbox_x0", "bbox_y0", "bbox_w", "bbox_h")] == r["bbox"]
            assert float(row["predicted_iou"]) == pytest.approx(r["predicted_iou"], abs=1e-6)
    assert not list(out.glob("*.partial"))

    counts = main(["--checkpoint", str(ckpt), "--input", str(inp), "--output", str(out), *OPTS])
    assert counts == {"done": 0, "skipped": 2, "failed": 2}


def test_single_image_to_coco_json(setup, tmp_path):
    from pycocotools import mask as mask_utils

    ckpt, inp, images, gen = setup
    out = tmp_path / "out"
    counts = main(["--checkpoint", str(ckpt), "--input", str(inp / "b.png"), "--output", str(out),
                   "--convert-to-rle", *OPTS])
    assert counts == {"done": 1, "skipped": 0, "failed": 0}
    records = json.loads((out / "b.json").read_text())
    ref = gen.generate(images["b"])
    assert len(records) == len(ref) > 0
    for rec, r in zip(records, ref):
        seg = rec["segmentation"]
        mask = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
        np.testing.assert_array_equal(mask, r["segmentation"])
        assert rec["bbox"] == r["bbox"] and rec["crop_box"] == r["crop_box"]


def test_missing_input_and_module_entry_point(setup, tmp_path):
    ckpt, *_ = setup
    with pytest.raises(SystemExit) as e:  # one line on stderr, not a traceback (tests/test_first_contact.py)
        main(["--checkpoint", str(ckpt), "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o")])
    assert e.value.code == 2
    out = subprocess.run([sys.executable, "-m", "samjax.amg", "--help"], env=repo_env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0
    for flag in ("--convert-to-rle", "--points-per-side", "--crop-n-layers", "--min-mask-region-area"):
        assert flag in out.stdout
