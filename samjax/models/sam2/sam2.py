"""Sam2: the SAM2Base pieces as one Flax module, and the pure functions the image and video predictors call.

Official: sam2/modeling/sam2_base.py. Submodules and parameters are named as in its state_dict: image_encoder
(trunk, neck), sam_prompt_encoder (samjax's SAM `PromptEncoder`), sam_mask_decoder, memory_attention,
memory_encoder, obj_ptr_proj, obj_ptr_tpos_proj, mask_downsample, and the parameters maskmem_tpos_enc,
no_mem_embed, no_mem_pos_enc, no_obj_ptr, no_obj_embed_spatial.

Layouts: images and features NHWC; masks (B, M, H, W) (M masks per object, as the decoder returns them).
Sizes at 1024 (g = 64): backbone levels (B, 256, 256, C/8) and (B, 128, 128, C/4) after conv_s0 / conv_s1,
(B, 64, 64, C); low-res masks (B, M, 256, 256); high-res masks (B, M, 1024, 1024); object pointers (B, C);
memories (B, 64, 64, mem_dim). C = d_model = 256, mem_dim = 64 officially.

Pure functions (params a plain dict; config static; everything jit-able; B = objects or prompts):

    forward_image(params, config, images)                     -> backbone dict (SAM2Base.forward_image)
    image_embeddings(params, config, backbone)                -> (image_embed, high_res_feats) (SAM2ImagePredictor)
    predict(params, config, image_embed, high_res, coords, labels, mask_input, multimask)  (SAM2ImagePredictor._predict
                                                                 without the resizing)
    forward_sam_heads(params, config, pix_feat, high_res, coords, labels, mask_inputs, multimask)
    use_mask_as_output(params, config, pix_feat, high_res, mask_inputs)
    encode_new_memory(params, config, pix_feat, high_res_masks, object_score_logits, is_mask_from_pts)
    prepare_memory_conditioned_features(params, config, pix_feat, pix_pos, memory, is_init_cond_frame)
    track_step(params, config, backbone, memory, is_init_cond_frame, coords, labels, mask_inputs, ...)
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.models import PromptEncoder
from samjax.models.common import conv, dense, partitioned
from samjax.models.sam2.config import Sam2Config
from samjax.models.sam2.layers import (
    MLP,
    bilinear_matrix,
    check_shape,
    resize_bilinear,
    resize_hw,
    sine_1d,
    sine_position_encoding,
)
from samjax.models.sam2.mask_decoder import MaskDecoder, select_outputs
from samjax.models.sam2.memory_attention import MemoryAttention
from samjax.models.sam2.memory_bank import MemoryBank
from samjax.models.sam2.memory_encoder import MemoryEncoder
from samjax.models.sam2.neck import ImageEncoder

f32 = jnp.float32
NO_OBJ_SCORE = -1024.0  # mask logits of an object predicted absent


class Sam2(nn.Module):
    config: Sam2Config

    def setup(self):
        cfg, dt = self.config, self.config.jnp_dtype
        c, m = cfg.d_model, cfg.mem_dim
        self.image_encoder = ImageEncoder(cfg)
        self.sam_prompt_encoder = PromptEncoder(cfg.sam_config)
        self.sam_mask_decoder = MaskDecoder(cfg)
        self.memory_attention = MemoryAttention(cfg)
        self.memory_encoder = MemoryEncoder(cfg)
        if cfg.use_obj_ptrs_in_encoder:
            # downsamples a mask prompt (0..1, image size) to a logit-scale mask input (SAM2Base.mask_downsample)
            self.mask_downsample = conv(1, 4, stride=4, axes=("in_channels", "in_channels"), dtype=dt)
            self.obj_ptr_proj = (MLP(c, c, 3, ("prompt_embed", "prompt_mlp", "prompt_embed"), dtype=dt)
                                 if cfg.use_mlp_for_obj_ptr_proj
                                 else dense(c, ("prompt_embed", "prompt_embed"), dtype=dt))
        if cfg.proj_tpos_enc_in_obj_ptrs:
            self.obj_ptr_tpos_proj = dense(m, ("prompt_embed", "memory_embed"), dtype=dt)
        init = nn.initializers.normal(0.02)
        self.maskmem_tpos_enc = self.param("maskmem_tpos_enc",
                                           partitioned(init, ("tokens", None, None, "memory_embed")),
                                           (cfg.num_maskmem, 1, 1, m), f32)
        self.no_mem_embed = self.param("no_mem_embed", partitioned(init, (None, None, "prompt_embed")), (1, 1, c), f32)
        self.no_mem_pos_enc = self.param("no_mem_pos_enc", partitioned(init, (None, None, "prompt_embed")), (1, 1, c),
                                         f32)
        if cfg.pred_obj_scores and cfg.use_obj_ptrs_in_encoder:
            self.no_obj_ptr = self.param("no_obj_ptr", partitioned(init, (None, "prompt_embed")), (1, c), f32)
        if cfg.no_obj_embed_spatial:
            self.no_obj_embed_spatial = self.param("no_obj_embed_spatial", partitioned(init, (None, "memory_embed")),
                                                   (1, m), f32)

    # ------------------------------------------------------------------------------------------ image ---
    def forward_image(self, images: jax.Array, train: bool = False) -> dict:
        """SAM2Base.forward_image: images (B, S, S, 3) normalised -> {"vision_features": (B, g, g, C),
        "vision_pos_enc": [(1, h_l, w_l, C)] per level, "backbone_fpn": [(B, h_l, w_l, C_l)] per level}, levels
        highest resolution first; with high-res features, levels 0 and 1 are already projected by the decoder's
        conv_s0 / conv_s1 (to C/8 and C/4 channels)."""
        fpn, pos = self.image_encoder(images, train)
        fpn = list(fpn)
        if self.config.use_high_res_features_in_sam:
            fpn[0], fpn[1] = self.sam_mask_decoder.project_high_res(fpn[0], fpn[1])
        return {"vision_features": fpn[-1], "vision_pos_enc": list(pos), "backbone_fpn": fpn}

    # ------------------------------------------------------------------------------------ SAM heads ---
    def dense_pe(self) -> jax.Array:
        """The prompt encoder's positional encoding of the image-embedding grid: (1, g, g, C)."""
        return self.sam_prompt_encoder.get_dense_pe()

    def decode_all(self, backbone_features: jax.Array, coords: jax.Array, labels: jax.Array,
                   mask_prompt: jax.Array | None = None, high_res_features=None, mask_valid: jax.Array | None = None):
        """Prompt encoder + MaskDecoder.predict_masks: every output, before selection.

        backbone_features (B|1, g, g, C); coords (B, N, 2) (x, y) in the S x S input frame; labels (B, N) (1 fg,
        0 bg, 2/3 box corners, -1 not-a-point, -2 IGNORE padding; see samjax.models.prompt_encoder); mask_prompt
        (B, 4g, 4g) low-res logits or None; mask_valid (B,) bool or None: per row, the mask prompt (True) or none
        (False, the no-mask embedding), so one compiled call serves prompts with and without a mask.
        -> masks (B, M, 4g, 4g), iou (B, M), mask tokens (B, M, C), object score logits (B, 1)."""
        sparse, dense_emb = self.sam_prompt_encoder(coords, labels, mask_prompt, mask_valid)
        if mask_prompt is None:
            dense_emb = dense_emb[:1]  # the same no-mask embedding for every prompt
        return self.sam_mask_decoder.predict_masks(backbone_features, self.dense_pe(), sparse, dense_emb,
                                                   labels != -2, high_res_features)

    def object_pointer(self, sam_output_token: jax.Array, object_score_logits: jax.Array) -> jax.Array:
        """The object pointer (B, C) from the chosen output token (B, C), with occlusion handling."""
        cfg = self.config
        obj_ptr = self.obj_ptr_proj(sam_output_token) if cfg.use_obj_ptrs_in_encoder else sam_output_token
        if cfg.pred_obj_scores and cfg.use_obj_ptrs_in_encoder:
            lam = (jax.nn.sigmoid(object_score_logits) if cfg.soft_no_obj_ptr
                   else (object_score_logits > 0).astype(obj_ptr.dtype))
            obj_ptr = mix_no_obj_ptr(cfg, obj_ptr, lam, self.no_obj_ptr)
        return obj_ptr

    def downsample_mask(self, mask: jax.Array) -> jax.Array:
        """mask_downsample: (B, 1, S, S) float -> (B, 1, S/4, S/4)."""
        return jnp.moveaxis(self.mask_downsample(jnp.moveaxis(mask, 1, -1)), -1, 1)

    # --------------------------------------------------------------------------------------- memory ---
    def encode_memory(self, pix_feat: jax.Array, mask_for_mem: jax.Array, object_score_logits: jax.Array):
        """Memory encoder on sigmoid-scaled masks (B, 1, S, S), plus the no-object embedding where the object is
        predicted absent: -> (features (B, g, g, mem_dim), pos (1, g, g, mem_dim))."""
        feats, pos = self.memory_encoder(pix_feat, mask_for_mem, skip_mask_sigmoid=True)
        if self.config.no_obj_embed_spatial:
            absent = 1.0 - (object_score_logits > 0).astype(feats.dtype)  # (B, 1)
            feats = feats + absent[:, :, None, None] * self.no_obj_embed_spatial[0].astype(feats.dtype)
        return feats, pos

    def memory_conditioned(self, pix_feat: jax.Array, pix_pos: jax.Array, memory: MemoryBank,
                           train: bool = False) -> jax.Array:
        """Memory attention of the current features (B, g, g, C) with positions (1|B, g, g, C) over the bank:
        -> (B, g, g, C) (the non-initial-frame branch of _prepare_memory_conditioned_features)."""
        cfg = self.config
        b, g, _, c = pix_feat.shape
        hw, m = g * g, cfg.mem_dim
        s = memory.features.shape[1]
        mem_pos_spatial = self.memory_encoder_pos(g)  # (1, g, g, m), a constant
        tpos = self.maskmem_tpos_enc[memory.tpos][:, :, 0]  # (B, S, 1, m)
        memory_tokens = [memory.features.reshape(b, s * hw, m)]
        memory_pos = [(mem_pos_spatial.reshape(1, 1, hw, m) + tpos).reshape(b, s * hw, m)]
        key_mask = [jnp.repeat(memory.valid, hw, axis=1)]
        num_ptr_tokens = 0
        if cfg.use_obj_ptrs_in_encoder and memory.obj_ptrs.shape[1]:
            p, k = memory.obj_ptrs.shape[1], cfg.obj_ptr_tokens
            ptrs = memory.obj_ptrs
            if cfg.add_tpos_enc_to_obj_ptrs:
                obj_pos = sine_1d(memory.ptr_pos, c if cfg.proj_tpos_enc_in_obj_ptrs else m)
                if cfg.proj_tpos_enc_in_obj_ptrs:
                    obj_pos = self.obj_ptr_tpos_proj(obj_pos)
            else:
                obj_pos = jnp.zeros((b, p, m), ptrs.dtype)
            # a pointer of C channels is k = C / mem_dim consecutive tokens of mem_dim channels
            memory_tokens.append(ptrs.reshape(b, p * k, m))
            memory_pos.append(jnp.repeat(obj_pos, k, axis=1))
            key_mask.append(jnp.repeat(memory.ptr_valid, k, axis=1))
            num_ptr_tokens = p * k
        out = self.memory_attention(
            pix_feat.reshape(b, hw, c), jnp.concatenate(memory_tokens, 1), pix_pos.reshape(-1, hw, c),
            jnp.concatenate(memory_pos, 1), (g, g), num_ptr_tokens, jnp.concatenate(key_mask, 1), train)
        return out.reshape(b, g, g, c)

    def memory_encoder_pos(self, g: int) -> jax.Array:
        """The memory encoder's sine encoding of its (g, g) output (1, g, g, mem_dim): `maskmem_pos_enc`."""
        return jnp.asarray(sine_position_encoding(g, g, self.config.mem_dim, self.config.pos_temperature))

    def add_no_mem_embed(self, pix_feat: jax.Array) -> jax.Array:
        """The initial-frame branch (directly_add_no_mem_embed): features + no_mem_embed."""
        return pix_feat + self.no_mem_embed[0].astype(pix_feat.dtype)

    # ----------------------------------------------------------------------------------------- init ---
    def init_all(self, images: jax.Array):
        """Touches every submodule once (for `init`)."""
        cfg = self.config
        out = self.forward_image(images)
        feats = out["vision_features"]
        high_res = out["backbone_fpn"][-cfg.num_feature_levels:-1] or None
        b, g = feats.shape[:2]
        coords, labels = jnp.zeros((b, 1, 2)), jnp.ones((b, 1), jnp.int32)
        masks, iou, tokens, score = self.decode_all(feats, coords, labels, jnp.zeros((b, 4 * g, 4 * g)), high_res)
        ptr = self.object_pointer(tokens[:, 0], score)
        if cfg.use_obj_ptrs_in_encoder:
            self.downsample_mask(jnp.zeros((b, 1, cfg.image_size, cfg.image_size)))
        mem, _ = self.encode_memory(feats, jnp.zeros((b, 1, cfg.image_size, cfg.image_size)), score)
        bank = MemoryBank(mem[:, None], jnp.zeros((b, 1), jnp.int32), jnp.ones((b, 1), bool), ptr[:, None],
                          jnp.zeros((b, 1)), jnp.ones((b, 1), bool))
        self.add_no_mem_embed(feats)
        return self.memory_conditioned(feats, out["vision_pos_enc"][-1], bank), masks, iou


