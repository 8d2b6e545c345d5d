"""Text -> boxes -> masks (samjax.infer.ground, samjax.infer.predict(text=...), python -m samjax.ground).

With a stand-in detector that returns known boxes, the masks are exactly the Predictor's masks for those box
prompts; with the real (tiny, random) OWLv2 detector the calls run end to end, compile once per bucket, and the
command line writes per-image JSON, overlays and one COCO file, resumes, and refuses bad input in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

import samjax.infer
from samjax import ground
from samjax.infer import Predictor
from samjax.infer.detect import Detections
from samjax.infer.ground import GroundedPredictor
from samjax.weights import owlvit as wowl
from samjax.weights import store
from tests.text import tiny

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")
IMAGES = tiny.images(5, [(48, 64), (40, 30)])


class KnownBoxes:
    """A detector stand-in: fixed boxes per image (XYXY pixels), each labelled with query i % len(queries)."""

    max_queries = 4

    def __init__(self, boxes_per_image):
        self.boxes_per_image = boxes_per_image
        self.calls = []

    def detect(self, images, queries, threshold, top_k, nms_thresh):
        self.calls.append((len(images), queries, threshold, top_k, nms_thresh))
        out = []
        for boxes in self.boxes_per_image[:len(images)]:
            boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
            out.append(Detections(boxes, np.linspace(0.9, 0.5, len(boxes)).astype(np.float32),
                                  np.arange(len(boxes), dtype=np.int32) % len(queries), tuple(queries)))
        return out


@pytest.fixture(scope="module")
def predictor():
    return Predictor(tiny.SAM_CONFIG, tiny.sam_params())


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """(SAM checkpoint dir, OWLv2 detector dir, input folder)."""
    root = tmp_path_factory.mktemp("ground")
    sam = store.save_model(root / "sam", tiny.sam_params(), tiny.SAM_CONFIG)
    owl = wowl.save_owlvit(root / "owl", tiny.owl_config(2), tiny.owl_params(2), tokenizer=tiny.tokenizer(16))
    images = root / "images"
    images.mkdir()
    for name, image in zip(("a.png", "b.jpg"), IMAGES):
        Image.fromarray(image).save(images / name, quality=95)
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    return sam, owl, images


def test_known_boxes_give_exactly_the_box_prompts_masks(predictor):
    boxes = [[[2, 3, 30, 40], [10.5, 0, 63, 47.5], [0, 0, 64, 48]], [[1, 1, 20, 39]]]
    standin = KnownBoxes(boxes)
    grounded = GroundedPredictor(standin, predictor, box_threshold=0.2, top_k=7, nms_thresh=None)
    one = grounded.predict(IMAGES[0], "a dog, a red car")
    assert standin.calls[-1] == (1, ("a dog", "a red car"), 0.2, 7, None)
    predictor.set_image(IMAGES[0])
    masks, iou, _ = predictor.predict_batch(boxes=np.asarray(boxes[0], np.float32), multimask_output=False)
    np.testing.assert_array_equal(one.masks, masks[:, 0])
    np.testing.assert_array_equal(one.iou_predictions, iou[:, 0])
    np.testing.assert_array_equal(one.boxes, np.asarray(boxes[0], np.float32))
    assert one.names == ["a dog", "a red car", "a dog"] and one.masks.shape == (3, 48, 64) and one.masks.any()
    # two images: one detector call, one encoder call (set_images), each image's masks as its own box prompts
    both = grounded.predict_batch(IMAGES, ["a dog", "a red car"])
    predictor.set_images(IMAGES)
    for i, result in enumerate(both):
        predictor.select_image(i)
        masks = predictor.predict_batch(boxes=np.asarray(boxes[i], np.float32), multimask_output=False)[0]
        np.testing.assert_array_equal(result.masks, masks[:, 0])
    assert standin.calls[-1][0] == 2 and both[1].masks.shape == (1, 40, 30)
    nothing = GroundedPredictor(KnownBoxes([[]]), predictor).predict(IMAGES[0], "a dog")
    assert nothing.masks.shape == (0, 48, 64) and nothing.names == []
    with pytest.raises(ValueError, match="limit of 4"):
        grounded.predict(IMAGES[0], "a, b, c, d, e")
    with pytest.raises(TypeError, match="detect"):
        GroundedPredictor(object(), predictor)


def test_owl_detector_to_masks_and_one_line_predict(predictor, dirs):
    from samjax.infer import detect as D

    sam, owl, _ = dirs
    detector = tiny.owl_detector(2)
    # top 16 of the 16 patches, as the one-line predict below (GroundedPredictor's top_k 20, capped): shared compiles
    grounded = GroundedPredictor(detector, predictor, box_threshold=0.0, top_k=16, nms_thresh=None)
    before = D._detect._cache_size()
    result = grounded.predict(IMAGES[0], "a cat, a sofa, a lamp")
    grounded.predict(IMAGES[0], ["a lamp", "a cat", "a dog", "a cup"])  # the same buckets again
    assert D._detect._cache_size() - before <= 1  # at most (128, 1 image, 4 queries, top 16); none if run before
    assert len(result) == 16 and result.masks.shape == (16, 48, 64)
    assert np.all(np.diff(result.scores) <= 0) and set(result.names) <= {"a cat", "a sofa", "a lamp"}
    assert np.all(result.boxes >= 0) and np.all(result.boxes <= [64, 48, 64, 48])
    masks, scores, names = samjax.infer.predict(IMAGES[0], text="a cat, a sofa, a lamp", checkpoint=sam,
                                                detector=owl)
    assert masks.shape[1:] == (48, 64) and len(masks) == len(scores) == len(names) and np.all(scores > 0.1)
    with pytest.raises(ValueError, match="not both and not neither"):
        samjax.infer.predict(IMAGES[0], checkpoint=sam)
    with pytest.raises(ValueError, match="text prompts need a detector"):
        samjax.infer.predict(IMAGES[0], text="a cat", checkpoint=sam)
    with pytest.raises(ValueError, match="holds no query"):
        samjax.infer.predict(IMAGES[0], text=" , ", checkpoint=sam, detector=owl)


def test_cli_writes_coco_resumes_and_refuses_bad_input(dirs, tmp_path, capsys):
    sam, owl, images = dirs
    out = tmp_path / "out"
    args = ["--detector", str(owl), "--checkpoint", str(sam), "--images", str(images), "--text", "a cat, a sofa",
            "--out", str(out), "--box-threshold", "0", "--top-k", "3", "--no-progress"]
    counts = ground.main([*args, "--overlays", "--batch-size", "2"])
    assert counts == {"done": 2, "skipped": 0, "failed": 1}
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "done 2, skipped 0" in captured.out
    coco = json.loads((out / "coco.json").read_text())
    assert coco["categories"] == [{"id": 1, "name": "a cat"}, {"id": 2, "name": "a sofa"}]
    assert [im["file_name"] for im in coco["images"]] == ["a.png", "b.jpg"]
    assert len(coco["annotations"]) == 6 and len({a["id"] for a in coco["annotations"]}) == 6
    for ann in coco["annotations"]:
        image = coco["images"][ann["image_id"] - 1]
        mask = mask_utils.decode({**ann["segmentation"], "counts": ann["segmentation"]["counts"].encode()})
        assert mask.shape == (image["height"], image["width"]) and mask.sum() == ann["area"]
        assert ann["label"] == coco["categories"][ann["category_id"] - 1]["name"] and 0 < ann["score"] < 1
    assert Image.open(out / "a.png").size == (64, 48)
    assert not list(out.glob("*.partial"))
    # a re-run skips what is done and rebuilds coco.json the same
    (out / "coco.json").unlink()
    assert ground.main(args) == {"done": 0, "skipped": 2, "failed": 1}
    assert json.loads((out / "coco.json").read_text()) == coco
    capsys.readouterr()
    bad = {
        "other queries": (["--text", "a dog"], "holds results for other queries (a cat, a sofa)"),
        "no query": (["--text", " , "], "holds no query"),
        "too many": (["--text", ",".join(f"q{i}" for i in range(300))], "more than the limit of 256"),
        "not OWL": (["--detector", str(sam)], "not an OWL-ViT / OWLv2 config"),
        "no folder": (["--images", str(tmp_path / "nope")], "does not exist"),
    }
    for name, (change, message) in bad.items():
        argv = list(args)
        for flag, value in zip(change[::2], change[1::2]):
            argv[argv.index(flag) + 1] = value
        with pytest.raises(SystemExit) as e:
            ground.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and err.count("\n") == 1, (name, err)


def test_cli_help_lists_the_documented_flags(capsys):
    with pytest.raises(SystemExit):
        ground.parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--detector", "--checkpoint", "--images", "--text", "--out", "--box-threshold", "--top-k",
                 "--nms-thresh", "--overlays", "--batch-size"):
        assert flag in text
    assert Path(ground.__file__).name == "ground.py"
