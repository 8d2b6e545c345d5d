"""Prompt batches of one fixed size, so that a whole run compiles a handful of shapes.

samjax.infer.Predictor compiles its decoder per bucket of prompt count (and prompt tokens, mask prompt, output
count) and its upsampling to the image's size per exact prompt count and image size. The protocols' batches
shrink as masks finish (clicks) and vary per image (masks, boxes), so every call here is padded to the chunk size
of the run by repeating its first prompt (the padding rows are dropped from the results): one decoder compile per
prompt-token bucket for the whole run, and one upsampling compile per image size. A decoder call costs little
next to the image encoder, so the padding's extra prompts are cheap.
"""

from __future__ import annotations

import numpy as np

PROMPTS = ("point_coords", "point_labels", "boxes", "mask_input")


def predict_padded(predictor, size: int, **prompts):
    """predictor.predict_batch(**prompts) with the prompt arrays (point_coords, point_labels, boxes, mask_input:
    those given, all of one length n <= size) padded to `size`; returns (masks, iou, low_res) of the n real ones."""
    arrays = {k: np.asarray(v) for k, v in prompts.items() if k in PROMPTS and v is not None}
    n = len(next(iter(arrays.values())))
    if n > size:
        raise ValueError(f"{n} prompts do not fit a batch of {size}")
    if n < size:
        arrays = {k: np.concatenate([v, np.repeat(v[:1], size - n, axis=0)]) for k, v in arrays.items()}
    options = {k: v for k, v in prompts.items() if k not in PROMPTS}
    masks, iou, low = predictor.predict_batch(**arrays, **options)
    return masks[:n], iou[:n], low[:n]