def mix_no_obj_ptr(config: Sam2Config, obj_ptr: jax.Array, lam: jax.Array, no_obj_ptr: jax.Array) -> jax.Array:
    """lam (B, 1) = 1 where the object appears: fixed_no_obj_ptr zeroes the pointer otherwise; the learned
    no-object pointer (1, C) is added in proportion to 1 - lam."""
    if config.fixed_no_obj_ptr:
        obj_ptr = lam * obj_ptr
    return obj_ptr + (1 - lam) * no_obj_ptr.astype(obj_ptr.dtype)


# ----------------------------------------------------------------------------------- parameters ---

def _dummy_images(config: Sam2Config):
    return jnp.zeros((1, config.image_size, config.image_size, 3), f32)


def _boxed_init(config: Sam2Config, rng: jax.Array):
    return Sam2(config).init(rng, _dummy_images(config), method=Sam2.init_all)["params"]


@functools.lru_cache(maxsize=8)
def _jitted_init(config: Sam2Config):
    # Traced at the smallest image size (no parameter depends on it): far less for XLA to compile and drop.
    return jax.jit(lambda r: nn.meta.unbox(_boxed_init(_shape_config(config), r)))


def init_params(config: Sam2Config, rng: jax.Array) -> dict:
    """Freshly initialised parameters: a plain nested dict of float32 arrays (logical-axis boxes removed)."""
    return _jitted_init(config)(rng)


