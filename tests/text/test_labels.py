"""Labels for automatic masks (samjax.amg.labels, AutomaticMaskGenerator(labels=, clip=), python -m samjax.amg
--labels --clip): masked crops, a stand-in scorer whose right answers are known by construction, CLIP's zero-shot
probabilities on a tiny random CLIP, and the generator and its command line with and without labels."""

from __future__ import annotations

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from samjax.amg import AutomaticMaskGenerator
from samjax.amg import labels as L
from samjax.amg.cli import main as amg_main
from samjax.infer import Predictor
from samjax.models.clip import Clip
from samjax.weights import clip as wclip
from samjax.weights import store
from tests.text import tiny

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")
RED, GREEN, BLUE = (220, 30, 30), (30, 200, 40), (20, 40, 220)
AMG_OPTS = dict(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0)


def shapes_image():
    """A blue image with a red ring (its box mostly blue: the ring's hole and corners) and a green disk, and the
    three masks: ring, disk, background."""
    yy, xx = np.mgrid[:40, :64]
    r1 = np.hypot(yy - 20, xx - 16)
    ring = (r1 >= 8) & (r1 <= 12)
    disk = np.hypot(yy - 20, xx - 46) <= 8
    image = np.empty((40, 64, 3), np.uint8)
    image[:] = BLUE
    image[ring], image[disk] = RED, GREEN
    return image, [ring, disk, ~(ring | disk)]


