"""Every parameter carries logical axis names from the one vocabulary in samjax.parallel."""

from __future__ import annotations

import flax.linen as nn
import jax
import pytest
from jax.sharding import PartitionSpec

from samjax import parallel
from samjax.models import SamConfig, abstract_params, param_logical_axes
from tests.conftest import TINY_CONFIGS


@pytest.mark.parametrize("config", [SamConfig.vit_b(), TINY_CONFIGS["tiny_global_norel"]], ids=["vit_b", "tiny"])
def test_every_param_has_vocabulary_axes(config):
    specs = param_logical_axes(config)
    shapes = abstract_params(config)
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    assert len(spec_leaves) == len(jax.tree.leaves(shapes))
    for spec, shape in zip(spec_leaves, jax.tree.leaves(shapes)):
        assert isinstance(spec, PartitionSpec) and len(spec) == len(shape.shape)
    parallel.check_axes(name for spec in spec_leaves for name in spec)


def test_vit_b_rules_shard_the_encoder_and_replicate_the_decoder():
    specs = param_logical_axes(SamConfig.vit_b())
    mesh = jax.make_mesh((1, 1, 1), parallel.MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
    shardings = nn.logical_to_mesh_sharding(specs, mesh, parallel.DEFAULT_RULES)
    blk = shardings["image_encoder"]["blocks_0"]
    assert blk["mlp"]["lin1"]["kernel"].spec == PartitionSpec("fsdp", "tensor")
    assert blk["attn"]["qkv"]["kernel"].spec == PartitionSpec("fsdp", "tensor")
    assert blk["attn"]["proj"]["kernel"].spec == PartitionSpec("tensor", "fsdp")
    dec = jax.tree.leaves(shardings["mask_decoder"], is_leaf=lambda x: isinstance(x, jax.sharding.NamedSharding))
    assert all(all(a is None for a in s.spec) for s in dec)


def test_unknown_axis_names_are_rejected():
    with pytest.raises(ValueError, match="embedd"):
        parallel.check_axes(["embed", "embedd"])
