"""The memory a SAM 2 tracking step reads, as fixed-size buffers with validity masks, and the official choice of
which stored frames fill them.

Official: SAM2Base._prepare_memory_conditioned_features concatenates a variable number of memories: the
conditioning frames' (all, or the `max_cond_frames_in_attn` closest), the `num_maskmem - 1` previous frames'
(every `memory_temporal_stride_for_eval`-th), and up to `max_obj_ptrs_in_encoder` object pointers. Here that choice
is made on the host (`plan_memory`, plain Python on frame indices) and the memories go into a `MemoryBank` of
static shape, padded and masked, so one compiled step serves every frame. Memory attention gives invalid slots
exactly zero weight, and the order of slots does not matter (attention is invariant to permuting keys; every
spatial slot gets the same RoPE), so the result is the official one.

MemoryBank, for B objects tracked together (each object has its own prompts, so its own valid slots):
    features   (B, S, g, g, mem_dim)  spatial memories (`maskmem_features` of the chosen frames)
    tpos       (B, S) int32           row of `maskmem_tpos_enc` added to each slot (num_maskmem - t_pos - 1;
                                      conditioning frames have t_pos 0)
    valid      (B, S) bool
    obj_ptrs   (B, P, d_model)        object pointers of the chosen frames
    ptr_pos    (B, P) float32         their temporal distance divided by (min(num_frames, max_obj_ptrs) - 1): the
                                      input of the 1-D sine encoding
    ptr_valid  (B, P) bool
S = (conditioning frames kept) + num_maskmem - 1 and P = (conditioning frames kept) + max_obj_ptrs_in_encoder - 1
(`memory_capacity`). At 1024 with 7 memories and 16 pointers a bank of S = 8 holds 8 x 64 x 64 x 64 floats
(8 MB float32) per object. The image features themselves are not part of the bank.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import flax
import jax
import numpy as np

from samjax.models.sam2.config import Sam2Config


@flax.struct.dataclass
class MemoryBank:
    features: jax.Array
    tpos: jax.Array
    valid: jax.Array
    obj_ptrs: jax.Array
    ptr_pos: jax.Array
    ptr_valid: jax.Array

    @property
    def num_spatial(self) -> int:
        return self.features.shape[1]

    @property
    def num_ptrs(self) -> int:
        return self.obj_ptrs.shape[1]


def memory_capacity(config: Sam2Config, max_cond_frames: int = 1) -> tuple[int, int]:
    """(S, P) slots for up to `max_cond_frames` conditioning frames in attention (config.max_cond_frames_in_attn
    caps it when set): S spatial memories and P object pointers."""
    cond = max_cond_frames if config.max_cond_frames_in_attn == -1 else min(max_cond_frames,
                                                                              config.max_cond_frames_in_attn)
    spatial = cond + max(config.num_maskmem - 1, 0)
    ptrs = cond + config.max_obj_ptrs_in_encoder - 1 if config.use_obj_ptrs_in_encoder else 0
    return spatial, ptrs


def empty_memory(config: Sam2Config, batch: int, num_spatial: int, num_ptrs: int, dtype=np.float32) -> MemoryBank:
    """A bank with no valid slot (numpy; jnp.asarray it, or let jit take it)."""
    g = config.grid_size
    return MemoryBank(features=np.zeros((batch, num_spatial, g, g, config.mem_dim), dtype),
                      tpos=np.zeros((batch, num_spatial), np.int32), valid=np.zeros((batch, num_spatial), bool),
                      obj_ptrs=np.zeros((batch, num_ptrs, config.d_model), dtype),
                      ptr_pos=np.zeros((batch, num_ptrs), np.float32), ptr_valid=np.zeros((batch, num_ptrs), bool))


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Which stored outputs one tracking step of one object reads, in the official order.
    spatial: (frame index, from the conditioning outputs?, tpos row); pointers: (frame index, from the conditioning
    outputs?, normalised temporal position)."""

    spatial: tuple[tuple[int, bool, int], ...]
    pointers: tuple[tuple[int, bool, float], ...]


