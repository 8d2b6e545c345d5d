"""Convert COCO-format instance masks (one's own annotations) to the TFRecord shards training reads.

    python -m samjax.data.coco --annotations instances.json --images /data/mine/images --output /data/mine_tfrecord \
        --num-shards 8 [--keep-crowd] [--workers 4]

Input: a COCO instances file (`images`: id, file_name, height, width; `annotations`: id, image_id, segmentation,
iscrowd) and the folder its `file_name`s are relative to. A segmentation may be polygons ([[x0, y0, x1, y1, ...],
...]), uncompressed RLE ({"size": [h, w], "counts": [ints]}) or compressed RLE ({"size", "counts": str}); every
one becomes compressed COCO RLE (pycocotools), and its area and XYWH box are recomputed from the mask (COCO's
polygon `area` is not a pixel count). The records are those of `samjax.data.sa1b` (schema in
`samjax.data.example`) with what people's annotations lack filled in plainly: crop_box the whole image,
predicted_iou and stability_score 1.0, no point prompts (training samples its own from the masks).

Skipped, each reported with the reason and counted in the summary: an image whose file is missing, does not
decode as JPEG or PNG or does not match its declared size; an image with a malformed annotation (named by id);
an image left without masks. Masks that rasterise to nothing are dropped; crowd regions (`iscrowd: 1`) too unless
`--keep-crowd`. The image bytes are stored as they are. Interrupted? Run the same command again: as for SA-1B,
finished shards (`.done.json` marker) are kept and the rest redone.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from numbers import Integral

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from samjax.data import rle
from samjax.data.sa1b import print_summary, write_shards


class COCOError(ValueError):
    """An image or annotation of the COCO file that cannot be converted; the message names it."""


def _rle(seg, h: int, w: int, where: str) -> dict:
    """Polygons / uncompressed RLE / compressed RLE -> compressed RLE {"size": [h, w], "counts": bytes}."""
    if isinstance(seg, list):
        if not seg or not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in seg):
            raise COCOError(f"{where}: polygons must be lists of at least 3 (x, y) pairs")
        try:
            return mask_utils.merge(mask_utils.frPyObjects([[float(v) for v in p] for p in seg], h, w))
        except (TypeError, ValueError) as e:
            raise COCOError(f"{where}: polygon values must be numbers ({e})") from e
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if list(seg["size"]) != [h, w]:
            raise COCOError(f"{where}: segmentation size {seg['size']} is not the image's [{h}, {w}]")
        counts = seg["counts"]
        try:
            if isinstance(counts, list):
                if any(not isinstance(c, Integral) or c < 0 for c in counts):
                    raise ValueError("counts must be non-negative ints")
                rle.check_runs(np.asarray(counts, np.int64), h, w)
                return mask_utils.frPyObjects(seg, h, w)
            if isinstance(counts, str):
                rle.check_runs(rle.rle_runs(counts), h, w)  # the SA-1B converter's check
                return {"size": [h, w], "counts": counts.encode()}
        except ValueError as e:
            raise COCOError(f"{where}: bad {'un' if isinstance(counts, list) else ''}compressed RLE: {e}") from e
    raise COCOError(f"{where}: segmentation must be polygons or an RLE dict with 'size' and 'counts'")


def load_image(item: tuple) -> dict:
    """(image entry, its annotations, images folder, keep_crowd) -> Record; COCOError / OSError when unusable."""
    image, anns, root, keep_crowd = item
    h, w, name = image["height"], image["width"], image["file_name"]
    path = os.path.join(root, name)
    with open(path, "rb") as f:
        data = f.read()
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            if fmt not in ("JPEG", "PNG"):
                raise COCOError(f"{path}: PIL reads it as {fmt}, expected JPEG or PNG")
            if im.size != (w, h):
                raise COCOError(f"{path}: image is {im.size[1]}x{im.size[0]} (HxW), the annotations say {h}x{w}")
            im.load()
    except COCOError:
        raise
    except Exception as e:  # PIL raises OSError / SyntaxError / ValueError for broken files
        raise COCOError(f"{path}: does not decode: {e}") from e

    counts, ids, areas, boxes = [], [], [], []
    for ann in anns:
        if ann.get("iscrowd", 0) and not keep_crowd:
            continue
        mask_rle = _rle(ann.get("segmentation"), h, w, f"{name}: annotation {ann.get('id')}")
        area = int(mask_utils.area(mask_rle))
        if area == 0:
            continue
        counts.append(mask_rle["counts"] if isinstance(mask_rle["counts"], bytes) else mask_rle["counts"].encode())
        ids.append(int(ann["id"]))
        areas.append(area)
        boxes.append(mask_utils.toBbox(mask_rle))
    if not counts:
        raise COCOError(f"{path}: no masks to train on (no annotations, or only crowd / empty ones); skipped")
    n = len(counts)
    return {
        "image_id": int(image["id"]), "file_name": name, "height": h, "width": w, "jpeg": data,
        "format": fmt.lower(), "rle_counts": counts, "ann_id": np.asarray(ids, np.int64),
        "area": np.asarray(areas, np.int64), "bbox": np.asarray(boxes, np.float32).reshape(n, 4),
        "crop_box": np.tile(np.asarray([0, 0, w, h], np.float32), (n, 1)),
        "num_points": np.zeros(n, np.int64), "point_coords": np.zeros((0, 2), np.float32),
        "predicted_iou": np.ones(n, np.float32), "stability_score": np.ones(n, np.float32),
    }


def read_annotations(path: str) -> tuple[list[dict], dict[int, list[dict]]]:
    """The COCO file's images (sorted by id, checked for the fields conversion needs) and annotations by image id."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise COCOError(f"{path}: invalid JSON: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not isinstance(
            doc.get("annotations"), list):
        raise COCOError(f"{path}: expected a COCO instances file, a JSON object with 'images' and 'annotations' lists")
    for i, im in enumerate(doc["images"]):
        for key, typ in (("id", Integral), ("file_name", str), ("height", Integral), ("width", Integral)):
            if not isinstance(im, dict) or not isinstance(im.get(key), typ):
                raise COCOError(f"{path}: images[{i}] needs '{key}' ({typ.__name__})")
    by_image: dict[int, list[dict]] = {}
    for i, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict) or not isinstance(ann.get("image_id"), Integral) or not isinstance(
                ann.get("id"), Integral):
            raise COCOError(f"{path}: annotations[{i}] needs integer 'id' and 'image_id'")
        by_image.setdefault(ann["image_id"], []).append(ann)
    return sorted(doc["images"], key=lambda im: im["id"]), by_image


