"""SAM 2 without the reference: config presets and validation, logical axes, the memory plan, bad input, and a
gradient through two frames of the memory path (tiny model)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from samjax import parallel as sharding
from samjax.models import sam2 as S
from tests.sam2.tiny import TINY, stand_in_params

# ------------------------------------------------------------------------------------------ config ---

def test_presets_match_the_official_yaml_sizes():
    t = S.Sam2Config.from_name("sam2.1_hiera_t")
    assert (t.embed_dim, t.stages, t.global_att_blocks, t.window_pos_embed_bkg_spatial_size) == \
        (96, (1, 2, 7, 2), (5, 7, 9), (7, 7))
    assert t.backbone_channel_list == (768, 384, 192, 96) and t.feature_strides == (4, 8, 16)
    assert t.q_pool_blocks == (1, 3, 10) and t.stage_ends == (0, 2, 9, 11) and t.grid_size == 64
    large = S.Sam2Config.from_name("sam2.1_hiera_large")  # the checkpoint spelling
    assert (large.embed_dim, large.num_heads, large.stages, large.window_spec) == (144, 2, (2, 6, 36, 4), (8, 4, 16, 8))
    bplus = S.Sam2Config.from_name("sam2_hiera_b+.yaml")
    assert bplus.window_pos_embed_bkg_spatial_size == (14, 14) and bplus.stages == (2, 3, 16, 3)
    assert not bplus.no_obj_embed_spatial and not bplus.add_tpos_enc_to_obj_ptrs  # SAM 2.0
    assert S.Sam2Config.from_name("sam2.1_hiera_b+").no_obj_embed_spatial
    assert S.Sam2Config.sam2_1_hiera_s() == S.Sam2Config.from_name("sam2.1_hiera_small")
    assert len({S.Sam2Config.from_name(n) for n in S.PRESETS}) == 8


def test_config_round_trip_and_errors():
    cfg = S.Sam2Config.from_name("sam2.1_hiera_t", image_size=512, dtype="bfloat16")
    d = cfg.to_dict()
    assert S.Sam2Config.from_dict(d) == cfg and isinstance(S.Sam2Config.from_dict(d).stages, tuple)
    assert S.Sam2Config.from_dict({**d, "stages": list(d["stages"])}) == cfg  # JSON gives lists
    with pytest.raises(ValueError, match="unknown Sam2Config fields"):
        S.Sam2Config.from_dict({**d, "embed_dims": 3})
    with pytest.raises(ValueError, match="unknown SAM 2 model 'sam2.1_hiera_xl'"):
        S.Sam2Config.from_name("sam2.1_hiera_xl")
    with pytest.raises(ValueError, match="window_spec .* one window size per stage"):
        S.Sam2Config(window_spec=(8, 4))
    with pytest.raises(ValueError, match="image_size \\(1000\\) must be a multiple of backbone_stride"):
        S.Sam2Config(image_size=1000)
    with pytest.raises(ValueError, match="global_att_blocks \\[30\\]"):
        S.Sam2Config(stages=(1, 2, 7, 2), global_att_blocks=(5, 30))


def test_every_param_has_vocabulary_axes():
    specs = S.param_logical_axes(TINY)
    shapes = S.abstract_params(TINY)
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    assert len(spec_leaves) == len(jax.tree.leaves(shapes))
    for spec, shape in zip(spec_leaves, jax.tree.leaves(shapes)):
        assert isinstance(spec, PartitionSpec) and len(spec) == len(shape.shape)
    sharding.check_axes(name for spec in spec_leaves for name in spec)
    assert specs["image_encoder"]["trunk"]["blocks_0"]["attn"]["qkv"]["kernel"] == PartitionSpec("embed", "qkv")
    assert specs["memory_attention"]["layers_0"]["cross_attn_image"]["k_proj"]["kernel"] == \
        PartitionSpec("memory_embed", "prompt_attn")


# ------------------------------------------------------------------------------------- memory plan ---

def test_plan_memory_forward_and_reverse():
    cfg = S.Sam2Config.from_name("sam2.1_hiera_t")
    plan = S.plan_memory(cfg, 10, cond_frames=[0], non_cond_frames=range(1, 10), num_frames=20)
    # the conditioning frame (tpos row 6), then frames 4..9 (t_pos 1..6 -> rows 5..0)
    assert plan.spatial == ((0, True, 6), (4, False, 5), (5, False, 4), (6, False, 3), (7, False, 2), (8, False, 1),
                            (9, False, 0))
    # pointers: the conditioning frame at distance 10, then frames 9..1 (15 at most), normalised by 16 - 1
    assert [p[0] for p in plan.pointers] == [0, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    assert plan.pointers[0][2] == pytest.approx(10 / 15) and plan.pointers[1][2] == pytest.approx(1 / 15)
    rev = S.plan_memory(cfg, 3, cond_frames=[8], non_cond_frames=[4, 5, 6, 7], num_frames=9, track_in_reverse=True)
    # frames 9 and 8 would be 6 and 5 steps back: 9 does not exist, 8 is the conditioning frame (already in)
    assert [s[0] for s in rev.spatial] == [8, 7, 6, 5, 4] and [s[2] for s in rev.spatial] == [6, 3, 2, 1, 0]
    # signed distance (2.1): a conditioning frame in the future of reverse tracking is at -(3 - 8) = +5 / (9 - 1)
    assert rev.pointers[0] == (8, True, pytest.approx(5 / 8))
    v20 = S.Sam2Config.from_name("sam2_hiera_t")
    past_only = S.plan_memory(v20, 3, cond_frames=[0, 8], non_cond_frames=[1, 2], num_frames=9)
    assert [p[0] for p in past_only.pointers] == [0, 2, 1]  # frame 8 is in the future: its pointer is left out


def test_gather_memory_fills_fixed_slots_and_refuses_overflow():
    cfg = TINY
    plan = S.plan_memory(cfg, 2, cond_frames=[0], non_cond_frames=[1], num_frames=4)
    g, m = cfg.grid_size, cfg.mem_dim

    def lookup(b, t, from_cond):
        return np.full((g, g, m), 10 * b + t, np.float32), np.full((cfg.d_model,), t, np.float32)

    bank = S.gather_memory(cfg, [plan, plan], lookup, *S.memory_capacity(cfg, 2))
    assert bank.features.shape == (2, 4, g, g, m) and bank.obj_ptrs.shape == (2, 5, cfg.d_model)
    assert bank.valid.tolist() == [[True, True, False, False]] * 2 and bank.tpos[0, :2].tolist() == [2, 0]
    assert bank.features[1, 1, 0, 0, 0] == 11 and bank.ptr_valid[0].tolist() == [True, True, False, False, False]
    with pytest.raises(ValueError, match="object 0 needs 2 spatial memories .* holds 1"):
        S.gather_memory(cfg, [plan], lookup, 1, 5)


# ------------------------------------------------------------------------------------- bad input ---

def test_bad_input_gets_clear_errors():
    params = stand_in_params(TINY)
    with pytest.raises(ValueError, match="expects \\(B, 64, 64, 3\\)"):
        S.forward_image(params, TINY, jnp.zeros((1, 32, 32, 3)))
    feats = jnp.zeros((1, 4, 4, 32))
    with pytest.raises(ValueError, match="mask_inputs must be \\(B, 1, H, W\\)"):
        S.forward_sam_heads(params, TINY, feats, None, mask_inputs=jnp.zeros((1, 16, 16)))
    with pytest.raises(ValueError, match="point labels must have shape \\(1, 2\\)"):
        S.forward_sam_heads(params, TINY, feats, None, jnp.zeros((1, 2, 2)), jnp.zeros((1, 3), jnp.int32))


# ------------------------------------------------------------------------------------- gradients ---

def test_gradient_flows_through_two_frames_of_memory():
    """Frame 0: clicks -> SAM heads -> memory encoder; frame 1: memory attention over that memory and pointer ->
    SAM heads. The loss reads frame 1 only, so non-zero gradients in the memory encoder and the pointer projection
    have come through the memory path. Training mode (memory-attention dropout on). The backbone features are given
    (random), to keep the compilation small: the trunk's backward pass is ordinary."""
    cfg = TINY
    params = stand_in_params(cfg)
    # objects present on both frames (a negative score would swap the pointer for the learned no-object one)
    head = params["sam_mask_decoder"]["pred_obj_score_head"]["layers_2"]
    params["sam_mask_decoder"]["pred_obj_score_head"]["layers_2"] = {**head, "bias": head["bias"] + 5.0}
    rng = np.random.default_rng(0)
    g, c = cfg.grid_size, cfg.d_model

    def backbone(seed):
        r = np.random.default_rng(seed)
        levels = [(4 * g, c // 8), (2 * g, c // 4), (g, c)]
        return {"backbone_fpn": [jnp.asarray(r.standard_normal((1, s, s, ch)), jnp.float32) for s, ch in levels],
                "vision_pos_enc": [jnp.asarray(r.standard_normal((1, s, s, c)), jnp.float32) for s, _ in levels]}

    frames = [backbone(1), backbone(2)]
    coords = jnp.asarray(rng.uniform(0, 64, (2, 1, 2)), jnp.float32)
    labels = jnp.ones((2, 1), jnp.int32)

    def loss(params, frames, key):
        out0 = S.track_step(params, cfg, frames[0], None, True, coords, labels, train=True)
        bank = S.MemoryBank(features=out0["maskmem_features"][:, None], tpos=jnp.full((2, 1), cfg.num_maskmem - 1),
                            valid=jnp.ones((2, 1), bool), obj_ptrs=out0["obj_ptr"][:, None],
                            ptr_pos=jnp.full((2, 1), 1 / 3), ptr_valid=jnp.ones((2, 1), bool))
        out1 = S.track_step(params, cfg, frames[1], bank, False, train=True, rngs={"dropout": key})
        return (jnp.mean(jax.nn.sigmoid(out1["pred_masks_high_res"])) + jnp.mean(out1["object_score_logits"])
                + jnp.mean(out1["obj_ptr"] ** 2))

    value, grads = jax.jit(jax.value_and_grad(loss))(params, frames, jax.random.key(0))
    assert np.isfinite(float(value))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(grads))

    def norm(tree):
        return float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))

    for name in ("memory_encoder", "memory_attention", "obj_ptr_proj", "obj_ptr_tpos_proj", "maskmem_tpos_enc",
                 "sam_mask_decoder"):
        assert norm(grads[name]) > 0, name
    assert norm(grads["image_encoder"]) == 0  # not used: the backbone features were given


def test_attention_in_query_blocks_equals_plain(monkeypatch):
    """Large attentions (memory attention at 1024) run their queries in blocks: the same outputs, masked keys
    included."""
    from samjax.models.sam2 import memory_attention as MA

    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in ((2, 32, 2, 8), (2, 40, 2, 8), (2, 40, 2, 8)))
    mask = jnp.asarray(rng.random((2, 40)) > 0.3)
    plain = MA.attend(q, k, v, mask)
    monkeypatch.setattr(MA, "BLOCK_ABOVE", 0)
    monkeypatch.setattr(MA, "QUERY_BLOCK", 8)
    np.testing.assert_allclose(MA.attend(q, k, v, mask), plain, atol=1e-6)

