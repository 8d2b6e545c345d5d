"""Parity with the official `sam2` package (1.1.0): models from its own yaml configs, every weight random,
converted through samjax.weights.sam2; float32, within 1e-4.

sam2.1_hiera_t at image size 256 for the image path, the SAM heads (points, box, mask input, multimask on / off,
dynamic multimask), the memory encoder, memory attention (forward / reverse, capped conditioning frames, memory
stride), three frames of SAM2Base.track_step and a mask-prompted frame; at 1024 (slow) for the image path;
sam2_hiera_t (SAM 2.0) at 256 for memory attention. Every comparison compiles its function once (compilation is
most of this file's time), so cases share shapes where they can.
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
HEADS = ("low_res_multimasks", "high_res_multimasks", "ious", "low_res_masks", "high_res_masks", "obj_ptr",
         "object_score_logits")

forward_image = jax.jit(S.forward_image, static_argnums=1)
heads = jax.jit(S.forward_sam_heads, static_argnames=("config", "multimask_output", "train"))
encode_memory = jax.jit(S.encode_new_memory, static_argnames=("config", "train"))
conditioned = jax.jit(functools.partial(S.prepare_memory_conditioned_features, is_init_cond_frame=False),
                      static_argnames=("config",))
predict = jax.jit(S.predict, static_argnames=("config", "multimask_output"))
track = jax.jit(S.track_step, static_argnums=1, static_argnames=("run_mem_encoder", "train"))


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

    def center_object_scores(self, scores):
        """Shift the object-score head's last bias so that `scores` (official, (B, 1)) straddle 0: both the
        object-present and the object-absent branches are then compared. Call before `params` is used."""
        assert "params" not in self.__dict__
        head = self.model.sam_mask_decoder.pred_obj_score_head
        last = head.layers[-1] if hasattr(head, "layers") else head
        with torch.no_grad():
            last.bias -= float(np.median(np.asarray(scores)))


@pytest.fixture(scope="module")
def t256():
    return Pair("sam2.1_hiera_t", 256, seed=0)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).standard_normal((3, 256, 256, 3)).astype(np.float32)


def official_backbone(model, image):
    with torch.no_grad():
        out = model.forward_image(nchw(image))
    return out


def test_backbone_fpn_and_position_encodings(t256, images):
    ref = official_backbone(t256.model, images[:1])
    out = forward_image(t256.params, t256.config, jnp.asarray(images[:1]))
    assert len(out["backbone_fpn"]) == len(ref["backbone_fpn"]) == 3
    for i, (a, r) in enumerate(zip(out["backbone_fpn"], ref["backbone_fpn"])):
        close(a, r, f"backbone_fpn[{i}]", nhwc=True)  # levels 0, 1 after conv_s0 / conv_s1
        assert np.abs(r.numpy()).max() > 1.0
    for i, (a, r) in enumerate(zip(out["vision_pos_enc"], ref["vision_pos_enc"])):
        close(a, r, f"vision_pos_enc[{i}]", nhwc=True)
    close(out["vision_features"], ref["vision_features"], "vision_features", nhwc=True)


@pytest.fixture(scope="module")
def heads_case():
    """A second official model (its object scores centred on these prompts), random backbone features."""
    pair = Pair("sam2.1_hiera_t", 256, seed=1)
    rng = np.random.default_rng(1)
    b = 4
    case = {"feats": rng.standard_normal((b, 16, 16, 256)).astype(np.float32),
            "hr": [rng.standard_normal((b, 64, 64, 32)).astype(np.float32),
                   rng.standard_normal((b, 32, 32, 64)).astype(np.float32)],
            "coords": rng.uniform(0, 256, (b, 3, 2)).astype(np.float32),
            "labels": np.array([[1, 0, 1], [1, 1, -1], [2, 3, 1], [0, 1, 0]], np.int32),
            "mask": (3 * rng.standard_normal((b, 1, 256, 256))).astype(np.float32)}
    ref = official_heads(pair.model, case, multimask=True)
    pair.center_object_scores(ref[-1].numpy())
    return pair, case


def official_heads(model, case, multimask, points=True, mask=None):
    with torch.no_grad():
        return model._forward_sam_heads(
            nchw(case["feats"]), point_inputs={"point_coords": torch.as_tensor(case["coords"]),
                                               "point_labels": torch.as_tensor(case["labels"])} if points else None,
            mask_inputs=None if mask is None else torch.as_tensor(mask),
            high_res_features=[nchw(x) for x in case["hr"]], multimask_output=multimask)


def compare_heads(pair, case, multimask, points=True, mask=None, config=None):
    config = config or pair.config
    ref = official_heads(pair.model, case, multimask, points, mask)
    out = heads(pair.params, config, jnp.asarray(case["feats"]), [jnp.asarray(x) for x in case["hr"]],
                jnp.asarray(case["coords"]) if points else None, jnp.asarray(case["labels"]) if points else None,
                None if mask is None else jnp.asarray(mask), multimask_output=multimask)
    for name, r in zip(HEADS, ref):
        close(out[name], r, name)
    return ref


def test_heads_points_box_and_mask_inputs(heads_case):
    pair, case = heads_case
    ref = compare_heads(pair, case, multimask=True)
    score = ref[-1].numpy()[:, 0]
    assert (score > 0).any() and (score <= 0).any()  # both object branches are compared
    assert (ref[3].numpy() == S.NO_OBJ_SCORE).any() and np.abs(ref[3].numpy()).min() < 1.0
    # single mask, with the previous low-res logits as mask input; a mask alone at image size (antialiased resize)
    compare_heads(pair, case, multimask=False,
                  mask=np.where(ref[0].numpy()[:, :1] < -100, -5.0, ref[0].numpy()[:, :1]))
    compare_heads(pair, case, multimask=True, points=False, mask=case["mask"])


def test_heads_dynamic_multimask_via_stability(heads_case):
    """Single-mask output falls back to the best multimask output where its stability is low; the threshold is
    put between the batch's stability scores so that both choices are made."""
    pair, case = heads_case
    dec = pair.model.sam_mask_decoder
    with torch.no_grad():
        sparse, dense = pair.model.sam_prompt_encoder((torch.as_tensor(case["coords"]),
                                                       torch.as_tensor(case["labels"])), None, None)
        masks = dec.predict_masks(nchw(case["feats"]), pair.model.sam_prompt_encoder.get_dense_pe(), sparse, dense,
                                  False, [nchw(x) for x in case["hr"]])[0]
    dec.dynamic_multimask_via_stability = True
    try:
        stab = np.sort(dec._get_stability_scores(masks[:, 0]).numpy())
        thresh = float((stab[1] + stab[2]) / 2)
        dec.dynamic_multimask_stability_thresh = thresh
        config = pair.config.replace(dynamic_multimask_via_stability=True, dynamic_multimask_stability_thresh=thresh)
        compare_heads(pair, case, multimask=False, config=config)
    finally:
        dec.dynamic_multimask_via_stability = False