def _shape_config(config: Sam2Config) -> Sam2Config:
    """No parameter depends on the image size: shapes are traced at the smallest valid one (fast)."""
    return config.replace(image_size=math.lcm(config.backbone_stride, config.min_image_stride,
                                              4 * config.window_spec[0]))


@functools.lru_cache(maxsize=16)
def abstract_params(config: Sam2Config) -> dict:
    """Shapes and dtypes of the parameters (jax.ShapeDtypeStruct), without computing anything. Cached: read only."""
    return nn.meta.unbox(jax.eval_shape(functools.partial(_boxed_init, _shape_config(config)), jax.random.key(0)))


def param_logical_axes(config: Sam2Config) -> dict:
    """The logical axis names of every parameter, as a tree of PartitionSpecs (see samjax.sharding)."""
    return nn.get_partition_spec(jax.eval_shape(functools.partial(_boxed_init, _shape_config(config)),
                                                jax.random.key(0)))


def _apply(params, config, method, *args, rngs=None, **kwargs):
    return Sam2(config).apply({"params": params}, *args, method=method, rngs=rngs, **kwargs)


# -------------------------------------------------------------------------------------- images ---

def forward_image(params: dict, config: Sam2Config, images: jax.Array, train: bool = False,
                  rngs: dict | None = None) -> dict:
    """See `Sam2.forward_image`. train=True enables drop path (needs rngs={"dropout": key})."""
    return _apply(params, config, Sam2.forward_image, images, train, rngs=rngs)


