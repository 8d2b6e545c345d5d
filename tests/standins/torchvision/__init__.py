"""TEST STAND-IN for torchvision -- not the real package.

The official `segment-anything` 1.0 imports four torchvision functions when it loads:
`transforms.functional.resize` / `to_pil_image` (ResizeLongestSide) and `ops.boxes.batched_nms` / `box_area`
(automatic mask generator). PyPI's torchvision does not load beside the CPU torch wheel used here, so the
tests put this package on sys.path instead (see tests/official.py), only when the real one cannot be imported.
Each function reproduces what torchvision does for the inputs segment-anything passes.
"""

__version__ = "0.0.0+samjax.test.standin"
STANDIN = True
