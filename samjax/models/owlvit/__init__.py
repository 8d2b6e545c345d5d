"""OWL-ViT and OWLv2 open-vocabulary detectors in Flax Linen: config, modules and parameter builders."""

from samjax.models.owlvit.config import OwlViTConfig
from samjax.models.owlvit.model import (
           OwlViT,
           abstract_params,
           box_bias,
           center_to_corners,
           init_params,
           param_logical_axes,
)

__all__ = [
           "OwlViT",
           "OwlViTConfig",
           "abstract_params",
           "box_bias",
           "center_to_corners",
           "init_params",
           "param_logical_axes",
]