def image_embeddings(params: dict, config: Sam2Config, backbone: dict) -> tuple[jax.Array, list[jax.Array]]:
    """What SAM2ImagePredictor.set_image keeps: image_embed (B, g, g, C) (the lowest-resolution level, + no_mem_embed
    where directly_add_no_mem_embed), high_res_feats [(B, 4g, 4g, C/8), (B, 2g, 2g, C/4)] (empty without
    high-res features)."""
    feats = backbone["backbone_fpn"][-config.num_feature_levels:]
    embed = feats[-1]
    if config.directly_add_no_mem_embed:
        embed = embed + params["no_mem_embed"][0].astype(embed.dtype)
    return embed, list(feats[:-1])


def _prompt_tokens(coords, labels, batch: int, pad: bool):
    """The prompt encoder's points: none -> (B, 0); with `pad` (officially whenever no box is given separately,
    i.e. always in SAM 2) one not-a-point token (label -1) is appended."""
    if coords is None:
        coords, labels = jnp.zeros((batch, 0, 2), f32), jnp.zeros((batch, 0), jnp.int32)
    check_shape("point coords", coords, (None, None, 2))
    check_shape("point labels", labels, coords.shape[:2])
    if pad:
        b = coords.shape[0]
        coords = jnp.concatenate([coords.astype(f32), jnp.zeros((b, 1, 2), f32)], axis=1)
        labels = jnp.concatenate([labels.astype(jnp.int32), jnp.full((b, 1), -1, jnp.int32)], axis=1)
    return coords.astype(f32), labels.astype(jnp.int32)


