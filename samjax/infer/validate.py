"""Checks of what users pass to a Predictor: each raises ValueError / TypeError naming what was expected."""

from __future__ import annotations

import jax
import numpy as np

from samjax.models import NOT_A_POINT, SamConfig, abstract_params


class ImageNotSetError(ValueError, RuntimeError):
    """predict() before set_image(). A ValueError as samjax promises, a RuntimeError as the official code."""


def check_image(image, image_format: str) -> np.ndarray:
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array of shape (H, W, 3) and dtype uint8, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"image must have dtype uint8 (values 0..255), got {image.dtype}; "
                        "for floats in [0, 1] use (image * 255).round().astype(np.uint8)")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 1):
        raise ValueError(f"image must be (H, W, 3) RGB, got grayscale {image.shape}; "
                         "convert with np.repeat(image[..., None], 3, axis=-1)")
    if image.ndim == 3 and image.shape[-1] == 4:
        raise ValueError(f"image must be (H, W, 3) RGB, got RGBA {image.shape}; drop alpha with image[..., :3]")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    return image


def _as_float_array(x, name: str, shape_desc: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a numeric array {shape_desc}, got {type(x).__name__}") from e
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def check_points(coords, labels, original_size, batched: bool) -> tuple[np.ndarray, np.ndarray]:
    """-> coords (B, N, 2) float64 in original pixels, labels (B, N) int32."""
    desc = "(B, N, 2)" if batched else "(N, 2)"
    if labels is None:
        raise ValueError("point_labels are required with point_coords (1 = foreground, 0 = background)")
    coords = _as_float_array(coords, "point_coords", desc)
    labels_f = _as_float_array(labels, "point_labels", desc[:-4] + ")")
    want_ndim = 3 if batched else 2
    if coords.ndim != want_ndim or coords.shape[-1] != 2:
        raise ValueError(f"point_coords must be {desc} (x, y) pixels, got shape {coords.shape}")
    if labels_f.shape != coords.shape[:-1]:
        raise ValueError(f"point_labels must have shape {coords.shape[:-1]} to match point_coords {coords.shape}, "
                         f"got {labels_f.shape}")
    if coords.shape[-2] == 0:
        raise ValueError("point_coords is empty: give at least one point, or pass point_coords=None")
    if np.any(labels_f != np.round(labels_f)) or not np.isin(labels_f, (NOT_A_POINT, 0, 1)).all():
        raise ValueError(f"point_labels must be 1 (foreground), 0 (background) or -1 (padding), got "
                         f"{sorted(set(np.unique(labels_f).tolist()))}")
    h, w = original_size
    outside = (coords[..., 0] < 0) | (coords[..., 0] > w) | (coords[..., 1] < 0) | (coords[..., 1] > h)
    outside &= labels_f != NOT_A_POINT
    if outside.any():
        bad = coords[outside][:3].tolist()
        raise ValueError(f"points {bad} lie outside the {w}x{h} (width x height) image; coordinates are (x, y) pixels")
    if not batched:
        coords, labels_f = coords[None], labels_f[None]
    return coords, labels_f.astype(np.int32)


def check_boxes(box, original_size, batched: bool) -> np.ndarray:
    """-> (B, 4) XYXY float64 in original pixels."""
    desc = "(B, 4)" if batched else "(4,)"
    box = _as_float_array(box, "box", desc)
    if not batched and box.shape == (1, 4):
        box = box[0]
    if box.shape[-1:] != (4,) or box.ndim != (2 if batched else 1):
        raise ValueError(f"box must be {desc} XYXY pixels, got shape {box.shape}")
    box = box.reshape(-1, 4)
    if box.shape[0] == 0:
        raise ValueError("boxes is empty: give at least one box, or pass None")
    if np.any(box[:, 2] < box[:, 0]) or np.any(box[:, 3] < box[:, 1]):
        raise ValueError(f"boxes must be XYXY with x0 <= x1 and y0 <= y1, got {box[:3].tolist()}")
    h, w = original_size
    if np.any(box < 0) or np.any(box[:, [0, 2]] > w) or np.any(box[:, [1, 3]] > h):
        raise ValueError(f"boxes {box[:3].tolist()} extend outside the {w}x{h} (width x height) image")
    return box


def check_mask_input(mask_input, size: int, batched: bool) -> np.ndarray:
    """-> (B, size, size) float32 low-res logits."""
    desc = f"(B, 1, {size}, {size})" if batched else f"(1, {size}, {size})"
    m = _as_float_array(mask_input, "mask_input", desc).astype(np.float32)
    if batched and m.ndim == 4 and m.shape[1:] == (1, size, size):
        return m[:, 0]
    if not batched and m.shape == (1, size, size):
        return m
    raise ValueError(f"mask_input must be {desc} low-res logits (e.g. a previous prediction's logits), got {m.shape}")


def check_text_embedding(text_embedding, dim: int, batched: bool) -> np.ndarray:
    """-> (B, dim) float32 CLIP embeddings (the text prompt of a SAM with text_embed_dim `dim`; 0: it has none)."""
    if not dim:
        raise ValueError("this SAM has no text prompt (SamConfig.text_embed_dim is 0, as in every released checkpoint: "
                         "no public weights exist for SAM's text prompt); train one with experiments/text_prompt.py, "
                         "or use text -> boxes -> masks (samjax.infer.GroundedPredictor)")
    desc = f"(B, {dim})" if batched else f"({dim},)"
    t = _as_float_array(text_embedding, "text_embedding", desc).astype(np.float32)
    if not batched and t.shape == (1, dim):
        t = t[0]
    if t.shape[-1:] != (dim,) or t.ndim != (2 if batched else 1):
        raise ValueError(f"text_embedding must be {desc} (a CLIP embedding of the model's text_embed_dim), got "
                         f"shape {t.shape}")
    t = t.reshape(-1, dim)
    if t.shape[0] == 0:
        raise ValueError("text_embedding is empty: give at least one embedding, or pass None")
    if not np.all(np.linalg.norm(t, axis=-1) > 0):
        raise ValueError("text_embedding holds an all-zero vector: not a CLIP embedding")
    return t


def check_params(params, config: SamConfig) -> None:
    """Raise ValueError if `params` is not the parameter tree of SAM `config` (e.g. weights of another SAM size)."""
    check_variables(params, abstract_params(config), "SamConfig")


def check_variables(tree, abstract, what: str = "the config") -> None:
    """Raise ValueError if `tree` (params or {"params", "batch_stats"}) does not have the keys and shapes of
    `abstract` (e.g. weights of another model size, or a family's variables without their batch_stats)."""
    want = jax.tree_util.tree_flatten_with_path(abstract)[0]
    try:
        got = jax.tree_util.tree_flatten_with_path(tree)[0]
    except Exception as e:  # pragma: no cover - exotic containers
        raise TypeError(f"params must be a nested dict of arrays, got {type(tree).__name__}") from e
    want_d = {jax.tree_util.keystr(p): tuple(x.shape) for p, x in want}
    got_d = {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in got}
    problems = [f"missing {k}" for k in want_d if k not in got_d][:3]
    problems += [f"unexpected {k}" for k in got_d if k not in want_d][:3]
    problems += [f"{k}: {got_d[k]} vs expected {v}" for k, v in want_d.items() if k in got_d and got_d[k] != v][:3]
    if problems:
        raise ValueError(f"params do not match the {what} (weights of another model size?): " + "; ".join(problems))
