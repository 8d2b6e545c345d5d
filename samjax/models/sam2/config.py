"""Sam2Config: every size of SAM 2 / SAM 2.1 in one frozen dataclass.

The fields mirror the constructor arguments of the official `SAM2Base` and of the modules its hydra configs build
(sam2/configs/sam2{,.1}/*.yaml: `Hiera`, `FpnNeck`, `PositionEmbeddingSine`, `MemoryAttention(Layer)`,
`RoPEAttention`, `MemoryEncoder`, `MaskDownSampler`, `Fuser`/`CXBlock`), so any model the official configs can build
has a config here. The SAM heads (prompt encoder, mask decoder) have the sizes `SAM2Base._build_sam_heads` fixes;
they are fields too so that tests can build tiny models.

Presets: `Sam2Config.from_name("sam2.1_hiera_t")` (also `_s`, `_b+`, `_l`, and the SAM 2.0 `sam2_hiera_*`). The
official checkpoint names (`sam2.1_hiera_tiny`, `..._small`, `..._base_plus`, `..._large`) are accepted as aliases.
`build_sam2(..., apply_postprocessing=True)`, the official predictors' default, additionally turns on
`dynamic_multimask_via_stability` (and, for video, `binarize_mask_from_pts_for_mem_enc`): `.replace(...)` them.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax.numpy as jnp

from samjax.models.attention import IMPLEMENTATIONS
from samjax.models.sam.config import SamConfig

# SAM2Transforms normalises [0, 1] images with the ImageNet statistics; on the 0..255 scale they are SAM's numbers.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# Preset name -> (trunk fields, SAM 2.1 or 2.0). Trunk fields not named keep the official Hiera defaults.
_TRUNKS = {
    "t": {"embed_dim": 96, "num_heads": 1, "stages": (1, 2, 7, 2), "global_att_blocks": (5, 7, 9),
          "window_pos_embed_bkg_spatial_size": (7, 7)},
    "s": {"embed_dim": 96, "num_heads": 1, "stages": (1, 2, 11, 2), "global_att_blocks": (7, 10, 13),
          "window_pos_embed_bkg_spatial_size": (7, 7)},
    "b+": {"embed_dim": 112, "num_heads": 2},
    "l": {"embed_dim": 144, "num_heads": 2, "stages": (2, 6, 36, 4), "global_att_blocks": (23, 33, 43),
          "window_pos_embed_bkg_spatial_size": (7, 7), "window_spec": (8, 4, 16, 8)},
}
_SIZE_ALIASES = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
# SAM 2.0 configs differ from 2.1 only here (sam2/configs/sam2/*.yaml against sam2.1/*.yaml).
_SAM2_0 = {"no_obj_embed_spatial": False, "add_tpos_enc_to_obj_ptrs": False, "proj_tpos_enc_in_obj_ptrs": False,
           "use_signed_tpos_enc_to_obj_ptrs": False}
PRESETS = tuple(f"{v}_hiera_{s}" for v in ("sam2.1", "sam2") for s in _TRUNKS)


@dataclasses.dataclass(frozen=True)
class Sam2Config:
    image_size: int = 1024
    # ----- image encoder trunk (Hiera); the patch embedding is fixed officially: 7x7 conv, stride 4, padding 3 -----
    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (2, 3, 16, 3)
    q_pool: int = 3                     # number of stage changes with query pooling
    q_stride: int = 2                   # pooling stride (square) at those stage changes
    dim_mul: float = 2.0
    head_mul: float = 2.0
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    global_att_blocks: tuple[int, ...] = (12, 16, 20)
    # ----- neck (FpnNeck + PositionEmbeddingSine); d_model is also the SAM heads' and memory attention's width ---
    d_model: int = 256
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    fpn_interp_model: str = "nearest"   # "nearest" | "bilinear"
    fuse_type: str = "sum"              # "sum" | "avg"
    scalp: int = 1                      # lowest-resolution FPN levels dropped (ImageEncoder.scalp)
    pos_temperature: float = 10000.0
    # ----- memory attention (MemoryAttention of MemoryAttentionLayer with RoPEAttention) -----
    memory_attention_layers: int = 4
    memory_attention_heads: int = 1
    memory_attention_mlp_dim: int = 2048
    memory_attention_activation: str = "relu"
    memory_attention_dropout: float = 0.1  # training only
    rope_theta: float = 10000.0
    pos_enc_at_input: bool = True
    pos_enc_at_attn: bool = False
    pos_enc_at_cross_attn_keys: bool = True
    pos_enc_at_cross_attn_queries: bool = False
    # ----- memory encoder (MaskDownSampler, pix_feat_proj, Fuser of CXBlocks, out_proj) -----
    mem_dim: int = 64
    mask_downsampler_kernel: int = 3
    mask_downsampler_stride: int = 2
    mask_downsampler_padding: int = 1
    mask_downsampler_total_stride: int = 16
    fuser_layers: int = 2
    fuser_kernel: int = 7
    fuser_layer_scale_init: float = 1e-6  # > 0: CXBlock has a `gamma` layer scale
    # ----- SAM2Base -----
    num_maskmem: int = 7
    backbone_stride: int = 16
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    binarize_mask_from_pts_for_mem_enc: bool = False
    use_mask_input_as_output_without_sam: bool = True
    max_cond_frames_in_attn: int = -1
    directly_add_no_mem_embed: bool = True
    use_high_res_features_in_sam: bool = True
    multimask_output_in_sam: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = True
    use_multimask_token_for_obj_ptr: bool = True
    iou_prediction_use_sigmoid: bool = True
    memory_temporal_stride_for_eval: int = 1
    non_overlap_masks_for_mem_enc: bool = False
    use_obj_ptrs_in_encoder: bool = True
    max_obj_ptrs_in_encoder: int = 16
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    only_obj_ptrs_in_the_past_for_eval: bool = True
    pred_obj_scores: bool = True
    pred_obj_scores_mlp: bool = True
    fixed_no_obj_ptr: bool = True
    soft_no_obj_ptr: bool = False
    use_mlp_for_obj_ptr_proj: bool = True
    no_obj_embed_spatial: bool = True
    # MaskDecoder extra args (`sam_mask_decoder_extra_args`); build_sam2's apply_postprocessing=True sets the first.
    dynamic_multimask_via_stability: bool = False
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    # ----- SAM heads (fixed by SAM2Base._build_sam_heads; fields for tiny test models) -----
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    # ----- pre/post-processing -----
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    mask_threshold: float = 0.0
    # ----- numerics and training; parameters always stay float32 -----
    dtype: str = "float32"
    attention: str = "auto"            # image-encoder attention implementation (samjax.models.attention)
    drop_path_rate: float = 0.0        # Hiera stochastic depth (training only), linear over the blocks
    remat: bool = False                # rematerialise each Hiera block in the backward pass

    def __post_init__(self):
        for name in ("stages", "window_spec", "global_att_blocks", "fpn_top_down_levels",
                     "window_pos_embed_bkg_spatial_size"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        object.__setattr__(self, "pixel_mean", tuple(float(v) for v in self.pixel_mean))
        object.__setattr__(self, "pixel_std", tuple(float(v) for v in self.pixel_std))
        problems = []
        n = len(self.stages)
        if len(self.window_spec) != n:
            problems.append(f"window_spec {self.window_spec} needs one window size per stage ({n} stages)")
        if not 0 <= self.q_pool <= n - 1:
            problems.append(f"q_pool ({self.q_pool}) must be in 0..{n - 1} (stage changes)")
        if any(s < 1 for s in self.stages):
            problems.append(f"every stage needs at least one block, got stages {self.stages}")
        bad = [i for i in self.global_att_blocks if not 0 <= i < self.depth]
        if bad:
            problems.append(f"global_att_blocks {bad} are outside 0..{self.depth - 1}")
        if not 0 <= self.scalp < n:
            problems.append(f"scalp ({self.scalp}) must be in 0..{n - 1}")
        elif self.feature_strides[-1] != self.backbone_stride:
            problems.append(f"the lowest-resolution FPN level kept has stride {self.feature_strides[-1]}, "
                            f"but backbone_stride is {self.backbone_stride}")
        if self.use_high_res_features_in_sam and self.num_levels < 3:
            problems.append("use_high_res_features_in_sam needs 3 FPN levels (stages - scalp >= 3)")
        if self.image_size % self.backbone_stride:
            problems.append(f"image_size ({self.image_size}) must be a multiple of backbone_stride "
                            f"({self.backbone_stride})")
        elif self.image_size % self.min_image_stride:
            problems.append(f"image_size ({self.image_size}) must be a multiple of {self.min_image_stride}, the "
                            "stride of the lowest-resolution stage (the FPN adds it, upsampled 2x, to the next)")
        if (self.image_size // 4) % self.window_spec[0]:
            problems.append(f"the stride-4 grid ({self.image_size // 4}) must be a multiple of window_spec[0] "
                            f"({self.window_spec[0]}): the window position embedding is tiled over it")
        dims = [self.embed_dim * self.dim_mul ** i for i in range(n)]
        heads = [self.num_heads * self.head_mul ** i for i in range(n)]
        if any(int(d) % int(h) for d, h in zip(dims, heads)):
            problems.append(f"stage widths {[int(d) for d in dims]} must divide by their heads "
                            f"{[int(h) for h in heads]}")
        if self.d_model % 4 or self.mem_dim % 2:
            problems.append("d_model must divide by 4 and mem_dim by 2 (sine position encodings)")
        if self.d_model % self.mem_dim:
            problems.append(f"d_model ({self.d_model}) must be a multiple of mem_dim ({self.mem_dim}): object "
                            "pointers are split into d_model / mem_dim memory tokens")
        hd = self.d_model // max(self.memory_attention_heads, 1)
        if self.d_model % max(self.memory_attention_heads, 1) or hd % 4:
            problems.append(f"memory attention head dim (d_model / heads = {hd}) must be a multiple of 4 (RoPE)")
        if self.fpn_interp_model not in ("nearest", "bilinear"):
            problems.append(f"fpn_interp_model must be 'nearest' or 'bilinear', got {self.fpn_interp_model!r}")
        if self.fuse_type not in ("sum", "avg"):
            problems.append(f"fuse_type must be 'sum' or 'avg', got {self.fuse_type!r}")
        if self.memory_attention_activation not in ("relu", "gelu"):
            problems.append(f"memory_attention_activation must be 'relu' or 'gelu', got "
                            f"{self.memory_attention_activation!r}")
        stride, total = self.mask_downsampler_stride, self.mask_downsampler_total_stride
        if stride < 2 or stride ** self.mask_downsampler_layers != total:
            problems.append(f"mask_downsampler_total_stride ({total}) must be a power of its stride ({stride})")
        if total != self.backbone_stride:
            problems.append(f"the memory encoder downsamples masks by {total}, the backbone by {self.backbone_stride}")
        if not self.directly_add_no_mem_embed and self.num_maskmem > 0:
            # The official alternative (attend to the single no-memory token) fails inside its RoPE attention.
            problems.append("directly_add_no_mem_embed=False is not supported (every official config sets True)")
        if self.fixed_no_obj_ptr and not (self.pred_obj_scores and self.use_obj_ptrs_in_encoder):
            problems.append("fixed_no_obj_ptr needs pred_obj_scores and use_obj_ptrs_in_encoder (as officially)")
        if self.proj_tpos_enc_in_obj_ptrs and not self.add_tpos_enc_to_obj_ptrs:
            problems.append("proj_tpos_enc_in_obj_ptrs needs add_tpos_enc_to_obj_ptrs (as officially)")
        if self.num_maskmem < 0 or self.max_obj_ptrs_in_encoder < 1 or self.memory_temporal_stride_for_eval < 1:
            problems.append("num_maskmem must be >= 0, max_obj_ptrs_in_encoder and memory_temporal_stride_for_eval "
                            ">= 1")
        if self.max_cond_frames_in_attn != -1 and self.max_cond_frames_in_attn < 2:
            problems.append("max_cond_frames_in_attn must be -1 (no limit) or >= 2 (as officially)")
        if self.d_model % 8 or self.mask_in_chans % 4:
            problems.append("d_model must divide by 8 and mask_in_chans by 4 (the SAM heads require it)")
        if (self.d_model // self.attention_downsample_rate) % self.decoder_num_heads:
            problems.append("d_model / attention_downsample_rate must divide by decoder_num_heads")
        if self.dtype not in _DTYPES:
            problems.append(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if self.attention not in IMPLEMENTATIONS:
            problems.append(f"attention must be one of {IMPLEMENTATIONS}, got {self.attention!r}")
        if not 0.0 <= self.drop_path_rate < 1.0 or not 0.0 <= self.memory_attention_dropout < 1.0:
            problems.append("drop_path_rate and memory_attention_dropout must be in [0, 1)")
        if problems:
            raise ValueError("invalid Sam2Config: " + "; ".join(problems))

    # ----- presets (sam2/configs/sam2.1/*.yaml and sam2/configs/sam2/*.yaml) -----
    @classmethod
    def from_name(cls, name: str, **overrides) -> Sam2Config:
        """"sam2.1_hiera_t" | "_s" | "_b+" | "_l", "sam2_hiera_*" (SAM 2.0), or the checkpoint spellings
        ("sam2.1_hiera_tiny", "sam2_hiera_base_plus", ...; a trailing ".pt" / ".yaml" is ignored)."""
        key = name.removesuffix(".pt").removesuffix(".yaml")
        version, _, size = key.rpartition("_hiera_")
        size = _SIZE_ALIASES.get(size, size)
        if version not in ("sam2", "sam2.1") or size not in _TRUNKS:
            raise ValueError(f"unknown SAM 2 model {name!r}; expected one of {list(PRESETS)} "
                             "(or the checkpoint names, e.g. sam2.1_hiera_base_plus)")
        fields = dict(_TRUNKS[size], **(_SAM2_0 if version == "sam2" else {}))
        return cls(**{**fields, **overrides})

    @classmethod
    def sam2_1_hiera_t(cls, **overrides) -> Sam2Config:
        return cls.from_name("sam2.1_hiera_t", **overrides)

    @classmethod
    def sam2_1_hiera_s(cls, **overrides) -> Sam2Config:
        return cls.from_name("sam2.1_hiera_s", **overrides)

    @classmethod
    def sam2_1_hiera_b_plus(cls, **overrides) -> Sam2Config:
        return cls.from_name("sam2.1_hiera_b+", **overrides)

    @classmethod
    def sam2_1_hiera_l(cls, **overrides) -> Sam2Config:
        return cls.from_name("sam2.1_hiera_l", **overrides)

    @classmethod
    def sam2_hiera_t(cls, **overrides) -> Sam2Config:
        return cls.from_name("sam2_hiera_t", **overrides)

    @classmethod
    def sam2_hiera_s(cls, **overrides) -> Sam2Config:
        return cls.from_name("sam2_hiera_s", **overrides)

    @classmethod
    def sam2_hiera_b_plus(cls, **overrides) -> Sam2Config:
        return cls.from_name("sam2_hiera_b+", **overrides)

    @classmethod
    def sam2_hiera_l(cls, **overrides) -> Sam2Config:
        return cls.from_name("sam2_hiera_l", **overrides)

    # ----- derived sizes -----
    @property
    def depth(self) -> int:
        return sum(self.stages)

    @property
    def stage_ends(self) -> tuple[int, ...]:
        """Index of the last block of each stage (Hiera.stage_ends)."""
        return tuple(sum(self.stages[:i]) - 1 for i in range(1, len(self.stages) + 1))

    @property
    def q_pool_blocks(self) -> tuple[int, ...]:
        """Blocks that pool their queries: the first block of each of the first `q_pool` later stages."""
        return tuple(e + 1 for e in self.stage_ends[:-1])[:self.q_pool]

    @property
    def stage_dims(self) -> tuple[int, ...]:
        """Width of each stage, highest resolution first."""
        return tuple(int(self.embed_dim * self.dim_mul ** i) for i in range(len(self.stages)))

    @property
    def backbone_channel_list(self) -> tuple[int, ...]:
        """FpnNeck's input widths, lowest resolution first (as the official yaml lists them)."""
        return self.stage_dims[::-1]

    @property
    def feature_strides(self) -> tuple[int, ...]:
        """Stride of each FPN level kept after `scalp`, highest resolution first (official t/s/b+/l: 4, 8, 16)."""
        strides, s = [], 4
        for i in range(len(self.stages)):
            strides.append(s)
            if i < self.q_pool:
                s *= self.q_stride
        return tuple(strides[:len(strides) - self.scalp])

    @property
    def min_image_stride(self) -> int:
        """The trunk's total stride (4 x q_stride^q_pool: 32 officially); image sizes are multiples of it."""
        return 4 * self.q_stride ** self.q_pool

    @property
    def num_levels(self) -> int:
        return len(self.stages) - self.scalp

    @property
    def num_feature_levels(self) -> int:
        """FPN levels the SAM heads read (SAM2Base.num_feature_levels): 3 with high-res features, else 1."""
        return 3 if self.use_high_res_features_in_sam else 1

    @property
    def grid_size(self) -> int:
        """Side of the image embedding (64 at 1024)."""
        return self.image_size // self.backbone_stride

    @property
    def mask_input_size(self) -> int:
        """Side of the low-res mask logits and of a mask prompt (256 at 1024)."""
        return 4 * self.grid_size

    @property
    def num_mask_tokens(self) -> int:
        return self.num_multimask_outputs + 1

    @property
    def mask_downsampler_layers(self) -> int:
        n, s = 0, 1
        while s < self.mask_downsampler_total_stride and self.mask_downsampler_stride > 1:
            s *= self.mask_downsampler_stride
            n += 1
        return n

    @property
    def obj_ptr_tokens(self) -> int:
        """Memory tokens per object pointer (d_model / mem_dim: 4 officially)."""
        return self.d_model // self.mem_dim

    @property
    def jnp_dtype(self):
        return _DTYPES[self.dtype]

    @property
    def sam_config(self) -> SamConfig:
        """The SAM heads as a `SamConfig`, for the shared `PromptEncoder` and `TwoWayTransformer`: image_size and a
        patch size of `backbone_stride` give the same grid; the ViT encoder fields are unused."""
        return SamConfig(image_size=self.image_size, patch_size=self.backbone_stride, prompt_embed_dim=self.d_model,
                         mask_in_chans=self.mask_in_chans, decoder_depth=self.decoder_depth,
                         decoder_num_heads=self.decoder_num_heads, decoder_mlp_dim=self.decoder_mlp_dim,
                         attention_downsample_rate=self.attention_downsample_rate,
                         num_multimask_outputs=self.num_multimask_outputs, iou_head_depth=self.iou_head_depth,
                         iou_head_hidden_dim=self.iou_head_hidden_dim, pixel_mean=self.pixel_mean,
                         pixel_std=self.pixel_std, mask_threshold=self.mask_threshold, dtype=self.dtype)

    def replace(self, **changes: Any) -> Sam2Config:
        return dataclasses.replace(self, **changes)

    # ----- serialisation (written beside converted checkpoints) -----
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> Sam2Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown Sam2Config fields {unknown}")
        return cls(**d)
