"""HQ-SAM: SAM with a high-quality output token and global-local feature fusion (SysCV segment-anything-hq)."""

from samjax.models.hq_sam.config import PRESETS, HQSamConfig
from samjax.models.hq_sam.mask_decoder_hq import MaskDecoderHQ
from samjax.models.hq_sam.model import (
    TRAINABLE,
    HQSam,
    abstract_variables,
    init_variables,
    trainable_mask,
    variable_logical_axes,
)

__all__ = [
    "PRESETS",
    "TRAINABLE",
    "HQSam",
    "HQSamConfig",
    "MaskDecoderHQ",
    "abstract_variables",
    "init_variables",
    "trainable_mask",
    "variable_logical_axes",
]
