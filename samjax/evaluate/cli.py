"""python -m samjax.evaluate TASK --checkpoint DIR --data ... --out DIR: the SAM paper's zero-shot protocols.

Tasks (docs/evaluation.md has the commands for the paper's tables):
  points      mIoU after 1..9 clicks and the 1-click oracle on COCO-format datasets (one or many: --data and
              --images in pairs), per dataset and averaged                                  (paper §7.1, Fig. 9)
  edges       boundary map from a 16x16 point grid on BSDS500; ODS / OIS / AP / R50             (§7.2, Table 3)
  proposals   mask AR@1000 (by size; by frequency on LVIS) of the automatic mask generator     (§7.3, Table 4)
  instances   mask AP of SAM's masks for a detector's boxes (a COCO results JSON) on COCO / LVIS (§7.4, Table 5)
  tfrecord    single-point mIoU on SA-1B-format TFRecords, as training reports it (also the form without a
              TASK: python -m samjax.evaluate --checkpoint DIR --data "eval/*.tfrecord")

Every task but tfrecord batches its prompts (predict_batch / the automatic mask generator), embeds --batch-images
images per encoder call (data-parallel over all local devices when there are several), appends one JSON line per
finished image to OUT/TASK.jsonl (a rerun skips those images), shows progress, and writes OUT/TASK.json (metrics)
and OUT/TASK.md (a Markdown table, also printed).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import multiprocessing
import sys
from pathlib import Path

import jax
import numpy as np
from PIL import Image
from tqdm import tqdm

from samjax import infer, runtime
from samjax.evaluate import bsds, edges, instances, points, proposals, tfrecord
from samjax.evaluate.datasets import (
    DatasetError,
    load_boundaries,
    load_rgb,
    read_bsds,
    read_detections,
    read_instances,
)
from samjax.evaluate.report import ResultLog, fmt, markdown_table, write_report
from samjax.weights.store import load_model


# ------------------------------------------------------------------------------------------------- parser
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="samjax model dir (python -m samjax.convert) or an official .pth")
    p.add_argument("--out", required=True, help="output folder: TASK.jsonl (per image, resumable), TASK.json, TASK.md")
    p.add_argument("--model-type", default="auto", help="for an official .pth: vit_b / vit_l / vit_h (default: detect)")
    p.add_argument("--batch-images", type=int, default=None,
                   help="images per encoder call (default: the number of local devices)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images (of each dataset)")
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m samjax.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="task", metavar="TASK", required=True)

    s = sub.add_parser("points", help="mIoU after 1..N clicks on COCO-format datasets")
    _common(s)
    s.add_argument("--data", nargs="+", required=True, help="COCO-format instances JSON, one per dataset")
    s.add_argument("--images", nargs="+", required=True, help="image folder of each --data, in the same order")
    s.add_argument("--names", nargs="+", default=None, help="dataset names (default: the JSON file names)")
    s.add_argument("--clicks", type=int, default=9, help="clicks per mask (the paper: 1, 2, 3, 5, 9 of 9)")
    s.add_argument("--min-area", type=int, default=points.MIN_AREA,
                   help="skip masks smaller than this many pixels (default 24^2, the paper's filter; 0 keeps all)")
    s.add_argument("--batch-prompts", type=int, default=32, help="masks prompted per predict_batch call")
    s.add_argument("--no-mask-input", action="store_true", help="clicks 2+ without the previous logits as a prompt")

    s = sub.add_parser("edges", help="BSDS500 edge detection: ODS / OIS / AP / R50")
    _common(s)
    s.add_argument("--data", required=True, help="BSDS500 folder (data/images/<split>, data/groundTruth/<split>)")
    s.add_argument("--split", default="test")
    s.add_argument("--thresholds", type=int, default=99, help="number of thresholds (the benchmark's 99)")
    s.add_argument("--max-dist", type=float, default=bsds.MAX_DIST, help="matching tolerance, x image diagonal")
    s.add_argument("--points-per-side", type=int, default=16)
    s.add_argument("--nms-thresh", type=float, default=0.7, help="box NMS between masks")
    s.add_argument("--batch-prompts", type=int, default=64, help="points prompted per predict_batch call")
    s.add_argument("--workers", type=int, default=1, help="processes for the boundary matching (CPU-heavy)")
    s.add_argument("--save-edges", action="store_true", help="also write OUT/edges/NAME.png (the boundary maps)")

    s = sub.add_parser("proposals", help="mask AR@1000 of the automatic mask generator")
    _common(s)
    s.add_argument("--data", required=True, help="COCO or LVIS instances JSON (LVIS also reports by frequency)")
    s.add_argument("--images", required=True, help="image folder (LVIS: COCO's, with or without train2017/ val2017/)")
    s.add_argument("--points-per-side", type=int, default=64)
    s.add_argument("--nms-thresh", type=float, default=0.9, help="the generator's box NMS")
    s.add_argument("--max-proposals", type=int, default=1000)
    s.add_argument("--points-per-batch", type=int, default=64)

    s = sub.add_parser("instances", help="mask AP of SAM's masks for a detector's boxes")
    _common(s)
    s.add_argument("--data", required=True, help="COCO or LVIS instances JSON (the ground truth)")
    s.add_argument("--images", required=True, help="image folder")
    s.add_argument("--detections", required=True,
                   help="COCO results JSON of boxes: [{image_id, category_id, bbox, score}]")
    s.add_argument("--batch-prompts", type=int, default=32, help="boxes prompted per predict_batch call")
    s.add_argument("--no-refine", action="store_true", help="skip the paper's second pass (box + best mask)")

    s = sub.add_parser("tfrecord", help="single-point mIoU on SA-1B-format TFRecords (what training reports)")
    s.add_argument("--checkpoint", required=True, help="samjax model dir (config.json + params/), e.g. WORKDIR/model")
    s.add_argument("--data", required=True, help="TFRecord file or glob (SA-1B format, samjax.data.sa1b)")
    s.add_argument("--num-images", type=int, default=64)
    s.add_argument("--max-masks", type=int, default=16, help="masks per image (random, seeded)")
    s.add_argument("--clicks", default="1,3,5")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="also write the metrics JSON to this file")

    p.epilog = "Each task's options:\n" + "\n".join(
        "  " + sp.format_usage().replace("usage: ", "").strip() for sp in sub.choices.values())
    return p


# ---------------------------------------------------------------------------------------------- helpers
class UsageError(Exception):
    """A mistake in the command line, the checkpoint or --out, found before any image is evaluated."""


@contextlib.contextmanager
def _setup():
    """ValueErrors while a task sets up (options, checkpoint, ground truth, --out) are the user's: one line, exit 2.
    Later ones are bugs and keep their traceback."""
    try:
        yield
    except ValueError as e:
        raise UsageError(str(e)) from e


def _predictor(a):
    # Images are embedded --batch-images at a time, split over every local device (a 1-device mesh is one device).
    predictor = infer.load(a.checkpoint, model=a.model_type, mesh=infer.data_mesh())
    if a.batch_images is None:
        a.batch_images = len(jax.local_devices())
    if a.batch_images < 1:
        raise ValueError(f"--batch-images must be >= 1, got {a.batch_images}")
    return predictor


def _progress(total: int, done: int, desc: str, enabled: bool):
    return tqdm(total=total, initial=done, desc=desc, unit="image", disable=not enabled or None, file=sys.stderr,
                dynamic_ncols=True)


def _batches(items: list, n: int):
    for start in range(0, len(items), n):
        yield items[start:start + n]


def _settings(a, **extra) -> dict:
    """What must match for a rerun to continue a run: the task's options (paths absolute), not speed knobs."""
    skip = {"out", "batch_images", "no_progress", "workers", "batch_prompts", "points_per_batch", "limit",
            "save_edges", "model_type"}
    out = {}
    for k, v in sorted(vars(a).items()):
        if k in skip:
            continue
        if k in ("checkpoint", "data", "images", "detections") and v is not None:
            v = [str(Path(x).absolute()) for x in v] if isinstance(v, list) else str(Path(v).absolute())
        out[k] = v
    return {**out, **extra}


