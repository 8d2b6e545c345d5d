"""Automatic mask generation ("segment everything"): the generator (`generator`), its on-device geometry (point
grids, crops, boxes, stability, NMS: `geometry`), host-side mask encodings and clean-up (`mask_io`), and the command
line (`cli`; `python -m samjax.amg`)."""

from samjax.amg.generator import OUTPUT_MODES, AutomaticMaskGenerator

__all__ = ["AutomaticMaskGenerator", "OUTPUT_MODES"]
