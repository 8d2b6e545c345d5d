"""Validation of one SA-1B sample (`sa_N.jpg` + `sa_N.json`) and its conversion to a `Record`.

SA-1B JSON schema (https://github.com/facebookresearch/segment-anything#dataset)::

    {"image": {"image_id": int, "width": int, "height": int, "file_name": str},
     "annotations": [{"id": int, "segmentation": {"size": [h, w], "counts": str},   # COCO compressed RLE
                      "bbox": [x, y, w, h], "area": int, "predicted_iou": float,
                      "point_coords": [[x, y]], "stability_score": float, "crop_box": [x, y, w, h]}, ...]}

Every field is checked (presence, type, shape), every RLE is decoded far enough to prove it is well formed and
covers exactly height*width pixels, and the JPEG is decoded (at 1/8 scale, which still reads every byte) and its
size compared with the JSON. Any problem raises `SA1BError` saying which file, which field and what was expected.
"""

from __future__ import annotations

import io
import json
import math
from numbers import Integral, Real

import numpy as np
from PIL import Image

from samjax.data import rle
from samjax.data.example import Record


class SA1BError(ValueError):
    """An SA-1B sample that is corrupt or inconsistent; the message names the file and the problem."""


def _req(d: dict, key: str, types, where: str):
    if not isinstance(d, dict):
        raise SA1BError(f"{where}: expected an object, got {type(d).__name__}")
    if key not in d:
        raise SA1BError(f"{where}: missing field {key!r}")
    v = d[key]
    if not isinstance(v, types) or isinstance(v, bool):
        names = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
        raise SA1BError(f"{where}.{key}: expected {names}, got {type(v).__name__} {v!r:.60}")
    return v


def _numbers(v, n: int | None, where: str) -> list[float]:
    if not isinstance(v, list) or (n is not None and len(v) != n):
        raise SA1BError(f"{where}: expected a list of {n if n is not None else 'some'} numbers, got {v!r:.80}")
    for x in v:
        if not isinstance(x, Real) or isinstance(x, bool) or not math.isfinite(x):
            raise SA1BError(f"{where}: expected finite numbers, got {v!r:.80}")
    return [float(x) for x in v]


def check_jpeg(jpeg: bytes, height: int, width: int, where: str) -> None:
    """Raises SA1BError unless `jpeg` is a complete JPEG of size height x width."""
    if jpeg[:2] != b"\xff\xd8":
        raise SA1BError(f"{where}: not a JPEG (starts with {jpeg[:8]!r}, expected FF D8)")
    try:
        with Image.open(io.BytesIO(jpeg)) as im:
            if im.format != "JPEG":
                raise SA1BError(f"{where}: PIL reads it as {im.format}, expected JPEG")
            if im.size != (width, height):
                raise SA1BError(f"{where}: JPEG is {im.size[1]}x{im.size[0]} (HxW), JSON says {height}x{width}")
            im.draft("RGB", (max(width // 8, 1), max(height // 8, 1)))
            im.load()
    except SA1BError:
        raise
    except Exception as e:  # PIL raises OSError / SyntaxError / ValueError for broken files
        raise SA1BError(f"{where}: JPEG does not decode: {e}") from e


def parse_sample(jpeg: bytes, json_bytes: bytes, name: str, check_image: bool = True) -> Record:
    """Validates one SA-1B sample and returns its Record (see samjax.data.example). Raises SA1BError.

    name: the sample's stem with its source (e.g. "sa_000000.tar:sa_1"), used in error messages.
    """
    where = f"{name}.json"
    try:
        doc = json.loads(json_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SA1BError(f"{where}: invalid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise SA1BError(f"{where}: expected a JSON object with 'image' and 'annotations'")
    image = _req(doc, "image", dict, where)
    anns = _req(doc, "annotations", list, where)
    image_id = _req(image, "image_id", Integral, f"{where}: image")
    height = _req(image, "height", Integral, f"{where}: image")
    width = _req(image, "width", Integral, f"{where}: image")
    file_name = _req(image, "file_name", str, f"{where}: image")
    if height <= 0 or width <= 0:
        raise SA1BError(f"{where}: image size must be positive, got {height}x{width}")
    if check_image:
        check_jpeg(jpeg, height, width, f"{name}.jpg")

    n = len(anns)
    rec: Record = {
        "image_id": int(image_id), "file_name": file_name, "height": int(height), "width": int(width),
        "jpeg": jpeg, "rle_counts": [], "ann_id": np.zeros(n, np.int64), "area": np.zeros(n, np.int64),
        "bbox": np.zeros((n, 4), np.float32), "crop_box": np.zeros((n, 4), np.float32),
        "num_points": np.zeros(n, np.int64), "predicted_iou": np.zeros(n, np.float32),
        "stability_score": np.zeros(n, np.float32),
    }
    points = []
    for i, ann in enumerate(anns):
        w_i = f"{where}: annotations[{i}]"
        rec["ann_id"][i] = _req(ann, "id", Integral, w_i)
        seg = _req(ann, "segmentation", dict, w_i)
        size = _numbers(_req(seg, "size", list, f"{w_i}.segmentation"), 2, f"{w_i}.segmentation.size")
        if size != [height, width]:
            raise SA1BError(f"{w_i}.segmentation.size is {size}, expected the image size [{height}, {width}]")
        counts = _req(seg, "counts", str, f"{w_i}.segmentation")
        try:
            rle.check_runs(rle.rle_runs(counts), height, width)
        except ValueError as e:
            raise SA1BError(f"{w_i}.segmentation.counts: bad COCO RLE: {e}") from e
        rec["rle_counts"].append(counts.encode())
        rec["bbox"][i] = _numbers(_req(ann, "bbox", list, w_i), 4, f"{w_i}.bbox")
        area = _req(ann, "area", Real, w_i)
        if not 0 <= area <= height * width:
            raise SA1BError(f"{w_i}.area is {area}, expected 0..{height * width}")
        rec["area"][i] = int(area)
        rec["predicted_iou"][i] = _req(ann, "predicted_iou", Real, w_i)
        rec["stability_score"][i] = _req(ann, "stability_score", Real, w_i)
        rec["crop_box"][i] = _numbers(_req(ann, "crop_box", list, w_i), 4, f"{w_i}.crop_box")
        pts = _req(ann, "point_coords", list, w_i)
        if not pts:
            raise SA1BError(f"{w_i}.point_coords: expected at least one [x, y]")
        for j, pt in enumerate(pts):
            points.append(_numbers(pt, 2, f"{w_i}.point_coords[{j}]"))
        rec["num_points"][i] = len(pts)
    rec["point_coords"] = np.asarray(points, np.float32).reshape(-1, 2)
    return rec
