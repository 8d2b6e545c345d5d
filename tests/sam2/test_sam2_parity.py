"""Parity with the official `sam2` package (1.1.0): models from its own yaml configs, every weight random,
converted through samjax.weights.sam2; float32, within 1e-4.

sam2.1_hiera_t at image size 256: the memory encoder (binarised click masks), memory attention over a padded
bank (forward / reverse, capped conditioning frames, memory stride); sam2_hiera_t (SAM 2.0) for memory attention;
torch's resize matrices. The backbone (levels, position encodings, at 128 and 1024), the SAM heads (points, box,
mask input, multimask on / off, dynamic multimask, both object-score branches) and whole tracking steps (prompted,
corrected, tracked and mask-prompted frames, forward and reverse) are compared through the predictors, in
test_sam2_predictor.py and test_sam2_video.py. Every comparison compiles its function once
(compilation is most of this file's time), so cases share shapes where they can.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax.models import sam2 as S
from samjax.weights import sam2 as W
from tests.sam2.official_sam2 import build_official_sam2, state_dict_numpy

torch = pytest.importorskip("torch")
pytest.importorskip("sam2.build_sam")
pytestmark = pytest.mark.torch

ATOL = 1e-4

encode_memory = jax.jit(S.encode_new_memory, static_argnames=("config", "train"))
conditioned = jax.jit(functools.partial(S.prepare_memory_conditioned_features, is_init_cond_frame=False),
                      static_argnames=("config",))


def nchw(x):
    return torch.as_tensor(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def seq(x):
    """(B, h, w, C) -> the official (h*w, B, C) token layout."""
    x = np.asarray(x)
    return torch.as_tensor(np.ascontiguousarray(x.reshape(x.shape[0], -1, x.shape[-1]).transpose(1, 0, 2)))


def close(ours, ref, name, nhwc=False):
    ref = ref.detach().numpy() if hasattr(ref, "detach") else np.asarray(ref)
    if nhwc:
        ref = ref.transpose(0, 2, 3, 1)
    ours = np.asarray(ours)
    assert ours.shape == ref.shape, f"{name}: {ours.shape} vs {ref.shape}"
    np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0, err_msg=name)


class Pair:
    """An official model and its converted parameters."""

    def __init__(self, name, image_size, seed):
        self.model = build_official_sam2(name, image_size, seed)
        self.name, self.image_size = name, image_size
        self.config = S.Sam2Config.from_name(name, image_size=image_size)

    @functools.cached_property
    def params(self):
        return jax.tree.map(jnp.asarray, W.from_torch(state_dict_numpy(self.model), self.config))


@pytest.fixture(scope="module")
def t256():
    return Pair("sam2.1_hiera_t", 256, seed=0)


def test_memory_encoder(t256):
    """With binarize_mask_from_pts_for_mem_enc: masks from points are thresholded, others go through the sigmoid
    (is_mask_from_pts traced: one compilation for both)."""
    rng = np.random.default_rng(2)
    g = 16
    feats = rng.standard_normal((2, g, g, 256)).astype(np.float32)
    masks = (5 * rng.standard_normal((2, 1, 256, 256))).astype(np.float32)
    score = np.array([[0.7], [-0.3]], np.float32)  # the second object absent: no_obj_embed_spatial is added
    m = t256.model
    config = t256.config.replace(binarize_mask_from_pts_for_mem_enc=True)
    for from_pts in (True, False):
        m.binarize_mask_from_pts_for_mem_enc = True
        try:
            with torch.no_grad():
                r_feat, r_pos = m._encode_new_memory([seq(feats)], [(g, g)], torch.as_tensor(masks),
                                                     torch.as_tensor(score), from_pts)
        finally:
            m.binarize_mask_from_pts_for_mem_enc = False
        feat, pos = encode_memory(t256.params, config, jnp.asarray(feats), jnp.asarray(masks), jnp.asarray(score),
                                  jnp.asarray(from_pts))
        close(feat, r_feat, f"maskmem_features from points={from_pts}", nhwc=True)
        close(np.broadcast_to(pos, feat.shape), r_pos[-1], "maskmem_pos_enc", nhwc=True)


def memory_outputs(model, batch, g, seed):
    """A synthetic official output_dict: random memories and pointers on conditioning frames 5, 0, 9 and tracked
    frames around them."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        mem_pos = model.memory_encoder.position_encoding(torch.zeros(batch, 64, g, g))

    def out():
        return {"maskmem_features": torch.as_tensor(rng.standard_normal((batch, 64, g, g)).astype(np.float32)),
                "maskmem_pos_enc": [mem_pos],
                "obj_ptr": torch.as_tensor(rng.standard_normal((batch, 256)).astype(np.float32))}

    cond, non_cond = [5, 0, 9], [1, 2, 3, 4, 6, 7, 8, 10, 11, 13, 14]
    return {"cond_frame_outputs": {t: out() for t in cond}, "non_cond_frame_outputs": {t: out() for t in non_cond}}