def predict(params: dict, config: Sam2Config, image_embed: jax.Array, high_res_feats: list[jax.Array],
            coords: jax.Array | None, labels: jax.Array | None, mask_input: jax.Array | None = None,
            multimask_output: bool = True):
    """SAM2ImagePredictor._predict's model part: prompts in the S x S input frame (boxes as two points with labels
    2, 3, placed first) -> low-res mask logits (B, M, 4g, 4g), iou (B, M), sam tokens, object score logits (B, 1).
    image_embed and high_res_feats of one image (batch 1) serve B prompts. mask_input (B, 1, 4g, 4g) or None."""
    b = coords.shape[0] if coords is not None else (mask_input.shape[0] if mask_input is not None else 1)
    coords, labels = _prompt_tokens(coords, labels, b, pad=coords is not None)
    mask_prompt = None if mask_input is None else mask_input[:, 0]
    outs = _apply(params, config, Sam2.decode_all, image_embed, coords, labels, mask_prompt, high_res_feats or None)
    return select_outputs(config, *outs, multimask_output=multimask_output)


# ----------------------------------------------------------------------------------- SAM heads ---

def _mask_prompt(config: Sam2Config, mask_inputs: jax.Array | None):
    """mask_inputs (B, 1, H, W) -> a (B, 4g, 4g) mask prompt, resized (bilinear, antialiased) if needed."""
    if mask_inputs is None:
        return None
    if mask_inputs.ndim != 4 or mask_inputs.shape[1] != 1:
        raise ValueError(f"mask_inputs must be (B, 1, H, W), got {tuple(mask_inputs.shape)}")
    size = config.mask_input_size
    return resize_bilinear(mask_inputs[:, 0].astype(f32), (size, size), antialias=True)