def _finish(a, task: str, metrics: dict, table: str, title: str) -> int:
    js, md = write_report(a.out, task, metrics, table, title)
    print(f"{title}\n\n{table}\n\nwrote {js} and {md}")
    return 0


# ------------------------------------------------------------------------------------------------- points
def run_points(a) -> int:
    with _setup():
        if len(a.data) != len(a.images):
            raise ValueError(f"--data has {len(a.data)} annotation files but --images has {len(a.images)} folders; "
                             "give one image folder per annotation file, in the same order")
        if a.names is not None and len(a.names) != len(a.data):
            raise ValueError(f"--names has {len(a.names)} names for {len(a.data)} datasets")
        if a.clicks < 1:
            raise ValueError(f"--clicks must be >= 1, got {a.clicks}")
        names = a.names or [Path(d).stem for d in a.data]
        if len(set(names)) != len(names):
            names = [f"{Path(d).parent.name}/{Path(d).stem}" for d in a.data]
            if len(set(names)) != len(names):
                raise ValueError("two datasets have the same name; give --names")
        datasets = [read_instances(d, i, n) for d, i, n in zip(a.data, a.images, names)]
        log = ResultLog(a.out, "points", _settings(a))
        predictor = _predictor(a)
    items = [(f"{ds.name}/{im['id']}", ds, im) for ds in datasets for im in ds.images[:a.limit]]
    todo = [it for it in items if it[0] not in log]
    bar = _progress(len(items), len(items) - len(todo), "points", not a.no_progress)
    for batch in _batches(todo, a.batch_images):
        work = []
        for key, ds, im in batch:
            masks, anns = ds.masks(im)
            keep = masks.sum((1, 2)) >= max(a.min_area, 1)
            work.append((key, ds, im, masks[keep], [x["id"] for x, k in zip(anns, keep) if k]))
        encode = [w for w in work if len(w[3])]  # images left without masks are not embedded
        if encode:
            predictor.set_images([w[1].load_image(w[2]) for w in encode])
        for key, ds, im, masks, ann_ids in work:
            ious, oracle = np.zeros((0, a.clicks)), np.zeros((0,))
            if len(masks):
                predictor.select_image(next(i for i, w in enumerate(encode) if w[0] == key))
                ious, oracle = points.evaluate_masks(predictor, masks, a.clicks, a.batch_prompts,
                                                     use_mask_input=not a.no_mask_input)
            log.add({"key": key, "dataset": ds.name, "image_id": im["id"], "ann_ids": ann_ids,
                     "ious": np.round(ious, 6).tolist(), "oracle": np.round(oracle, 6).tolist()})
            bar.update()
    bar.close()
    summary = points.summarize([log.records[k] for k, _, _ in items], a.clicks)
    return _finish(a, "points", summary, points.table(summary),
                   f"Point prompts: mIoU (%) after N clicks, {Path(a.checkpoint).name}")


