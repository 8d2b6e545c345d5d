"""TEST STAND-IN (see torchvision/__init__.py).

`Compose`, `ToTensor` and `Normalize`: efficientsam's EfficientViTSam builds its preprocessing from them, when it is
constructed (efficientsam/models/efficientvit/sam.py). Each does what torchvision's does for numpy / PIL images.
"""

import numpy as np
import torch


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img


class ToTensor:
    """(H, W, C) numpy or PIL image -> (C, H, W) tensor; uint8 scaled to float32 [0, 1], other dtypes kept."""

    def __call__(self, pic):
        arr = np.asarray(pic)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
        return t.to(torch.get_default_dtype()).div(255) if t.dtype == torch.uint8 else t


class Normalize:
    """(C, H, W) float tensor -> (tensor - mean) / std per channel (torchvision.transforms.functional.normalize)."""

    def __init__(self, mean, std, inplace=False):
        self.mean, self.std, self.inplace = mean, std, inplace

    def __call__(self, tensor):
        if not self.inplace:
            tensor = tensor.clone()
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=tensor.dtype).view(-1, 1, 1)
        return tensor.sub_(mean).div_(std)
