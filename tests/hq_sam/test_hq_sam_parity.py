"""HQ-SAM parity: segment_anything_hq 0.3 built from its own constructors (its build_sam for the presets) with every
weight randomised, converted by samjax.weights.hq_sam.

Tolerances (tests/family_official.py): image embeddings, the early feature, low-res logits and IoU within 1e-4;
masks identical away from the threshold; multimask on and off, hq_token_only on and off.
"""

from __future__ import annotations

import functools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax.models.family_config import sam_config_for
from samjax.models.hq_sam import HQSam, HQSamConfig, trainable_mask
from samjax.models.mobile_sam import TinyViTConfig
from samjax.weights import hq_sam as convert
from tests.conftest import TINY_CONFIGS
from tests.family_official import (
    ATOL,
    CASES,
    check_cases,
    import_references,
    photo_input,
    randomize_,
)

pytestmark = pytest.mark.torch
torch = import_references()
pytest.importorskip("segment_anything_hq", reason="the reference package (pyproject's torch extra) is not installed")
from segment_anything_hq import sam_model_registry  # noqa: E402  (after the stand-ins are on the path)
from segment_anything_hq.modeling import (  # noqa: E402
    ImageEncoderViT,
    MaskDecoderHQ,
    PromptEncoder,
    Sam,
    TinyViT,
    TwoWayTransformer,
)

TINY_VIT = HQSamConfig(TINY_CONFIGS["tiny_windowed"])  # ViT with a padded window, one global block (interm[0])
TINY_TINYVIT = HQSamConfig(
    sam_config_for(64, decoder_mlp_dim=64, iou_head_hidden_dim=32),
    TinyViTConfig(embed_dims=(16, 32, 48), depths=(1, 1, 1), num_heads=(1, 2, 3), window_sizes=(7, 7, 14),
                  num_classes=0))
OFFICIAL = {f"sam_hq_{k}": sam_model_registry[k] for k in ("vit_b", "vit_l", "vit_h", "vit_tiny")}


def build_reference(cfg: HQSamConfig, seed: int = 0):
    """segment_anything_hq's Sam for `cfg` (the official builder for the presets tested), random weights, eval."""
    torch.manual_seed(seed)
    official = [f for name, f in OFFICIAL.items() if cfg == HQSamConfig.from_name(name)]  # the official builder
    if official:
        sam = official[0]()
    else:
        s, e = cfg.sam, cfg.tiny_vit
        if e is None:
            encoder = ImageEncoderViT(
                img_size=s.image_size, patch_size=s.patch_size, in_chans=s.in_chans, embed_dim=s.encoder_embed_dim,
                depth=s.encoder_depth, num_heads=s.encoder_num_heads, mlp_ratio=s.encoder_mlp_ratio,
                out_chans=s.prompt_embed_dim, qkv_bias=s.encoder_qkv_bias,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                use_abs_pos=s.encoder_use_abs_pos, use_rel_pos=s.encoder_use_rel_pos, window_size=s.window_size,
                global_attn_indexes=s.encoder_global_attn_indexes)
        else:
            encoder = TinyViT(img_size=e.image_size, in_chans=e.in_chans, num_classes=e.num_classes,
                              embed_dims=list(e.embed_dims), depths=list(e.depths), num_heads=list(e.num_heads),
                              window_sizes=list(e.window_sizes), mlp_ratio=e.mlp_ratio, drop_rate=0.0,
                              drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=e.mbconv_expand_ratio,
                              local_conv_size=e.local_conv_size, layer_lr_decay=0.8)
        sam = Sam(
            image_encoder=encoder,
            prompt_encoder=PromptEncoder(embed_dim=s.prompt_embed_dim, image_embedding_size=(s.grid_size,) * 2,
                                         input_image_size=(s.image_size,) * 2, mask_in_chans=s.mask_in_chans),
            mask_decoder=MaskDecoderHQ(
                num_multimask_outputs=s.num_multimask_outputs,
                transformer=TwoWayTransformer(depth=s.decoder_depth, embedding_dim=s.prompt_embed_dim,
                                              mlp_dim=s.decoder_mlp_dim, num_heads=s.decoder_num_heads,
                                              attention_downsample_rate=s.attention_downsample_rate),
                transformer_dim=s.prompt_embed_dim, iou_head_depth=s.iou_head_depth,
                iou_head_hidden_dim=s.iou_head_hidden_dim, vit_dim=cfg.vit_dim),
            pixel_mean=list(s.pixel_mean), pixel_std=list(s.pixel_std))
    randomize_(sam, seed)
    return sam.eval()


