"""The one logical-axis vocabulary of samjax, and the rules that map it to mesh axes.

Models only *name* axes (via `nn.with_logical_partitioning` on every parameter and
`nn.with_logical_constraint` on large activations); which mesh axis, if any, carries each name is decided
here and nowhere else. The mesh axes are ("data", "fsdp", "tensor").

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
  memory_embed  SAM 2 memory channels (mem_dim, 64)
  memory_mlp    SAM 2 memory-attention FFN and memory-encoder ConvNeXt hidden widths

Activation axes
  activation_batch, activation_height, activation_width, activation_length,
  activation_embed, activation_heads, activation_mlp
"""

from __future__ import annotations

WEIGHT_AXES = (
    "embed", "mlp", "qkv", "heads", "head_dim", "rel_pos", "pos_h", "pos_w", "conv_h", "conv_w",
    "in_channels", "neck", "prompt_embed", "prompt_mlp", "prompt_attn", "mask_channels", "tokens",
    "pe_coords", "pe_feats", "memory_embed", "memory_mlp",
)
ACTIVATION_AXES = (
    "activation_batch", "activation_height", "activation_width", "activation_length",
    "activation_embed", "activation_heads", "activation_mlp",
)
MESH_AXES = ("data", "fsdp", "tensor")

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
        raise ValueError(f"logical axis names {unknown} are not in samjax.sharding's vocabulary")
