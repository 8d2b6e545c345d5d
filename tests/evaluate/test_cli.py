"""python -m samjax.evaluate TASK: every protocol end to end on a tiny random SAM and small synthetic data (the values
do not matter here; the protocols' values are tested in test_protocols.py), resumable runs, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from samjax.evaluate import main
from samjax.weights import store
from tests.conftest import TINY_CONFIGS, stand_in_params
from tests.evaluate.synth import (
    bbox,
    outer_boundary,
    shapes,
    write_bsds,
    write_instances,
)

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:lvis.*")]
CFG = TINY_CONFIGS["tiny_windowed"]  # 64 x 64 input, 8 x 8 embedding, 32 x 32 masks


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(checkpoint, COCO json, image folder, detections json, BSDS root)."""
    root = tmp_path_factory.mktemp("eval_cli")
    params = stand_in_params(CFG, scale=0.5)  # no compile; the values do not matter here
    ckpt = store.save_model(root / "ckpt", params, CFG)
    samples = [shapes(60, 80, [(5, 5, 30, 35), (35, 40, 55, 75)], seed=0),  # one size: fewer compiles
               shapes(60, 80, [(4, 30, 40, 68), (20, 4, 44, 24), (2, 2, 9, 9)], seed=1)]
    path, img_dir = write_instances(root / "coco", samples)
    dets = [{"image_id": i + 1, "category_id": k + 1, "bbox": bbox(m), "score": 0.9}
            for i, (_, masks) in enumerate(samples) for k, m in enumerate(masks)]
    (root / "dets.json").write_text(json.dumps(dets))
    return ckpt, path, img_dir, root / "dets.json", write_bsds(root / "bsds", samples), samples


def _lines(path):
    return path.read_text().splitlines()


