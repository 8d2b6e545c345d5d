"""Records in the TFDS `segment_anything` format (written with the builder's own FeaturesDict) read as a source."""

import numpy as np
import tensorflow_datasets as tfds

from samjax.data.example import decode_record
from samjax.data.pipeline import PipelineConfig, make_iterator
from samjax.data.preprocess import process_record
from samjax.data.sa1b_format import parse_sample
from samjax.data.synthetic import make_sample
from samjax.data.tfds import tfds_features, tfds_files
from samjax.data.tfrecord import TFRecordWriter


def _tfds_example(jpeg_path, doc):
    h, w = doc["image"]["height"], doc["image"]["width"]

    def bbox(b):  # SA-1B XYWH pixels -> TFDS normalised BBox(ymin, xmin, ymax, xmax)
        x, y, bw, bh = b
        return tfds.features.BBox(y / h, x / w, min((y + bh) / h, 1.0), min((x + bw) / w, 1.0))

    return {
        "image": {"content": str(jpeg_path), "file_name": doc["image"]["file_name"], "height": h,
                  "image_id": doc["image"]["image_id"], "width": w},
        "annotations": [{
            "area": a["area"], "bbox": bbox(a["bbox"]), "crop_box": bbox(a["crop_box"]), "id": a["id"],
            "point_coords": np.asarray(a["point_coords"], np.float64), "predicted_iou": a["predicted_iou"],
            "segmentation": {"counts": a["segmentation"]["counts"], "size": np.asarray([h, w], np.uint64)},
            "stability_score": a["stability_score"]} for a in doc["annotations"]],
    }


def test_tfds_records_read_like_ours(tmp_path):
    features = tfds_features()
    out = tmp_path / "segment_anything" / "full" / "1.0.0"
    out.mkdir(parents=True)
    ours = {}
    with TFRecordWriter(out / "segment_anything-train.tfrecord-00000-of-00001") as w:
        for image_id in (1, 2, 3):
            jpeg, doc = make_sample(seed=2, image_id=image_id, height=60, width=84)
            (tmp_path / f"sa_{image_id}.jpg").write_bytes(jpeg)
            ex = features.serialize_example(
                features.encode_example(_tfds_example(tmp_path / f"sa_{image_id}.jpg", doc)))
            w.write(ex)
            ours[image_id] = parse_sample(jpeg, __import__("json").dumps(doc).encode(), f"sa_{image_id}")
            rec = decode_record(ex)
            assert rec["rle_counts"] == ours[image_id]["rle_counts"] and rec["jpeg"] == jpeg
            np.testing.assert_allclose(rec["bbox"], ours[image_id]["bbox"], atol=1e-3)
            a = process_record(rec, image_size=64, seed=1)
            b = process_record(ours[image_id], image_size=64, seed=1)
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    files = tfds_files(tmp_path)
    it = make_iterator(PipelineConfig(files=files, image_size=64, batch_size=3, num_epochs=1, shuffle_window=1,
                                      process_index=0, process_count=1))
    batch = next(it)
    it.close()
    assert sorted(batch["image_id"].tolist()) == [1, 2, 3] and batch["mask_valid"].any()
