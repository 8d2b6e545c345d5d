import dataclasses

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from samjax.data.example import decode_record, encode_record
from samjax.data.pipeline import PipelineConfig, corrupt_records_skipped, files_for_process, make_iterator
from samjax.data.preprocess import get_preprocess_shape, process_record
from samjax.data.tfrecord import TFRecordCorruptError, TFRecordWriter, iter_records

S = 64


def _cfg(d, **kw):
    base = dict(files=str(d / "*.tfrecord"), image_size=S, batch_size=2, shuffle_window=4, seed=1,
                num_epochs=1, process_index=0, process_count=1)
    return PipelineConfig(**{**base, **kw})


def _all_records(d):
    return {r["image_id"]: r for p in sorted(d.glob("*.tfrecord")) for _, b in iter_records(p)
            for r in [decode_record(b)]}


def _coco(rec, i):
    return mask_utils.decode({"size": [rec["height"], rec["width"]], "counts": rec["rle_counts"][i]})


def test_full_resolution_masks_equal_pycocotools(tfrecord_dir):
    for rec in _all_records(tfrecord_dir).values():
        side = max(rec["height"], rec["width"])
        out = process_record(rec, image_size=side, mask_size=side, max_masks=64, seed=0)
        n = len(rec["rle_counts"])
        assert out["mask_valid"].sum() == n  # tiny synthetic masks are all below the area limit
        for j in range(n):
            # Which annotation sits in slot j: find it by equality with pycocotools' decode.
            m = out["masks"][j, : rec["height"], : rec["width"]]
            assert any(np.array_equal(m, _coco(rec, i).astype(bool)) for i in range(n))
            assert not out["masks"][j, rec["height"]:].any() and not out["masks"][j, :, rec["width"]:].any()
        np.testing.assert_array_equal(out["image"][: rec["height"], : rec["width"]],
                                      np.asarray(Image.open(__import__("io").BytesIO(rec["jpeg"])).convert("RGB")))


def test_batches_match_reference_preprocessing(tfrecord_dir):
    recs = _all_records(tfrecord_dir)
    it = make_iterator(_cfg(tfrecord_dir, mask_size=32, max_masks_per_image=6))
    seen = []
    for batch in it:
        assert batch["image"].shape == (2, S, S, 3) and batch["image"].dtype == np.uint8
        assert batch["masks"].shape == (2, 6, 32, 32) and batch["masks"].dtype == bool
        assert batch["boxes"].dtype == np.float32 and batch["input_hw"].dtype == np.int32
        for b, image_id in enumerate(batch["image_id"]):
            rec = recs[int(image_id)]
            seen.append(int(image_id))
            h, w = get_preprocess_shape(rec["height"], rec["width"], S)
            assert batch["input_hw"][b].tolist() == [h, w] and batch["original_hw"][b].tolist() == [72, 96]
            assert not batch["image"][b, h:].any() and not batch["image"][b, :, w:].any()
            mh, mw = get_preprocess_shape(72, 96, 32)
            for j in np.flatnonzero(batch["mask_valid"][b]):
                # Reference: pycocotools' full mask, BOX-resized over the whole image, >= 0.5.
                cands = []
                for i in range(len(rec["rle_counts"])):
                    ref = np.asarray(Image.fromarray(_coco(rec, i)).resize((mw, mh), Image.BOX)) > 0
                    cands.append((np.sum(ref != batch["masks"][b, j, :mh, :mw]), i))
                err, i = min(cands)
                assert err <= 1  # PIL's fixed-point rounding of an exactly-half cell may differ
                assert not batch["masks"][b, j, mh:].any()
                x, y, bw, bh = mask_utils.toBbox({"size": [72, 96], "counts": rec["rle_counts"][i]})
                np.testing.assert_allclose(batch["boxes"][b, j], [x * w / 96, y * h / 72, (x + bw) * w / 96,
                                                                  (y + bh) * h / 72], rtol=1e-5)
            assert batch["mask_valid"][b].sum() == min(6, len(rec["rle_counts"]))
            assert not batch["boxes"][b][~batch["mask_valid"][b]].any()
    it.close()
    assert sorted(seen) == sorted(recs)  # one epoch: every image once