def lookup_in(output_dict):
    def lookup(b, t, from_cond):
        o = output_dict["cond_frame_outputs" if from_cond else "non_cond_frame_outputs"][t]
        return o["maskmem_features"][b].numpy().transpose(1, 2, 0), o["obj_ptr"][b].numpy()
    return lookup


def compare_memory_attention(pair, cases, settings=((2, 2),)):
    m, g = pair.model, pair.config.grid_size
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((2, g, g, 256)).astype(np.float32)
    pos = S.sam2.sine_position_encoding(g, g, 256)
    output_dict = memory_outputs(m, 2, g, seed=4)
    cond, non_cond = list(output_dict["cond_frame_outputs"]), list(output_dict["non_cond_frame_outputs"])
    saved = m.max_cond_frames_in_attn, m.memory_temporal_stride_for_eval
    try:
        for max_cond, stride in settings:
            m.max_cond_frames_in_attn, m.memory_temporal_stride_for_eval = max_cond, stride
            config = pair.config.replace(max_cond_frames_in_attn=max_cond, memory_temporal_stride_for_eval=stride)
            for frame, reverse, num_frames in cases:
                with torch.no_grad():
                    ref = m._prepare_memory_conditioned_features(
                        frame, False, [seq(feats)], [seq(np.broadcast_to(pos, feats.shape))], [(g, g)], output_dict,
                        num_frames, reverse)
                plan = S.plan_memory(config, frame, cond, non_cond, num_frames, reverse)
                bank = S.gather_memory(config, [plan] * 2, lookup_in(output_dict), *S.memory_capacity(config, 3))
                out = conditioned(pair.params, config, jnp.asarray(feats), jnp.asarray(pos),
                                  jax.tree.map(jnp.asarray, bank))
                close(out, ref, f"memory attention frame {frame} reverse={reverse} {max_cond=} {stride=}", nhwc=True)
    finally:
        m.max_cond_frames_in_attn, m.memory_temporal_stride_for_eval = saved


def test_memory_attention_over_a_padded_bank(t256):
    """Conditioning frames before and after, pointers from the past only, a memory stride of 2, at most 2
    conditioning frames (the closest chosen, the others still read as recent frames), reverse tracking, a short
    video (t_diff_max from num_frames): all through one compiled function over a bank of fixed size. (The default
    settings, all conditioning frames and stride 1, are those of the SAM 2.0 and track-step tests.)"""
    compiled = conditioned._cache_size()
    compare_memory_attention(t256, ((8, False, 16), (12, False, 16), (7, True, 16), (3, True, 5)))
    assert conditioned._cache_size() == compiled + 1  # one compilation served every frame


def test_sam2_0_memory_attention():
    """SAM 2.0 (pointers without temporal encoding; its heads are 2.1's) over all three conditioning frames."""
    pair = Pair("sam2_hiera_t", 256, seed=5)
    assert not pair.config.add_tpos_enc_to_obj_ptrs and "obj_ptr_tpos_proj" not in pair.params
    compare_memory_attention(pair, ((8, False, 16), (7, True, 16)), settings=((-1, 1),))


def test_resize_matrices_are_torchs():
    """The host-built resize matrices against torch's F.interpolate (bicubic, bilinear with / without antialias)."""
    from samjax.models.sam2 import layers

    x = np.random.default_rng(8).standard_normal((1, 2, 7, 9)).astype(np.float32)
    t = torch.as_tensor(x)
    F = torch.nn.functional
    for size, mode, aa in (((64, 40), "bicubic", False), ((20, 30), "bilinear", False), ((3, 4), "bilinear", True),
                           ((5, 9), "bilinear", True), ((14, 18), "bilinear", True)):
        ref = F.interpolate(t, size=size, mode=mode, align_corners=False, antialias=aa).numpy()
        mat = layers.bicubic_matrix if mode == "bicubic" else functools.partial(layers.bilinear_matrix, antialias=aa)
        ours = np.einsum("Hh,Ww,bchw->bcHW", mat(7, size[0]), mat(9, size[1]), x)
        np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0, err_msg=f"{mode} {size} antialias={aa}")