def test_points_resumes_and_reports_per_dataset(setup, tmp_path, capsys):
    ckpt, path, img_dir, *_ = setup

    def args(out=tmp_path, clicks="3", min_area="30"):
        return ["points", "--checkpoint", str(ckpt), "--data", str(path), str(path), "--images", str(img_dir),
                str(img_dir), "--names", "a", "b", "--clicks", clicks, "--min-area", min_area, "--out", str(out),
                "--batch-prompts", "4", "--no-progress"]

    assert main([*args(), "--limit", "1"]) == 0
    first = _lines(tmp_path / "points.jsonl")
    assert [json.loads(x)["key"] for x in first] == ["a/1", "b/1"]
    assert main(args()) == 0  # continues: only the second image of each dataset is evaluated
    lines = _lines(tmp_path / "points.jsonl")
    assert lines[:2] == first and [json.loads(x)["key"] for x in lines[2:]] == ["a/2", "b/2"]
    assert json.loads(lines[3])["ann_ids"] == [3, 4, 5]  # the 7 x 7 mask (49 px) passes --min-area 30 ...
    res = json.loads((tmp_path / "points.json").read_text())
    a = res["datasets"]["a"]
    assert a["num_masks"] == 5 and len(a["miou"]) == 3 and all(0 <= x <= 1 for x in a["miou"])
    assert res["mean"]["miou"] == pytest.approx(a["miou"]) and res["datasets"]["b"] == a
    out = capsys.readouterr().out
    assert "| **mean over 2 datasets** |" in out and (tmp_path / "points.md").read_text().count("\n| a |") == 1
    # a rerun with other settings into the same folder is refused, in one line
    assert main(args(clicks="2")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "other settings (clicks: 3 -> 2)" in err and "\n" not in err
    assert main(args(tmp_path / "b", min_area="50")) == 0
    assert json.loads(_lines(tmp_path / "b" / "points.jsonl")[3])["ann_ids"] == [3, 4]  # ... but not 50


def test_edges(setup, tmp_path):
    ckpt, *_, bsds_root, samples = setup
    args = ["edges", "--checkpoint", str(ckpt), "--data", str(bsds_root), "--out", str(tmp_path), "--thresholds",
            "5", "--points-per-side", "4", "--save-edges", "--no-progress"]
    assert main(args) == 0
    res = json.loads((tmp_path / "edges.json").read_text())
    assert res["num_images"] == 2 and all(0.0 <= res[k] <= 1.0 for k in ("ods", "ois", "ap", "r50"))
    counts = [json.loads(x)["counts"] for x in _lines(tmp_path / "edges.jsonl")]
    assert np.asarray(counts).shape == (2, 5, 4)
    sum_r = 2 * int(outer_boundary(samples[0][1]).sum())  # both annotators' boundary pixels, at every threshold
    assert np.asarray(counts)[0, :, 1].tolist() == [sum_r] * 5
    assert (tmp_path / "edges" / "1.png").is_file()
    assert main([*args, "--workers", "2"]) == 0  # nothing left to do: the pool is never started


def test_edges_matching_in_worker_processes(setup, tmp_path):
    ckpt, *_, bsds_root, _ = setup
    base = ["edges", "--checkpoint", str(ckpt), "--data", str(bsds_root), "--thresholds", "5",
            "--points-per-side", "4", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "one")]) == 0
    assert main([*base, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    one = {json.loads(x)["key"]: json.loads(x)["counts"] for x in _lines(tmp_path / "one" / "edges.jsonl")}
    two = {json.loads(x)["key"]: json.loads(x)["counts"] for x in _lines(tmp_path / "two" / "edges.jsonl")}
    assert one == two


def test_proposals_and_instances(setup, tmp_path, capsys):
    ckpt, path, img_dir, dets, *_ = setup
    assert main(["proposals", "--checkpoint", str(ckpt), "--data", str(path), "--images", str(img_dir), "--out",
                 str(tmp_path), "--points-per-side", "4", "--points-per-batch", "16",
                 "--max-proposals", "20", "--no-progress"]) == 0
    res = json.loads((tmp_path / "proposals.json").read_text())
    assert res["num_images"] == 2 and 0 < res["num_proposals_mean"] <= 20
    assert 0.0 <= res["all"]["AR@1000_all"] <= 1.0 and res["all"]["num_gt"]["all"] == 5
    assert "mask AR@1000" in capsys.readouterr().out
    assert main(["instances", "--checkpoint", str(ckpt), "--data", str(path), "--images", str(img_dir),
                 "--detections", str(dets), "--out", str(tmp_path), "--batch-prompts", "4", "--no-progress"]) == 0
    res = json.loads((tmp_path / "instances.json").read_text())
    assert res["metric"] == "coco" and res["num_masks"] == 5 and 0.0 <= res["AP"] <= 1.0
    recs = [json.loads(x) for x in _lines(tmp_path / "instances.jsonl")]
    assert [len(r["results"]) for r in recs] == [2, 3] and recs[0]["results"][0]["segmentation"]["size"] == [60, 80]


def test_bad_layouts_are_one_line_errors(setup, tmp_path, capsys):
    ckpt, path, img_dir, _dets, bsds_root, _ = setup
    cases = [
        (["edges", "--data", str(img_dir)], "expected the BSDS500 layout"),
        (["points", "--data", str(path), "--images", str(img_dir), str(img_dir)], "one image folder per annotation"),
        (["proposals", "--data", str(tmp_path / "none.json"), "--images", str(img_dir)], "does not exist"),
        (["instances", "--data", str(path), "--images", str(img_dir), "--detections", str(path)], "JSON list"),
        (["edges", "--data", str(bsds_root), "--checkpoint", str(tmp_path)], "is not a samjax checkpoint"),
    ]
    for args, message in cases:
        full = [args[0], "--checkpoint", str(ckpt), *args[1:], "--out", str(tmp_path / "o"), "--no-progress"]
        if "--checkpoint" in args:
            full = [*args, "--out", str(tmp_path / "o"), "--no-progress"]
        assert main(full) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