# -------------------------------------------------------------------------------------------------- edges
def run_edges(a) -> int:
    with _setup():
        data = read_bsds(a.data, a.split)
        th = bsds.thresholds(a.thresholds)
        if a.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {a.workers}")
        log = ResultLog(a.out, "edges", _settings(a))
        predictor = _predictor(a)
    items = data.items[:a.limit]
    todo = [it for it in items if it.name not in log]
    bar = _progress(len(items), len(items) - len(todo), "edges", not a.no_progress)
    edge_dir = Path(a.out) / "edges"
    if a.save_edges:
        edge_dir.mkdir(parents=True, exist_ok=True)
    pool = None
    if a.workers > 1:  # spawned: the parent runs JAX, which must not be forked
        pool = concurrent.futures.ProcessPoolExecutor(a.workers, mp_context=multiprocessing.get_context("spawn"))
    pending: dict = {}

    def collect(block: bool) -> None:
        while pending and (block or len(pending) >= 2 * a.workers):
            done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for f in done:
                log.add({"key": pending.pop(f), "counts": f.result().tolist()})
                bar.update()
            block = block and bool(pending)

    try:
        for batch in _batches(todo, a.batch_images):
            images = [load_rgb(it.image) for it in batch]
            gts = [load_boundaries(it, im.shape[:2]) for it, im in zip(batch, images)]
            predictor.set_images(images)
            for i, (it, gt) in enumerate(zip(batch, gts)):
                predictor.select_image(i)
                pb = edges.edge_map(predictor, a.points_per_side, a.nms_thresh, a.batch_prompts)
                if a.save_edges:
                    Image.fromarray(np.round(pb * 255).astype(np.uint8)).save(edge_dir / f"{it.name}.png")
                if pool is None:
                    log.add({"key": it.name, "counts": bsds.evaluate_image(pb, gt, th, a.max_dist).tolist()})
                    bar.update()
                else:
                    pending[pool.submit(bsds.evaluate_image, pb, gt, th, a.max_dist)] = it.name
                    collect(block=False)
        collect(block=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        bar.close()
    metrics = bsds.summarize(np.array([log.records[it.name]["counts"] for it in items]).reshape(-1, len(th), 4), th)
    table = markdown_table(["edges", "ODS", "OIS", "AP", "R50", "images"],
                           [["BSDS500 " + a.split] + [fmt(metrics[k], 3, 1) for k in ("ods", "ois", "ap", "r50")]
                            + [metrics["num_images"]]])
    return _finish(a, "edges", metrics, table, f"Zero-shot edge detection, {Path(a.checkpoint).name}")


# ---------------------------------------------------------------------------------------------- proposals
def run_proposals(a) -> int:
    with _setup():
        ds = read_instances(a.data, a.images)
        apis = proposals.group_apis(ds)
        log = ResultLog(a.out, "proposals", _settings(a, kind=ds.kind))
        predictor = _predictor(a)
        gen = proposals.proposal_generator(predictor, a.points_per_side, a.nms_thresh, a.points_per_batch)
    items = ds.images[:a.limit]
    todo = [im for im in items if str(im["id"]) not in log]
    bar = _progress(len(items), len(items) - len(todo), "proposals", not a.no_progress)
    for batch in _batches(todo, a.batch_images):
        generated = gen.generate_batch([ds.load_image(im) for im in batch])
        for im, recs in zip(batch, generated):
            props = proposals.top_proposals(recs, a.max_proposals)
            log.add({"key": str(im["id"]), "image_id": im["id"], "num_proposals": len(props),
                     "recalls": {g: proposals.image_recalls(api, im["id"], props) for g, api in apis.items()}})
            bar.update()
    bar.close()
    summary = proposals.summarize([log.records[str(im["id"])] for im in items])
    return _finish(a, "proposals", summary, proposals.table(summary),
                   f"Object proposals on {ds.name} ({ds.kind.upper()}), {Path(a.checkpoint).name}")


# ---------------------------------------------------------------------------------------------- instances
def run_instances(a) -> int:
    with _setup():
        ds = read_instances(a.data, a.images)
        dets = read_detections(a.detections, ds)
        if ds.kind == "lvis":
            instances.lvis_api()  # fail now, not after the images, if the lvis package is missing
        log = ResultLog(a.out, "instances", _settings(a, kind=ds.kind))
        predictor = _predictor(a)
    items = ds.images[:a.limit]
    todo = [im for im in items if str(im["id"]) not in log]
    bar = _progress(len(items), len(items) - len(todo), "instances", not a.no_progress)
    for batch in _batches(todo, a.batch_images):
        with_boxes = [im for im in batch if dets.get(im["id"])]
        if with_boxes:
            predictor.set_images([ds.load_image(im) for im in with_boxes])
        for im in batch:
            results = []
            if dets.get(im["id"]):
                predictor.select_image(with_boxes.index(im))
                results = instances.segment_boxes(predictor, dets[im["id"]], a.batch_prompts, not a.no_refine)
            log.add({"key": str(im["id"]), "image_id": im["id"], "results": results})
            bar.update()
    bar.close()
    results = [r for im in items for r in log.records[str(im["id"])]["results"]]
    metrics = instances.evaluate_results(ds, results, [im["id"] for im in items])
    metrics["num_images"], metrics["num_masks"] = len(items), len(results)
    return _finish(a, "instances", metrics, instances.table(metrics),
                   f"Instance segmentation from boxes on {ds.name} ({ds.kind.upper()}), {Path(a.checkpoint).name}")


# ----------------------------------------------------------------------------------------------- tfrecord
def run_tfrecord(a) -> int:
    with _setup():
        config, params = load_model(a.checkpoint)
        examples = tfrecord.load_examples(a.data, config, a.num_images, a.max_masks, a.seed)
    if not examples:
        print(f"no images with masks in {a.data}", file=sys.stderr)
        return 1
    res = tfrecord.evaluate(params, config, examples, clicks=tuple(int(c) for c in a.clicks.split(",")),
                            batch_masks=a.max_masks)
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    return 0


RUN = {"points": run_points, "edges": run_edges, "proposals": run_proposals, "instances": run_instances,
       "tfrecord": run_tfrecord}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["tfrecord", *argv]  # the original command line, without a task
    a = build_parser().parse_args(argv)
    runtime.check_devices()
    try:
        return RUN[a.task](a)
    except (FileNotFoundError, DatasetError, ImportError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
