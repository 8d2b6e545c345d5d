"""EfficientViT-SAM parity: efficientvit's SAM (vendored by efficientsam 1.0.0) built from its own constructors
(`create_efficientvit_sam_model` for the presets, which sets every norm's epsilon to 1e-6) with every weight
randomised (BatchNorm running statistics included), converted by samjax.weights.efficientvit_sam.

Tolerances (tests/family_official.py): image embeddings, low-res logits and IoU within 1e-4; masks identical away
from the threshold. The reference's neck resizes to 64 x 64 and its encoder ends in 256 channels whatever the input,
so tiny configs take 128 px images through narrow stages into SAM's 256-wide decoder (with small MLPs).
"""

from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax.models.efficientvit_sam import (
    PRESETS,
    EfficientViTConfig,
    EfficientViTSam,
    EfficientViTSamConfig,
    resize_bicubic,
)
from samjax.models.efficientvit_sam.encoder import LiteMLA, LocalBlock
from samjax.models.family_config import sam_config_for
from samjax.weights import efficientvit_sam as convert
from samjax.weights import keys
from tests.family_official import (
    ATOL,
    check_cases,
    import_references,
    photo_input,
    randomize_,
)

pytestmark = pytest.mark.torch
torch = import_references()
pytest.importorskip("efficientsam", reason="the reference package (pyproject's torch extra) is not installed")
from efficientsam.models.efficientvit.backbone import EfficientViTLargeBackbone  # noqa: E402  (stand-ins first)
from efficientsam.models.efficientvit.sam import EfficientViTSam as RefSam  # noqa: E402
from efficientsam.models.efficientvit.sam import EfficientViTSamImageEncoder, SamNeck  # noqa: E402
from efficientsam.models.nn import ops  # noqa: E402
from efficientsam.models.nn.norm import set_norm_eps  # noqa: E402
from efficientsam.sam_model_zoo import create_efficientvit_sam_model  # noqa: E402
from efficientsam.segment_anything.modeling import (  # noqa: E402
    MaskDecoder,
    PromptEncoder,
    TwoWayTransformer,
)

_SAM = sam_config_for(64, decoder_norm_eps=1e-6, decoder_mlp_dim=64, iou_head_hidden_dim=32)
TINY_L = EfficientViTSamConfig(EfficientViTConfig(
    image_size=128, width_list=(8, 16, 16, 32, 32), depth_list=(1, 1, 1, 1, 2), qkv_dim=8, head_width=16,
    head_depth=2), _SAM)
TINY_XL = EfficientViTSamConfig(EfficientViTConfig(  # stage 5 at 2 x 2 px: the quadratic attention branch
    image_size=128, width_list=(8, 8, 16, 16, 32, 32), depth_list=(0, 1, 1, 1, 1, 1),
    block_list=("res", "fmb", "fmb", "fmb", "att@3", "att@3"), expand_list=(1, 4, 4, 4, 4, 6),
    fewer_norm_list=(False, False, False, False, True, True), qkv_dim=8, neck_stages=(5, 4, 3), head_width=16,
    head_depth=1, neck_expand_ratio=4), _SAM)


@pytest.mark.parametrize("src,dst", [((16, 16), (64, 64)), ((5, 7), (64, 64)), ((64, 64), (24, 40)),
                                     ((3, 33), (10, 9)), ((1, 4), (6, 2))])
def test_resize_bicubic_matches_torch(src, dst):
    x = np.random.default_rng(0).standard_normal((2, 3, *src)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.as_tensor(x), size=dst, mode="bicubic", align_corners=False)
    ours = resize_bicubic(jnp.asarray(x.transpose(0, 2, 3, 1)), dst)
    np.testing.assert_allclose(np.asarray(ours), ref.numpy().transpose(0, 2, 3, 1), atol=1e-5, rtol=0)


