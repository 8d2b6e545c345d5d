"""Text prompts from the command line: boxes from an OWL-ViT / OWLv2 detector, masks from SAM, COCO JSON out.

    python -m samjax.ground --detector DIR --checkpoint DIR --images DIR --text "dog, red car" --out DIR

Per image NAME.ext it writes OUT/NAME.json: the image's file name and size, the queries, and one annotation per
mask (category_id and label of its query, COCO RLE segmentation, area, bbox XYWH of the mask, the detector's score
and box, SAM's predicted_iou); with --overlays also OUT/NAME.png (masks, boxes and labels drawn on the image).
At the end OUT/coco.json gathers every image of OUT into one COCO file (images, annotations, categories = the
queries, in order, ids from 1). Outputs are written under a temporary name and renamed when complete, so a re-run
skips the images done (an OUT made with other queries is refused) and rebuilds coco.json. Unreadable or
unsupported files are reported and skipped. `--detector` is a Hugging Face OWL-ViT / OWLv2 directory (with its
tokenizer files), `--checkpoint` a samjax SAM directory or an official .pth. With several local devices,
`--batch-size` images are processed together, data-parallel. Mistakes found before any work (no such folder, a
detector that is not OWL, no query, too many queries) are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import jax
import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from samjax import infer, parallel, runtime, viz
from samjax.amg import mask_io
from samjax.amg.cli import list_inputs, read_image
from samjax.infer.ground import Grounded, GroundedPredictor, parse_queries

COCO_FILE = "coco.json"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m samjax.ground", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detector", required=True, help="Hugging Face OWL-ViT / OWLv2 directory (with tokenizer files)")
    p.add_argument("--checkpoint", required=True, help="samjax SAM checkpoint directory, or an official .pth")
    p.add_argument("--model-type", default="auto", help="for a .pth: vit_b, vit_l, vit_h or auto")
    p.add_argument("--images", required=True, help="an image file or a folder of images")
    p.add_argument("--text", required=True, help='comma-separated queries, e.g. "dog, red car"')
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--box-threshold", type=float, default=0.1, help="keep boxes whose score is above this (0.1)")
    p.add_argument("--top-k", type=int, default=20, help="at most this many masks per image (20)")
    p.add_argument("--nms-thresh", type=float, default=0.5,
                   help="per-query NMS IoU between boxes (0.5); 1 turns it off")
    p.add_argument("--overlays", action="store_true", help="also write OUT/NAME.png with the masks drawn")
    p.add_argument("--batch-size", type=int, default=1, help="images processed together (data-parallel)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if a.batch_size < 1:
        p.error("--batch-size must be >= 1")
    if a.top_k < 1:
        p.error("--top-k must be >= 1")
    if not 0.0 < a.nms_thresh <= 1.0:
        p.error("--nms-thresh must be in (0, 1]")
    return a


def annotations(result: Grounded) -> list[dict]:
    """One COCO-style annotation per mask (no ids: coco.json numbers them)."""
    out = []
    for k in range(len(result)):
        mask = result.masks[k]
        rle = mask_io.mask_to_rle(mask)
        out.append({
            "category_id": int(result.labels[k]) + 1,
            "label": result.queries[result.labels[k]],
            "segmentation": mask_io.coco_encode_rle(rle),
            "area": mask_io.area_from_rle(rle),
            "bbox": [int(v) for v in mask_io.box_xyxy_to_xywh(mask_io.mask_to_box(mask))],
            "score": float(result.scores[k]),
            "detection_box": [float(v) for v in result.boxes[k]],
            "predicted_iou": float(result.iou_predictions[k]),
        })
    return out


def overlay(image: np.ndarray, result: Grounded) -> Image.Image:
    """The image with each mask tinted its own colour, its box outlined and labelled "query score"."""
    anns = [{"segmentation": m, "area": int(m.sum())} for m in result.masks]
    out = Image.fromarray(viz.anns_overlay(image, anns))
    draw = ImageDraw.Draw(out)
    for box, name, score in zip(result.boxes, result.names, result.scores):
        draw.rectangle([float(v) for v in box], outline=(255, 215, 0), width=2)
        draw.text((float(box[0]) + 3, float(box[1]) + 2), f"{name} {score:.2f}", fill=(255, 255, 255))
    return out


def _write_atomic(target: Path, write) -> None:
    """write(tmp_path), then rename: `target` exists only when complete."""
    tmp = target.with_name(target.name + ".partial")
    write(tmp)
    os.replace(tmp, target)


def save_image_result(out_dir: Path, path: Path, image: np.ndarray, result: Grounded, overlays: bool) -> None:
    if overlays:  # before the JSON, whose presence marks the image done
        _write_atomic(out_dir / f"{path.stem}.png", lambda t: overlay(image, result).save(t, format="PNG"))
    record = {"file_name": path.name, "height": int(image.shape[0]), "width": int(image.shape[1]),
              "queries": list(result.queries), "annotations": annotations(result)}
    _write_atomic(out_dir / f"{path.stem}.json", lambda t: t.write_text(json.dumps(record)))


def check_done(out_dir: Path, path: Path, queries: tuple[str, ...]) -> bool:
    """True when OUT/NAME.json exists (for these queries; other queries: a ValueError)."""
    target = out_dir / f"{path.stem}.json"
    if not target.is_file():
        return False
    done = tuple(json.loads(target.read_text()).get("queries", ()))
    if done != queries:
        raise ValueError(f"{out_dir} holds results for other queries ({', '.join(done)}) in {target.name}: use "
                         "another --out, or remove it")
    return True


def write_coco(out_dir: Path, inputs: list[Path], queries: tuple[str, ...]) -> dict:
    """OUT/coco.json from the per-image files of `inputs` done so far; returns it."""
    images, anns = [], []
    for path in inputs:
        target = out_dir / f"{path.stem}.json"
        if not target.is_file():
            continue
        record = json.loads(target.read_text())
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": record["file_name"], "height": record["height"],
                       "width": record["width"]})
        for ann in record["annotations"]:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "iscrowd": 0, **ann})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": i + 1, "name": q} for i, q in enumerate(queries)]}
    _write_atomic(out_dir / COCO_FILE, lambda t: t.write_text(json.dumps(coco)))
    return coco


def main(argv=None) -> dict:
    a = parse_args(argv)
    runtime.check_devices()
    out_dir = Path(a.out)
    try:  # first-contact mistakes: one line, exit 2
        queries = parse_queries(a.text)
        inputs = list_inputs(Path(a.images))
        mesh = parallel.data_mesh() if len(jax.local_devices()) > 1 else None
        detector = infer.load_detector(a.detector, mesh=mesh)
        parse_queries(a.text, detector.max_queries)
        predictor = infer.load(a.checkpoint, model=a.model_type, mesh=mesh)
        out_dir.mkdir(parents=True, exist_ok=True)
        todo = [p for p in inputs if not check_done(out_dir, p, queries)]
    except (FileNotFoundError, ValueError, TypeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    grounded = GroundedPredictor(detector, predictor, box_threshold=a.box_threshold, top_k=a.top_k,
                                 nms_thresh=a.nms_thresh)
    counts = {"done": 0, "skipped": len(inputs) - len(todo), "failed": 0}
    bar = tqdm(total=len(todo), unit="image", disable=a.no_progress or None, file=sys.stderr)

    def report(path, err):
        counts["failed"] += 1
        bar.write(f"skipping {path}: {err}", file=sys.stderr)

    for start in range(0, len(todo), a.batch_size):
        batch = []
        for path in todo[start:start + a.batch_size]:
            try:
                batch.append((path, read_image(path)))
            except ValueError as e:
                report(path, e)
                bar.update(1)
        if not batch:
            continue
        try:
            results = grounded.predict_batch([im for _, im in batch], queries)
        except Exception:  # one bad batch must not abort the folder; retry images one by one
            results = []
            for path, im in batch:
                try:
                    results.append(grounded.predict(im, queries))
                except Exception as e2:  # noqa: BLE001
                    report(path, f"text prompting failed: {e2}")
                    results.append(None)
        for (path, image), result in zip(batch, results):
            if result is not None:
                save_image_result(out_dir, path, image, result, a.overlays)
                counts["done"] += 1
            bar.update(1)
    bar.close()
    coco = write_coco(out_dir, inputs, queries)
    print(f"done {counts['done']}, skipped {counts['skipped']} (output exists), failed {counts['failed']} "
          f"(unreadable or unsupported) -> {out_dir / COCO_FILE}: {len(coco['images'])} images, "
          f"{len(coco['annotations'])} masks, categories {', '.join(queries)}")
    return counts


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