def forward_sam_heads(params: dict, config: Sam2Config, backbone_features: jax.Array,
                      high_res_features: list[jax.Array] | None = None, coords: jax.Array | None = None,
                      labels: jax.Array | None = None, mask_inputs: jax.Array | None = None,
                      multimask_output: bool | jax.Array = False, train: bool = False,
                      mask_valid: jax.Array | None = None) -> dict:
    """SAM2Base._forward_sam_heads.

    backbone_features (B, g, g, C); high_res_features [(B|1, 4g, 4g, C/8), (B|1, 2g, 2g, C/4)] or None; coords
    (B, P, 2) in the S x S frame and labels (B, P) or None (then one not-a-point); mask_inputs (B, 1, H, W) or None.
    Returns {"low_res_multimasks" (B, M, 4g, 4g), "high_res_multimasks" (B, M, S, S), "ious" (B, M),
    "low_res_masks" (B, 1, 4g, 4g), "high_res_masks" (B, 1, S, S), "obj_ptr" (B, C), "object_score_logits" (B, 1)},
    M = 3 with multimask_output else 1. multimask_output may be a traced bool (one compiled step for frames that
    do and do not use multimask): the best-mask outputs are then selected on device and the three *multimasks /
    ious entries are left out (their shapes would depend on it). mask_valid (B,) bool: which rows' mask_inputs are
    given (the others get the no-mask embedding, as with mask_inputs None).
    """
    b = backbone_features.shape[0]
    if coords is None:
        coords, labels = jnp.zeros((b, 1, 2), f32), -jnp.ones((b, 1), jnp.int32)
    coords, labels = _prompt_tokens(coords, labels, b, pad=True)
    outs = _apply(params, config, Sam2.decode_all, backbone_features, coords, labels,
                  _mask_prompt(config, mask_inputs), high_res_features or None, mask_valid)
    if isinstance(multimask_output, bool):
        return _heads_output(params, config, outs, multimask_output, train)
    multi, single = (_heads_output(params, config, outs, m, train) for m in (True, False))
    keys = ("low_res_masks", "high_res_masks", "obj_ptr", "object_score_logits")
    return {k: jnp.where(jnp.reshape(multimask_output, (1,) * multi[k].ndim), multi[k], single[k]) for k in keys}


def _heads_output(params, config: Sam2Config, outs, multimask_output: bool, train: bool) -> dict:
    low, ious, tokens, score = select_outputs(config, *outs, multimask_output=multimask_output, train=train)
    if config.pred_obj_scores:
        low = jnp.where((score > 0)[:, :, None, None], low, NO_OBJ_SCORE)
    low = low.astype(f32)
    s = config.image_size
    high = resize_hw(low, bilinear_matrix(low.shape[-2], s), bilinear_matrix(low.shape[-1], s), layout="hw")
    token = tokens[:, 0]
    if multimask_output:
        best = jnp.argmax(ious, axis=-1)
        low_best = jnp.take_along_axis(low, best[:, None, None, None], axis=1)
        high_best = jnp.take_along_axis(high, best[:, None, None, None], axis=1)
        if tokens.shape[1] > 1:
            token = jnp.take_along_axis(tokens, best[:, None, None], axis=1)[:, 0]
    else:
        low_best, high_best = low, high
    obj_ptr = _apply(params, config, Sam2.object_pointer, token, score)
    return {"low_res_multimasks": low, "high_res_multimasks": high, "ious": ious, "low_res_masks": low_best,
            "high_res_masks": high_best, "obj_ptr": obj_ptr, "object_score_logits": score}


def use_mask_as_output(params: dict, config: Sam2Config, backbone_features: jax.Array,
                       high_res_features: list[jax.Array] | None, mask_inputs: jax.Array) -> dict:
    """SAM2Base._use_mask_as_output: a given mask (B, 1, S, S) (bool or 0/1) becomes the output (logits -10 / +10);
    the object pointer still comes from the SAM heads, prompted by the downsampled mask. Same dict as
    `forward_sam_heads` (M = 1, ious all 1)."""
    check_shape("mask_inputs", mask_inputs, (None, 1, config.image_size, config.image_size))
    m = mask_inputs.astype(f32)
    high = m * 20.0 - 10.0
    s4 = config.image_size // 4
    low = resize_bilinear(high, (s4, s4), antialias=True)
    b = m.shape[0]
    ious = jnp.ones((b, 1), f32)
    if not config.use_obj_ptrs_in_encoder:
        obj_ptr = jnp.zeros((b, config.d_model), f32)
    else:
        prompt = _apply(params, config, Sam2.downsample_mask, m)
        obj_ptr = forward_sam_heads(params, config, backbone_features, high_res_features,
                                    mask_inputs=prompt)["obj_ptr"]
    lam = jnp.any(m.reshape(b, -1) > 0.0, axis=1)[:, None].astype(f32)
    score = 20.0 * lam - 10.0
    if config.pred_obj_scores and "no_obj_ptr" in params:
        obj_ptr = mix_no_obj_ptr(config, obj_ptr, lam, params["no_obj_ptr"])
    return {"low_res_multimasks": low, "high_res_multimasks": high, "ious": ious, "low_res_masks": low,
            "high_res_masks": high, "obj_ptr": obj_ptr, "object_score_logits": score}