@functools.lru_cache(maxsize=2)
def pair(cfg: HQSamConfig):
    ref = build_reference(cfg)
    variables = convert.from_torch(ref.state_dict(), cfg)
    model = HQSam(cfg)
    embed = jax.jit(lambda v, x: model.apply(v, x, method=HQSam.embed_images))
    decode = jax.jit(lambda v, e, i, c, lab, m, ok, mm, hq: model.apply(v, e, i, c, lab, m, ok, mm, hq,
                                                                        method=HQSam.decode), static_argnums=(7, 8))
    return ref, variables, embed, decode


def run_parity(cfg: HQSamConfig, photo, modes=((True, False), (False, True)), cases=tuple(CASES)):
    """modes: (multimask_output, hq_token_only) pairs."""
    ref, variables, embed, decode = pair(cfg)
    x, input_size = photo_input(photo, cfg.encoder_input_size, cfg.sam.pixel_mean, cfg.sam.pixel_std)
    with torch.no_grad():
        ref_emb, ref_interm = ref.image_encoder(torch.as_tensor(x.transpose(0, 3, 1, 2)))
    emb, interm = embed(variables, x)
    np.testing.assert_allclose(np.asarray(emb), ref_emb.numpy().transpose(0, 2, 3, 1), atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(interm), ref_interm[0].numpy(), atol=ATOL, rtol=0)  # NHWC officially too
    assert np.isfinite(ref_emb.numpy()).all() and np.abs(ref_emb.numpy()).max() > 0.1
    pe = ref.prompt_encoder.get_dense_pe()
    post = functools.partial(ref.postprocess_masks, input_size=input_size, original_size=photo.shape[:2])
    for multimask, hq_only in modes:
        def ref_decode(prompts, multimask=multimask, hq_only=hq_only):
            sparse, dense = ref.prompt_encoder(**prompts)
            return ref.mask_decoder(image_embeddings=ref_emb, image_pe=pe, sparse_prompt_embeddings=sparse,
                                    dense_prompt_embeddings=dense, multimask_output=multimask,
                                    hq_token_only=hq_only, interm_embeddings=ref_interm)

        check_cases(torch, ref_decode,
                    lambda c, lab, m, ok, mm=multimask, hq=hq_only: decode(variables, emb, interm, c, lab, m, ok,
                                                                           mm, hq),
                    post, photo.shape[:2], cfg.sam.image_size, input_size, cfg.sam.mask_input_size, cases)


def test_tiny_vit_parity(photo):
    run_parity(TINY_VIT, photo, modes=((True, False), (False, False), (True, True), (False, True)))


def test_tiny_tinyvit_parity(photo):
    """TinyViT encoder: its stage-1 output is the fused feature."""
    run_parity(TINY_TINYVIT, photo, cases=("points", "box", "points_mask"))


@pytest.mark.slow
def test_sam_hq_vit_b_parity(photo):
    """The official sam_hq_vit_b architecture at 1024 px."""
    run_parity(HQSamConfig.sam_hq_vit_b(), photo, cases=("points", "box", "points_mask", "point_box_mask"))


@pytest.mark.slow
def test_sam_hq_vit_tiny_parity(photo):
    """The official sam_hq_vit_tiny architecture (TinyViT-5M, vit_dim 160) at 1024 px."""
    run_parity(HQSamConfig.sam_hq_vit_tiny(), photo, cases=("points", "box", "points_mask", "point_box_mask"))


