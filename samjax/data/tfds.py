"""Reading the output of the TFDS `segment_anything` builder as an alternative source.

TFDS (`tfds build segment_anything --manual_dir ...`) writes TFRecord files of tf.train.Example with the
features of its FeaturesDict flattened to keys::

    image/content (JPEG bytes), image/file_name, image/height, image/width, image/image_id
    annotations/segmentation/counts (bytes[N]), annotations/segmentation/size (int64[2N])
    annotations/bbox, annotations/crop_box   float[4N]  normalised [ymin, xmin, ymax, xmax]  (not SA-1B's XYWH)
    annotations/area, annotations/id         int64[N]
    annotations/point_coords                 float[2N]  (x, y) pixels, one point per mask
    annotations/predicted_iou, annotations/stability_score  float[N]

`samjax.data.example.decode_record` turns these into our `Record` (boxes back to XYWH pixels), so the pipeline reads
TFDS files directly: `PipelineConfig(files=tfds_files(data_dir))`. Nothing here needs TensorFlow.
"""

from __future__ import annotations

import glob
import os


def tfds_files(data_dir: str | os.PathLike, split: str = "train", version: str = "*") -> list[str]:
    """The TFRecord files TFDS wrote for `segment_anything` under `data_dir` (sorted); error if none."""
    pattern = os.path.join(os.fspath(data_dir), "segment_anything", "*", version,
                           f"segment_anything-{split}.tfrecord-*")
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
