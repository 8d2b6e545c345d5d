"""Inference: a Predictor with a cached image embedding, and the one-line `predict`.

    import samjax.infer
    predictor = samjax.infer.load("ckpt/sam_vit_h")           # converted checkpoint dir (or an official .pth)
    predictor.set_image(image)                                # (H, W, 3) uint8 RGB; runs the encoder once
    masks, scores, logits = predictor.predict(point_coords=np.array([[500, 375]]), point_labels=np.array([1]))
    # masks (3, H, W) bool, scores (3,), logits (3, 256, 256): as segment_anything.SamPredictor.predict

`samjax.infer.predictor` holds the Predictor and its jitted functions, `samjax.infer.validate` the input checks.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import numpy as np

from samjax.infer.families import FAMILIES, SamFamily, family_for
from samjax.infer.predictor import Predictor, bucket
from samjax.infer.validate import ImageNotSetError
from samjax.parallel import data_mesh
from samjax.weights import detect, store
from samjax.weights.pth import load_torch_checkpoint

__all__ = ["Predictor", "ImageNotSetError", "load", "predict", "data_mesh", "bucket", "family_for", "SamFamily",
           "FAMILIES"]


def load(checkpoint: str | os.PathLike, *, model: str = "auto", dtype: str | None = None,
         mesh: jax.sharding.Mesh | None = None, decoder_matmul_dtype: str | None = None) -> Predictor:
    """A ready Predictor from a converted checkpoint directory, or directly from an official checkpoint file of any
    family (SAM, HQ-SAM, MobileSAM, EfficientViT-SAM; converted in memory; `model` 'auto' detects the family and
    preset, or names a preset). `mesh`: see Predictor. dtype / decoder_matmul_dtype: override the compute options
    of the model's SamConfig (None: the checkpoint's)."""
    path = Path(checkpoint)
    overrides = {k: v for k, v in (("dtype", dtype), ("decoder_matmul_dtype", decoder_matmul_dtype)) if v}
    if path.suffix in (".pth", ".pt", ".bin") and not path.is_dir():  # a missing .pth: say so, not "no directory"
        config, tree = detect.convert(load_torch_checkpoint(path), model)
    else:
        config, tree = store.load_model(path)
    return Predictor(store.override(config, **overrides), tree, mesh=mesh)


@functools.lru_cache(maxsize=2)
def _cached_predictor(path: str) -> Predictor:
    return load(path)


def predict(image: np.ndarray, points, labels=None, *, checkpoint: str | os.PathLike | None = None,
            multimask_output: bool = True):
    """One line from an image and points to masks: (masks (C, H, W) bool, scores (C,), logits (C, 256, 256)).

    points (N, 2) (x, y) pixels; labels default to all foreground. `checkpoint` (a converted directory or an
    official .pth) defaults to $SAMJAX_CHECKPOINT; the Predictor is cached between calls.
    """
    checkpoint = checkpoint or os.environ.get("SAMJAX_CHECKPOINT")
    if not checkpoint:
        raise ValueError("no checkpoint: pass checkpoint=DIR (from python -m samjax.convert) or an official .pth, "
                         "or set SAMJAX_CHECKPOINT")
    predictor = _cached_predictor(str(Path(checkpoint).absolute()))
    points = np.asarray(points, dtype=np.float64)
    if labels is None:
        labels = np.ones(points.shape[:1], np.int32)
    predictor.set_image(image)
    return predictor.predict(point_coords=points, point_labels=labels, multimask_output=multimask_output)