# -------------------------------------------------------------------------------------- memory ---

def non_overlapping(pred_masks: jax.Array) -> jax.Array:
    """SAM2Base._apply_non_overlapping_constraints over the objects of a batch (B, 1, H, W): where an object is
    not the highest-scoring one its logits are clamped to at most -10."""
    if pred_masks.shape[0] == 1:
        return pred_masks
    keep = jnp.argmax(pred_masks, axis=0)[None] == jnp.arange(pred_masks.shape[0])[:, None, None, None]
    return jnp.where(keep, pred_masks, jnp.minimum(pred_masks, -10.0))


def encode_new_memory(params: dict, config: Sam2Config, pix_feat: jax.Array, pred_masks_high_res: jax.Array,
                      object_score_logits: jax.Array, is_mask_from_pts: bool | jax.Array,
                      train: bool = False) -> tuple[jax.Array, jax.Array]:
    """SAM2Base._encode_new_memory: the raw (not memory-conditioned) features (B, g, g, C) and the high-res mask
    logits (B, 1, S, S) -> (maskmem_features (B, g, g, mem_dim), maskmem_pos_enc (1, g, g, mem_dim)).
    is_mask_from_pts may be traced (with binarize_mask_from_pts_for_mem_enc the masks are then thresholded)."""
    masks = pred_masks_high_res.astype(f32)
    if config.non_overlap_masks_for_mem_enc and not train:
        masks = non_overlapping(masks)
    mask_for_mem = jax.nn.sigmoid(masks)
    if config.binarize_mask_from_pts_for_mem_enc and not train:
        mask_for_mem = jnp.where(jnp.asarray(is_mask_from_pts), (masks > 0).astype(f32), mask_for_mem)
    if config.sigmoid_scale_for_mem_enc != 1.0:
        mask_for_mem = mask_for_mem * config.sigmoid_scale_for_mem_enc
    if config.sigmoid_bias_for_mem_enc != 0.0:
        mask_for_mem = mask_for_mem + config.sigmoid_bias_for_mem_enc
    return _apply(params, config, Sam2.encode_memory, pix_feat, mask_for_mem, object_score_logits)


def prepare_memory_conditioned_features(params: dict, config: Sam2Config, pix_feat: jax.Array, pix_pos: jax.Array,
                                        memory: MemoryBank | None, is_init_cond_frame: bool | jax.Array,
                                        train: bool = False, rngs: dict | None = None) -> jax.Array:
    """SAM2Base._prepare_memory_conditioned_features: pix_feat (B, g, g, C) (the lowest-resolution level), pix_pos
    (1|B, g, g, C) -> (B, g, g, C). On an initial conditioning frame the no-memory embedding is added; otherwise the
    features attend to `memory`. is_init_cond_frame may be traced: one compiled function for both kinds of frame
    (lax.cond runs only the branch taken)."""
    if config.num_maskmem == 0:
        return pix_feat

    def initial(_):
        return _apply(params, config, Sam2.add_no_mem_embed, pix_feat)

    def attend(_):
        return _apply(params, config, Sam2.memory_conditioned, pix_feat, pix_pos, memory, train, rngs=rngs)

    if isinstance(is_init_cond_frame, bool):
        return initial(None) if is_init_cond_frame else attend(None)
    if memory is None:
        raise ValueError("a traced is_init_cond_frame needs a memory bank (used on non-initial frames)")
    return jax.lax.cond(is_init_cond_frame, initial, attend, None)