def convert(annotations: str, images: str, out: str, num_shards: int, keep_crowd: bool = False,
            workers: int | None = None, progress: bool = True) -> dict:
    """Runs (or resumes) the conversion; returns the summary dict printed by the CLI."""
    if not os.path.isfile(annotations):
        raise FileNotFoundError(f"--annotations {annotations!r}: no such file")
    if not os.path.isdir(images):
        raise FileNotFoundError(f"--images {images!r}: no such folder")
    image_list, by_image = read_annotations(annotations)
    items = [(im, by_image.get(im["id"], []), images, keep_crowd) for im in image_list]
    manifest = {"annotations": os.path.abspath(annotations), "num_images": len(items), "num_shards": num_shards,
                "keep_crowd": keep_crowd}
    return write_shards(out, items, num_shards, load_image, manifest, prefix="coco", desc="COCO -> TFRecord",
                        workers=workers, progress=progress)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotations", required=True, help="COCO instances JSON")
    p.add_argument("--images", required=True, help="folder the JSON's file_names are relative to")
    p.add_argument("--output", required=True)
    p.add_argument("--num-shards", type=int, required=True)
    p.add_argument("--keep-crowd", action="store_true", help="keep iscrowd=1 regions as masks")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        s = convert(a.annotations, a.images, a.output, a.num_shards, a.keep_crowd, a.workers, not a.no_progress)
    except (FileNotFoundError, COCOError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_summary(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
