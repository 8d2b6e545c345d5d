"""TEST STAND-IN (see torchvision/__init__.py).

`Compose`, `ToTensor` and `Normalize`: efficientsam's EfficientViTSam builds its preprocessing from them, when it is
constructed (efficientsam/models/efficientvit/sam.py). Each does what torchvision's does for numpy / PIL images.
`Resize` and `Normalize` are also what sam2's SAM2Transforms scripts (`torch.jit.script(nn.Sequential(Resize((s, s)),
Normalize(mean, std)))`, sam2/utils/transforms.py): like torchvision's they are scriptable nn.Modules, and on a
float (C, H, W) tensor Resize does what torchvision >= 0.17 does, bilinear interpolation with antialiasing.
"""

from typing import List

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


class Normalize(torch.nn.Module):
    """(C, H, W) float tensor -> (tensor - mean) / std per channel (torchvision.transforms.functional.normalize)."""

    def __init__(self, mean: List[float], std: List[float], inplace: bool = False):
        super().__init__()
        self.mean, self.std, self.inplace = [float(m) for m in mean], [float(s) for s in std], inplace

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self.inplace:
            tensor = tensor.clone()
        mean = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return tensor.sub_(mean).div_(std)


class Resize(torch.nn.Module):
    """Resize((h, w)) of a float (C, H, W) or (B, C, H, W) tensor: bilinear, align_corners=False, antialias=True
    (torchvision's default interpolation and, since 0.17, its default antialias for tensors). Only an explicit
    (h, w) size and tensor input, the case sam2 uses."""

    def __init__(self, size: List[int]):
        super().__init__()
        if len(size) != 2:
            raise TypeError("stand-in Resize only handles an explicit (h, w) size")
        self.size = [int(size[0]), int(size[1])]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        batched = img.dim() == 4
        x = img if batched else img.unsqueeze(0)
        x = torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return x if batched else x.squeeze(0)
