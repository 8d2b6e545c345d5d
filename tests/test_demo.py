"""`make demo` as it runs: python -m samjax.demo --out DIR on its embedded default, the shipped model on held-out
synthetic images; and the model itself: its held-out single-point mIoU on a fixed set of generated images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from samjax import demo, infer
from samjax.data.synthetic import decoded_sample
from samjax.evaluate import interior_point, iou
from samjax.weights import default as default_model


def test_shipped_model_segments_held_out_images():
    """The model samjax ships (infer.load() / load("tiny")) on 12 images it never saw (seed 77; training uses seed 0):
    one click at each object's interior, the highest-scoring of 3 masks; its card records where it came from."""
    card = default_model.card()
    assert card["experiment"] == "tiny_synthetic" and "python -m samjax.train" in card["command"]
    assert card["eval"]["miou_1pt"] >= 0.70 and len(card["commit"]) == 40
    predictor = infer.load()
    assert infer.load("tiny").config == predictor.config
    ious = []
    for k in range(12):
        image, gt = decoded_sample(77, k + 1, 128, 128, num_objects=6, min_object_frac=0.1, min_mask_area=256)
        predictor.set_image(image)
        for target in gt:
            point = np.array([interior_point(target)[::-1]], np.float64) + 0.5
            masks, scores, _ = predictor.predict(point, np.array([1]))
            ious.append(iou(masks[np.argmax(scores)], target))
    assert len(ious) > 30 and np.mean(ious) >= 0.65, (len(ious), np.mean(ious))


def test_make_demo_default(tmp_path, capsys):
    out = tmp_path / "out" / "demo"
    assert demo.main(["--out", str(out)]) == 0
    text = capsys.readouterr().out
    miou = float(text.split("mean IoU of one click per object, against the ground truth: ")[1].split()[0])
    assert miou >= 0.6
    assert "--checkpoint sam_vit_b_01ec64.pth" in text  # says how to segment real photos
    assert Image.open(out / "overlay.png").size[0] > 900  # four panels
    masks = sorted((out / "masks").glob("image*_object*.png"))
    assert len(masks) > 8 and set(np.unique(np.asarray(Image.open(masks[0])))) <= {0, 255}
    assert demo.main(["--point", "3,4", "--out", str(out)]) == 2  # a photo's options without a photo's model


@pytest.mark.slow  # the real ViT-B architecture at 1024
def test_demo_random_vit_b(tmp_path, capsys):
    out = tmp_path / "out" / "demo"
    assert demo.main(["--random-vit-b", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "weights are RANDOM and the masks are meaningless" in text and "--checkpoint sam_vit_b_01ec64.pth" in text
    assert Image.open(out / "overlay.png").size == (3 * 451, 300)  # three masks beside each other on the photo
    best = np.asarray(Image.open(out / "mask_best.png"))
    assert best.shape == (300, 451) and set(np.unique(best)) <= {0, 255}


def test_ship_copies_a_run_with_its_card(tmp_path):
    """make default-model's copy step: a finished workdir's model and eval.json become the shipped dir + card."""
    work = tmp_path / "work"
    (work / "model").mkdir(parents=True)
    (work / "model" / "config.json").write_text("{}")
    (work / "eval.json").write_text(json.dumps({"miou_1pt": 0.75}))
    (work / "config.json").write_text(json.dumps({"seed": 3, "train": {"num_steps": 1200},
                                                 "low_res": {"image_size": [64, 96], "num_steps": [5000, 1900]}}))
    info = default_model.ship(work, tmp_path / "shipped")
    assert info["seed"] == 3 and info["steps"] == {"64 px": 5000, "96 px": 1900, "128 px": 1200}
    assert json.loads((tmp_path / "shipped" / "model_card.json").read_text())["eval"]["miou_1pt"] == 0.75
    with pytest.raises(FileNotFoundError, match="no finished run"):
        default_model.ship(tmp_path / "nothing", tmp_path / "x")
