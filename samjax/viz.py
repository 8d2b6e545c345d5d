"""Mask overlays with matplotlib, for notebooks and figures (what the official notebooks draw, as functions).

    fig, ax = plt.subplots()
    ax.imshow(image)                                   # (H, W, 3) uint8
    show_mask(ax, masks[0])                            # (H, W) bool, tinted
    show_points(ax, coords, labels)                    # (N, 2) x, y pixels; (N,) 1 = foreground (green star)
    show_box(ax, box)                                  # (4,) XYXY pixels
    show_anns(ax, gen.generate(image))                 # automatic masks, one colour each, largest drawn first

`anns_overlay(image, anns)` returns the AMG overlay as an (H, W, 3) uint8 array (for PNGs without matplotlib).
"""

from __future__ import annotations

import numpy as np

FOREGROUND, BACKGROUND = "#21c55d", "#ef4444"


def _rgba(color, alpha: float) -> np.ndarray:
    from matplotlib.colors import to_rgba  # noqa: PLC0415

    return np.array([*to_rgba(color)[:3], alpha])


def show_mask(ax, mask: np.ndarray, color="dodgerblue", alpha: float = 0.55) -> None:
    """Tint the pixels of an (H, W) bool mask on `ax` (drawn over what is there)."""
    mask = np.asarray(mask, bool)
    rgba = np.zeros((*mask.shape, 4))
    rgba[mask] = _rgba(color, alpha)
    ax.imshow(rgba, interpolation="nearest")


def show_points(ax, coords, labels, size: float = 160) -> None:
    """Stars at (N, 2) x, y pixels: green for label 1 (foreground), red for 0 (background)."""
    coords, labels = np.asarray(coords, float).reshape(-1, 2), np.asarray(labels).reshape(-1)
    for lab, color in ((1, FOREGROUND), (0, BACKGROUND)):
        pts = coords[labels == lab]
        ax.scatter(pts[:, 0], pts[:, 1], color=color, marker="*", s=size, edgecolor="white", linewidth=1.0)


def show_box(ax, box, color="gold") -> None:
    """An (4,) XYXY pixel box outline."""
    from matplotlib.patches import Rectangle  # noqa: PLC0415

    x0, y0, x1, y1 = np.asarray(box, float).reshape(4)
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, edgecolor=color, facecolor="none", lw=2))


def ann_colors(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) float RGB in [0, 1]: bright, distinct-ish random colours (seeded)."""
    rng = np.random.default_rng(seed)
    return 0.25 + 0.75 * rng.random((n, 3))


def anns_overlay(image: np.ndarray, anns: list[dict], alpha: float = 0.6, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: `image` with every automatic mask (key "segmentation", (H, W) bool) tinted its own colour,
    the largest first so small masks stay visible on top."""
    out = np.asarray(image, np.float32).copy()
    anns = sorted(anns, key=lambda a: a["area"], reverse=True)
    for ann, color in zip(anns, ann_colors(len(anns), seed)):
        m = np.asarray(ann["segmentation"], bool)
        out[m] = (1 - alpha) * out[m] + alpha * 255 * color
    return out.round().clip(0, 255).astype(np.uint8)


def show_anns(ax, anns: list[dict], image: np.ndarray | None = None, alpha: float = 0.6, seed: int = 0) -> None:
    """Draw automatic masks (binary_mask output mode) on `ax`, over `image` if given else over what is there."""
    if image is not None:
        ax.imshow(anns_overlay(image, anns, alpha, seed))
        return
    if not anns:
        return
    anns = sorted(anns, key=lambda a: a["area"], reverse=True)
    h, w = np.asarray(anns[0]["segmentation"]).shape
    rgba = np.zeros((h, w, 4))
    for ann, color in zip(anns, ann_colors(len(anns), seed)):
        rgba[np.asarray(ann["segmentation"], bool)] = [*color, alpha]
    ax.imshow(rgba, interpolation="nearest")
