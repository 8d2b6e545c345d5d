"""Inference: a Predictor with a cached image embedding, and the one-line `predict`.

    import samjax.infer
    predictor = samjax.infer.load("ckpt/sam_vit_h")           # converted checkpoint dir (or an official .pth)
    predictor.set_image(image)                                # (H, W, 3) uint8 RGB; runs the encoder once
    masks, scores, logits = predictor.predict(point_coords=np.array([[500, 375]]), point_labels=np.array([1]))
    # masks (3, H, W) bool, scores (3,), logits (3, 256, 256): as segment_anything.SamPredictor.predict
    masks, scores, names = samjax.infer.predict(image, text="a dog", checkpoint="ckpt/sam_vit_h",
                                                detector="owlv2-base-patch16/")   # text -> boxes -> masks

A SAM 2 / 2.1 checkpoint (official `sam2*_hiera_*.pt` or a converted directory) loads as a `Sam2Predictor`
(`samjax.infer.sam2`: SAM2ImagePredictor's calls); its video predictor is `samjax.infer.video`.

`samjax.infer.predictor` holds the Predictor and its jitted functions, `samjax.infer.validate` the input checks,
`samjax.infer.detect` the OWL-ViT / OWLv2 detector (needs the `text` extra), `samjax.infer.ground` text prompts
(`GroundedPredictor`: detector boxes -> SAM masks).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import numpy as np

from samjax.infer.families import FAMILIES, SamFamily, family_for
from samjax.infer.ground import Grounded, GroundedPredictor
from samjax.infer.predictor import Predictor, bucket
from samjax.infer.sam2 import Sam2Predictor
from samjax.infer.sam2 import with_postprocessing as sam2_postprocessing
from samjax.infer.validate import ImageNotSetError
from samjax.models.sam2 import Sam2Config
from samjax.parallel import data_mesh
from samjax.weights import default as default_model
from samjax.weights import detect as checkpoints  # not `detect`: samjax.infer.detect (OWL) is a submodule
from samjax.weights import store
from samjax.weights.pth import load_torch_checkpoint

__all__ = [
    "FAMILIES",
    "Grounded",
    "GroundedPredictor",
    "ImageNotSetError",
    "Predictor",
    "Sam2Predictor",
    "SamFamily",
    "bucket",
    "data_mesh",
    "family_for",
    "load",
    "load_detector",
    "predict",
]


def load(checkpoint: str | os.PathLike | None = None, *, model: str = "auto", dtype: str | None = None,
         mesh: jax.sharding.Mesh | None = None, decoder_matmul_dtype: str | None = None) -> Predictor:
    """A ready Predictor from a converted checkpoint directory, or directly from an official checkpoint file of any
    family (SAM, HQ-SAM, MobileSAM, EfficientViT-SAM; converted in memory; `model` 'auto' detects the family and
    preset, or names a preset). With no checkpoint (or "tiny"): the small model samjax ships
    (samjax.weights.default: trained from scratch on synthetic shapes, not for photos). `mesh`: see Predictor.
    dtype / decoder_matmul_dtype: override the compute options of the model's SamConfig (None: the checkpoint's).
    SAM 2 / 2.1 (an official .pt or a converted directory) gives a `Sam2Predictor` with SAM2ImagePredictor's calls
    and build_sam2's default post-processing (its image path resizes in float on device and selects masks by the
    object score, so it is its own predictor rather than a `families` adapter; its prompt side, `Sam2Family`, serves
    the automatic mask generator)."""
    if checkpoint is None or str(checkpoint) == default_model.NAME:
        checkpoint = default_model.path()
    path = Path(checkpoint)
    overrides = {k: v for k, v in (("dtype", dtype), ("decoder_matmul_dtype", decoder_matmul_dtype)) if v}
    if path.suffix in (".pth", ".pt", ".bin") and not path.is_dir():  # a missing .pth: say so, not "no directory"
        config, tree = checkpoints.convert(load_torch_checkpoint(path), model)
    else:
        config, tree = store.load_model(path)
    if isinstance(config, Sam2Config):
        if decoder_matmul_dtype:
            raise ValueError("decoder_matmul_dtype is a SAM option; SAM 2 models take dtype only")
        return Sam2Predictor(sam2_postprocessing(config.replace(dtype=dtype) if dtype else config), tree, mesh=mesh)
    return Predictor(store.override(config, **overrides), tree, mesh=mesh)


def load_detector(path: str | os.PathLike, *, mesh: jax.sharding.Mesh | None = None):
    """An OwlDetector (samjax.infer.detect) from a Hugging Face OWL-ViT / OWLv2 directory (needs the `text`
    extra: pip install 'samjax[text]')."""
    from samjax.infer.detect import (
        OwlDetector,  # the tokenizer's packages are an optional extra
    )

    return OwlDetector.load(path, mesh=mesh)


@functools.lru_cache(maxsize=2)
def _cached_predictor(path: str) -> Predictor:
    return load(path)


@functools.lru_cache(maxsize=2)
def _cached_detector(path: str):
    return load_detector(path)


def predict(image: np.ndarray, points=None, labels=None, *, text=None, checkpoint: str | os.PathLike | None = None,
            detector=None, multimask_output: bool = True):
    """One line from an image and points, or text, to masks.

    Points: (N, 2) (x, y) pixels, labels default to all foreground -> (masks (C, H, W) bool, scores (C,), logits
    (C, 256, 256)). Text: "a dog, a red car" (comma-separated queries) and `detector` (an OWL-ViT / OWLv2
    directory, or a detector object, see samjax.infer.ground) -> (masks (K, H, W) bool, scores (K,) the
    detector's, names [K query strings]), one mask per detected box (GroundedPredictor's defaults).
    `checkpoint` (a converted directory or an official .pth) defaults to $SAMJAX_CHECKPOINT, then to the shipped
    synthetic-shapes model (see `load`); `detector` to $SAMJAX_DETECTOR; both are cached between calls.
    """
    if (points is None) == (text is None):
        raise ValueError("give either points (N, 2) or text='a dog, ...', not both and not neither")
    checkpoint = checkpoint or os.environ.get("SAMJAX_CHECKPOINT") or default_model.NAME
    if str(checkpoint) == default_model.NAME:
        checkpoint = default_model.path()
    predictor = _cached_predictor(str(Path(checkpoint).absolute()))
    if text is not None:
        detector = detector or os.environ.get("SAMJAX_DETECTOR")
        if not detector:
            raise ValueError("text prompts need a detector: pass detector=DIR (a Hugging Face OWL-ViT / OWLv2 "
                             "directory, e.g. google/owlv2-base-patch16-ensemble) or set SAMJAX_DETECTOR")
        if isinstance(detector, (str, os.PathLike)):
            detector = _cached_detector(str(Path(detector).absolute()))
        result = GroundedPredictor(detector, predictor).predict(image, text)
        return result.masks, result.scores, result.names
    points = np.asarray(points, dtype=np.float64)
    if labels is None:
        labels = np.ones(points.shape[:1], np.int32)
    predictor.set_image(image)
    return predictor.predict(point_coords=points, point_labels=labels, multimask_output=multimask_output)
