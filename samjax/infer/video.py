"""Sam2VideoPredictor: SAM 2's video predictor (sam2.sam2_video_predictor.SAM2VideoPredictor) in JAX.

    predictor = samjax.infer.video.load("sam2.1_hiera_tiny.pt")        # or a converted directory
    state = predictor.init_state("frames/")                             # a folder of JPEGs, or (T, H, W, 3) uint8
    predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=[[210, 350]], labels=[1])
    predictor.add_new_points_or_box(state, frame_idx=0, obj_id=2, box=[300, 0, 500, 400])
    for frame_idx, obj_ids, mask_logits in predictor.propagate_in_video(state):
        masks = mask_logits > 0                                         # (num_objects, 1, H, W)

The official calls and their semantics: prompts on a frame not yet tracked make it an initial conditioning frame
(segmented like an image, no memory); prompts on a tracked frame correct it using its memory and previous logits;
`propagate_in_video` first encodes the memories of the prompted frames, then tracks every object through the frames
(forward, or `reverse=True`), returning the prompted frames' outputs as they are.

How it runs:
- Frames are streamed: read (JPEG) or taken from the array one at a time, resized on the host to S x S exactly as
  the official loader does (PIL bicubic on uint8), normalised on device; the last frame's features are cached.
- Every object's outputs per frame (low-res logits, object pointer, score, and the memory features, stored in
  bfloat16 as officially) stay on device (on the host with `offload_state_to_cpu=True`).
- Each tracked frame is ONE compiled call for all objects together: memory attention over a fixed-size bank
  (samjax.models.sam2.MemoryBank: spatial slots and pointer slots with validity masks, filled from the stored
  outputs by the official choice of frames, `plan_memory`), the SAM heads and the memory encoder. The bank's
  capacity grows (by powers of two) only when an object gets more conditioning frames, and the object count is
  padded to a power of two, so a video compiles the step once.

Differences from the official 1.1.0 code, all deliberate:
- Objects are tracked in one batch (officially one at a time); each object still has its own memory, and the
  memory encoder's non-overlap option is not applied across objects (officially a batch of one makes it a no-op).
- Hole filling (`fill_hole_area`, officially a CUDA kernel that is skipped with a warning without it) runs on the
  host with scipy's 8-connected components; with it 0 (apply_postprocessing=False) the results are the same.
- `clear_non_cond_mem_around_input=True` clears the object's tracked memories around a prompted frame (the
  official code calls a method that does not exist in 1.1.0).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from tqdm import tqdm

from samjax import transforms as T
from samjax.infer import sam2 as image_predictor
from samjax.infer.predictor import bucket
from samjax.infer.validate import check_variables
from samjax.models import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, IGNORE
from samjax.models import sam2 as S
from samjax.models.sam2.layers import resize_bilinear
from samjax.models.sam2.sam2 import non_overlapping

f32, bf16 = jnp.float32, jnp.bfloat16
JPEG_SUFFIXES = (".jpg", ".jpeg", ".JPG", ".JPEG")
NO_OBJ_SCORE = S.NO_OBJ_SCORE
LOGIT_CLAMP = image_predictor.LOGIT_CLAMP


# ---------------------------------------------------------------------------------------------- frames ---

class VideoFrames:
    """The frames of a video, read one at a time: a folder of JPEGs ("<index>.jpg", sorted by index as officially)
    or a (T, H, W, 3) uint8 array / a list of (H, W, 3) uint8 arrays. `frame(t)` is the S x S uint8 model input
    (PIL bicubic resize, the official loader's), `original(t)` the frame as it is. Every frame must have one size."""

    def __init__(self, source, image_size: int, cache: int = 2):
        self.image_size = image_size
        if isinstance(source, (str, os.PathLike)):
            folder = Path(source)
            if not folder.is_dir():
                raise FileNotFoundError(f"no folder {str(folder)!r}: init_state takes a folder of JPEG frames "
                                        "(<index>.jpg) or a (T, H, W, 3) uint8 array")
            names = [p for p in folder.iterdir() if p.suffix in JPEG_SUFFIXES]
            if not names:
                raise ValueError(f"no JPEG frames (*.jpg, *.jpeg) in {str(folder)!r}")
            numeric = all(p.stem.isdigit() for p in names)
            self.paths = sorted(names, key=lambda p: (int(p.stem), p.name) if numeric else (0, p.name))
            sizes = []
            for p in self.paths:
                with Image.open(p) as im:  # reads the header only
                    sizes.append((im.height, im.width))
            self._frames = None
        else:
            frames = list(source) if not isinstance(source, np.ndarray) or source.ndim != 4 else source
            if len(frames) == 0:
                raise ValueError("the video has no frames")
            for i, f in enumerate(frames):
                if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 3 or f.shape[-1] != 3:
                    raise ValueError(f"frame {i} must be an (H, W, 3) uint8 RGB array, got "
                                     f"{getattr(f, 'shape', type(f).__name__)} {getattr(f, 'dtype', '')}")
            self.paths, self._frames = None, frames
            sizes = [tuple(f.shape[:2]) for f in frames]
        bad = [i for i, s in enumerate(sizes) if s != sizes[0]]
        if bad:
            name = (lambda i: self.paths[i].name) if self.paths else (lambda i: f"frame {i}")
            raise ValueError(f"frames of different sizes: {name(bad[0])} is {sizes[bad[0]][1]}x{sizes[bad[0]][0]}, "
                             f"{name(0)} is {sizes[0][1]}x{sizes[0][0]} (width x height); a video needs one size")
        self.height, self.width = sizes[0]
        self.frame = functools.lru_cache(maxsize=cache)(self._frame)

    def __len__(self) -> int:
        return len(self.paths) if self.paths is not None else len(self._frames)

    def original(self, t: int) -> np.ndarray:
        """Frame t as (H, W, 3) uint8 RGB."""
        if self.paths is None:
            return self._frames[t]
        with Image.open(self.paths[t]) as im:
            return np.asarray(im.convert("RGB"))

    def _frame(self, t: int) -> np.ndarray:
        """Frame t resized to (S, S, 3) uint8 (PIL's default bicubic, as sam2.utils.misc._load_img_as_tensor)."""
        s = self.image_size
        if self.paths is None:
            return np.asarray(Image.fromarray(self._frames[t]).resize((s, s)))
        with Image.open(self.paths[t]) as im:
            return np.asarray(im.convert("RGB").resize((s, s)))


# -------------------------------------------------------------------------------------- state and outputs ---

@dataclasses.dataclass
class FrameOutput:
    """One object's output on one frame. pred_masks (1, 4g, 4g) float32 low-res logits, obj_ptr (C,) float32,
    object_score_logits (1,), maskmem (g, g, mem_dim) bfloat16 (None until encoded). Device or host arrays."""

    pred_masks: object
    obj_ptr: object
    object_score_logits: object
    maskmem: object = None


class InferenceState:
    """What `init_state` returns and every call takes: the frames, the objects, their prompts and outputs."""

    def __init__(self, frames: VideoFrames, offload_state_to_cpu: bool):
        self.frames = frames
        self.num_frames = len(frames)
        self.video_height, self.video_width = frames.height, frames.width
        self.offload_state_to_cpu = offload_state_to_cpu
        self.obj_id_to_idx: OrderedDict = OrderedDict()
        self.obj_ids: list = []
        self.point_inputs: list[dict] = []      # per object: frame -> (coords (1, N, 2) f32 in S x S, labels (1, N))
        self.mask_inputs: list[dict] = []       # per object: frame -> (1, 1, S, S) f32
        self.outputs: list[dict] = []           # per object: {"cond": {frame: FrameOutput}, "non_cond": {...}}
        self.temp_outputs: list[dict] = []      # per object, prompted outputs before propagate_in_video
        self.frames_tracked: list[dict] = []    # per object: frame -> {"reverse": bool}
        self.cached_features: dict = {}         # frame -> backbone (the last frame only)

    def obj_idx(self, obj_id, create: bool = True) -> int:
        """The model-side index of a client object id; new ids get the next index (officially always allowed)."""
        if obj_id in self.obj_id_to_idx:
            return self.obj_id_to_idx[obj_id]
        if not create:
            raise KeyError(f"object id {obj_id!r} was never prompted; known object ids: {self.obj_ids}")
        idx = len(self.obj_id_to_idx)
        self.obj_id_to_idx[obj_id] = idx
        self.obj_ids = list(self.obj_id_to_idx)
        for per_obj in (self.point_inputs, self.mask_inputs, self.frames_tracked):
            per_obj.append({})
        self.outputs.append({"cond": {}, "non_cond": {}})
        self.temp_outputs.append({"cond": {}, "non_cond": {}})
        return idx

    @property
    def num_objects(self) -> int:
        return len(self.obj_ids)

    def check_frame(self, frame_idx, what: str = "frame_idx") -> int:
        if not isinstance(frame_idx, (int, np.integer)) or isinstance(frame_idx, bool):
            raise TypeError(f"{what} must be an int, got {type(frame_idx).__name__}")
        if not 0 <= frame_idx < self.num_frames:
            raise IndexError(f"{what} {frame_idx} is out of range: the video has {self.num_frames} frames "
                             f"(0..{self.num_frames - 1})")
        return int(frame_idx)


def _require_state(state) -> InferenceState:
    if not isinstance(state, InferenceState):
        raise TypeError(f"expected the inference state of predictor.init_state(video), got {type(state).__name__}: "
                         "call state = predictor.init_state(frames) first and pass it to every call")
    return state


# ------------------------------------------------------------------------------------------ jitted bodies ---

@jax.jit
def _normalize(frame, mean, std):
    """(S, S, 3) uint8 -> (1, S, S, 3) float32: / 255, then (x - mean) / std (the official loader's order)."""
    return ((frame.astype(f32) / 255.0 - mean) / std)[None]


def _bank(config: S.Sam2Config, mems, tpos, valid, ptrs, ptr_pos, ptr_valid) -> S.MemoryBank:
    """A MemoryBank from per-slot arrays (tuples of B x S memories (g, g, mem_dim) and B x P pointers (C,))."""
    b, s = tpos.shape
    g = config.grid_size
    features = jnp.stack(mems).reshape(b, s, g, g, config.mem_dim)
    obj_ptrs = jnp.stack(ptrs).reshape(b, ptr_pos.shape[1], config.d_model) if ptrs else \
        jnp.zeros((b, 0, config.d_model), f32)
    return S.MemoryBank(features, tpos, valid, obj_ptrs, ptr_pos, ptr_valid)


def _compact(out: dict) -> tuple:
    return out["pred_masks"], out["obj_ptr"], out["object_score_logits"]


@functools.partial(jax.jit, static_argnames=("config",))
def _track(params, backbone, bank_args, *, config: S.Sam2Config):
    """One tracked frame for B objects: memory attention over each object's bank, SAM heads without prompts, the
    memory encoder. -> (pred_masks (B, 1, 4g, 4g), obj_ptr (B, C), scores (B, 1), maskmem (B, g, g, m) bf16)."""
    out = S.track_step(params, config, backbone, _bank(config, *bank_args), False, run_mem_encoder=True)
    return (*_compact(out), out["maskmem_features"].astype(bf16))


@functools.partial(jax.jit, static_argnames=("config",))
def _prompt(params, backbone, bank_args, is_init_cond_frame, coords, labels, prev_logits, prev_valid, *,
            config: S.Sam2Config):
    """A click / box prompt on one object (B = 1): an initial conditioning frame (no memory) or a correction of a
    tracked frame (memory attention over its bank), with the previous low-res logits (1, 1, 4g, 4g) where
    prev_valid (1,). Both flags are traced: one compile for first clicks and corrections. No memory encoding
    (that waits for propagate_in_video)."""
    out = S.track_step(params, config, backbone, _bank(config, *bank_args), is_init_cond_frame, coords, labels,
                       prev_sam_mask_logits=prev_logits, run_mem_encoder=False, prev_valid=prev_valid)
    return _compact(out)


@functools.partial(jax.jit, static_argnames=("config",))
def _mask_prompt(params, backbone, mask, *, config: S.Sam2Config):
    """A mask prompt (1, 1, S, S) 0/1 on one object: the mask is the output (use_mask_input_as_output_without_sam),
    its pointer from the SAM heads."""
    out = S.track_step(params, config, backbone, None, True, mask_inputs=mask, run_mem_encoder=False)
    return _compact(out)


@functools.partial(jax.jit, static_argnames=("config",))
def _encode_memory(params, backbone, pred_masks, scores, *, config: S.Sam2Config):
    """The memory of prompted outputs (propagate_in_video_preflight): low-res logits (B, 1, 4g, 4g) upsampled to
    S x S (bilinear), is_mask_from_pts=True -> (B, g, g, m) bf16."""
    s = config.image_size
    high = resize_bilinear(pred_masks, (s, s))
    pix = jnp.broadcast_to(backbone["backbone_fpn"][-1], (pred_masks.shape[0], *backbone["backbone_fpn"][-1].shape[1:]))
    feats, _ = S.encode_new_memory(params, config, pix, high, scores, True)
    return feats.astype(bf16)


@functools.partial(jax.jit, static_argnames=("size",))
def _resize_mask(mask, tiles_h, tiles_w, *, size: int):
    """add_new_mask's resize of an (H, W) mask to S x S: bilinear with antialias, then >= 0.5."""
    x = T.resize_with_tiles(mask.astype(f32), tiles_h, tiles_w)[:size, :size]
    return (x >= 0.5).astype(f32)[None, None]


@functools.partial(jax.jit, static_argnames=("size", "non_overlap"))
def _video_res(low_res, tiles_h, tiles_w, *, size: tuple[int, int], non_overlap: bool):
    """Low-res logits (N, 1, 4g, 4g) -> (N, 1, H, W) at the video size (bilinear), optionally non-overlapping."""
    x = T.resize_with_tiles(low_res, tiles_h, tiles_w)[..., :size[0], :size[1]]
    return non_overlapping(x) if non_overlap else x


# ------------------------------------------------------------------------------------------- predictor ---

class Sam2VideoPredictor:
    """SAM2VideoPredictor in JAX: `init_state`, prompts, `propagate_in_video`. Options as the official
    constructor's (fill_hole_area, non_overlap_masks, clear_non_cond_mem_around_input,
    add_all_frames_to_correct_as_cond)."""

    def __init__(self, config: S.Sam2Config, params: dict, fill_hole_area: int = 0, non_overlap_masks: bool = False,
                 clear_non_cond_mem_around_input: bool = False, add_all_frames_to_correct_as_cond: bool = False):
        check_variables(params, S.abstract_params(config), "Sam2Config")
        if config.num_maskmem < 1 or not config.use_mask_input_as_output_without_sam:
            raise ValueError("the video predictor needs num_maskmem >= 1 and use_mask_input_as_output_without_sam "
                             "(as every official config)")
        # Objects are batched; officially each is its own batch of one, where the non-overlap constraint of the
        # memory encoder does nothing.
        self.config = config.replace(non_overlap_masks_for_mem_enc=False)
        self.image_size = config.image_size
        self.fill_hole_area = fill_hole_area
        self.non_overlap_masks = non_overlap_masks
        self.clear_non_cond_mem_around_input = clear_non_cond_mem_around_input
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
        # Everything the compiled calls take is committed to one device: a call's cache key includes whether each
        # argument is committed, so mixing (orbax-restored params are committed, numpy ones not) would recompile.
        self.device = jax.devices()[0]
        self.params = jax.device_put(params, self.device)
        # the tracking calls take everything but the image encoder (fewer leaves to pass on every frame)
        self.track_params = {k: v for k, v in self.params.items() if k != "image_encoder"}
        self.encoder_params = image_predictor.encoder_params(self.params)
        self.mean, self.std = image_predictor.normalisation(config)
        g = config.grid_size
        self._zero_mem = jax.device_put(np.zeros((g, g, config.mem_dim), jnp.bfloat16), self.device)
        self._zero_ptr = jax.device_put(np.zeros((config.d_model,), np.float32), self.device)
        g4 = config.mask_input_size
        self._zero_logits = jax.device_put(np.zeros((1, 1, g4, g4), np.float32), self.device)

    # --- state
    def init_state(self, video_path, offload_video_to_cpu: bool = False, offload_state_to_cpu: bool = False,
                   async_loading_frames: bool = False) -> InferenceState:
        """A new inference state for a video: a folder of JPEG frames, or a (T, H, W, 3) uint8 array (or list of
        frames). Frames are always read on demand and stay on the host (offload_video_to_cpu and
        async_loading_frames are accepted for the official signature); offload_state_to_cpu keeps the per-frame
        outputs on the host. Computes frame 0's features, as officially."""
        state = InferenceState(VideoFrames(video_path, self.image_size), offload_state_to_cpu)
        self._features(state, 0)
        return state

    def reset_state(self, state: InferenceState) -> None:
        """Remove every prompt, output and object."""
        state = _require_state(state)
        state.obj_id_to_idx.clear()
        state.obj_ids = []
        for per_obj in (state.point_inputs, state.mask_inputs, state.outputs, state.temp_outputs,
                        state.frames_tracked):
            per_obj.clear()

    def _features(self, state: InferenceState, t: int) -> dict:
        """forward_image of frame t (batch 1), cached for the most recent frame."""
        if t not in state.cached_features:
            x = _normalize(state.frames.frame(t), self.mean, self.std)
            backbone = image_predictor.encode_backbone(self.encoder_params, x,
                                                       config=image_predictor.encoder_config(self.config))
            state.cached_features = {t: {k: backbone[k] for k in ("backbone_fpn", "vision_pos_enc")}}
        return state.cached_features[t]

    def _store(self, state: InferenceState, x):
        return np.asarray(x) if state.offload_state_to_cpu else x

    # --- memory banks
    def _capacity(self, state: InferenceState) -> tuple[int, int]:
        n_cond = max([len(o["cond"]) for o in state.outputs] + [1])
        # exactly one conditioning slot for the usual single prompted frame (a spare one would cost 1/8 of the
        # memory attention); more prompted frames grow the bank by powers of two, each size compiled once
        return S.memory_capacity(self.config, bucket(n_cond))

    def _bank_args(self, state: InferenceState, objs: Sequence[int | None], frame: int, reverse: bool,
                   capacity: tuple[int, int]):
        """Bank slots for one row per entry of `objs` (None: a padding row), from the stored (consolidated) outputs:
        (memories tuple, tpos, valid, pointers tuple, ptr_pos, ptr_valid)."""
        num_s, num_p = capacity
        b = len(objs)
        mems, ptrs = [self._zero_mem] * (b * num_s), [self._zero_ptr] * (b * num_p)
        tpos, valid = np.zeros((b, num_s), np.int32), np.zeros((b, num_s), bool)
        ptr_pos, ptr_valid = np.zeros((b, num_p), np.float32), np.zeros((b, num_p), bool)
        for row, obj in enumerate(objs):
            if obj is None:
                valid[row, 0] = True  # a zero memory: keeps the padding row's attention finite
                continue
            out = state.outputs[obj]
            plan = S.plan_memory(self.config, frame, list(out["cond"]), list(out["non_cond"]), state.num_frames,
                                 reverse)
            if len(plan.spatial) > num_s or len(plan.pointers) > num_p:  # pragma: no cover - capacity is sized
                raise RuntimeError("memory bank too small for the plan")
            for i, (t, from_cond, row_t) in enumerate(plan.spatial):
                mems[row * num_s + i] = out["cond" if from_cond else "non_cond"][t].maskmem
                tpos[row, i], valid[row, i] = row_t, True
            for i, (t, from_cond, pos) in enumerate(plan.pointers):
                ptrs[row * num_p + i] = out["cond" if from_cond else "non_cond"][t].obj_ptr
                ptr_pos[row, i], ptr_valid[row, i] = pos, True
            if not valid[row].any():
                valid[row, 0] = True
        if state.offload_state_to_cpu:  # host copies go up in one transfer (and the call sees device arrays only)
            mems, ptrs = jax.device_put((mems, ptrs), self.device)
        return tuple(mems), tpos, valid, tuple(ptrs), ptr_pos, ptr_valid

    # --- outputs
    def _fill_holes(self, low_res):
        """fill_hole_area: background components of the low-res logits up to that area -> 0.1 (officially a CUDA
        kernel; here scipy on the host)."""
        if self.fill_hole_area <= 0:
            return low_res
        low = np.asarray(low_res)
        return image_predictor.fill_small_regions(low, low <= 0, self.fill_hole_area, 0.1)

    def _video_res_masks(self, state: InferenceState, low_res) -> np.ndarray:
        h, w = state.video_height, state.video_width
        n = low_res.shape[-1]
        out = _video_res(jax.device_put(low_res, self.device), image_predictor.upsample_tiles(n, h),
                         image_predictor.upsample_tiles(n, w), size=(h, w), non_overlap=self.non_overlap_masks)
        return np.asarray(out)

    def _consolidated(self, state: InferenceState, frame: int, is_cond: bool) -> np.ndarray:
        """Every object's mask logits on `frame` at the video size (N, 1, H, W): its newest prompted output, else
        its stored output, else NO_OBJ_SCORE (_consolidate_temp_output_across_obj + _get_orig_video_res_output)."""
        key = "cond" if is_cond else "non_cond"
        g4 = self.config.mask_input_size
        rows = []
        for obj in range(state.num_objects):
            out = (state.temp_outputs[obj][key].get(frame) or state.outputs[obj]["cond"].get(frame)
                   or state.outputs[obj]["non_cond"].get(frame))
            rows.append(jnp.full((1, g4, g4), NO_OBJ_SCORE, f32) if out is None else jnp.asarray(out.pred_masks))
        return self._video_res_masks(state, jnp.stack(rows))

    # --- prompts
    def add_new_points_or_box(self, inference_state, frame_idx, obj_id, points=None, labels=None,
                              clear_old_points: bool = True, normalize_coords: bool = True, box=None):
        """Clicks (points (N, 2) (x, y) pixels, labels (N,) 1 fg / 0 bg) and/or a box (4,) XYXY on one object of
        one frame. -> (frame_idx, obj_ids, mask logits of every object on that frame (N_obj, 1, H, W))."""
        state = _require_state(inference_state)
        frame = state.check_frame(frame_idx)
        if (points is None) != (labels is None):
            raise ValueError("points and labels must be provided together")
        if points is None and box is None:
            raise ValueError("at least one of points or box must be provided as input")
        pts = np.zeros((0, 2), np.float32) if points is None else np.asarray(points, np.float32)
        lbl = np.zeros((0,), np.int32) if labels is None else np.asarray(labels)
        if pts.ndim == 3 and pts.shape[0] == 1:
            pts = pts[0]
        if lbl.ndim == 2 and lbl.shape[0] == 1:
            lbl = lbl[0]
        if pts.ndim != 2 or pts.shape[-1] != 2 or lbl.shape != pts.shape[:1]:
            raise ValueError(f"points must be (N, 2) (x, y) and labels (N,), got {pts.shape} and {lbl.shape}")
        if not np.isin(lbl, (0, 1)).all():
            raise ValueError(f"labels must be 1 (foreground) or 0 (background), got {sorted(set(lbl.tolist()))}")
        lbl = lbl.astype(np.int32)
        if box is not None:
            if not clear_old_points:
                raise ValueError("cannot add box without clearing old points, since box prompt must be provided "
                                 "before any point prompt (please use clear_old_points=True instead)")
            b = np.asarray(box, np.float32).reshape(-1)
            if b.shape != (4,) or b[2] < b[0] or b[3] < b[1]:
                raise ValueError(f"box must be (4,) XYXY with x0 <= x1 and y0 <= y1, got {np.asarray(box).tolist()}")
            pts = np.concatenate([b.reshape(2, 2), pts])
            lbl = np.concatenate([np.array([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], np.int32), lbl])
        if not np.isfinite(pts).all():
            raise ValueError("points / box contain NaN or infinite values")
        bounds = np.array([state.video_width, state.video_height] if normalize_coords else [1, 1], np.float32)
        if (pts < 0).any() or (pts > bounds).any():
            raise ValueError(f"points / box {pts[((pts < 0) | (pts > bounds)).any(1)][:3].tolist()} lie outside the "
                             f"{bounds[0]:g}x{bounds[1]:g} (width x height) frame; coordinates are (x, y)")
        if normalize_coords:
            pts = pts / bounds
        pts = (pts * np.float32(self.image_size))[None]
        obj = state.obj_idx(obj_id)
        old = None if clear_old_points else state.point_inputs[obj].get(frame)
        if old is not None:
            pts, lbl = np.concatenate([old[0], pts], 1), np.concatenate([old[1], lbl[None]], 1)
        else:
            lbl = lbl[None]
        state.point_inputs[obj][frame] = (pts, lbl)
        state.mask_inputs[obj].pop(frame, None)

        is_init, reverse, is_cond, key = self._frame_role(state, obj, frame)
        prev = (state.temp_outputs[obj][key].get(frame) or state.outputs[obj]["cond"].get(frame)
                or state.outputs[obj]["non_cond"].get(frame))
        prev_logits = self._zero_logits if prev is None else \
            jnp.clip(jax.device_put(prev.pred_masks, self.device)[None], -LOGIT_CLAMP, LOGIT_CLAMP)
        coords, labels = self._tokens(pts, lbl)
        bank = self._bank_args(state, [None] if is_init else [obj], frame, reverse, self._capacity(state))
        low, ptr, score = _prompt(self.track_params, self._features(state, frame), bank, np.array(is_init), coords,
                                  labels, prev_logits, np.array([prev is not None]), config=self.config)
        state.temp_outputs[obj][key][frame] = self._output(state, low, ptr, score, 0)
        return frame, list(state.obj_ids), self._consolidated(state, frame, is_cond)

    def add_new_points(self, *args, **kwargs):
        """Deprecated officially: use add_new_points_or_box."""
        return self.add_new_points_or_box(*args, **kwargs)

    def add_new_mask(self, inference_state, frame_idx, obj_id, mask):
        """A mask (H, W) bool (any size; resized to S x S with antialiasing and thresholded at 0.5) as one object's
        prompt on one frame: it becomes the output there. -> (frame_idx, obj_ids, mask logits (N_obj, 1, H, W))."""
        state = _require_state(inference_state)
        frame = state.check_frame(frame_idx)
        m = np.asarray(mask)
        if m.ndim != 2 or min(m.shape) < 1:
            raise ValueError(f"mask must be a 2-D (H, W) array, got shape {m.shape}")
        m = m.astype(bool)  # officially torch.tensor(mask, dtype=torch.bool): any non-zero value is foreground
        s = self.image_size
        if m.shape != (s, s):
            m = _resize_mask(m.astype(np.float32), image_predictor.square_resize_tiles(m.shape[0], s),
                             image_predictor.square_resize_tiles(m.shape[1], s), size=s)
        else:
            m = jnp.asarray(m.astype(np.float32))[None, None]
        obj = state.obj_idx(obj_id)
        state.mask_inputs[obj][frame] = m
        state.point_inputs[obj].pop(frame, None)
        _, _, is_cond, key = self._frame_role(state, obj, frame)
        low, ptr, score = _mask_prompt(self.track_params, self._features(state, frame), m, config=self.config)
        state.temp_outputs[obj][key][frame] = self._output(state, low, ptr, score, 0)
        return frame, list(state.obj_ids), self._consolidated(state, frame, is_cond)

    def _frame_role(self, state: InferenceState, obj: int, frame: int):
        """(is_init_cond_frame, reverse, is_cond, storage key) of a prompt on a frame: a frame not yet tracked is an
        initial conditioning frame; a tracked one is corrected in the direction it was tracked."""
        tracked = state.frames_tracked[obj]
        is_init = frame not in tracked
        reverse = False if is_init else tracked[frame]["reverse"]
        is_cond = is_init or self.add_all_frames_to_correct_as_cond
        return is_init, reverse, is_cond, "cond" if is_cond else "non_cond"

    def _tokens(self, pts: np.ndarray, lbl: np.ndarray):
        """Point tokens padded with IGNORE to a power of two, unless that would change the official multimask
        choice (which counts the points)."""
        n = pts.shape[1]
        nb = bucket(n)
        if S.use_multimask(self.config, True, nb) != S.use_multimask(self.config, True, n) or \
                S.use_multimask(self.config, False, nb) != S.use_multimask(self.config, False, n):
            nb = n
        coords = np.zeros((1, nb, 2), np.float32)
        labels = np.full((1, nb), IGNORE, np.int32)
        coords[:, :n], labels[:, :n] = pts, lbl
        return coords, labels

    def _output(self, state: InferenceState, low, ptr, score, row: int, maskmem=None) -> FrameOutput:
        low_row = low[row]
        if self.fill_hole_area > 0:
            low_row = jnp.asarray(self._fill_holes(low_row))
        return FrameOutput(self._store(state, low_row), self._store(state, ptr[row]),
                           self._store(state, score[row]), None if maskmem is None else self._store(state, maskmem))

    # --- propagation
    def propagate_in_video_preflight(self, inference_state) -> None:
        """Encode the memories of the prompted outputs and move them into the stored outputs."""
        state = _require_state(inference_state)
        if state.num_objects == 0:
            raise RuntimeError("No input points or masks are provided for any object; please add inputs first "
                               "(add_new_points_or_box / add_new_mask).")
        r = self.config.memory_temporal_stride_for_eval
        for obj in range(state.num_objects):
            for key in ("non_cond", "cond"):
                temp = state.temp_outputs[obj][key]
                for frame, out in temp.items():
                    if out.maskmem is None:
                        low, score = jax.device_put((out.pred_masks, out.object_score_logits), self.device)
                        mem = _encode_memory(self.track_params, self._features(state, frame), low[None], score[None],
                                             config=self.config)
                        out.maskmem = self._store(state, mem[0])
                    state.outputs[obj][key][frame] = out
                    if self.clear_non_cond_mem_around_input:
                        span = r * self.config.num_maskmem
                        for t in range(frame - span, frame + span + 1):
                            state.outputs[obj]["non_cond"].pop(t, None)
                temp.clear()
            if not state.outputs[obj]["cond"]:
                raise RuntimeError(f"No input points or masks are provided for object id {state.obj_ids[obj]!r}; "
                                   "please add inputs first.")
            for frame in state.outputs[obj]["cond"]:
                state.outputs[obj]["non_cond"].pop(frame, None)

    def propagate_in_video(self, inference_state, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None, reverse: bool = False,
                           progress: bool = True) -> Iterator[tuple[int, list, np.ndarray]]:
        """Track every object through the video: yields (frame_idx, obj_ids, mask logits (N_obj, 1, H, W) float32)
        per frame, from `start_frame_idx` (default: the earliest prompted frame) for `max_frame_num_to_track`
        frames (default: to the end, or to frame 0 with reverse=True)."""
        state = _require_state(inference_state)
        self.propagate_in_video_preflight(state)
        if start_frame_idx is None:
            start_frame_idx = min(t for o in state.outputs for t in o["cond"])
        start = state.check_frame(start_frame_idx, "start_frame_idx")
        if max_frame_num_to_track is None:
            max_frame_num_to_track = state.num_frames
        if reverse:
            end = max(start - max_frame_num_to_track, 0)
            order = range(start, end - 1, -1) if start > 0 else range(0)
        else:
            end = min(start + max_frame_num_to_track, state.num_frames - 1)
            order = range(start, end + 1)
        n = state.num_objects
        rows = bucket(n)
        capacity = self._capacity(state)
        for frame in tqdm(order, desc="propagate in video", disable=not progress):
            run = [obj for obj in range(n) if frame not in state.outputs[obj]["cond"]]
            if run:
                objs = [obj if obj in run else None for obj in range(n)] + [None] * (rows - n)
                bank = self._bank_args(state, objs, frame, reverse, capacity)
                low, ptr, score, mem = _track(self.track_params, self._features(state, frame), bank,
                                              config=self.config)
                for obj in run:
                    state.outputs[obj]["non_cond"][frame] = self._output(state, low, ptr, score, obj, mem[obj])
            masks = []
            for obj in range(n):
                key = "cond" if obj not in run else "non_cond"
                masks.append(jnp.asarray(state.outputs[obj][key][frame].pred_masks))
                state.frames_tracked[obj][frame] = {"reverse": reverse}
            yield frame, list(state.obj_ids), self._video_res_masks(state, jnp.stack(masks))

    # --- editing
    def clear_all_prompts_in_frame(self, inference_state, frame_idx, obj_id, need_output: bool = True):
        """Remove one object's prompts on one frame; its output there becomes a tracked (non-conditioning) one."""
        state = _require_state(inference_state)
        frame = state.check_frame(frame_idx)
        obj = state.obj_idx(obj_id, create=False)
        state.point_inputs[obj].pop(frame, None)
        state.mask_inputs[obj].pop(frame, None)
        for key in ("cond", "non_cond"):
            state.temp_outputs[obj][key].pop(frame, None)
        out = state.outputs[obj]["cond"].pop(frame, None)
        if out is not None:
            state.outputs[obj]["non_cond"][frame] = out
            state.frames_tracked[obj].pop(frame, None)
        if not need_output:
            return None
        is_cond = any(frame in t["cond"] for t in state.temp_outputs)
        return frame, list(state.obj_ids), self._consolidated(state, frame, is_cond)

    def remove_object(self, inference_state, obj_id, strict: bool = False, need_output: bool = True):
        """Remove an object (strict: an unknown id is an error). -> (obj_ids, [(frame_idx, mask logits)] of the
        frames where it had prompts)."""
        state = _require_state(inference_state)
        if obj_id not in state.obj_id_to_idx:
            if strict:
                raise KeyError(f"Cannot remove object id {obj_id!r} as it doesn't exist. All existing object ids: "
                               f"{state.obj_ids}.")
            return list(state.obj_ids), []
        obj = state.obj_id_to_idx[obj_id]
        frames = sorted(set(state.point_inputs[obj]) | set(state.mask_inputs[obj]))
        for per_obj in (state.point_inputs, state.mask_inputs, state.outputs, state.temp_outputs,
                        state.frames_tracked):
            del per_obj[obj]
        ids = [i for i in state.obj_ids if i != obj_id]
        state.obj_id_to_idx = OrderedDict((i, k) for k, i in enumerate(ids))
        state.obj_ids = ids
        updated = []
        if need_output and ids:
            for frame in frames:
                is_cond = any(frame in t["cond"] for t in state.temp_outputs)
                updated.append((frame, self._consolidated(state, frame, is_cond)))
        return list(state.obj_ids), updated


# ------------------------------------------------------------------------------------------------ load ---

def load(checkpoint: str | os.PathLike, *, config: S.Sam2Config | None = None, dtype: str | None = None,
         apply_postprocessing: bool = True, state_dict=None, **predictor_kwargs) -> Sam2VideoPredictor:
    """A Sam2VideoPredictor from an official SAM 2 / 2.1 `.pt` or a converted directory. apply_postprocessing
    (default True, as build_sam2_video_predictor): dynamic multimask via stability, binarised click masks for the
    memory encoder, holes of up to 8 low-res pixels filled; False gives the plain model."""
    config, params = image_predictor.load_model(checkpoint, config=config, dtype=dtype, state_dict=state_dict)
    if apply_postprocessing:
        config = image_predictor.with_postprocessing(config, video=True)
        predictor_kwargs.setdefault("fill_hole_area", 8)
    return Sam2VideoPredictor(config, params, **predictor_kwargs)