def test_area_filter_and_deterministic_sampling(tfrecord_dir):
    rec = next(iter(_all_records(tfrecord_dir).values()))
    full = mask_utils.encode(np.ones((72, 96), np.uint8, order="F"))["counts"]
    rec = {**rec, "rle_counts": rec["rle_counts"] + [full], "ann_id": np.append(rec["ann_id"], 7),
           "area": np.append(rec["area"], 72 * 96), "bbox": np.concatenate([rec["bbox"], [[0, 0, 96, 72]]]),
           "crop_box": np.concatenate([rec["crop_box"], [[0, 0, 96, 72]]]),
           "num_points": np.append(rec["num_points"], 1),
           "point_coords": np.concatenate([rec["point_coords"], [[1, 1]]]),
           "predicted_iou": np.append(rec["predicted_iou"], 0.9),
           "stability_score": np.append(rec["stability_score"], 0.9)}
    n = len(rec["rle_counts"])
    out = process_record(rec, image_size=96, mask_size=96, max_masks=64)
    assert out["mask_valid"].sum() == n - 1 and not out["masks"].all(axis=(1, 2)).any()
    a = process_record(rec, image_size=S, max_masks=3, seed=4)
    b = process_record(decode_record(encode_record(rec)), image_size=S, max_masks=3, seed=4)
    np.testing.assert_array_equal(a["masks"], b["masks"])
    others = [process_record(rec, image_size=S, max_masks=3, seed=s)["boxes"] for s in range(5, 10)]
    assert any(not np.array_equal(o, a["boxes"]) for o in others)


@pytest.mark.parametrize("workers", [0, 2])
def test_checkpoint_restore_yields_same_batches(tfrecord_dir, tmp_path, workers):
    cfg = _cfg(tfrecord_dir, num_epochs=None, worker_count=workers, cycle_length=2)
    it = make_iterator(cfg)
    for _ in range(3):
        next(it)
    mngr = ocp.CheckpointManager(tmp_path / "ckpt")
    mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    expected = [next(it) for _ in range(5)]
    it.close()
    it2 = make_iterator(cfg)
    mngr.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(it2)))
    for want in expected:
        got = next(it2)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    it2.close()
    mngr.close()


def _corrupt_copy(src, dst, flip_record=None, truncate=False):
    dst.mkdir()
    files = sorted(src.glob("*.tfrecord"))
    for p in files:
        (dst / p.name).write_bytes(p.read_bytes())
    target = dst / files[0].name
    raw = bytearray(target.read_bytes())
    offsets = [o for o, _ in iter_records(target)]
    if flip_record is not None:
        raw[offsets[flip_record] + 12 + 100] ^= 0xFF
    if truncate:
        raw = raw[: offsets[-1] + 40]
    target.write_bytes(bytes(raw))
    return target, offsets


def test_flipped_byte_raises_with_file_and_offset(tfrecord_dir, tmp_path):
    target, offsets = _corrupt_copy(tfrecord_dir, tmp_path / "c", flip_record=1)
    it = make_iterator(_cfg(tmp_path / "c", shuffle_window=1))
    with pytest.raises(TFRecordCorruptError, match=rf"{target.name} at byte offset {offsets[1]}: data CRC32C"):
        list(it)
    it.close()


@pytest.mark.parametrize("kind", ["flip", "truncate"])
def test_skip_corrupt_counts(tfrecord_dir, tmp_path, kind):
    _corrupt_copy(tfrecord_dir, tmp_path / "c", **({"flip_record": 0} if kind == "flip" else {"truncate": True}))
    it = make_iterator(_cfg(tmp_path / "c", shuffle_window=1, batch_size=1, skip_corrupt=True))
    ids = [int(b["image_id"][0]) for b in it]
    assert len(ids) == 7 and corrupt_records_skipped(it) == 1
    it.close()
    if kind == "truncate":
        with pytest.raises(TFRecordCorruptError, match="truncated record"):
            list(make_iterator(_cfg(tmp_path / "c", shuffle_window=1)))


def test_bad_record_content_names_record(tfrecord_dir, tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    rec = next(iter(_all_records(tfrecord_dir).values()))
    with TFRecordWriter(d / "x.tfrecord") as w:
        w.write(encode_record({**rec, "jpeg": b"\xff\xd8garbage"}))
        w.write(b"not an example at all \x00\x01")
        w.write(encode_record(rec))
    with pytest.raises(ValueError, match=r"record at byte offset 0 of .*x.tfrecord: image .* JPEG does not decode"):
        list(make_iterator(_cfg(d, batch_size=1, shuffle_window=1)))
    out = list(make_iterator(_cfg(d, batch_size=1, shuffle_window=1, skip_corrupt=True)))
    assert [int(b["image_id"][0]) for b in out] == [rec["image_id"]]


def test_files_split_across_processes(tfrecord_dir):
    cfg = _cfg(tfrecord_dir)
    parts = [files_for_process(dataclasses.replace(cfg, process_index=i, process_count=3)) for i in range(3)]
    assert sorted(sum(parts, [])) == files_for_process(cfg) and len(set(sum(parts, []))) == 4
    with pytest.raises(ValueError, match="cannot be split across 5 processes"):
        files_for_process(dataclasses.replace(cfg, process_index=0, process_count=5))
    with pytest.raises(FileNotFoundError, match="no TFRecord files match"):
        files_for_process(dataclasses.replace(cfg, files="/nonexistent/*.tfrecord"))
