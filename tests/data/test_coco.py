"""COCO-format instance masks -> the training TFRecords: every segmentation form, the skips, resume, the pipeline."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from samjax.data import rle
from samjax.data.coco import main
from samjax.data.example import decode_record
from samjax.data.pipeline import PipelineConfig, make_iterator
from samjax.data.tfrecord import iter_records

H, W = 40, 56


def _image(path, fmt, mode="RGB", size=(W, H)):
    rng = np.random.default_rng(len(str(path)))
    arr = rng.integers(0, 255, (size[1], size[0], 3), np.uint8)
    Image.fromarray(arr).convert(mode).save(path, format=fmt)


def _square(x0, y0, x1, y1):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _uncompressed(m):
    """Column-major runs starting with zeros, as COCO's iscrowd RLE."""
    flat = m.T.ravel()
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    return {"size": [H, W], "counts": [int(r) for r in runs]}


@pytest.fixture
def coco(tmp_path):
    img = tmp_path / "images"
    img.mkdir()
    _image(img / "a.jpg", "JPEG")
    _image(img / "b.png", "PNG")
    _image(img / "gray.jpg", "JPEG", mode="L")
    _image(img / "wrong_size.jpg", "JPEG", size=(W + 1, H))
    (img / "broken.jpg").write_bytes(b"not an image")
    _image(img / "bad_ann.jpg", "JPEG")
    _image(img / "crowd_only.jpg", "JPEG")
    sq = _square(10, 5, 30, 25)
    compressed = mask_utils.encode(np.asfortranarray(_square(0, 0, 8, 8)))
    images = [{"id": i, "file_name": f, "height": H, "width": W} for i, f in enumerate(
        ["a.jpg", "b.png", "gray.jpg", "missing.jpg", "wrong_size.jpg", "broken.jpg", "bad_ann.jpg",
         "crowd_only.jpg"], start=1)]
    anns = [
        {"id": 10, "image_id": 1, "iscrowd": 0, "segmentation": [[5, 5, 25, 5, 25, 20, 5, 20]]},  # polygon
        {"id": 11, "image_id": 1, "iscrowd": 0, "segmentation": [[30, 2, 40, 2, 40, 8], [44, 20, 50, 20, 50, 30]]},
        {"id": 12, "image_id": 1, "iscrowd": 0, "segmentation": [[1, 1, 2, 1, 3, 1]]},  # collinear: no pixels
        {"id": 13, "image_id": 1, "iscrowd": 1, "segmentation": _uncompressed(sq)},  # crowd: dropped by default
        {"id": 20, "image_id": 2, "iscrowd": 0, "segmentation": _uncompressed(sq)},  # uncompressed RLE
        {"id": 30, "image_id": 3, "iscrowd": 0,
         "segmentation": {"size": [H, W], "counts": compressed["counts"].decode()}},  # compressed RLE
        {"id": 40, "image_id": 4, "iscrowd": 0, "segmentation": [[1, 1, 9, 1, 9, 9]]},
        {"id": 50, "image_id": 5, "iscrowd": 0, "segmentation": [[1, 1, 9, 1, 9, 9]]},
        {"id": 60, "image_id": 6, "iscrowd": 0, "segmentation": [[1, 1, 9, 1, 9, 9]]},
        {"id": 70, "image_id": 7, "iscrowd": 0, "segmentation": [[1, 1, 9, 1]]},  # two points: malformed
        {"id": 80, "image_id": 8, "iscrowd": 1, "segmentation": _uncompressed(sq)},
    ]
    ann_path = tmp_path / "instances.json"
    ann_path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1}]}))
    return ann_path, img, {"square": sq, "corner": _square(0, 0, 8, 8)}


def _records(out):
    return {r["image_id"]: r for p in sorted(out.glob("coco-*.tfrecord")) for _, d in iter_records(p)
            for r in [decode_record(d)]}


