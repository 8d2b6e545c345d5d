"""SamConfig: every size of SAM in one frozen dataclass.

The fields mirror the constructor arguments of the official `ImageEncoderViT`, `PromptEncoder`,
`TwoWayTransformer` and `MaskDecoder` (segment_anything/modeling), so any model the official code can build
has a config here. The presets are the official `build_sam_vit_{b,l,h}`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax.numpy as jnp

from samjax.models.attention import IMPLEMENTATIONS

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class SamConfig:
    # Image encoder (ImageEncoderViT).
    image_size: int = 1024
    patch_size: int = 16
    in_chans: int = 3
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_mlp_ratio: float = 4.0
    encoder_qkv_bias: bool = True
    encoder_use_abs_pos: bool = True
    encoder_use_rel_pos: bool = True
    window_size: int = 14
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    # Prompt encoder; also the neck's output channels and the mask decoder's width (as in build_sam).
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    # Width of a CLIP embedding taken as a text prompt (the SAM paper's text prompt, section 7.5 / appendix D.5): > 0
    # adds to the prompt encoder a linear projection of the (l2-normalised) embedding to prompt_embed_dim and a
    # learned "text" type embedding, one extra sparse token (PromptEncoder.embed_text). 0, the default and every
    # released checkpoint, has no text path: no such parameters. No public weights exist for it;
    # experiments/text_prompt.py trains one.
    text_embed_dim: int = 0
    # Mask decoder (MaskDecoder + TwoWayTransformer).
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    # Epsilon of the TwoWayTransformer's LayerNorms: torch's default 1e-5 in SAM; EfficientViT-SAM's builder sets every
    # nn.LayerNorm of its model, the decoder's included, to 1e-6 (efficientvit set_norm_eps).
    decoder_norm_eps: float = 1e-5
    # Sam wrapper.
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    image_format: str = "RGB"
    mask_threshold: float = 0.0
    # Numerics: compute dtype of activations and matmuls; parameters always stay float32.
    dtype: str = "float32"
    # Operand dtype of the mask decoder's products with the image side (its 4g x 4g positions: the attentions
    # between prompt tokens and the image, the output upscaling's transposed convolutions); they accumulate in
    # float32 and everything else keeps `dtype`. "bfloat16" with dtype float32 is a TPU's default f32 matmul
    # precision, and on CPUs with bf16 dot instructions (AVX512-BF16, AMX) it halves those products' time
    # (ViT-B, one prompt on 2 cores: benchmarks/README.md). Masks then differ from float32 at a few boundary
    # pixels (ViT-B: thresholded IoU against float32 0.994 at least, `make bench`; a tiny model's are checked in
    # tests/test_predictor.py). "float32", the default, is the official arithmetic.
    decoder_matmul_dtype: str = "float32"
    # Encoder attention implementation (samjax.models.attention): "auto" picks cuDNN flash attention on GPU in
    # bfloat16/float16, query-chunked attention for global blocks elsewhere; "xla" is the reference formula.
    attention: str = "auto"
    # Training only (inference is unaffected): stochastic depth, rising linearly over the encoder blocks from 0 to
    # this rate (MAE / ViTDet convention; only active with `embed_images(..., train=True)`), and rematerialisation
    # of each encoder block in the backward pass (trades compute for activation memory).
    encoder_drop_path_rate: float = 0.0
    encoder_remat: bool = False
    # Run the encoder blocks as a scan over their repeating group (ImageEncoderViT): XLA compiles one block of each
    # kind instead of every block. Same parameters and values; False unrolls them.
    encoder_scan: bool = True

    def __post_init__(self):
        # Accept lists (from JSON or the command line) but store tuples, so configs stay hashable.
        object.__setattr__(self, "encoder_global_attn_indexes", tuple(int(i) for i in self.encoder_global_attn_indexes))
        object.__setattr__(self, "pixel_mean", tuple(float(v) for v in self.pixel_mean))
        object.__setattr__(self, "pixel_std", tuple(float(v) for v in self.pixel_std))
        problems = []
        if self.image_size % self.patch_size:
            problems.append(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        if self.encoder_embed_dim % self.encoder_num_heads:
            problems.append(f"encoder_embed_dim ({self.encoder_embed_dim}) must divide by "
                            f"encoder_num_heads ({self.encoder_num_heads})")
        internal = self.prompt_embed_dim // self.attention_downsample_rate
        if internal % self.decoder_num_heads:
            problems.append(f"prompt_embed_dim / attention_downsample_rate ({internal}) must divide by "
                            f"decoder_num_heads ({self.decoder_num_heads})")
        if self.prompt_embed_dim % 8 or self.mask_in_chans % 4:
            problems.append("prompt_embed_dim must divide by 8 and mask_in_chans by 4 (the official layers require it)")
        bad = [i for i in self.encoder_global_attn_indexes if not 0 <= i < self.encoder_depth]
        if bad:
            problems.append(f"encoder_global_attn_indexes {bad} are outside 0..{self.encoder_depth - 1}")
        if self.text_embed_dim < 0:
            problems.append(f"text_embed_dim must be >= 0 (0: no text prompt), got {self.text_embed_dim}")
        if not self.decoder_norm_eps > 0:
            problems.append(f"decoder_norm_eps must be > 0, got {self.decoder_norm_eps}")
        if self.window_size < 0:
            problems.append("window_size must be >= 0 (0 means global attention everywhere)")
        if self.image_format not in ("RGB", "BGR"):
            problems.append(f"image_format must be 'RGB' or 'BGR', got {self.image_format!r}")
        if not 0.0 <= self.encoder_drop_path_rate < 1.0:
            problems.append(f"encoder_drop_path_rate must be in [0, 1), got {self.encoder_drop_path_rate}")
        if self.dtype not in _DTYPES:
            problems.append(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if self.decoder_matmul_dtype not in ("float32", "bfloat16"):
            problems.append(f"decoder_matmul_dtype must be 'float32' or 'bfloat16', got {self.decoder_matmul_dtype!r}")
        if self.attention not in IMPLEMENTATIONS:
            problems.append(f"attention must be one of {IMPLEMENTATIONS}, got {self.attention!r}")
        if problems:
            raise ValueError("invalid SamConfig: " + "; ".join(problems))

    # ----- presets (official build_sam.py) -----
    @classmethod
    def vit_b(cls, **overrides) -> "SamConfig":
        return cls(**{**dict(encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12,
                             encoder_global_attn_indexes=(2, 5, 8, 11)), **overrides})

    @classmethod
    def vit_l(cls, **overrides) -> "SamConfig":
        return cls(**{**dict(encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16,
                             encoder_global_attn_indexes=(5, 11, 17, 23)), **overrides})

    @classmethod
    def vit_h(cls, **overrides) -> "SamConfig":
        return cls(**{**dict(encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16,
                             encoder_global_attn_indexes=(7, 15, 23, 31)), **overrides})

    @classmethod
    def from_name(cls, name: str, **overrides) -> "SamConfig":
        presets = {"vit_b": cls.vit_b, "vit_l": cls.vit_l, "vit_h": cls.vit_h}
        if name not in presets:
            raise ValueError(f"unknown model {name!r}; expected one of {sorted(presets)}")
        return presets[name](**overrides)

    # ----- derived sizes -----
    @property
    def grid_size(self) -> int:
        """Side of the image-embedding grid (64 for the official 1024 / 16)."""
        return self.image_size // self.patch_size

    @property
    def mask_input_size(self) -> int:
        """Side of the low-res mask logits and of a mask prompt (256 officially)."""
        return 4 * self.grid_size

    @property
    def num_mask_tokens(self) -> int:
        return self.num_multimask_outputs + 1

    @property
    def jnp_dtype(self):
        return _DTYPES[self.dtype]

    @property
    def decoder_operand_dtype(self):
        """Operand dtype of the decoder's image-side products, or None where they simply use `dtype`."""
        mdt = _DTYPES[self.decoder_matmul_dtype]
        return None if jnp.dtype(mdt).itemsize >= jnp.dtype(self.jnp_dtype).itemsize else mdt

    def replace(self, **changes: Any) -> "SamConfig":
        return dataclasses.replace(self, **changes)

    # ----- serialisation (written beside converted checkpoints) -----
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "SamConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SamConfig fields {unknown}")
        return cls(**d)