def select_closest_cond_frames(frame_idx: int, cond_frames: Sequence[int], max_cond_frames: int
                               ) -> tuple[list[int], list[int]]:
    """sam2_utils.select_closest_cond_frames on frame indices (in the conditioning outputs' insertion order):
    (selected, unselected)."""
    cond = list(cond_frames)
    if max_cond_frames == -1 or len(cond) <= max_cond_frames:
        return cond, []
    selected = []
    before = max((t for t in cond if t < frame_idx), default=None)
    if before is not None:
        selected.append(before)
    after = min((t for t in cond if t >= frame_idx), default=None)
    if after is not None:
        selected.append(after)
    rest = sorted((t for t in cond if t not in selected), key=lambda t: abs(t - frame_idx))
    selected += rest[:max_cond_frames - len(selected)]
    return selected, [t for t in cond if t not in selected]


def plan_memory(config: Sam2Config, frame_idx: int, cond_frames: Sequence[int], non_cond_frames: Sequence[int],
                num_frames: int, track_in_reverse: bool = False, train: bool = False) -> MemoryPlan:
    """The memories SAM2Base._prepare_memory_conditioned_features attends to on a non-initial frame.

    cond_frames: frames with conditioning outputs (prompted frames), in insertion order (only ties in the closest-
    frame choice depend on it); non_cond_frames: frames with tracked (non-conditioning) outputs."""
    cond_selected, cond_unselected = select_closest_cond_frames(frame_idx, cond_frames, config.max_cond_frames_in_attn)
    non_cond, unselected = set(non_cond_frames), set(cond_unselected)
    n = config.num_maskmem
    spatial = [(t, True, n - 1) for t in cond_selected]
    stride = 1 if train else config.memory_temporal_stride_for_eval
    for t_pos in range(1, n):
        t_rel = n - t_pos
        if t_rel == 1:
            prev = frame_idx + 1 if track_in_reverse else frame_idx - 1
        elif not track_in_reverse:
            prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
        else:
            prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
        if prev in non_cond:
            spatial.append((prev, False, n - t_pos - 1))
        elif prev in unselected:
            spatial.append((prev, True, n - t_pos - 1))

    pointers = []
    if config.use_obj_ptrs_in_encoder:
        max_ptrs = min(num_frames, config.max_obj_ptrs_in_encoder)
        if not train and config.only_obj_ptrs_in_the_past_for_eval:
            ptr_cond = [t for t in cond_selected if (t >= frame_idx if track_in_reverse else t <= frame_idx)]
        else:
            ptr_cond = cond_selected
        sign = -1 if track_in_reverse else 1
        raw = [(t, True, (frame_idx - t) * sign if config.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t))
               for t in ptr_cond]
        for t_diff in range(1, max_ptrs):
            t = frame_idx + t_diff if track_in_reverse else frame_idx - t_diff
            if t < 0 or t >= num_frames:
                break
            if t in non_cond:
                raw.append((t, False, t_diff))
            elif t in unselected:
                raw.append((t, True, t_diff))
        # Officially pos / (max_ptrs - 1), in float32; a 1-frame video would divide by zero: keep the distance.
        t_diff_max = np.float32(max(max_ptrs - 1, 1))
        pointers = [(t, c, float(np.float32(p) / t_diff_max)) for t, c, p in raw]
    return MemoryPlan(tuple(spatial), tuple(pointers))


def gather_memory(config: Sam2Config, plans: Sequence[MemoryPlan], lookup: Callable[[int, int, bool], tuple],
                  num_spatial: int, num_ptrs: int, dtype=np.float32) -> MemoryBank:
    """A MemoryBank (numpy) for B = len(plans) objects. lookup(object index, frame, from_cond) -> (maskmem_features
    (g, g, mem_dim), obj_ptr (d_model,)) of that stored output. Raises if a plan needs more slots than given."""
    bank = empty_memory(config, len(plans), num_spatial, num_ptrs, dtype)
    for b, plan in enumerate(plans):
        if len(plan.spatial) > num_spatial or len(plan.pointers) > num_ptrs:
            raise ValueError(f"object {b} needs {len(plan.spatial)} spatial memories and {len(plan.pointers)} object "
                             f"pointers, but the bank holds {num_spatial} and {num_ptrs}: make it larger "
                             "(memory_capacity with more conditioning frames)")
        for i, (t, from_cond, row) in enumerate(plan.spatial):
            bank.features[b, i] = np.asarray(lookup(b, t, from_cond)[0], dtype)
            bank.tpos[b, i], bank.valid[b, i] = row, True
        for i, (t, from_cond, pos) in enumerate(plan.pointers):
            bank.obj_ptrs[b, i] = np.asarray(lookup(b, t, from_cond)[1], dtype)
            bank.ptr_pos[b, i], bank.ptr_valid[b, i] = pos, True
    return bank