def test_convert_every_segmentation_form_and_skip_what_is_unusable(coco, tmp_path, capsys):
    ann_path, img, masks = coco
    out = tmp_path / "out"
    assert main(["--annotations", str(ann_path), "--images", str(img), "--output", str(out), "--num-shards", "2",
                 "--workers", "1", "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert "done: 3 images, 4 masks in 2 shards" in cap.out and "5 samples/files skipped" in cap.out
    for reason in ("missing.jpg", "wrong_size.jpg: image is 40x57", "broken.jpg: does not decode",
                   "annotation 70: polygons must be lists of at least 3", "crowd_only.jpg: no masks"):
        assert reason in cap.err, reason

    recs = _records(out)
    assert sorted(recs) == [1, 2, 3]
    a, b, gray = recs[1], recs[2], recs[3]
    assert a["jpeg"] == (img / "a.jpg").read_bytes() and b["jpeg"] == (img / "b.png").read_bytes()
    assert list(a["ann_id"]) == [10, 11]  # empty polygon and crowd region dropped
    poly = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([[5, 5, 25, 5, 25, 20, 5, 20]], H, W)))
    np.testing.assert_array_equal(rle.decode(a["rle_counts"][0], H, W), poly)
    assert a["area"][0] == poly.sum()  # recomputed from the mask, not the polygon's area
    ys, xs = np.nonzero(poly)
    np.testing.assert_allclose(a["bbox"][0], [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1])
    np.testing.assert_array_equal(rle.decode(b["rle_counts"][0], H, W), masks["square"])
    np.testing.assert_allclose(b["bbox"][0], [10, 5, 20, 20])
    np.testing.assert_array_equal(rle.decode(gray["rle_counts"][0], H, W), masks["corner"])
    for r in recs.values():
        np.testing.assert_allclose(r["crop_box"], np.tile([0, 0, W, H], (len(r["ann_id"]), 1)))
        assert np.all(r["predicted_iou"] == 1) and np.all(r["stability_score"] == 1)
        assert r["point_coords"].shape == (0, 2)

    # the training pipeline reads the shards: PNG and greyscale images included
    it = make_iterator(PipelineConfig(files=str(out / "coco-*.tfrecord"), image_size=64, batch_size=3,
                                      max_masks_per_image=2, shuffle_window=4, num_epochs=1,
                                      process_index=0, process_count=1))
    batch = next(it)
    assert batch["image"].shape == (3, 64, 64, 3) and batch["mask_valid"].sum() == 4

    # re-running finds both shards done; --keep-crowd is another conversion and is refused in the same folder
    assert main(["--annotations", str(ann_path), "--images", str(img), "--output", str(out), "--num-shards", "2",
                 "--workers", "1", "--no-progress"]) == 0
    assert "(0 written now, 2 already done)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="other input or shard count"):
        main(["--annotations", str(ann_path), "--images", str(img), "--output", str(out), "--num-shards", "2",
              "--keep-crowd", "--no-progress"])


def test_keep_crowd(coco, tmp_path):
    ann_path, img, _ = coco
    out = tmp_path / "crowd"
    assert main(["--annotations", str(ann_path), "--images", str(img), "--output", str(out), "--num-shards", "1",
                 "--keep-crowd", "--workers", "1", "--no-progress"]) == 0
    recs = _records(out)
    assert list(recs[1]["ann_id"]) == [10, 11, 13] and list(recs[8]["ann_id"]) == [80]


@pytest.mark.parametrize("content,msg", [
    ("[1, 2]", "expected a COCO instances file"),
    ('{"images": [{"id": 1}], "annotations": []}', "images[0] needs 'file_name'"),
    ("{not json", "invalid JSON"),
])
def test_bad_annotation_file_is_one_clear_error(tmp_path, capsys, content, msg):
    path = tmp_path / "bad.json"
    path.write_text(content)
    (tmp_path / "img").mkdir()
    assert main(["--annotations", str(path), "--images", str(tmp_path / "img"), "--output", str(tmp_path / "o"),
                 "--num-shards", "1"]) == 2
    assert msg in capsys.readouterr().err
    assert main(["--annotations", str(tmp_path / "nope.json"), "--images", str(tmp_path / "img"), "--output",
                 str(tmp_path / "o"), "--num-shards", "1"]) == 2
    assert "no such file" in capsys.readouterr().err
