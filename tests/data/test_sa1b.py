import io
import json
import os
import tarfile

import numpy as np
import pytest

from samjax.data.example import decode_record
from samjax.data.sa1b import convert, main
from samjax.data.sa1b_format import SA1BError, parse_sample
from samjax.data.synthetic import make_sample
from samjax.data.tfrecord import iter_records


def _records(out):
    recs = []
    for p in sorted(out.glob("*.tfrecord")):
        recs += [decode_record(d) for _, d in iter_records(p)]
    return recs


def test_round_trip_fields(tfrecord_dir, sa1b_dir):
    recs = {r["image_id"]: r for r in _records(tfrecord_dir)}
    assert len(recs) == 8
    for image_id, rec in recs.items():
        doc = json.loads((sa1b_dir / f"sa_{image_id}.json").read_text())
        assert rec["jpeg"] == (sa1b_dir / f"sa_{image_id}.jpg").read_bytes()  # bytes kept as they are
        assert (rec["height"], rec["width"], rec["file_name"]) == (72, 96, f"sa_{image_id}.jpg")
        anns = doc["annotations"]
        assert [c.decode() for c in rec["rle_counts"]] == [a["segmentation"]["counts"] for a in anns]
        np.testing.assert_allclose(rec["bbox"], [a["bbox"] for a in anns], rtol=1e-6)
        np.testing.assert_array_equal(rec["area"], [a["area"] for a in anns])
        np.testing.assert_array_equal(rec["ann_id"], [a["id"] for a in anns])
        np.testing.assert_allclose(rec["point_coords"], [p for a in anns for p in a["point_coords"]], rtol=1e-6)
        np.testing.assert_allclose(rec["crop_box"], [a["crop_box"] for a in anns], rtol=1e-6)
        np.testing.assert_allclose(rec["predicted_iou"], [a["predicted_iou"] for a in anns], rtol=1e-6)
        np.testing.assert_allclose(rec["stability_score"], [a["stability_score"] for a in anns], rtol=1e-6)


def _sample(image_id, **kw):
    jpeg, doc = make_sample(seed=9, image_id=image_id, height=40, width=56, **kw)
    return jpeg, doc


def _tar(path, members):
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_corrupt_inputs_are_reported_and_skipped(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    members = []
    for i in range(1, 7):
        jpeg, doc = _sample(i)
        if i == 2:
            del doc["image"]["height"]
        if i == 3:
            doc["annotations"][0]["segmentation"]["counts"] = "!!bad"
        if i == 4:
            jpeg = b"this is not an image\n" * 10
        if i == 5:
            jpeg = jpeg[: len(jpeg) // 2]
        members += [(f"sa_{i}.jpg", jpeg), (f"sa_{i}.json", json.dumps(doc).encode())]
    members += [("notes.txt", b"hello"), ("sa_99.json", json.dumps(_sample(99)[1]).encode())]
    _tar(src / "sa_000000.tar", members)
    s = convert([str(src)], str(out), num_shards=2, workers=1, progress=False)
    assert s["images"] == 2 and s["skipped"] == 6, s["problems"]
    text = "\n".join(s["problems"])
    assert "sa_2.json: image: missing field 'height'" in text
    assert "sa_3.json: annotations[0].segmentation.counts: bad COCO RLE: invalid char '!'" in text
    assert "sa_4.jpg: not a JPEG" in text
    assert "sa_5.jpg: JPEG does not decode" in text
    assert "notes.txt: unexpected member" in text
    assert "sa_99.json: no matching sa_99.jpg" in text
    assert sorted(r["image_id"] for r in _records(out)) == [1, 6]


@pytest.mark.parametrize("edit, msg", [
    (lambda d: d.pop("annotations"), "missing field 'annotations'"),
    (lambda d: d["annotations"][1].pop("bbox"), r"annotations\[1\]: missing field 'bbox'"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\].bbox: expected a list of 4"),
    (lambda d: d["annotations"][0]["segmentation"].update(size=[41, 56]), "expected the image size"),
    (lambda d: d["annotations"][0]["segmentation"].update(counts="0"), "runs cover 0 pixels"),
    (lambda d: d["image"].update(width="56"), "image.width: expected Integral, got str"),
    (lambda d: d["annotations"][0].update(point_coords=[]), "point_coords: expected at least one"),
])
def test_json_validation_messages(edit, msg):
    jpeg, doc = _sample(1)
    edit(doc)
    with pytest.raises(SA1BError, match=msg):
        parse_sample(jpeg, json.dumps(doc).encode(), "t:sa_1")
    with pytest.raises(SA1BError, match="invalid JSON"):
        parse_sample(jpeg, b"{not json", "t:sa_1")


def test_resume_after_interruption(tmp_path, sa1b_dir, capsys):
    out = tmp_path / "out"
    first = convert([str(sa1b_dir)], str(out), num_shards=3, workers=2, progress=False)
    assert first["shards_written"] == 3 and first["images"] == 8
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")}
    # Interrupt: shard 1 lost its marker (crash after rename), a temp file is left behind.
    os.remove(out / "sa1b-00001-of-00003.tfrecord.done.json")
    (out / "sa1b-00002-of-00003.tfrecord.tmp-123").write_bytes(b"partial")
    assert main(["--input", str(sa1b_dir), "--output", str(out), "--num-shards", "3", "--workers", "2",
                 "--no-progress"]) == 0
    assert "8 images" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")}
    assert after["sa1b-00000-of-00003.tfrecord"] == before["sa1b-00000-of-00003.tfrecord"]
    assert after["sa1b-00002-of-00003.tfrecord"] == before["sa1b-00002-of-00003.tfrecord"]
    assert not list(out.glob("*.tmp-*"))
    assert sorted(r["image_id"] for r in _records(out)) == list(range(1, 9))
    again = convert([str(sa1b_dir)], str(out), num_shards=3, workers=1, progress=False)
    assert again["shards_written"] == 0 and again["shards_resumed"] == 3 and again["images"] == 8
    with pytest.raises(ValueError, match="other input or shard count"):
        convert([str(sa1b_dir)], str(out), num_shards=4, workers=1, progress=False)
