"""samjax.evaluate.datasets: COCO / LVIS instances, BSDS500 folders and detection results are read as written, and
every wrong layout is refused with a message naming the file and what was expected."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import scipy.io
from PIL import Image

from samjax.evaluate.datasets import (
    DatasetError,
    load_boundaries,
    read_bsds,
    read_detections,
    read_instances,
)
from tests.evaluate.synth import outer_boundary, shapes, write_bsds, write_instances


@pytest.fixture(scope="module")
def samples():
    return [shapes(seed=0), shapes(80, 140, [(5, 5, 30, 40), (40, 60, 75, 120)], seed=1)]


def test_coco_and_lvis_files_read_back(tmp_path, samples):
    path, img_dir = write_instances(tmp_path / "coco", samples)
    ds = read_instances(path, img_dir)
    assert ds.kind == "coco" and ds.name == "instances" and [im["id"] for im in ds.images] == [1, 2]
    for im, (image, masks) in zip(ds.images, samples):
        np.testing.assert_array_equal(ds.load_image(im), image)
        got, anns = ds.masks(im)
        np.testing.assert_array_equal(got, masks)
        assert [a["category_id"] for a in anns] == list(range(1, len(masks) + 1))
    path, img_dir = write_instances(tmp_path / "lvis", samples, lvis=True)  # coco_url, images in val2017/
    ds = read_instances(path, img_dir)
    assert ds.kind == "lvis" and all(a["iscrowd"] == 0 for a in ds.doc["annotations"])
    np.testing.assert_array_equal(ds.load_image(ds.images[1]), samples[1][0])


def test_polygons_and_crowd(tmp_path, samples):
    path, img_dir = write_instances(tmp_path, samples[:1])
    doc = json.loads(path.read_text())
    doc["annotations"][0]["segmentation"] = [[12.0, 10.0, 60.0, 10.0, 60.0, 40.0, 12.0, 40.0]]  # the same rectangle
    del doc["annotations"][0]["area"]
    doc["annotations"][1]["iscrowd"] = 1
    path.write_text(json.dumps(doc))
    ds = read_instances(path, img_dir)
    masks, anns = ds.masks(ds.images[0])
    assert [a["id"] for a in anns] == [1, 3]  # the crowd region is left out
    assert abs(int(masks[0].sum()) - int(samples[0][1][0].sum())) < 0.1 * samples[0][1][0].sum()
    assert ds.doc["annotations"][0]["area"] > 0  # computed where the file has none


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("annotations"), "'images' and 'annotations' lists"),
    (lambda d: d["images"][0].pop("height"), "images[0] needs an integer 'height'"),
    (lambda d: d["images"][0].pop("file_name"), "needs a 'file_name' (COCO) or 'coco_url' (LVIS)"),
    (lambda d: d["annotations"][0].update(image_id=99), "refers to image 99"),
    (lambda d: d["annotations"][0].pop("segmentation"), "has no 'segmentation'"),
    (lambda d: d["annotations"][0].update(category_id=42), "category_id 42, not in 'categories'"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [5, 5], "counts": "abc"}), "is not the image's"),
    (lambda d: d.update(categories=[{"name": "x"}]), "integer 'id'"),
])
def test_bad_instances_files(tmp_path, samples, edit, message):
    path, img_dir = write_instances(tmp_path, samples[:1])
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=re.escape(message)):
        ds = read_instances(path, img_dir)
        ds.masks(ds.images[0])


def test_missing_files_and_images(tmp_path, samples):
    path, img_dir = write_instances(tmp_path, samples[:1])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_instances(tmp_path / "nope.json", img_dir)
    with pytest.raises(FileNotFoundError, match="images folder"):
        read_instances(path, tmp_path / "nope")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_instances(tmp_path / "bad.json", img_dir)
    ds = read_instances(path, tmp_path)  # the wrong folder
    with pytest.raises(FileNotFoundError, match="000000000001.png"):
        ds.load_image(ds.images[0])
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(img_dir / "000000000001.png")
    with pytest.raises(DatasetError, match="is 10x10"):
        read_instances(path, img_dir).load_image(ds.images[0])


def test_detections(tmp_path, samples):
    path, img_dir = write_instances(tmp_path, samples)
    ds = read_instances(path, img_dir)
    dets = [{"image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5},
            {"image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.9}]
    (tmp_path / "d.json").write_text(json.dumps(dets))
    assert {k: len(v) for k, v in read_detections(tmp_path / "d.json", ds).items()} == {2: 1, 1: 1}
    for bad, message in [({"dets": []}, "JSON list"), ([{"image_id": 1, "bbox": [1, 2, 3, 4], "score": 1}],
                                                       r"detections\[0\] must have"),
                         ([dict(dets[0], image_id=7)], "image 7, which is not in"),
                         ([dict(dets[0], category_id=9)], "category_id 9")]:
        (tmp_path / "d.json").write_text(json.dumps(bad))
        with pytest.raises(DatasetError, match=message):
            read_detections(tmp_path / "d.json", ds)


def test_bsds_mat_and_png_layouts(tmp_path, samples):
    root = write_bsds(tmp_path / "BSR", samples)
    for where in (root, root / "data"):  # the BSDS root or its data folder
        ds = read_bsds(where)
        assert [it.name for it in ds.items] == ["1", "2"]
    gts = load_boundaries(ds.items[0], samples[0][0].shape[:2])
    assert len(gts) == 2 and (gts[0] == outer_boundary(samples[0][1])).all()
    png = tmp_path / "png" / "groundTruth" / "val"  # one PNG per annotator
    (tmp_path / "png" / "images" / "val").mkdir(parents=True)
    png.mkdir(parents=True)
    Image.fromarray(samples[0][0]).save(tmp_path / "png" / "images" / "val" / "a.jpg")
    for k in range(3):
        Image.fromarray(outer_boundary(samples[0][1]).astype(np.uint8) * 255).save(png / f"a_{k}.png")
    ds = read_bsds(tmp_path / "png", split="val")
    assert len(load_boundaries(ds.items[0], samples[0][0].shape[:2])) == 3


def test_bad_bsds_layouts(tmp_path, samples):
    root = write_bsds(tmp_path / "BSR", samples)
    with pytest.raises(DatasetError, match="no images/val and groundTruth/val folders; expected the BSDS500 layout"):
        read_bsds(root, split="val")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_bsds(tmp_path / "nope")
    gt = root / "data" / "groundTruth" / "test"
    (gt / "2.mat").unlink()
    with pytest.raises(DatasetError, match=r"no ground truth for 1 image\(s\) \(2\)"):
        read_bsds(root)
    scipy.io.savemat(gt / "2.mat", {"boundaries": np.zeros((3, 3))})
    with pytest.raises(DatasetError, match="a 'groundTruth' cell array of structs with a 'Boundaries' field"):
        load_boundaries(read_bsds(root).items[1])
    (gt / "2.mat").write_text("not a mat file")
    with pytest.raises(DatasetError, match="not a MATLAB .mat file"):
        load_boundaries(read_bsds(root).items[1])
    with pytest.raises(DatasetError, match="boundaries of shape"):
        load_boundaries(read_bsds(root).items[0], (5, 5))
