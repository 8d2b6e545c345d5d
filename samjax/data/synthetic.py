"""Deterministic synthetic data in the SA-1B format: `sa_N.jpg` + `sa_N.json` with real COCO RLE.

Each image is a textured background with many overlapping objects (ellipses, rectangles, polygons, blobs) of
varied sizes, colours and textures (flat+noise, stripes, checkers, gradients). About half the objects carry
1-3 parts painted inside them; the whole and each part get their own mask, so a point on a part is ambiguous
(part or whole), as in SA-1B. Later objects occlude earlier ones: every mask is the visible region. Masks are
encoded with pycocotools and written in the SA-1B JSON schema, so the converter (`samjax.data.sa1b`) and the
pipeline run on them exactly as on the real data.

Image `i` depends only on (seed, image_id), never on the other images.

    python -m samjax.data.synthetic --out DIR --num-images N --seed S [--size HxW] [--tar]

`--size 1500x2250` (the default) gives SA-1B-sized images with ~100 masks; tests use e.g. `--size 96x128`.
Object heights are log-uniform from `--min-object-frac` (default 0.04) to 0.6 of the shorter side.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import io
import json
import multiprocessing
import os
import tarfile

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

MIN_OBJECT_FRAC, MAX_OBJECT_FRAC = 0.04, 0.6  # object height range, as fractions of the shorter image side


def _shape_mask(rng: np.random.Generator, bh: int, bw: int) -> np.ndarray:
    """(bh, bw) bool: one random shape filling roughly its box."""
    im = Image.new("L", (bw, bh), 0)
    d = ImageDraw.Draw(im)
    kind = rng.integers(4)
    if kind == 0:
        d.ellipse([0, 0, bw - 1, bh - 1], fill=1)
    elif kind == 1:
        d.rectangle([0, 0, bw - 1, bh - 1], fill=1)
    elif kind == 2:  # star-ish polygon
        k = int(rng.integers(3, 9))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = rng.uniform(0.4, 1.0, k)
        pts = [((1 + r * np.cos(a)) * (bw - 1) / 2, (1 + r * np.sin(a)) * (bh - 1) / 2) for a, r in zip(ang, rad)]
        d.polygon(pts, fill=1)
    else:  # blob: union of circles
        for _ in range(int(rng.integers(3, 7))):
            cx, cy = rng.uniform(0.25, 0.75) * bw, rng.uniform(0.25, 0.75) * bh
            r = rng.uniform(0.2, 0.3) * min(bw, bh) + 1
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    m = np.asarray(im, bool)
    if not m.any():
        m = np.ones((bh, bw), bool)
    return m


def _texture(rng: np.random.Generator, bh: int, bw: int) -> np.ndarray:
    """(bh, bw, 3) float32 in [0, 255]."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    yy, xx = np.mgrid[0:bh, 0:bw].astype(np.float32)
    kind = rng.integers(4)
    if kind == 0:
        t = np.zeros((bh, bw), np.float32)
    elif kind == 1:  # stripes
        a, period = rng.uniform(0, np.pi), rng.uniform(4, 24)
        t = 0.5 + 0.5 * np.sin((xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / period)
    elif kind == 2:  # checker
        s = int(rng.integers(3, 16))
        t = ((yy // s + xx // s) % 2).astype(np.float32)
    else:  # gradient
        t = (xx / max(bw - 1, 1) + yy / max(bh - 1, 1)) / 2
    tex = c0 + (c1 - c0) * t[..., None]
    tex += rng.normal(0, rng.uniform(2, 15), (bh, bw, 1)).astype(np.float32)
    return tex.astype(np.float32)


def make_sample(seed: int, image_id: int, height: int, width: int, num_objects: int | None = None,
                min_object_frac: float = MIN_OBJECT_FRAC, min_mask_area: int = 0):
    """One synthetic SA-1B sample: (jpeg bytes, SA-1B JSON dict). Deterministic in (seed, image_id).

    Object heights are log-uniform in [min_object_frac, 0.6] x the shorter image side (at least 3 px). Visible
    masks under max(16, H W / 20000, min_mask_area) pixels get no annotation (the pixels are drawn all the same)."""
    rng = np.random.default_rng([seed, image_id])
    h, w = height, width
    if num_objects is None:
        num_objects = int(np.clip(h * w / 33_000, 8, 110))
    canvas = _texture(rng, h, w) * 0.5 + 64
    objects: list[dict] = []  # {"y", "x", "m": local visible mask, "parent": index or None}

    def paint(y0, x0, m, parent):
        bh, bw = m.shape
        region = canvas[y0:y0 + bh, x0:x0 + bw]
        region[m] = _texture(rng, bh, bw)[m]
        for j, o in enumerate(objects):  # occlude earlier objects (not our own whole)
            if j == parent:
                continue
            oy, ox, om = o["y"], o["x"], o["m"]
            ya, yb = max(y0, oy), min(y0 + bh, oy + om.shape[0])
            xa, xb = max(x0, ox), min(x0 + bw, ox + om.shape[1])
            if ya < yb and xa < xb:
                om[ya - oy:yb - oy, xa - ox:xb - ox] &= ~m[ya - y0:yb - y0, xa - x0:xb - x0]
        objects.append({"y": y0, "x": x0, "m": m.copy(), "parent": parent})

    side = min(h, w)
    for _ in range(num_objects):
        bh = int(np.clip(side * np.exp(rng.uniform(np.log(min_object_frac), np.log(MAX_OBJECT_FRAC))), 3, h))
        bw = int(np.clip(bh * np.exp(rng.uniform(-0.7, 0.7)), 3, w))
        y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        whole = _shape_mask(rng, bh, bw)
        paint(y0, x0, whole, None)
        parent = len(objects) - 1
        if rng.random() < 0.5 and min(bh, bw) >= 12:
            for _ in range(int(rng.integers(1, 4))):
                ph, pw = int(bh * rng.uniform(0.2, 0.5)), int(bw * rng.uniform(0.2, 0.5))
                py, px = int(rng.integers(0, bh - ph + 1)), int(rng.integers(0, bw - pw + 1))
                pm = np.zeros_like(whole)
                pm[py:py + ph, px:px + pw] = _shape_mask(rng, ph, pw)
                pm &= whole
                if pm.any():
                    paint(y0, x0, pm, parent)

    img = np.clip(canvas, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    anns = []
    min_area = max(16, h * w // 20_000, min_mask_area)
    full = np.zeros((h, w), np.uint8, order="F")
    for o in objects:
        if o["m"].sum() < min_area:
            continue
        full[:] = 0
        full[o["y"]:o["y"] + o["m"].shape[0], o["x"]:o["x"] + o["m"].shape[1]] = o["m"]
        rle = mask_utils.encode(full)
        ys, xs = np.nonzero(o["m"])
        k = int(rng.integers(len(ys)))
        crop = [0, 0, w, h] if rng.random() < 0.7 else [int(w * 0.25), int(h * 0.25), w // 2, h // 2]
        anns.append({
            "id": int(image_id) * 1000 + len(anns),
            "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "area": int(mask_utils.area(rle)),
            "predicted_iou": float(rng.uniform(0.8, 1.0)),
            "point_coords": [[float(o["x"] + xs[k] + 0.5), float(o["y"] + ys[k] + 0.5)]],
            "stability_score": float(rng.uniform(0.85, 1.0)),
            "crop_box": [float(v) for v in crop],
        })
    doc = {"image": {"image_id": int(image_id), "width": w, "height": h, "file_name": f"sa_{image_id}.jpg"},
           "annotations": anns}
    return buf.getvalue(), doc


def decoded_sample(seed: int, image_id: int, height: int, width: int, num_objects: int | None = None,
                   min_object_frac: float = MIN_OBJECT_FRAC, min_mask_area: int = 0):
    """`make_sample` decoded: image (H, W, 3) uint8 RGB (after the JPEG round trip) and masks (K, H, W) bool, one
    per annotation in the JSON's order. For notebooks, figures and tests that need pixels, not files."""
    jpeg, doc = make_sample(seed, image_id, height, width, num_objects, min_object_frac, min_mask_area)
    image = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    masks = [mask_utils.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
             for a in doc["annotations"]]
    return image, (np.stack(masks).astype(bool) if masks else np.zeros((0, height, width), bool))


def write_synthetic(out: str | os.PathLike, num_images: int, seed: int = 0, size: tuple[int, int] = (1500, 2250),
                    tar: bool = False, first_id: int = 1, num_objects: int | None = None,
                    min_object_frac: float = MIN_OBJECT_FRAC, min_mask_area: int = 0, workers: int = 1) -> list[str]:
    """Writes `num_images` samples to `out` as sa_N.jpg/sa_N.json (or one tar `sa_000000.tar`); returns paths.

    workers > 1 makes the samples in that many spawned processes (each sample depends only on (seed, id), so the
    files are the same bytes as with one); they are written here, in id order."""
    os.makedirs(out, exist_ok=True)
    h, w = size
    paths = []
    ids = range(first_id, first_id + num_images)
    make = functools.partial(_make_sample_by_id, seed, h, w, num_objects, min_object_frac, min_mask_area)
    pool = None
    if workers > 1 and num_images > 1:
        pool = concurrent.futures.ProcessPoolExecutor(min(workers, num_images),
                                                      mp_context=multiprocessing.get_context("spawn"))
    samples = pool.map(make, ids, chunksize=max(1, min(64, num_images // (4 * workers)))) if pool else map(make, ids)
    tf = tarfile.open(os.path.join(out, "sa_000000.tar"), "w") if tar else None
    try:
        for image_id, (jpeg, doc) in zip(ids, samples):
            for name, data in ((f"sa_{image_id}.jpg", jpeg), (f"sa_{image_id}.json", json.dumps(doc).encode())):
                if tf is not None:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
                else:
                    with open(os.path.join(out, name), "wb") as f:
                        f.write(data)
                    paths.append(os.path.join(out, name))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if tf is not None:
            tf.close()
            paths.append(tf.name)
    return paths


def _make_sample_by_id(seed, height, width, num_objects, min_object_frac, min_mask_area, image_id):
    return make_sample(seed, image_id, height, width, num_objects, min_object_frac, min_mask_area)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--num-images", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="1500x2250", help="HxW")
    p.add_argument("--objects", type=int, default=None,
                   help="objects per image (default: by size, ~100 masks at SA-1B size)")
    p.add_argument("--min-object-frac", type=float, default=MIN_OBJECT_FRAC,
                   help="smallest object height / shorter side (default %(default)s; the largest is 0.6)")
    p.add_argument("--tar", action="store_true", help="write one tar shard sa_000000.tar like the SA-1B release")
    p.add_argument("--min-mask-area", type=int, default=0,
                   help="annotate only visible masks of at least this many pixels (default: max(16, H W / 20000))")
    p.add_argument("--workers", type=int, default=1, help="processes making samples (the files are the same)")
    a = p.parse_args(argv)
    h, w = (int(v) for v in a.size.lower().split("x"))
    paths = write_synthetic(a.out, a.num_images, a.seed, (h, w), a.tar, num_objects=a.objects,
                            min_object_frac=a.min_object_frac, min_mask_area=a.min_mask_area, workers=a.workers)
    print(f"wrote {a.num_images} synthetic SA-1B images ({h}x{w}) to {a.out} ({len(paths)} files)")


if __name__ == "__main__":
    main()
