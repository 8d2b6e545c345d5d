"""python -m samjax.figures (the README figure, `make figures`) on a tiny model; the committed figure's size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samjax import convert, figures
from samjax.weights import store
from tests.amg_model import AMG_CONFIG

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A training workdir layout: WORKDIR/model (random weights), checkpoints/40, eval.json."""
    work = tmp_path_factory.mktemp("figures") / "tiny_run"
    params = convert.from_torch(convert.random_state_dict(AMG_CONFIG, seed=1), AMG_CONFIG)
    store.save_model(work / "model", params, AMG_CONFIG)
    (work / "checkpoints" / "40").mkdir(parents=True)
    (work / "eval.json").write_text(json.dumps({"miou_1pt": 0.123, "num_masks": 7}))
    return work / "model"


def test_describe_model(model_dir):
    assert figures.describe_model(model_dir) == ("tiny_run/model, 40 training steps, "
                                                 "held-out 1-point mIoU 0.12 (7 masks)")


def test_describe_model_with_a_low_res_stage(model_dir, tmp_path):
    import shutil

    work = tmp_path / "staged"
    shutil.copytree(model_dir.parent, work)
    (work / "low_res").mkdir()
    (work / "low_res" / "done.json").write_text(json.dumps({"stopped": "time limit", "step": 70, "image_size": 64}))
    assert figures.describe_model(work / "model") == ("staged/model, 40 training steps after 70 at 64 px, held-out "
                                                      "1-point mIoU 0.12 (7 masks)")
    (work / "low_res" / "low_res").mkdir()  # two stages: 64 px (WORKDIR/low_res/low_res), then 96 px
    (work / "low_res" / "low_res" / "done.json").write_text(json.dumps({"stopped": "time limit", "step": 900,
                                                                        "image_size": 64}))
    (work / "low_res" / "done.json").write_text(json.dumps({"stopped": "time limit", "step": 70, "image_size": 96}))
    assert figures.describe_model(work / "model") == ("staged/model, 40 training steps after 900 at 64 px and 70 at "
                                                      "96 px, held-out 1-point mIoU 0.12 (7 masks)")


def test_cli_writes_small_png(model_dir, tmp_path, capsys):
    out = tmp_path / "docs" / "overlay.png"
    assert figures.main(["--model", str(model_dir), "--out", str(out), "--points-per-side", "4"]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"wrote {out}") and "1 click" in line and "automatic masks" in line
    im = Image.open(out)
    assert im.format == "PNG" and im.size == (1040, 312)
    assert out.stat().st_size < 300 * 1024
    assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 100  # drawn images, not blank


def test_missing_model_is_one_line(tmp_path, capsys):
    assert figures.main(["--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint directory") and "\n" not in err


def test_committed_readme_figure_is_small():
    png = ROOT / "docs" / "overlay.png"
    assert png.is_file() and png.stat().st_size < 300 * 1024
    assert Image.open(png).format == "PNG"
    assert "docs/overlay.png" in (ROOT / "README.md").read_text()