def test_image_predictor_model_calls(heads_case):
    """`predict` against the model calls of SAM2ImagePredictor._predict (box corners first, then points, a padding
    token; one image's features for several prompts)."""
    pair, case = heads_case
    m = pair.model
    emb, hr = case["feats"][:1], [x[:1] for x in case["hr"]]
    box_and_point = np.tile([[2, 3, 1]], (4, 1))  # a box (its corners first) and a point
    for coords, labels, mask, multimask in ((case["coords"], box_and_point, None, True),):
        with torch.no_grad():
            pts = None if coords is None else (torch.as_tensor(coords), torch.as_tensor(labels, dtype=torch.int))
            sparse, dense = m.sam_prompt_encoder(points=pts, boxes=None,
                                                 masks=None if mask is None else torch.as_tensor(mask))
            r_masks, r_iou, _, r_score = m.sam_mask_decoder(
                image_embeddings=nchw(emb), image_pe=m.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
                repeat_image=pts is not None and pts[0].shape[0] > 1, high_res_features=[nchw(x) for x in hr])
        o_masks, o_iou, _, o_score = predict(pair.params, pair.config, jnp.asarray(emb), [jnp.asarray(x) for x in hr],
                                             None if coords is None else jnp.asarray(coords),
                                             None if labels is None else jnp.asarray(labels),
                                             None if mask is None else jnp.asarray(mask), multimask_output=multimask)
        close(o_masks, r_masks, "masks")
        close(o_iou, r_iou, "iou")
        close(o_score, r_score, "object scores")


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


