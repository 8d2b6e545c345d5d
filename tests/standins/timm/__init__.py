"""TEST STAND-IN for timm -- not the real package.

timm 1.0.x imports torchvision inside `timm.layers`, and PyPI's torchvision does not load beside the CPU torch wheel
used here. The reference packages the family parity tests build (MobileSAM's and HQ-SAM's TinyViT) import only
`timm.models.layers.{DropPath, to_2tuple, trunc_normal_}` and `timm.models.registry.register_model`; this package
provides those, each doing what timm's does. tests/family_official.py puts it on sys.path only when the real timm
cannot be imported.
"""

__version__ = "0.0.0+samjax.test.standin"
STANDIN = True
