"""Text prompts: an open-vocabulary detector turns text into boxes, SAM turns the boxes into masks (Grounded-SAM).

    from samjax.infer import load
    from samjax.infer.detect import OwlDetector
    from samjax.infer.ground import GroundedPredictor
    grounded = GroundedPredictor(OwlDetector.load("owlv2-base-patch16/"), load("ckpt/sam_vit_h"))
    result = grounded.predict(image, "a dog, a red car")
    result.masks (K, H, W) bool, result.boxes (K, 4), result.scores (K,), result.names ["a dog", ...]

A composition rather than a `Predictor.predict_text` method: the Predictor stays SAM's (no detector weights or
tokenizer inside it), and the detector is anything with OwlDetector's `detect(images, queries, threshold=, top_k=,
nms_thresh=)` returning per image `.boxes` (K, 4) XYXY pixels, `.scores` (K,) and `.labels` (K,) query indices.
Each detected box is one SAM box prompt (single-mask output, as SAM is prompted with boxes), all boxes of an
image in one `predict_batch` call; the images of a batch are embedded in one encoder call (split over the
Predictor's mesh, if any).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from samjax.infer.predictor import Predictor
from samjax.infer.validate import check_image

# Queries per call: the text tower runs once per query and the class head compares every patch with every query;
# past a few hundred, split the vocabulary over several calls. Query counts are bucketed to powers of two up to it.
MAX_QUERIES = 256


def parse_queries(text: str | Sequence[str], max_queries: int = MAX_QUERIES) -> tuple[str, ...]:
    """"dog, red car" or ["dog", "red car"] -> ("dog", "red car"); a clear error for no query, a non-string or
    more than `max_queries`."""
    if isinstance(text, str):
        queries = [q.strip() for q in text.split(",")]
    elif isinstance(text, Sequence) and all(isinstance(q, str) for q in text):
        queries = [q.strip() for q in text]
    else:
        raise TypeError(f"text must be a string of comma-separated queries or a list of strings, got {text!r}")
    queries = [q for q in queries if q]
    if not queries:
        raise ValueError(f"text {text!r} holds no query: give one or more comma-separated phrases, e.g. "
                         "'a dog, a red car'")
    if len(queries) > max_queries:
        raise ValueError(f"{len(queries)} queries, more than the limit of {max_queries} per call: split them over "
                         "several calls")
    return tuple(queries)


@dataclasses.dataclass(frozen=True)
class Grounded:
    """One image's text-prompted masks, best detection first: masks (K, H, W) bool, boxes (K, 4) float32 XYXY
    pixels (the SAM prompts), scores (K,) the detector's, labels (K,) int32 indices into `queries`,
    iou_predictions (K,) SAM's predicted IoU of each mask."""

    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    iou_predictions: np.ndarray
    queries: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        """The query text of each mask."""
        return [self.queries[i] for i in self.labels]

    def __len__(self) -> int:
        return len(self.scores)


class GroundedPredictor:
    """Text -> boxes (`detector`) -> masks (`predictor`, a SAM Predictor). Thresholds as OwlDetector.detect; the
    default per-label NMS at IoU 0.5 keeps neighbouring patches' near-identical boxes from giving duplicate masks."""

    def __init__(self, detector, predictor: Predictor, box_threshold: float = 0.1, top_k: int = 20,
                 nms_thresh: float | None = 0.5):
        if not callable(getattr(detector, "detect", None)):
            raise TypeError(f"detector must have a detect(images, queries, ...) method (an OwlDetector), got "
                            f"{type(detector).__name__}")
        self.detector, self.predictor = detector, predictor
        self.box_threshold, self.top_k, self.nms_thresh = box_threshold, top_k, nms_thresh

    def predict(self, image: np.ndarray, text: str | Sequence[str]) -> Grounded:
        """Masks of the comma-separated queries in `text` in an (H, W, 3) uint8 RGB image."""
        return self.predict_batch([image], text)[0]

    def predict_batch(self, images: Sequence[np.ndarray], text: str | Sequence[str]) -> list[Grounded]:
        """`predict` for many images: one detector call and one SAM encoder call for all of them."""
        images = [check_image(im, "RGB") for im in images]
        if not images:
            return []
        queries = parse_queries(text, getattr(self.detector, "max_queries", MAX_QUERIES))
        detections = self.detector.detect(images, queries, threshold=self.box_threshold, top_k=self.top_k,
                                          nms_thresh=self.nms_thresh)
        if len(images) == 1:
            self.predictor.set_image(images[0])
        else:
            self.predictor.set_images(images)
        out = []
        for i, (image, dets) in enumerate(zip(images, detections)):
            if len(images) > 1:
                self.predictor.select_image(i)
            out.append(self._masks(image, dets, queries))
        return out

    def _masks(self, image: np.ndarray, dets, queries: tuple[str, ...]) -> Grounded:
        boxes = np.asarray(dets.boxes, np.float32).reshape(-1, 4)
        h, w = image.shape[:2]
        if len(boxes):
            masks, iou, _ = self.predictor.predict_batch(boxes=boxes, multimask_output=False)
            masks, iou = masks[:, 0], iou[:, 0]
        else:
            masks, iou = np.zeros((0, h, w), bool), np.zeros((0,), np.float32)
        return Grounded(masks=masks, boxes=boxes, scores=np.asarray(dets.scores, np.float32),
                        labels=np.asarray(dets.labels, np.int32), iou_predictions=iou, queries=tuple(queries))
