"""Command line for automatic mask generation, like the official scripts/amg.py.

    python -m samjax.amg --checkpoint DIR --input IMAGE_OR_FOLDER --output OUT [--convert-to-rle] [options]

Per image NAME.ext it writes OUT/NAME/0.png, 1.png, ... (masks as 0/255 PNGs) and OUT/NAME/metadata.csv with the
official columns, or with --convert-to-rle one OUT/NAME.json (a list of records with COCO RLE segmentations).
Outputs are written to a temporary name and renamed when complete, so an interrupted run never leaves an image
looking done; a re-run skips images whose output exists. Unreadable or unsupported files are reported and
skipped. A summary line counts done / skipped / failed. `--checkpoint` is a samjax checkpoint directory or an
official .pth / .pt (converted on the fly) of any family, SAM 2 / 2.1 included (then with
SAM2AutomaticMaskGenerator's defaults: --pred-iou-thresh 0.8, and its --mask-threshold and --use-m2m options). With
several local devices, `--batch-size` images are processed together, their crops embedded data-parallel over all
devices. `--labels "cat,sofa" --clip DIR` names every mask with CLIP
(samjax.amg.labels): a "label" and "label_score" per record in the JSON, two more metadata.csv columns.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
from PIL import Image
from tqdm import tqdm

from samjax import infer, parallel, runtime
from samjax.amg import aot
from samjax.amg.generator import AutomaticMaskGenerator

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
CSV_HEADER = ("id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,stability_score,"
              "crop_box_x0,crop_box_y0,crop_box_w,crop_box_h")

GENERATOR_OPTIONS = [  # (flag, type, default, help) -> AutomaticMaskGenerator keyword of the same name
    ("points-per-side", int, 32, "points sampled along one side of the image (points_per_side**2 in all)"),
    ("points-per-batch", int, 64, "points decoded together on the device"),
    ("pred-iou-thresh", float, None, "keep masks whose predicted IoU is above this (default 0.88; SAM 2: 0.8)"),
    ("stability-score-thresh", float, 0.95, "keep masks whose stability score is at least this"),
    ("stability-score-offset", float, 1.0, "logit offset for the stability score"),
    ("box-nms-thresh", float, 0.7, "box IoU above which duplicate masks are removed"),
    ("crop-n-layers", int, 0, "crop layers (layer i has (2**i)**2 crops)"),
    ("crop-nms-thresh", float, 0.7, "box IoU for removing duplicates between crops"),
    ("crop-overlap-ratio", float, 512 / 1500, "overlap of crops in the first layer, as a fraction of the short side"),
    ("crop-n-points-downscale-factor", int, 1, "points per side in layer n are divided by this**n"),
    ("min-mask-region-area", int, 0, "fill holes / remove islands smaller than this many pixels"),
    ("mask-threshold", float, None, "logit threshold of the masks (default: the model's, 0.0)"),
]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m samjax.amg", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="samjax checkpoint directory, or an official .pth / .pt (SAM 2 included)")
    p.add_argument("--model-type", default="auto",
                   help="for an official checkpoint file: auto (family and preset detected) or a preset "
                        "(vit_b, sam_hq_vit_l, mobile_sam, efficientvit_sam_l0, ...)")
    p.add_argument("--input", help="an image file or a folder of images")
    p.add_argument("--output", help="output folder")
    p.add_argument("--aot", default=None, metavar="TOPOLOGY",
                   help="dry run for a chip you do not have (e.g. v5e:1x1, Colab's TPU; needs libtpu and "
                        "JAX_PLATFORMS=cpu): compile the encoder, the prompt decoder and one crop of the generator "
                        "for it from the checkpoint's config (or --model-type vit_b|vit_l|vit_h), read their memory, "
                        "run nothing (samjax.amg.aot)")
    p.add_argument("--convert-to-rle", action="store_true",
                   help="write one COCO-RLE JSON per image instead of PNG masks + metadata.csv")
    p.add_argument("--batch-size", type=int, default=1, help="images processed together (data-parallel)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--labels", default=None,
                   help="comma-separated names to label every mask with (CLIP zero-shot; needs --clip)")
    p.add_argument("--clip", default=None, help="CLIP checkpoint for --labels: a Hugging Face CLIP directory, a "
                   "samjax save_clip directory, or an OpenAI .pt")
    p.add_argument("--label-template", default=None, help="text prompt of a label (default 'a photo of a {}.')")
    g = p.add_argument_group("generator options (as segment_anything.SamAutomaticMaskGenerator)")
    for flag, typ, default, help_ in GENERATOR_OPTIONS:
        g.add_argument(f"--{flag}", type=typ, default=default,
                       help=help_ if default is None else f"{help_} (default {default:g})")
    g.add_argument("--use-m2m", action="store_true",
                   help="SAM 2: refine every candidate once with its own low-res mask as a mask prompt")
    a = p.parse_args(argv)
    if not a.aot and not (a.checkpoint and a.input and a.output):
        p.error("--checkpoint, --input and --output are required (or --aot TOPOLOGY for a dry run)")
    if a.aot and not (a.checkpoint or a.model_type in ("vit_b", "vit_l", "vit_h")):
        p.error("--aot needs --checkpoint DIR or --model-type vit_b|vit_l|vit_h")
    if a.batch_size < 1:
        p.error("--batch-size must be >= 1")
    if (a.labels is None) != (a.clip is None):
        p.error("--labels and --clip go together: the names to choose from and the CLIP model that chooses")
    return a


def list_inputs(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(f for f in path.iterdir() if not f.name.startswith(".") and f.is_file())
    if path.exists():
        return [path]
    raise FileNotFoundError(f"--input {str(path)!r} does not exist: give an image file or a folder of images")


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; ValueError with the reason for unsupported or unreadable files."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ValueError(f"unsupported file type {path.suffix or '(none)'!r}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises several types for truncated / corrupt files
        raise ValueError(f"cannot read image: {e}") from e


def output_path(out_dir: Path, image_path: Path, rle: bool) -> Path:
    return out_dir / (image_path.stem + ".json" if rle else image_path.stem)


def _csv_field(text: str) -> str:
    """A label as one CSV field (quoted when it holds a comma or a quote)."""
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def write_masks_to_folder(records: list[dict], folder: Path, labelled: bool = False) -> None:
    """Official layout: i.png (0/255) per mask and metadata.csv, one row per mask (+ label, label_score columns
    when `labelled`)."""
    rows = [CSV_HEADER + (",label,label_score" if labelled else "")]
    for i, r in enumerate(records):
        Image.fromarray(r["segmentation"].astype(np.uint8) * 255).save(folder / f"{i}.png")
        vals = [str(i), str(r["area"]), *map(str, r["bbox"]), *map(str, r["point_coords"][0]),
                str(r["predicted_iou"]), str(r["stability_score"]), *map(str, r["crop_box"])]
        if labelled:
            vals += [_csv_field(r["label"]), str(r["label_score"])]
        rows.append(",".join(vals))
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")


def save(records: list[dict], target: Path, rle: bool, labelled: bool = False) -> None:
    """Write to a temporary sibling, then rename: `target` exists only when complete."""
    tmp = target.with_name(target.name + ".partial")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    if rle:
        tmp.write_text(json.dumps(records))
    else:
        tmp.mkdir(parents=True)
        write_masks_to_folder(records, tmp, labelled)
    os.replace(tmp, target)


def main(argv=None) -> dict:
    a = parse_args(argv)
    if a.aot:
        raise SystemExit(aot.main(a))
    runtime.check_devices()
    try:  # first-contact mistakes (no such input, no such checkpoint, not a SAM checkpoint): one line, exit 2
        inputs = list_inputs(Path(a.input))
        mesh = parallel.data_mesh() if len(jax.local_devices()) > 1 else None
        predictor = infer.load(a.checkpoint, model=a.model_type, mesh=mesh)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    out_dir = Path(a.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = {flag.replace("-", "_"): getattr(a, flag.replace("-", "_")) for flag, *_ in GENERATOR_OPTIONS}
    options["use_m2m"] = a.use_m2m
    try:  # a CLIP checkpoint that is missing or is not CLIP: one line, exit 2
        gen = AutomaticMaskGenerator(predictor, output_mode="coco_rle" if a.convert_to_rle else "binary_mask",
                                     labels=a.labels, clip=a.clip, label_template=a.label_template, **options)
    except (FileNotFoundError, ValueError, TypeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None

    counts = {"done": 0, "skipped": 0, "failed": 0}
    todo = []
    for path in inputs:
        if output_path(out_dir, path, a.convert_to_rle).exists():
            counts["skipped"] += 1
        else:
            todo.append(path)
    bar = tqdm(total=len(todo), unit="image", disable=a.no_progress or None, file=sys.stderr)

    def report(path, err):
        counts["failed"] += 1
        msg = f"skipping {path}: {err}"
        bar.write(msg, file=sys.stderr)

    for start in range(0, len(todo), a.batch_size):
        batch = []
        for path in todo[start:start + a.batch_size]:
            try:
                batch.append((path, read_image(path)))
            except ValueError as e:
                report(path, e)
                bar.update(1)
        if batch:
            try:
                results = gen.generate_batch([im for _, im in batch])
            except Exception:  # one bad batch must not abort the folder; retry images one by one
                results = []
                for path, im in batch:
                    try:
                        results.append(gen.generate(im))
                    except Exception as e2:  # noqa: BLE001
                        report(path, f"mask generation failed: {e2}")
                        results.append(None)
            for (path, _), records in zip(batch, results):
                if records is not None:
                    save(records, output_path(out_dir, path, a.convert_to_rle), a.convert_to_rle,
                         gen.labeler is not None)
                    counts["done"] += 1
                bar.update(1)
    bar.close()
    print(f"done {counts['done']}, skipped {counts['skipped']} (output exists), failed {counts['failed']} "
          f"(unreadable or unsupported) -> {out_dir}")
    return counts
