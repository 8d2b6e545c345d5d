"""tf.train.Example encoding of one SA-1B image and its masks, and the decoded record every stage shares.

Protobuf: `tensorflow_datasets.proto.tf_example_pb2` / `tf_feature_pb2` (no TensorFlow needed). Our features
(N = number of masks, P = total number of point prompts)::

    image/encoded          bytes      the original image bytes, untouched (JPEG; PNG too from samjax.data.coco)
    image/format           bytes      b"jpeg" (or b"png")
    image/id               int64      SA-1B image_id
    image/file_name        bytes      e.g. b"sa_1.jpg"
    image/height, width    int64      original size in pixels
    mask/id                int64[N]   annotation id
    mask/counts            bytes[N]   compressed COCO RLE string, size (height, width), column-major
    mask/bbox              float[4N]  XYWH in original pixels (as SA-1B)
    mask/area              int64[N]   pixels
    mask/num_points        int64[N]   points per mask (1 in SA-1B)
    mask/point_coords      float[2P]  (x, y) in original pixels
    mask/predicted_iou     float[N]
    mask/stability_score   float[N]
    mask/crop_box          float[4N]  XYWH in original pixels

Records written by the TFDS `segment_anything` builder (keys `image/content`, `annotations/...`, boxes as
normalised [ymin, xmin, ymax, xmax]) decode to the same record: see `samjax.data.tfds`.

The decoded record (`Record`, a plain dict) holds::

    image_id: int, file_name: str, height: int, width: int, jpeg: bytes (the image file), format: str optional
    rle_counts: list[bytes] (N)          ann_id: (N,) int64            area: (N,) int64
    bbox: (N, 4) float32 XYWH pixels     crop_box: (N, 4) float32 XYWH pixels
    point_coords: (P, 2) float32         num_points: (N,) int64
    predicted_iou: (N,) float32          stability_score: (N,) float32
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tensorflow_datasets.proto import tf_example_pb2, tf_feature_pb2

Record = dict[str, Any]


class RecordFormatError(ValueError):
    """A serialized Example that is not a well-formed SA-1B record."""


def _bytes(values) -> tf_feature_pb2.Feature:
    return tf_feature_pb2.Feature(bytes_list=tf_feature_pb2.BytesList(value=list(values)))


def _ints(values) -> tf_feature_pb2.Feature:
    return tf_feature_pb2.Feature(int64_list=tf_feature_pb2.Int64List(value=[int(v) for v in values]))


def _floats(values) -> tf_feature_pb2.Feature:
    return tf_feature_pb2.Feature(float_list=tf_feature_pb2.FloatList(value=np.asarray(values, np.float32).ravel()))


def encode_record(rec: Record) -> bytes:
    """Serializes a Record (see module docstring) to tf.train.Example bytes."""
    n = len(rec["rle_counts"])
    feats = {
        "image/encoded": _bytes([rec["jpeg"]]),
        "image/format": _bytes([rec.get("format", "jpeg").encode()]),
        "image/id": _ints([rec["image_id"]]),
        "image/file_name": _bytes([rec["file_name"].encode()]),
        "image/height": _ints([rec["height"]]),
        "image/width": _ints([rec["width"]]),
        "mask/id": _ints(rec["ann_id"]),
        "mask/counts": _bytes(rec["rle_counts"]),
        "mask/bbox": _floats(np.reshape(rec["bbox"], (n, 4))),
        "mask/area": _ints(rec["area"]),
        "mask/num_points": _ints(rec["num_points"]),
        "mask/point_coords": _floats(np.reshape(rec["point_coords"], (-1, 2))),
        "mask/predicted_iou": _floats(rec["predicted_iou"]),
        "mask/stability_score": _floats(rec["stability_score"]),
        "mask/crop_box": _floats(np.reshape(rec["crop_box"], (n, 4))),
    }
    return tf_example_pb2.Example(features=tf_feature_pb2.Features(feature=feats)).SerializeToString()


def parse_example(data: bytes) -> dict[str, tf_feature_pb2.Feature]:
    ex = tf_example_pb2.Example()
    try:
        ex.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError
        raise RecordFormatError(f"not a tf.train.Example ({len(data)} bytes): {e}") from e
    return ex.features.feature


def get(feats, key: str, kind: str, dtype=None, shape=None):
    """Feature `key` as a list (bytes) or numpy array of `dtype` reshaped to `shape`; clear error if absent."""
    if key not in feats:
        raise RecordFormatError(f"Example has no feature {key!r} (has: {sorted(feats)})")
    f = feats[key]
    if f.WhichOneof("kind") != kind:
        raise RecordFormatError(f"feature {key!r} is {f.WhichOneof('kind')}, expected {kind}")
    values = getattr(f, kind).value
    if kind == "bytes_list":
        return list(values)
    arr = np.asarray(values, dtype=dtype)
    if shape is not None:
        try:
            arr = arr.reshape(shape)
        except ValueError as e:
            raise RecordFormatError(f"feature {key!r} has {arr.size} values, expected shape {shape}") from e
    return arr


def _scalar(feats, key: str) -> int:
    v = get(feats, key, "int64_list", np.int64)
    if v.shape != (1,):
        raise RecordFormatError(f"feature {key!r} must hold one value, holds {v.size}")
    return int(v[0])


def decode_samjax(feats) -> Record:
    counts = get(feats, "mask/counts", "bytes_list")
    n = len(counts)
    num_points = get(feats, "mask/num_points", "int64_list", np.int64, (n,))
    return {
        "image_id": _scalar(feats, "image/id"),
        "file_name": get(feats, "image/file_name", "bytes_list")[0].decode(),
        "height": _scalar(feats, "image/height"),
        "width": _scalar(feats, "image/width"),
        "jpeg": get(feats, "image/encoded", "bytes_list")[0],
        "rle_counts": counts,
        "ann_id": get(feats, "mask/id", "int64_list", np.int64, (n,)),
        "area": get(feats, "mask/area", "int64_list", np.int64, (n,)),
        "bbox": get(feats, "mask/bbox", "float_list", np.float32, (n, 4)),
        "crop_box": get(feats, "mask/crop_box", "float_list", np.float32, (n, 4)),
        "num_points": num_points,
        "point_coords": get(feats, "mask/point_coords", "float_list", np.float32, (int(num_points.sum()), 2)),
        "predicted_iou": get(feats, "mask/predicted_iou", "float_list", np.float32, (n,)),
        "stability_score": get(feats, "mask/stability_score", "float_list", np.float32, (n,)),
    }


def _yxyx_norm_to_xywh(b: np.ndarray, h: int, w: int) -> np.ndarray:
    """(N, 4) normalised [ymin, xmin, ymax, xmax] -> (N, 4) float32 XYWH in pixels."""
    ymin, xmin, ymax, xmax = (b[:, i] for i in range(4))
    return np.stack([xmin * w, ymin * h, (xmax - xmin) * w, (ymax - ymin) * h], axis=1).astype(np.float32)


def decode_tfds_features(feats) -> Record:
    """Parsed TFDS segment_anything Example features -> Record (the TFDS layout: samjax.data.tfds)."""
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


def decode_record(data: bytes) -> Record:
    """Serialized Example (ours or TFDS `segment_anything`) -> Record. Raises RecordFormatError."""
    feats = parse_example(data)
    if "image/encoded" in feats:
        return decode_samjax(feats)
    if "image/content" in feats:
        return decode_tfds_features(feats)
    raise RecordFormatError(
        "Example is neither a samjax SA-1B record (image/encoded) nor a TFDS segment_anything one (image/content);"
        f" features: {sorted(feats)}"
    )
