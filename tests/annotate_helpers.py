"""Shared pieces of the annotation tool's tests: a tiny SAM checkpoint, synthetic images, an in-process client.

One tiny config (also the ONNX tests'), so the decoder compiled for one test file serves the others."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from samjax.models import SamConfig
from tests.amg_model import AMG_CONFIG

# The automatic-mask tests' tiny SAM (image 64, patch 4: a 16x16 grid, 64x64 low-res masks; 2 decoder layers; 3
# multimask outputs): code compiled for it by one test file serves the others in the same run.
CFG: SamConfig = AMG_CONFIG
IMAGE_HW = (96, 128)


def tiny_params(seed: int = 0) -> dict:
    """Random parameters (`convert.random_state_dict`: no compile, unlike init_params)."""
    from samjax.weights.sam import from_torch, random_state_dict

    return from_torch(random_state_dict(CFG, seed), CFG)


def save_checkpoint(path: Path, seed: int = 0) -> Path:
    from samjax.weights.store import save_model

    return save_model(path, tiny_params(seed), CFG)


def write_images(folder: Path, n: int = 3, hw=IMAGE_HW, seed: int = 7) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """n synthetic images (samjax.data.synthetic) as PNG and JPEG files: [(name, image (H, W, 3), masks (K, H, W))]."""
    from samjax.data.synthetic import decoded_sample

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        image, masks = decoded_sample(seed, i + 1, *hw, num_objects=4)
        name = f"img_{i}.png" if i % 2 == 0 else f"img_{i}.jpg"
        Image.fromarray(image).save(folder / name, **({"quality": 95} if name.endswith(".jpg") else {}))
        out.append((name, np.asarray(Image.open(folder / name).convert("RGB")), masks))
    return out


def object_point(masks: np.ndarray) -> list[float]:
    """(x, y) inside the largest object: the pixel farthest from its border."""
    from scipy import ndimage

    big = masks[int(np.argmax(masks.reshape(len(masks), -1).sum(1)))]
    dist = ndimage.distance_transform_edt(big)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return [float(x) + 0.5, float(y) + 0.5]


def client(app, **kwargs):
    """An in-process HTTP client addressed to a loopback name (the server refuses others)."""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://127.0.0.1", **kwargs)


def rle_to_mask(counts, h: int, w: int) -> np.ndarray:
    from samjax.amg.mask_io import rle_to_mask as decode

    return decode({"size": [h, w], "counts": counts})
