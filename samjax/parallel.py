"""Meshes and shardings for training and inference: the one logical-axis vocabulary of samjax, the rules that map
it to mesh axes, mesh creation, and parameter shardings.

Models only *name* axes (via `nn.with_logical_partitioning` on every parameter and
`nn.with_logical_constraint` on large activations); which mesh axis, if any, carries each name is decided
here (DEFAULT_RULES) or by an experiment's `config.mesh.rules`, and nowhere else. The mesh axes are
("data", "fsdp", "tensor"); batch inference uses a 1-D ("data",) mesh (`data_mesh`).

Weight axes
  embed         image-encoder width (768 / 1024 / 1280)            -> fsdp
  mlp           image-encoder MLP hidden width (4 x embed)          -> tensor
  qkv           fused q|k|v output features (3 x embed)             -> tensor
  heads         attention features entering the output projection   -> tensor
  head_dim      per-head channels of the relative-position tables
  rel_pos       relative-position table rows (2 x size - 1)
  pos_h, pos_w  absolute position-embedding grid
  conv_h, conv_w  convolution kernel window
  in_channels   image channels (3) and mask channels (1)
  neck          channels after the encoder neck (= prompt_embed)
  prompt_embed  prompt-encoder / mask-decoder width (256)
  prompt_mlp    mask-decoder MLP hidden width (2048)
  prompt_attn   mask-decoder attention width (prompt_embed / downsample rate)
  mask_channels small convolution channels (mask downscaling, output upscaling)
  tokens        rows of an embedding table (IoU token, mask tokens, point embeddings)
  pe_coords, pe_feats  the random Fourier matrix (2, prompt_embed / 2)
  vocab         rows of a token-embedding table (CLIP text: 49408)
  positions     rows of a 1-D position table (CLIP text context; ViT class token + patches)
  joint_embed   CLIP's shared image-text embedding (projection_dim); OWL-ViT's class embeddings
  attn_heads    one entry per attention head (TinyViT's learned attention biases, heads x offsets)
  memory_embed  SAM 2 memory channels (mem_dim, 64)
  memory_mlp    SAM 2 memory-attention FFN and memory-encoder ConvNeXt hidden widths

Activation axes
  activation_batch, activation_height, activation_width, activation_length,
  activation_embed, activation_heads, activation_mlp
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

WEIGHT_AXES = (
    "embed", "mlp", "qkv", "heads", "head_dim", "rel_pos", "pos_h", "pos_w", "conv_h", "conv_w",
    "in_channels", "neck", "prompt_embed", "prompt_mlp", "prompt_attn", "mask_channels", "tokens",
    "pe_coords", "pe_feats", "vocab", "positions", "joint_embed", "attn_heads",
    "memory_embed", "memory_mlp",
)
ACTIVATION_AXES = (
    "activation_batch", "activation_height", "activation_width", "activation_length",
    "activation_embed", "activation_heads", "activation_mlp",
)
MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the mesh axes a global batch is split over

# Logical name -> mesh axis (or axes). Names not listed are replicated.
# The mask decoder is small (4M parameters) and stays replicated; the image encoder carries the weight.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("qkv", "tensor"),
    ("heads", "tensor"),
)


def check_axes(names) -> None:
    """Raise if a logical name is not in the vocabulary (catches typos in model code)."""
    known = set(WEIGHT_AXES) | set(ACTIVATION_AXES)
    unknown = sorted({n for n in names if n is not None and n not in known})
    if unknown:
        raise ValueError(f"logical axis names {unknown} are not in samjax.parallel's vocabulary")


Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]


def make_mesh(shape: dict | tuple, devices=None) -> jax.sharding.Mesh:
    """Mesh with axes (data, fsdp, tensor). shape: {"data": d, "fsdp": f, "tensor": t}; one entry may be -1
    (all remaining devices). Axis types are Auto (GSPMD propagation from the given shardings)."""
    sizes = [int(shape[a]) for a in MESH_AXES] if isinstance(shape, dict) else [int(s) for s in shape]
    devices = jax.devices() if devices is None else devices
    n = len(devices)
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
    if -1 in sizes:
        rest = int(np.prod([s for s in sizes if s != -1]))
        if n % rest:
            raise ValueError(f"{n} devices do not divide into mesh {dict(zip(MESH_AXES, sizes))}")
        sizes[sizes.index(-1)] = n // rest
    if int(np.prod(sizes)) != n:
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, have {n}")
    auto = (jax.sharding.AxisType.Auto,) * 3
    return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=auto, devices=devices)


def data_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D ("data",) mesh over `devices` (default: all local devices) for data-parallel batch inference."""
    devices = jax.local_devices() if devices is None else list(devices)
    return jax.sharding.Mesh(np.array(devices), ("data",))


def logical_to_spec(names: tuple, rules: Rules) -> P:
    """Logical names -> mesh PartitionSpec by the rules (first match); a mesh axis is used at most once per
    array (a name repeated in one array, e.g. the neck's 3x3 conv (neck, neck), is sharded on its first use)."""
    table = dict(rules)
    used, out = set(), []
    for name in names:
        axes = table.get(name) if name is not None else None
        axes_t = (axes,) if isinstance(axes, str) else tuple(axes or ())
        if not axes_t or used & set(axes_t):
            out.append(None)
            continue
        used |= set(axes_t)
        out.append(axes)
    return P(*out)


def param_shardings(logical_axes: Any, shapes: Any, mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """Tree like `shapes` of NamedSharding: each leaf's logical axes (a tree of PartitionSpecs of logical names, e.g.
    `models.param_logical_axes(config)`) through `rules`; mesh axes that do not divide a dimension are dropped to
    replicated."""

    def one(spec, shape):
        mesh_spec = logical_to_spec(tuple(spec), rules)
        fixed = []
        for dim, axes in zip(shape.shape, tuple(mesh_spec) + (None,) * (len(shape.shape) - len(mesh_spec))):
            size = int(np.prod([mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ())]))
            fixed.append(axes if size > 1 and dim % size == 0 else None)
        return NamedSharding(mesh, P(*fixed))

    return jax.tree.map(one, logical_axes, shapes, is_leaf=lambda x: isinstance(x, P))


def check_rules(rules) -> Rules:
    """A rule table from a config (pairs of (logical name, mesh axis | axes | None)), checked against the
    vocabulary and the mesh axes; returned as a tuple of tuples."""
    out = []
    for pair in rules:
        if len(pair) != 2:
            raise ValueError(f"a sharding rule is a (logical name, mesh axes) pair, got {pair!r}")
        name, axes = pair
        axes = tuple(axes) if isinstance(axes, (list, tuple)) else axes
        check_axes([name])
        bad = [a for a in ((axes,) if isinstance(axes, str) else axes or ()) if a not in MESH_AXES]
        if bad:
            raise ValueError(f"sharding rule {name!r} -> {axes!r}: {bad} are not mesh axes {MESH_AXES}")
        out.append((name, axes))
    return tuple(out)