class ColourLabeler(L.ClipLabeler):
    """A stand-in CLIP: a crop's embedding is its mean colour minus the fill colour, each label's the unit vector
    of its colour channel; everything else (crops, scoring) is ClipLabeler's."""

    def __init__(self):
        self.labels = ("red", "green", "blue")
        self.input_size, self.fill = 16, (123, 117, 104)
        self.logit_scale = 100.0
        self.text_embeddings = np.eye(3, dtype=np.float32)

    def embed_crops(self, crops):
        v = crops.reshape(len(crops), -1, 3).astype(np.float32).mean(1) - np.asarray(self.fill, np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_masked_crops_and_the_right_labels_by_construction():
    image, masks = shapes_image()
    crops = L.crop_masks(image, masks, 16, (123, 117, 104))
    assert crops.shape == (3, 16, 16, 3) and crops.dtype == np.uint8
    assert tuple(crops[0, 8, 8]) == (123, 117, 104)  # the ring's blue hole is greyed out
    assert tuple(crops[2, 8, 8]) != (123, 117, 104)
    names, scores = ColourLabeler().label(image, masks)
    assert [("red", "green", "blue")[i] for i in names] == ["red", "green", "blue"]
    assert np.all(scores > 0.99)
    # the unmasked box of the ring is mostly blue: without the grey-out it would be labelled blue
    box = image[8:33, 4:29]
    assert ColourLabeler().embed_crops(box[None]).argmax() == 2
    empty = L.crop_masks(image, [np.zeros((40, 64), bool)], 16, (1, 2, 3))
    assert (empty == np.array([1, 2, 3], np.uint8)).all()


def test_tiny_clip_probabilities(tmp_path, monkeypatch):
    image, masks = shapes_image()
    monkeypatch.setattr(L, "CHUNK", 2)  # three masks in chunks of two: batches 2 and 1
    labeler = L.ClipLabeler.load((tiny.CLIP_CONFIG, tiny.clip_params()), "cat, sofa , lamp")
    assert labeler.labels == ("cat", "sofa", "lamp")
    names, scores = labeler.label(image, masks)
    crops = L.crop_masks(image, masks, tiny.CLIP_CONFIG.image_size, labeler.fill)
    cfg = tiny.CLIP_CONFIG
    pixels = (crops / 255.0 - np.asarray(cfg.pixel_mean)) / np.asarray(cfg.pixel_std)
    ids = tiny.tokenizer(77)([f"a photo of a {x}." for x in labeler.labels])
    logits = np.asarray(jax.jit(lambda p, x, t: Clip(cfg).apply({"params": p}, x, t))(
        tiny.clip_params(), jnp.asarray(pixels, jnp.float32), ids))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_array_equal(names, probs.argmax(1))
    np.testing.assert_allclose(scores, probs.max(1), atol=1e-5)
    # the same from a checkpoint directory (save_clip's; the tokenizer from the CLIP package)
    directory = wclip.save_clip(tmp_path / "clip", cfg, tiny.clip_params())
    again = L.ClipLabeler.load(directory, ["cat", "sofa", "lamp"])
    np.testing.assert_allclose(again.label(image, masks)[1], scores, atol=1e-6)
    with pytest.raises(ValueError, match="at least two labels"):
        L.ClipLabeler.load(directory, "cat")
    with pytest.raises(ValueError, match="repeat a label"):
        L.parse_labels(["cat", "cat"])
    with pytest.raises(ValueError, match="must hold"):
        L.ClipLabeler.load(directory, "cat, dog", template="a photo")


@pytest.fixture(scope="module")
def amg_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    sam = store.save_model(root / "sam", tiny.sam_params(), tiny.SAM_CONFIG)
    clip = wclip.save_clip(root / "clip", tiny.CLIP_CONFIG, tiny.clip_params())
    inputs = root / "in"
    inputs.mkdir()
    image = shapes_image()[0]
    Image.fromarray(image).save(inputs / "shapes.png")
    return sam, clip, inputs, image, Predictor(tiny.SAM_CONFIG, tiny.sam_params())


def test_generator_with_labels_adds_two_keys_only(amg_setup):
    _, clip, _, image, predictor = amg_setup
    plain = AutomaticMaskGenerator(predictor, **AMG_OPTS).generate(image)
    labeler = L.ClipLabeler.load(clip, ["cat", "sofa"])
    labelled = AutomaticMaskGenerator(predictor, **AMG_OPTS, clip=labeler).generate(image)
    assert len(plain) == len(labelled) > 0
    for p, q in zip(plain, labelled):
        assert set(q) - set(p) == {"label", "label_score"}
        for k in p:
            np.testing.assert_array_equal(p[k], q[k], err_msg=k)
    names, scores = labeler.label(image, [r["segmentation"] for r in plain])
    assert [r["label"] for r in labelled] == [labeler.labels[i] for i in names]
    np.testing.assert_allclose([r["label_score"] for r in labelled], scores, atol=1e-6)
    with pytest.raises(ValueError, match="labels need a CLIP model"):
        AutomaticMaskGenerator(predictor, labels=["cat", "sofa"])
    with pytest.raises(ValueError, match="without labels"):
        AutomaticMaskGenerator(predictor, clip=clip)


def test_cli_writes_labels_to_json_and_csv(amg_setup, tmp_path, capsys):
    sam, clip, inputs, _, _ = amg_setup
    common = ["--checkpoint", str(sam), "--input", str(inputs), "--points-per-side", "3", "--pred-iou-thresh", "0",
              "--stability-score-thresh", "0", "--no-progress", "--labels", "cat,sofa", "--clip", str(clip)]
    amg_main([*common, "--output", str(tmp_path / "png")])
    rows = list(csv.DictReader((tmp_path / "png" / "shapes" / "metadata.csv").open()))
    amg_main([*common, "--output", str(tmp_path / "rle"), "--convert-to-rle"])
    records = json.loads((tmp_path / "rle" / "shapes.json").read_text())
    assert len(rows) == len(records) > 0
    assert [r["label"] for r in rows] == [r["label"] for r in records] and {r["label"] for r in rows} <= {"cat",
                                                                                                         "sofa"}
    np.testing.assert_allclose([float(r["label_score"]) for r in rows], [r["label_score"] for r in records])
    capsys.readouterr()
    for change, message in ((["--clip", str(sam)], "config.json is not a CLIP config"),
                            (["--labels", "cat"], "at least two labels")):
        argv = list(common)
        argv[argv.index(change[0]) + 1] = change[1]
        with pytest.raises(SystemExit) as e:
            amg_main([*argv, "--output", str(tmp_path / "bad")])
        assert e.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        amg_main([*common[:-4], "--labels", "cat,sofa", "--output", str(tmp_path / "bad")])  # --labels, no --clip
    assert "--labels and --clip go together" in capsys.readouterr().err