def _block_pair(ours, ref, x, seed):
    """A torch block and ours, random weights through the converter's key table: outputs within 1e-5."""
    randomize_(ref, seed)
    ref.eval()
    abstract = jax.eval_shape(ours.init, jax.random.key(0), jnp.asarray(x))
    abstract = flax.core.meta.unbox(abstract)
    variables = keys.from_torch(ref.state_dict(), abstract)
    assert set(keys.torch_shapes(abstract)) == set(ref.state_dict())
    with torch.no_grad():
        r = ref(torch.as_tensor(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    o = np.asarray(ours.apply(variables, jnp.asarray(x)))
    np.testing.assert_allclose(o, r, atol=1e-5 * max(1.0, np.abs(r).max()), rtol=0)


@pytest.mark.parametrize("kind,stride,fewer", [("res", 1, False), ("res", 2, True), ("fmb", 2, False),
                                               ("fmb", 1, True), ("mb", 2, True), ("mb", 1, False),
                                               ("ds", 2, False), ("ds", 1, True)])
def test_local_blocks(kind, stride, fewer):
    x = np.random.default_rng(1).standard_normal((2, 9, 10, 8)).astype(np.float32)
    kw = dict(use_bias=(True, False) if fewer else False, norm=(None, "bn2d") if fewer else "bn2d",
              act_func=("gelu", None))
    cls = {"res": ops.ResBlock, "fmb": ops.FusedMBConv, "mb": ops.MBConv, "ds": ops.DSConv}[kind]
    if kind == "mb":
        kw = dict(use_bias=(True, True, False) if fewer else False, norm=(None, None, "bn2d") if fewer else "bn2d",
                  act_func=("gelu", "gelu", None))
    if kind != "ds":
        kw["expand_ratio"] = 3
    ref = cls(8, 12, stride=stride, **kw)
    set_norm_eps(ref, 1e-6)
    _block_pair(LocalBlock(kind, 12, stride, 3, fewer, "gelu", 1e-6), ref, x, seed=2)


@pytest.mark.parametrize("hw,scales", [((6, 5), (5,)), ((2, 2), (3,)), ((4, 4), (3, 5))])
def test_lite_mla(hw, scales):
    """ReLU linear attention (H*W > dim) and its quadratic form (H*W <= dim), one or two aggregation scales."""
    x = np.random.default_rng(3).standard_normal((2, *hw, 16)).astype(np.float32)
    ref = ops.LiteMLA(16, 16, dim=4, norm=(None, "bn2d"), scales=scales)
    set_norm_eps(ref, 1e-6)
    _block_pair(LiteMLA(4, scales, 1e-6), ref, x, seed=4)


def build_reference(cfg: EfficientViTSamConfig, seed: int = 0):
    """efficientvit's EfficientViTSam for `cfg` (the official model zoo's constructor for presets), random
    weights, eval mode, every norm's epsilon 1e-6 as the model zoo sets it."""
    torch.manual_seed(seed)
    names = [n for n in PRESETS if EfficientViTSamConfig.from_name(n) == cfg]
    if names:
        sam = create_efficientvit_sam_model(names[0].replace("_", "-"), pretrained=False)
    else:
        e, s = cfg.encoder, cfg.sam
        backbone = EfficientViTLargeBackbone(
            width_list=list(e.width_list), depth_list=list(e.depth_list), block_list=list(e.block_list),
            expand_list=list(e.expand_list), fewer_norm_list=list(e.fewer_norm_list), qkv_dim=e.qkv_dim)
        neck = SamNeck(fid_list=[f"stage{i}" for i in e.neck_stages],
                       in_channel_list=[e.width_list[i] for i in e.neck_stages], head_width=e.head_width,
                       head_depth=e.head_depth, expand_ratio=e.neck_expand_ratio, middle_op=e.middle_op)
        sam = RefSam(
            EfficientViTSamImageEncoder(backbone, neck),
            PromptEncoder(embed_dim=s.prompt_embed_dim, image_embedding_size=(s.grid_size,) * 2,
                          input_image_size=(s.image_size,) * 2, mask_in_chans=s.mask_in_chans),
            MaskDecoder(num_multimask_outputs=s.num_multimask_outputs,
                        transformer=TwoWayTransformer(depth=s.decoder_depth, embedding_dim=s.prompt_embed_dim,
                                                      mlp_dim=s.decoder_mlp_dim, num_heads=s.decoder_num_heads),
                        transformer_dim=s.prompt_embed_dim, iou_head_depth=s.iou_head_depth,
                        iou_head_hidden_dim=s.iou_head_hidden_dim),
            image_size=(s.image_size, e.image_size))
        set_norm_eps(sam, 1e-6)
    randomize_(sam, seed)
    return sam.eval()


@functools.lru_cache(maxsize=2)
def pair(cfg: EfficientViTSamConfig):
    ref = build_reference(cfg)
    variables = convert.from_torch(ref.state_dict(), cfg)
    model = EfficientViTSam(cfg)
    embed = jax.jit(lambda v, x: model.apply(v, x, method=EfficientViTSam.embed_images))
    decode = jax.jit(lambda v, e, c, lab, m, ok, mm: model.apply(v, e, c, lab, m, ok, mm,
                                                                 method=EfficientViTSam.decode), static_argnums=6)
    return ref, variables, embed, decode


def run_parity(cfg: EfficientViTSamConfig, photo, multimasks=(True, False), cases=None):
    """The encoder sees the photo resized to its own input size (512 for L); prompts and masks live in the 1024 px
    frame, as the official predictor maps them."""
    ref, variables, embed, decode = pair(cfg)
    x, _ = photo_input(photo, cfg.encoder_input_size, cfg.sam.pixel_mean, cfg.sam.pixel_std)
    with torch.no_grad():
        ref_emb = ref.image_encoder(torch.as_tensor(x.transpose(0, 3, 1, 2)))
    emb = embed(variables, x)
    assert np.isfinite(ref_emb.numpy()).all() and np.abs(ref_emb.numpy()).max() > 0.1
    np.testing.assert_allclose(np.asarray(emb), ref_emb.numpy().transpose(0, 2, 3, 1), atol=ATOL, rtol=0)
    pe = ref.prompt_encoder.get_dense_pe()
    frame = cfg.sam.image_size
    input_size = (round(photo.shape[0] * frame / max(photo.shape[:2])), frame)
    post = functools.partial(ref.postprocess_masks, input_size=input_size, original_size=photo.shape[:2])
    for multimask in multimasks:
        def ref_decode(prompts, multimask=multimask):
            sparse, dense = ref.prompt_encoder(**prompts)
            return ref.mask_decoder(image_embeddings=ref_emb, image_pe=pe, sparse_prompt_embeddings=sparse,
                                    dense_prompt_embeddings=dense, multimask_output=multimask)

        check_cases(torch, ref_decode, lambda c, lab, m, ok, mm=multimask: decode(variables, emb, c, lab, m, ok, mm),
                    post, photo.shape[:2], frame, input_size, cfg.sam.mask_input_size,
                    **({} if cases is None else {"cases": cases}))


def test_tiny_l_parity(photo):
    run_parity(TINY_L, photo)


def test_tiny_xl_parity(photo):
    run_parity(TINY_XL, photo, multimasks=(False,), cases=("points", "box", "points_mask"))


@pytest.mark.slow
def test_l0_parity(photo):
    """The official L0 at 512 px."""
    run_parity(EfficientViTSamConfig.l0(), photo, cases=("points", "box", "points_mask", "point_box_mask"))


@pytest.mark.slow
def test_xl0_parity(photo):
    """The official XL0 at 1024 px."""
    run_parity(EfficientViTSamConfig.xl0(), photo, multimasks=(True,), cases=("points", "point_box_mask"))


def test_round_trip_and_errors():
    ref = build_reference(TINY_XL, seed=5)
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    variables = convert.from_torch(sd, TINY_XL)
    assert set(variables) == {"params", "batch_stats"}
    back = convert.to_torch(variables, TINY_XL)
    assert set(back) == set(sd)
    for k, v in sd.items():
        if not k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[k], v, err_msg=k)
    ref.load_state_dict({k: torch.as_tensor(v) for k, v in back.items()}, strict=True)
    with pytest.raises(ValueError, match="missing keys"):
        convert.from_torch({k: v for k, v in sd.items() if "running_var" not in k}, TINY_XL)
    with pytest.raises(ValueError, match="not an EfficientViT-SAM checkpoint"):
        convert.from_torch({k: v for k, v in sd.items() if ".backbone." not in k}, TINY_XL)
    assert convert.detect_model(sd) is None


@pytest.mark.parametrize("name", PRESETS)
def test_official_key_sets(name):
    """Each model zoo model's state_dict keys and shapes are the preset's, and detection names it (built on the
    meta device: no weights)."""
    with torch.device("meta"):
        ref = create_efficientvit_sam_model(name.replace("_", "-"), pretrained=False)
    sd = {k: np.broadcast_to(np.float32(0), v.shape) for k, v in ref.state_dict().items()}
    assert convert.torch_shapes(EfficientViTSamConfig.from_name(name)) == {k: v.shape for k, v in sd.items()}
    assert convert.detect_model(sd) == name
