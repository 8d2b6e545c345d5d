"""Reading the output of the TFDS `segment_anything` builder as an alternative source.

TFDS (`tfds build segment_anything --manual_dir ...`) writes TFRecord files of tf.train.Example with the
features of its FeaturesDict flattened to keys::

    image/content (JPEG bytes), image/file_name, image/height, image/width, image/image_id
    annotations/segmentation/counts (bytes[N]), annotations/segmentation/size (int64[2N])
    annotations/bbox, annotations/crop_box   float[4N]  normalised [ymin, xmin, ymax, xmax]  (not SA-1B's XYWH)
    annotations/area, annotations/id         int64[N]
    annotations/point_coords                 float[2N]  (x, y) pixels, one point per mask
    annotations/predicted_iou, annotations/stability_score  float[N]

`decode_tfds_features` turns these into our `Record` (boxes back to XYWH pixels), so the pipeline reads TFDS files
directly: `PipelineConfig(files=tfds_files(data_dir))`. Nothing here needs TensorFlow.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from samjax.data.example import Record, RecordFormatError, get


def _yxyx_norm_to_xywh(b: np.ndarray, h: int, w: int) -> np.ndarray:
    """(N, 4) normalised [ymin, xmin, ymax, xmax] -> (N, 4) float32 XYWH in pixels."""
    ymin, xmin, ymax, xmax = (b[:, i] for i in range(4))
    return np.stack([xmin * w, ymin * h, (xmax - xmin) * w, (ymax - ymin) * h], axis=1).astype(np.float32)


def decode_tfds_features(feats) -> Record:
    """Parsed TFDS segment_anything Example features -> Record (see samjax.data.example)."""
    h = int(get(feats, "image/height", "int64_list", np.int64, (1,))[0])
    w = int(get(feats, "image/width", "int64_list", np.int64, (1,))[0])
    counts = get(feats, "annotations/segmentation/counts", "bytes_list")
    n = len(counts)
    sizes = get(feats, "annotations/segmentation/size", "int64_list", np.int64, (n, 2))
    if n and not np.all(sizes == [h, w]):
        raise RecordFormatError(f"TFDS record: segmentation sizes {sizes[:3].tolist()}... differ from image {h}x{w}")
    return {
        "image_id": int(get(feats, "image/image_id", "int64_list", np.int64, (1,))[0]),
        "file_name": get(feats, "image/file_name", "bytes_list")[0].decode(),
        "height": h,
        "width": w,
        "jpeg": get(feats, "image/content", "bytes_list")[0],
        "rle_counts": counts,
        "ann_id": get(feats, "annotations/id", "int64_list", np.int64, (n,)),
        "area": get(feats, "annotations/area", "int64_list", np.int64, (n,)),
        "bbox": _yxyx_norm_to_xywh(get(feats, "annotations/bbox", "float_list", np.float32, (n, 4)), h, w),
        "crop_box": _yxyx_norm_to_xywh(get(feats, "annotations/crop_box", "float_list", np.float32, (n, 4)), h, w),
        "num_points": np.ones((n,), np.int64),
        "point_coords": get(feats, "annotations/point_coords", "float_list", np.float32, (n, 2)),
        "predicted_iou": get(feats, "annotations/predicted_iou", "float_list", np.float32, (n,)),
        "stability_score": get(feats, "annotations/stability_score", "float_list", np.float32, (n,)),
    }


def tfds_files(data_dir: str | os.PathLike, split: str = "train", version: str = "*") -> list[str]:
    """The TFRecord files TFDS wrote for `segment_anything` under `data_dir` (sorted); error if none."""
    pattern = os.path.join(os.fspath(data_dir), "segment_anything", "*", version, f"segment_anything-{split}.tfrecord-*")
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no TFDS segment_anything {split} files matching {pattern}")
    return files


def tfds_features():
    """The builder's FeaturesDict (builder class loaded without TensorFlow); used to write TFDS-format records."""
    import tempfile  # noqa: PLC0415

    import tensorflow_datasets as tfds  # noqa: PLC0415 (heavy import, only when asked)

    with tempfile.TemporaryDirectory() as d:
        return tfds.builder_cls("segment_anything")(data_dir=d).info.features
