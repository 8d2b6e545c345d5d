"""Evaluation: the SAM paper's zero-shot protocols, and the held-out metric training reports.

    python -m samjax.evaluate points    --checkpoint DIR --data ann.json [...] --images DIR [...] --out OUT
    python -m samjax.evaluate edges     --checkpoint DIR --data BSDS500/ --out OUT
    python -m samjax.evaluate proposals --checkpoint DIR --data lvis_v1_val.json --images coco/ --out OUT
    python -m samjax.evaluate instances --checkpoint DIR --data lvis_v1_val.json --images coco/ \
        --detections boxes.json --out OUT
    python -m samjax.evaluate tfrecord  --checkpoint DIR --data "eval/*.tfrecord"

One module per protocol: points (mIoU after 1..9 clicks), edges + bsds (BSDS500 edge detection and its
benchmark), proposals (mask AR@1000), instances (mask AP from a detector's boxes); datasets (COCO / LVIS / BSDS
readers), report (the resumable per-image log and the JSON + Markdown output), cli (the command line), tfrecord
(single-point mIoU on SA-1B TFRecords: `load_examples` + `evaluate`, which samjax.train calls, and `demo_image`).
The commands that reproduce the paper's tables, with its numbers: docs/evaluation.md.
"""

import importlib

# Loaded on first use, so that a process importing one protocol's module (the edge benchmark's matching workers
# import samjax.evaluate.bsds) does not import JAX and the model through the command line.
_EXPORTS = {"main": "cli", **{name: "tfrecord" for name in (
    "cell_centre", "demo_image", "evaluate", "interior_point", "iou", "load_examples", "next_click")}}
__all__ = ["cell_centre", "demo_image", "evaluate", "interior_point", "iou", "load_examples", "main", "next_click"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"samjax.evaluate.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'samjax.evaluate' has no attribute {name!r}")