def use_multimask(config: Sam2Config, is_init_cond_frame: bool | jax.Array, num_points: int) -> bool | jax.Array:
    """SAM2Base._use_multimask for a prompt of `num_points` points (0 without points; a box counts as two)."""
    if not config.multimask_output_in_sam:
        return False
    if not config.multimask_min_pt_num <= num_points <= config.multimask_max_pt_num:
        return False
    return True if config.multimask_output_for_tracking else is_init_cond_frame


def track_step(params: dict, config: Sam2Config, backbone: dict, memory: MemoryBank | None,
               is_init_cond_frame: bool | jax.Array, coords: jax.Array | None = None, labels: jax.Array | None = None,
               mask_inputs: jax.Array | None = None, prev_sam_mask_logits: jax.Array | None = None,
               run_mem_encoder: bool = True, train: bool = False, rngs: dict | None = None,
               prev_valid: jax.Array | None = None) -> dict:
    """SAM2Base.track_step for B objects on one frame.

    backbone: `forward_image`'s dict for this frame (batch B or 1; broadcast to the objects); memory: the bank
    (`memory_bank`) for non-initial frames; coords / labels (B, P, 2) / (B, P) point prompts in the S x S frame or
    None; mask_inputs (B, 1, S, S) a mask prompt (then, with use_mask_input_as_output_without_sam, the mask is the
    output); prev_sam_mask_logits (B, 1, 4g, 4g) previous low-res logits fed with new points, prev_valid (B,) bool
    which rows have them (None: all).
    Returns {"pred_masks" (B, 1, 4g, 4g), "pred_masks_high_res" (B, 1, S, S), "obj_ptr" (B, C),
    "object_score_logits" (B, 1), "maskmem_features" (B, g, g, mem_dim) or None}.
    The static arguments (which prompts are given, run_mem_encoder) pick the compiled variant; is_init_cond_frame
    may be traced."""
    fpn = backbone["backbone_fpn"][-config.num_feature_levels:]
    pos = backbone["vision_pos_enc"][-config.num_feature_levels:]
    # objects: from the prompts, else the memory, else the features
    sizes = [x.shape[0] for x in (coords, mask_inputs, prev_sam_mask_logits) if x is not None]
    b = max(sizes) if sizes else (memory.features.shape[0] if memory is not None else fpn[-1].shape[0])
    pix = jnp.broadcast_to(fpn[-1], (b, *fpn[-1].shape[1:]))
    high_res = [jnp.broadcast_to(x, (b, *x.shape[1:])) for x in fpn[:-1]] or None
    if mask_inputs is not None and config.use_mask_input_as_output_without_sam:
        out = use_mask_as_output(params, config, pix, high_res, mask_inputs)
    else:
        pix_mem = prepare_memory_conditioned_features(params, config, pix, pos[-1], memory, is_init_cond_frame,
                                                      train, rngs)
        if prev_sam_mask_logits is not None:
            if coords is None or mask_inputs is not None:
                raise ValueError("prev_sam_mask_logits go with point prompts and without mask_inputs")
            mask_inputs = prev_sam_mask_logits
        multimask = use_multimask(config, is_init_cond_frame, 0 if coords is None else coords.shape[1])
        out = forward_sam_heads(params, config, pix_mem, high_res, coords, labels, mask_inputs, multimask, train,
                                mask_valid=prev_valid if prev_sam_mask_logits is not None else None)
    result: dict[str, Any] = {"pred_masks": out["low_res_masks"], "pred_masks_high_res": out["high_res_masks"],
                              "obj_ptr": out["obj_ptr"], "object_score_logits": out["object_score_logits"],
                              "maskmem_features": None}
    if run_mem_encoder and config.num_maskmem > 0:
        result["maskmem_features"], _ = encode_new_memory(params, config, pix, out["high_res_masks"],
                                                          out["object_score_logits"], coords is not None, train)
    return result