def test_all_outputs_and_precomputed_hq_features(photo):
    """all_outputs returns the reference's predict_masks (every SAM output, then the HQ one); hq_features made once
    per image give the same masks as the early feature."""
    ref, variables, embed, _ = pair(TINY_VIT)
    x, _ = photo_input(photo, TINY_VIT.encoder_input_size, TINY_VIT.sam.pixel_mean, TINY_VIT.sam.pixel_std)
    emb, interm = embed(variables, x)
    model = HQSam(TINY_VIT)
    coords, labels = np.array([[[20.0, 30.0], [0.0, 0.0]]], np.float32), np.array([[1, -1]], np.int32)
    run = jax.jit(lambda v, e, i, c, lab, f: (
        model.apply(v, e, i, c, lab, all_outputs=True, method=HQSam.decode),
        model.apply(v, e, i, method=HQSam.hq_features),
        model.apply(v, e, None, c, lab, hq_features=f, method=HQSam.decode),
        model.apply(v, e, i, c, lab, method=HQSam.decode)))
    (masks, iou), feats, _, _ = run(variables, emb, interm, coords, labels, jnp.zeros((1, 32, 32, 4)))
    _, _, a, b = run(variables, emb, interm, coords, labels, feats)
    with torch.no_grad():
        t_emb = torch.as_tensor(np.array(emb).transpose(0, 3, 1, 2))
        t_interm = torch.as_tensor(np.array(interm))
        hq = (ref.mask_decoder.embedding_encoder(t_emb)
              + ref.mask_decoder.compress_vit_feat(t_interm.permute(0, 3, 1, 2)))
        # the official prompt encoder appends the not-a-point token itself (no box)
        sparse, dense = ref.prompt_encoder(points=(torch.as_tensor(coords[:, :1]), torch.as_tensor(labels[:, :1])),
                                           boxes=None, masks=None)
        r_masks, r_iou = ref.mask_decoder.predict_masks(t_emb, ref.prompt_encoder.get_dense_pe(), sparse, dense, hq)
    assert masks.shape == (1, TINY_VIT.sam.num_mask_tokens + 1, 32, 32) and iou.shape == (1, 4)
    np.testing.assert_allclose(np.asarray(masks), r_masks.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(iou), r_iou.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(feats), hq.numpy().transpose(0, 2, 3, 1), atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b[0]), atol=1e-6, rtol=0)


def test_key_set_round_trip_errors_and_trainable():
    for cfg in (TINY_VIT, TINY_TINYVIT):
        ref = build_reference(cfg, seed=4)
        sd = {k: v.numpy() for k, v in ref.state_dict().items()}
        variables = convert.from_torch(sd, cfg)
        back = convert.to_torch(variables, cfg)
        assert set(back) == set(sd)
        for k, v in sd.items():
            if not k.endswith("num_batches_tracked"):
                np.testing.assert_array_equal(back[k], v, err_msg=k)
        ref.load_state_dict({k: torch.as_tensor(v) for k, v in back.items()}, strict=True)
    missing = {k: v for k, v in sd.items() if not k.startswith("mask_decoder.hf_mlp.")}
    with pytest.raises(ValueError, match="missing keys"):
        convert.from_torch(missing, TINY_TINYVIT)
    with pytest.raises(ValueError, match="unexpected keys"):
        convert.from_torch({**sd, "mask_decoder.extra": np.zeros(1)}, TINY_TINYVIT)
    with pytest.raises(ValueError, match="hf_token: not an HQ-SAM checkpoint"):
        convert.from_torch({k: v for k, v in sd.items() if "hf_token" not in k}, TINY_TINYVIT)
    # HQ-SAM trains only its own layers: the official build_sam's requires_grad
    marks = jax.tree_util.tree_leaves_with_path(trainable_mask(variables["params"]))
    trained = {jax.tree_util.keystr(p) for p, m in marks if m}
    official = {n for n, p in build_reference(TINY_TINYVIT).named_parameters()
                if any(t in n for t in ("hf_token", "hf_mlp", "compress_vit_feat", "embedding_encoder",
                                        "embedding_maskfeature"))}
    assert len(trained) == len(official) > 0


@pytest.mark.parametrize("name", ["sam_hq_vit_b", "sam_hq_vit_l", "sam_hq_vit_h", "sam_hq_vit_tiny"])
def test_detect_official_checkpoints(name):
    """Each official builder's key set and shapes are the preset's (ViTs built on the meta device: no weights)."""
    with torch.device("cpu" if name.endswith("tiny") else "meta"):  # TinyViT's constructor reads values
        sd = {k: np.broadcast_to(np.float32(0), v.shape) for k, v in OFFICIAL[name]().state_dict().items()}
    assert convert.torch_shapes(HQSamConfig.from_name(name)) == {k: v.shape for k, v in sd.items()}
    assert convert.detect_model(sd) == name