TRACK_COORDS = np.array([[[60.0, 80.0]], [[200.0, 150.0]]], np.float32)
TRACK_LABELS = np.ones((2, 1), np.int32)


@pytest.fixture(scope="module")
def track_pair(images):
    """A third official model whose object scores straddle 0 for the two objects clicked on frame 0."""
    pair = Pair("sam2.1_hiera_t", 256, seed=7)
    point_inputs = {"point_coords": torch.as_tensor(TRACK_COORDS), "point_labels": torch.as_tensor(TRACK_LABELS)}
    with torch.no_grad():
        first = pair.model.track_step(0, True, *official_frame(pair.model, images[0], 2), point_inputs, None,
                                      {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}, 3)
    pair.center_object_scores(first["object_score_logits"].numpy())
    return pair


def official_frame(model, image, batch):
    out = official_backbone(model, image[None])
    out["backbone_fpn"] = [x.expand(batch, -1, -1, -1) for x in out["backbone_fpn"]]
    out["vision_pos_enc"] = [x.expand(batch, -1, -1, -1) for x in out["vision_pos_enc"]]
    _, feats, pos, sizes = model._prepare_backbone_features(out)
    return feats, pos, sizes


def test_track_step_three_frames(track_pair, images):
    """Frame 0: a click per object (initial conditioning frame, multimask); frames 1 and 2 tracked from the memory
    of the frames before (memory attention, pointers, the memory encoder each time). The tracking frames run one
    compiled step (is_init_cond_frame traced)."""
    pair, m = track_pair, track_pair.model
    num_frames = 3
    frames = [official_frame(m, images[t], 2) for t in range(num_frames)]
    output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    point_inputs = {"point_coords": torch.as_tensor(TRACK_COORDS), "point_labels": torch.as_tensor(TRACK_LABELS)}
    refs = []
    with torch.no_grad():
        for t in range(num_frames):
            out = m.track_step(t, t == 0, *frames[t], point_inputs if t == 0 else None, None, output_dict, num_frames)
            output_dict["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = out
            refs.append(out)
    assert (refs[0]["object_score_logits"].numpy() > 0).any() and (refs[0]["object_score_logits"].numpy() <= 0).any()

    config, params = pair.config, pair.params
    capacity = S.memory_capacity(config, 1)
    compiled = track._cache_size()
    stored = {}
    for t in range(num_frames):
        backbone = forward_image(params, config, jnp.asarray(images[t][None]))
        if t == 0:  # an empty bank: the initial-frame branch is taken on device
            bank = S.empty_memory(config, 2, *capacity)
            out = track(params, config, backbone, jax.tree.map(jnp.asarray, bank), jnp.asarray(True),
                        jnp.asarray(TRACK_COORDS), jnp.asarray(TRACK_LABELS))
        else:
            plan = S.plan_memory(config, t, [0], [s for s in stored if s != 0], num_frames)
            bank = S.gather_memory(config, [plan] * 2, lambda b, s, c: (stored[s][0][b], stored[s][1][b]), *capacity)
            out = track(params, config, backbone, jax.tree.map(jnp.asarray, bank), jnp.asarray(False))
        stored[t] = (np.asarray(out["maskmem_features"]), np.asarray(out["obj_ptr"]))
        ref = refs[t]
        close(out["pred_masks"], ref["pred_masks"], f"frame {t} pred_masks")
        close(out["pred_masks_high_res"], ref["pred_masks_high_res"], f"frame {t} pred_masks_high_res")
        close(out["obj_ptr"], ref["obj_ptr"], f"frame {t} obj_ptr")
        close(out["object_score_logits"], ref["object_score_logits"], f"frame {t} object_score_logits")
        close(out["maskmem_features"], ref["maskmem_features"], f"frame {t} maskmem_features", nhwc=True)
    assert track._cache_size() == compiled + 2  # the prompted frame, and one step for both tracked frames


def test_mask_input_frame_then_tracking(track_pair, images):
    """add_new_mask's path: the mask is the output (use_mask_input_as_output_without_sam), its pointer from the
    SAM heads on the downsampled mask; one object's mask is empty (object absent). Then a tracked frame."""
    pair, m = track_pair, track_pair.model
    mask = np.zeros((2, 1, 256, 256), np.float32)
    mask[0, 0, 40:130, 60:200] = 1.0
    frames = [official_frame(m, images[t], 2) for t in range(2)]
    output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    with torch.no_grad():
        r0 = m.track_step(0, True, *frames[0], None, torch.as_tensor(mask), output_dict, 2)
        output_dict["cond_frame_outputs"][0] = r0
        r1 = m.track_step(1, False, *frames[1], None, None, output_dict, 2)
    config, params = pair.config, pair.params
    o0 = track(params, config, forward_image(params, config, jnp.asarray(images[0][None])), None,
               jnp.asarray(True), mask_inputs=jnp.asarray(mask))
    plan = S.plan_memory(config, 1, [0], [], 2)
    bank = S.gather_memory(config, [plan] * 2, lambda b, s, c: (np.asarray(o0["maskmem_features"][b]),
                                                                np.asarray(o0["obj_ptr"][b])),
                           *S.memory_capacity(config, 1))
    o1 = track(params, config, forward_image(params, config, jnp.asarray(images[1][None])),
               jax.tree.map(jnp.asarray, bank), jnp.asarray(False))
    for t, (o, r) in enumerate(((o0, r0), (o1, r1))):
        for k in ("pred_masks", "pred_masks_high_res", "obj_ptr", "object_score_logits"):
            close(o[k], r[k], f"frame {t} {k}")
        close(o["maskmem_features"], r["maskmem_features"], f"frame {t} maskmem_features", nhwc=True)


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


@pytest.mark.slow
def test_full_size_image_path():
    """sam2.1_hiera_t at 1024: backbone levels and position encodings, and the SAM heads on them."""
    pair = Pair("sam2.1_hiera_t", 1024, seed=9)
    image = np.random.default_rng(9).standard_normal((1, 1024, 1024, 3)).astype(np.float32)
    ref = official_backbone(pair.model, image)
    out = forward_image(pair.params, pair.config, jnp.asarray(image))
    for i, (a, r) in enumerate(zip(out["backbone_fpn"], ref["backbone_fpn"])):
        close(a, r, f"backbone_fpn[{i}]", nhwc=True)
    for i, (a, r) in enumerate(zip(out["vision_pos_enc"], ref["vision_pos_enc"])):
        close(a, r, f"vision_pos_enc[{i}]", nhwc=True)
    case = {"feats": ref["vision_features"].numpy().transpose(0, 2, 3, 1),
            "hr": [x.numpy().transpose(0, 2, 3, 1) for x in ref["backbone_fpn"][:2]],
            "coords": np.array([[[500.0, 400.0], [100.0, 900.0]]], np.float32),
            "labels": np.array([[1, 0]], np.int32)}
    compare_heads(pair, case, multimask=True)
