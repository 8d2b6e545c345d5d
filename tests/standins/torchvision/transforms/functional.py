"""TEST STAND-IN for torchvision.transforms.functional: the PIL paths of `resize` and `to_pil_image`."""

import numpy as np
from PIL import Image


def to_pil_image(pic, mode=None):
    """(H, W, C) uint8 numpy -> PIL image (torchvision's behaviour for uint8 HWC arrays)."""
    if not isinstance(pic, np.ndarray) or pic.dtype != np.uint8:
        raise TypeError("stand-in to_pil_image only handles uint8 numpy arrays")
    if pic.ndim == 3 and pic.shape[2] == 1:
        pic = pic[:, :, 0]
    return Image.fromarray(pic, mode=mode)


def resize(img, size, interpolation=None, max_size=None, antialias=True):
    """PIL image, size [h, w] -> PIL bilinear resize (torchvision's default for PIL input)."""
    if not isinstance(img, Image.Image) or len(size) != 2 or max_size is not None:
        raise TypeError("stand-in resize only handles a PIL image and an explicit [h, w] size")
    h, w = int(size[0]), int(size[1])
    return img.resize((w, h), Image.BILINEAR)
