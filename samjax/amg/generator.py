"""Automatic mask generation ("segment everything") with the filtering on device.

    from samjax import infer
    from samjax.amg import AutomaticMaskGenerator
    gen = AutomaticMaskGenerator(infer.load("ckpt/sam_vit_h"), points_per_side=32)
    anns = gen.generate(image)        # list of dicts, as segment_anything.SamAutomaticMaskGenerator.generate
    many = gen.generate_batch(images) # one encoder call for every crop of every image

Same options, defaults, output keys and results as the official generator. The difference is where the work
happens: for each crop one jitted function decodes every point (`lax.map` over chunks of a few decoder groups),
drops the points whose predicted IoUs all fail `pred_iou_thresh` before making their masks (the official
generator makes every mask and filters after: the output upscaling and what follows it are about half of a
point's decoding), upsamples the remaining logits to the crop size, computes the stability filter, the boxes, the
crop-edge filter and the box NMS, all with static shapes (a `valid` vector instead of dropping rows). Only the NMS
survivors' indices come back to the host; a second jitted function upsamples just those masks again and sends
them as packed bits. Cross-crop NMS and the optional small-region clean-up then run on the few survivors. With a
mesh on the predictor, crops of all images are embedded in one data-parallel encoder call and each crop's
decoding runs on one of the mesh's devices, dispatched asynchronously so the devices work at the same time.

Costs to know: the low-res logits of every candidate of a crop (points x masks x L x L float32, 805 MB at
points_per_side=32 with L=256) stay on the device until the survivors are gathered, and `generate_batch` keeps
those of all its crops at once. Crop sizes are padded up to multiples of 64, so images of similar sizes share
compiled code. `bbox` and `crop_box` are always ints (the official returns floats when some crop kept no mask);
NMS ties keep the lower index first, as torchvision's stable sort.

Names: with `labels=[...]` and `clip=...` every record also gets "label" and "label_score", CLIP's zero-shot
choice among the labels for the mask's masked crop (samjax.amg.labels). Without labels nothing changes.

SAM 2: pass a `Sam2Predictor` (samjax.infer.load of a SAM 2 checkpoint); SAM2AutomaticMaskGenerator's defaults and
options apply (see AutomaticMaskGenerator).

Command line: python -m samjax.amg --checkpoint DIR --input IMAGE_OR_FOLDER --output DIR (see samjax.amg.cli).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from samjax import transforms as T
from samjax.amg import geometry as U
from samjax.amg import mask_io
from samjax.infer.families import SamFamily
from samjax.infer.predictor import Predictor, bucket
from samjax.infer.sam2 import Sam2Predictor
from samjax.infer.sam2_family import Sam2Family
from samjax.infer.validate import check_image
from samjax.models import NOT_A_POINT, decode_group_size

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


SIZE_STEP = 64  # crop sizes are padded up to a multiple of this: one compile serves many image sizes


# Decoder groups per chunk of `_crop_candidates`: the chunk's prompt-specific image sides (P x 4096 x 256 float32 for
# ViT sizes: 64 MB at 16 prompts) wait in memory while the predicted-IoU filter decides which need masks.
CHUNK_GROUPS = 4

M2M_CLAMP = 32.0  # the official predictors clamp the low-res logits they return (and m2m re-feeds) to [-32, 32]


def _chunk_size(points_per_batch: int) -> int:
    """Prompts per chunk of `_crop_candidates`: up to CHUNK_GROUPS decoder groups, dividing points_per_batch."""
    step = decode_group_size(points_per_batch)
    groups = points_per_batch // step
    return step * max(d for d in range(1, CHUNK_GROUPS + 1) if groups % d == 0)


def _padded_size(n: int) -> int:
    return -(-n // SIZE_STEP) * SIZE_STEP


def _upsample_tiles(family: SamFamily, input_size, crop_size) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Low-res -> crop-size bilinear maps (the family's `upsample_matrix`: official postprocess_masks) as
    `T.interpolation_tiles` per axis, their tile counts padded to the size bucket (extra tiles are zero): ((starts,
    blocks) for h, (starts, blocks) for w). Dense matmuls with the full matrices were ~2.5x slower on a 2-core CPU
    (they multiply the zeros too)."""
    low = family.sam.mask_input_size
    out = []
    for axis in range(2):
        m = family.upsample_matrix(input_size[axis], crop_size[axis])
        pad = np.zeros((_padded_size(crop_size[axis]), low), np.float32)
        pad[:len(m)] = m
        out.append(T.interpolation_tiles(pad))
    return tuple(out)


def _logits(low_res, tiles_h, tiles_w, crop_hw):
    """Low-res logits (..., L, L) -> crop-size logits (..., Hb, Wb); -inf outside the valid (h, w)."""
    x = T.resize_with_tiles(low_res, tiles_h, tiles_w)
    rows = jnp.arange(x.shape[-2]) < crop_hw[0]
    cols = jnp.arange(x.shape[-1]) < crop_hw[1]
    return jnp.where(rows[:, None] & cols[None, :], x, -jnp.inf)


@functools.partial(jax.jit, static_argnames=("family", "multimask_output", "options", "use_m2m"))
def _crop_candidates(dvars, features, coords, labels, point_valid, tiles_h, tiles_w, crop_hw, crop_box, orig_box,
                     iou_thresh, stab_thresh, stab_offset, nms_thresh, *, family: SamFamily, multimask_output: bool,
                     options: tuple, use_m2m: bool = False):
    """Every candidate mask of one crop, filtered and de-duplicated on device.

    dvars: the family's decoder variables; features: its features pytree of the crop (batch 1); coords (nc, P, 2, 2)
    f32 point + not-a-point pad in the resized frame, in nc chunks of P prompts; labels (nc, P, 2); point_valid (nc, P)
    bool; tiles_h, tiles_w the upsampling tiles, crop_hw (2,) the valid crop size; crop_box (4,) / orig_box (4,) XYXY;
    thresholds are scalars.
    Returns low_res (N, L, L), iou (N,), stability (N,), boxes (N, 4) int32 in the crop frame, and the NMS
    result order (N,), kept (N,) (see amg_utils.nms); N = nc * P * M candidates in the official order
    (point-major, then mask). Candidates the predicted-IoU filter rejects keep zeros in low_res, stability, boxes.

    Per chunk: the decoder's transformer and heads run for all P prompts (the family's `decode_lazy`; SAM's in
    groups, `decode_prompts`); the output upscaling (`masks_from`), the upsampling to crop size, stability and boxes
    (about half of a prompt's work) only for the prompts with at least one mask through the predicted-IoU filter,
    gathered to the front in groups of the decoder's size. The official generator makes every mask first and
    filters after; the kept masks are the same.

    use_m2m (SAM2AutomaticMaskGenerator's mask-to-mask refinement): every candidate is decoded again, its point with
    its own low-res logits (clamped to [-32, 32]) as the mask prompt, one mask out (multimask off: with the config's
    dynamic multimask, as officially); the refined masks and IoUs replace the candidates' before every filter, so
    nothing is skipped early on this path.
    """
    image_pe = family.dense_pe(dvars)  # once per crop, not in every point batch
    cache = family.image_cache(dvars, features, image_pe)  # the decoder's image-only work, also once per crop
    threshold = family.sam.mask_threshold
    p = coords.shape[1]
    step = decode_group_size(p)

    def refined_chunk(chunk_coords, chunk_labels, chunk_valid):
        low_res, _ = family.decode(dvars, features, chunk_coords, chunk_labels, None, multimask_output, image_pe,
                                   cache, options)  # (P, M, L, L)
        m, side = low_res.shape[1], low_res.shape[-1]
        low_res, iou = family.decode(dvars, features, jnp.repeat(chunk_coords, m, axis=0),
                                     jnp.repeat(chunk_labels, m, axis=0),
                                     jnp.clip(low_res, -M2M_CLAMP, M2M_CLAMP).reshape(p * m, side, side), False,
                                     image_pe, cache, options)  # (P * M, 1, L, L)
        low_res, iou = low_res.reshape(p, m, side, side), iou.reshape(p, m)
        logits = _logits(low_res, tiles_h, tiles_w, crop_hw)
        stab, boxes = U.stability_score(logits, threshold, stab_offset), U.masks_to_boxes(logits > threshold)
        keep = chunk_valid[:, None] & ((iou > iou_thresh) | (iou_thresh <= 0))
        keep &= (stab >= stab_thresh) | (stab_thresh <= 0)
        keep &= ~U.box_near_crop_edge(boxes, crop_box, orig_box)
        return low_res, iou, stab, boxes, keep

    def one_chunk(args):
        chunk_coords, chunk_labels, chunk_valid = args
        if use_m2m:
            return refined_chunk(chunk_coords, chunk_labels, chunk_valid)
        state, iou = family.decode_lazy(dvars, features, chunk_coords, chunk_labels, multimask_output, image_pe,
                                        cache, options)
        iou_ok = (iou > iou_thresh) | (iou_thresh <= 0)
        need = chunk_valid & iou_ok.any(axis=1)
        order = jnp.argsort(~need, stable=True)  # prompts that need masks first, in their order

        def masks_of(idx):
            low_res = family.masks_from(dvars, jax.tree.map(lambda x: x[idx], state))
            logits = _logits(low_res, tiles_h, tiles_w, crop_hw)  # (step, M, Hb, Wb)
            return (low_res, U.stability_score(logits, threshold, stab_offset), U.masks_to_boxes(logits > threshold))

        shapes = jax.eval_shape(masks_of, order[:step])
        n_need = need.sum()

        def none(idx):
            return tuple(jnp.zeros(x.shape, x.dtype) for x in shapes)

        def group(k):  # the k-th group of the prompts in `order`; zeros past the last one that needs masks
            idx = jax.lax.dynamic_slice_in_dim(order, k * step, step)
            return jax.lax.cond(k * step < n_need, masks_of, none, idx)

        made = jax.lax.map(group, jnp.arange(p // step))  # in `order`, group by group
        back = jnp.argsort(order)  # prompt i is made[back[i]]
        low_res, stab, boxes = (x.reshape(p, *x.shape[2:])[back] for x in made)
        keep = need[:, None] & iou_ok & ((stab >= stab_thresh) | (stab_thresh <= 0))
        keep &= ~U.box_near_crop_edge(boxes, crop_box, orig_box)
        return low_res, iou, stab, boxes, keep

    low_res, iou, stab, boxes, keep = jax.lax.map(one_chunk, (coords, labels, point_valid))
    n = keep.size
    low_res = low_res.reshape(n, *low_res.shape[-2:])
    iou, stab, boxes, keep = iou.reshape(n), stab.reshape(n), boxes.reshape(n, 4), keep.reshape(n)
    order, kept = U.nms(boxes, iou, keep, nms_thresh)
    return low_res, iou, stab, boxes, order, kept


@functools.partial(jax.jit, static_argnames=("threshold",))
def _survivor_masks(low_res, iou, stab, boxes, idx, tiles_h, tiles_w, crop_hw, *, threshold: float):
    """Gather survivors idx (K,) -> bit-packed binary masks (K, Hb * Wb / 8) uint8 at the padded crop size, and
    their iou (K,), stability (K,), boxes (K, 4)."""
    masks = _logits(low_res[idx], tiles_h, tiles_w, crop_hw) > threshold
    return jnp.packbits(masks.reshape(idx.shape[0], -1), axis=-1), iou[idx], stab[idx], boxes[idx]


def crop_inputs(family: SamFamily, points: np.ndarray, points_per_batch: int, input_size, crop_size, orig_size,
                crop_box, thresholds) -> tuple:
    """The data arguments of `_crop_candidates` for one crop (after dvars and features): the crop's points (n, 2) in
    its own frame padded to whole batches and reshaped into chunks, the upsampling tiles, the crop and image boxes,
    and thresholds = (pred_iou_thresh, stability_score_thresh, stability_score_offset, box_nms_thresh).

    The device loop walks the points in chunks of a few decoder-sized groups (4 prompts on CPU: their per-prompt
    tensors, crop-size logits included, stay in cache; see models.sam.decode_prompts), so that the prompts whose
    masks all fail the predicted-IoU filter can be dropped before their masks are made (see _crop_candidates).
    Candidates keep the official order; every prompt is independent, so the chunking changes nothing but speed."""
    n = len(points)
    nb = -(-n // points_per_batch)
    coords = np.zeros((nb * points_per_batch, 2, 2), np.float32)
    coords[:n, 0] = family.map_coords(points, crop_size)
    labels = np.tile(np.array([[1, NOT_A_POINT]], np.int32), (nb * points_per_batch, 1))
    valid = np.arange(nb * points_per_batch) < n
    orig_h, orig_w = orig_size
    tiles_h, tiles_w = _upsample_tiles(family, input_size, crop_size)
    chunk = _chunk_size(points_per_batch)
    rows = nb * points_per_batch // chunk
    return (coords.reshape(rows, chunk, 2, 2), labels.reshape(rows, chunk, 2), valid.reshape(rows, chunk), tiles_h,
            tiles_w, np.asarray(crop_size, np.int32), np.asarray(crop_box, np.int32),
            np.array([0, 0, orig_w, orig_h], np.int32), *(np.float32(t) for t in thresholds))


class AutomaticMaskGenerator:
    """segment_anything.SamAutomaticMaskGenerator on a samjax Predictor of any family; see the official docstring
    for the meaning of every option (they are the same, with the same defaults).

    multimask_output and `decode_options` are HQ-SAM's generator's (segment_anything_hq `generate(image,
    multimask_output=True)`; decode_options e.g. {"hq_token_only": True}): SAM's generator always asks for the
    multimask outputs. HQ-SAM gives one mask per point either way (its decoder's selection).

    SAM 2 (a `Sam2Predictor`, from `samjax.infer.load` of a SAM 2 checkpoint): sam2's SAM2AutomaticMaskGenerator,
    with its defaults where they differ (pred_iou_thresh None means 0.8 for SAM 2, 0.88 otherwise: the family's
    `AMG_DEFAULTS`), and its options `mask_threshold` (None: the model's, 0.0), `multimask_output` and `use_m2m` (a
    second decoder pass per candidate with its own low-res mask as the prompt). Its `min_mask_region_area` (hole and
    sprinkle filling of every candidate's low-res mask, a CUDA kernel officially) is not supported: it raises."""

    def __init__(self, predictor: Predictor | Sam2Predictor, points_per_side: int | None = 32,
                 points_per_batch: int = 64, pred_iou_thresh: float | None = None, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, box_nms_thresh: float = 0.7, crop_n_layers: int = 0,
                 crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int = 1, point_grids: list[np.ndarray] | None = None,
                 min_mask_region_area: int = 0, output_mode: str = "binary_mask", multimask_output: bool = True,
                 decode_options: dict | None = None, labels=None, clip=None, label_template: str | None = None,
                 mask_threshold: float | None = None, use_m2m: bool = False):
        """Options as the official generator's, plus names for the masks: `labels` ("cat, sofa" or a list) and
        `clip` (a CLIP checkpoint path, a loaded (ClipConfig, params) pair, or a samjax.amg.labels.ClipLabeler,
        whose labels are used when `labels` is None) add "label" and "label_score" to every record (CLIP's
        zero-shot classification of the mask's masked crop, see samjax.amg.labels; needs the `text` extra)."""
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side or point_grids")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {points_per_batch}")
        if crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be >= 0, got {crop_n_layers}")
        if points_per_side is not None:
            if points_per_side < 1:
                raise ValueError(f"points_per_side must be >= 1, got {points_per_side}")
            self.point_grids = U.build_all_layer_point_grids(points_per_side, crop_n_layers,
                                                             crop_n_points_downscale_factor)
        else:
            self.point_grids = [np.asarray(g, np.float64).reshape(-1, 2) for g in point_grids]
            if len(self.point_grids) < crop_n_layers + 1:
                raise ValueError(f"point_grids has {len(self.point_grids)} grids; crop_n_layers={crop_n_layers} "
                                 f"needs {crop_n_layers + 1}")
        if any(len(g) == 0 for g in self.point_grids[:crop_n_layers + 1]):
            raise ValueError("a crop layer has no points (points_per_side too small for the downscale factor)")
        family = predictor.family
        if min_mask_region_area > 0 and isinstance(family, Sam2Family):
            raise ValueError("min_mask_region_area is not supported with SAM 2: SAM2AutomaticMaskGenerator fills "
                             "holes and removes sprinkles in every candidate's low-res mask (with sam2's CUDA "
                             "extension; skipped without it) and does not clean the final masks; use 0")
        if output_mode == "coco_rle":
            from pycocotools import mask as _  # noqa: F401  (fail early, as the official does)
        self.predictor = predictor
        # mask_threshold: binarises masks and centres the stability score (SAM2AutomaticMaskGenerator's option;
        # SAM's generator uses the model's)
        self.family = family if mask_threshold is None else family.with_sam(mask_threshold=float(mask_threshold))
        self.use_m2m = bool(use_m2m)
        self.multimask_output = multimask_output
        self.decode_options = family.check_options(dict(decode_options or {}))
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = family.AMG_DEFAULTS["pred_iou_thresh"] if pred_iou_thresh is None else pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.labeler = self._labeler(labels, clip, label_template)
        self._device_params: dict = {}

    @staticmethod
    def _labeler(labels, clip, template):
        """None without labels, else a labeler with a `label(image, masks) -> (indices, scores)` and `labels`."""
        if clip is None:
            if labels is not None:
                raise ValueError("labels need a CLIP model: pass clip=DIR (a CLIP checkpoint) or clip=(config, "
                                 "params)")
            return None
        if callable(getattr(clip, "label", None)):  # a ClipLabeler (or one like it)
            if labels is not None or template is not None:
                raise ValueError("clip is a labeler already: give its labels and template when making it, not here")
            return clip
        if labels is None:
            raise ValueError("clip was given without labels: pass labels=['cat', 'sofa', ...]")
        from samjax.amg.labels import TEMPLATE, ClipLabeler  # the tokenizer's packages are an optional extra

        return ClipLabeler.load(clip, labels, template or TEMPLATE)

    # ------------------------------------------------------------------------------------------ public API
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Masks for an (H, W, 3) uint8 RGB image: a list of records with the official keys (segmentation,
        area, bbox XYWH, predicted_iou, point_coords, stability_score, crop_box XYWH)."""
        return self.generate_batch([image])[0]

    def generate_batch(self, images: list[np.ndarray]) -> list[list[dict[str, Any]]]:
        """`generate` for many images: every crop of every image is embedded in one encoder call (split over
        the predictor's mesh, if any); results equal per-image `generate`."""
        images = [check_image(im, "RGB") for im in images]
        if not images:
            return []
        plan = []  # (image index, crop box, layer)
        crops = []
        for i, image in enumerate(images):
            boxes, layers = U.generate_crop_boxes(image.shape[:2], self.crop_n_layers, self.crop_overlap_ratio)
            for box, layer in zip(boxes, layers):
                x0, y0, x1, y1 = box
                plan.append((i, box, layer))
                crops.append(image[y0:y1, x0:x1])
        features, input_sizes, crop_sizes = self.predictor.encode_images(crops)
        # Dispatch every crop's device work before reading any result back, so devices run concurrently.
        pending = [self._dispatch_crop(features, k, input_sizes[k], crop_sizes[k], images[i].shape[:2], box,
                                       layer) for k, (i, box, layer) in enumerate(plan)]
        survivors = [self._dispatch_survivors(p) for p in pending]
        per_image: list[list[dict]] = [[] for _ in images]
        for (i, box, _), s in zip(plan, survivors):
            per_image[i].append(self._collect_crop(s))
        return [self._finish(parts, image) for parts, image in zip(per_image, images)]

    # ------------------------------------------------------------------------------------------- internals
    def _params_on(self, device):
        if device not in self._device_params:
            self._device_params[device] = jax.device_put(self.predictor.decoder_variables, device)
        return self._device_params[device]

    def _dispatch_crop(self, features, k, input_size, crop_size, orig_size, crop_box, layer):
        family = self.family
        feats = jax.tree.map(lambda x: x[k:k + 1], features)
        if self.predictor.mesh is not None:
            devices = self.predictor.mesh.devices.reshape(-1)
            device = devices[k % devices.size]
            dvars, feats = self._params_on(device), jax.device_put(feats, device)
        else:
            dvars = self.predictor.decoder_variables
        points = self.point_grids[layer] * np.array([[crop_size[1], crop_size[0]]], np.float64)  # crop frame
        args = crop_inputs(family, points, self.points_per_batch, input_size, crop_size, orig_size, crop_box,
                           (self.pred_iou_thresh, self.stability_score_thresh, self.stability_score_offset,
                            self.box_nms_thresh))
        out = _crop_candidates(dvars, feats, *args, family=family, multimask_output=self.multimask_output,
                               options=self.decode_options, use_m2m=self.use_m2m)
        tiles_h, tiles_w, crop_hw = args[3:6]
        return dict(out=out, points=points, crop_box=crop_box, upsample=(tiles_h, tiles_w, crop_hw),
                    crop_size=tuple(crop_size), orig_size=tuple(orig_size))

    def _dispatch_survivors(self, p):
        low_res, iou, stab, boxes, order, kept = p["out"]
        idx = np.asarray(order)[np.asarray(kept)]  # survivors in the official (NMS) order
        chunks = []
        chunk = 64
        for start in range(0, len(idx), chunk):
            part = idx[start:start + chunk]
            padded = np.zeros((bucket(len(part)),), np.int32)
            padded[:len(part)] = part
            chunks.append((len(part), _survivor_masks(low_res, iou, stab, boxes, padded, *p["upsample"],
                                                      threshold=self.family.sam.mask_threshold)))
        del p["out"]
        return dict(p, idx=idx, chunks=chunks)

    def _collect_crop(self, s) -> dict:
        h, w = s["crop_size"]
        x0, y0 = s["crop_box"][:2]
        bits, ious, stabs, boxes = [], [], [], []
        for k, (packed, iou, stab, box) in s["chunks"]:
            bits.append(np.asarray(packed)[:k])
            ious.append(np.asarray(iou)[:k])
            stabs.append(np.asarray(stab)[:k])
            boxes.append(np.asarray(box)[:k].astype(np.int64))
        n = len(s["idx"])
        m = self.family.num_masks(self.multimask_output, **dict(self.decode_options))
        point_idx = s["idx"] // m
        return dict(
            bits=np.concatenate(bits) if bits else np.zeros((0, 0), np.uint8),
            iou=np.concatenate(ious) if ious else np.zeros((0,), np.float32),
            stab=np.concatenate(stabs) if stabs else np.zeros((0,), np.float32),
            boxes=(np.concatenate(boxes) if boxes else np.zeros((0, 4), np.int64)) + np.array([x0, y0, x0, y0]),
            points=s["points"][point_idx] + np.array([x0, y0]),
            crop_boxes=np.tile(np.asarray(s["crop_box"], np.int64), (n, 1)),
            crop_size=(h, w), orig_size=s["orig_size"],
        )

    def _finish(self, parts: list[dict], image: np.ndarray) -> list[dict[str, Any]]:
        orig_size = image.shape[:2]
        boxes = np.concatenate([p["boxes"] for p in parts])
        iou = np.concatenate([p["iou"] for p in parts])
        stab = np.concatenate([p["stab"] for p in parts])
        points = np.concatenate([p["points"] for p in parts])
        crop_boxes = np.concatenate([p["crop_boxes"] for p in parts])
        source = [(j, r) for j, p in enumerate(parts) for r in range(len(p["iou"]))]
        if len(parts) > 1:  # remove duplicates between crops, preferring masks from smaller crops
            area = ((crop_boxes[:, 2] - crop_boxes[:, 0]) * (crop_boxes[:, 3] - crop_boxes[:, 1])).astype(np.float32)
            keep = U.nms_host(boxes, np.float32(1) / area, self.crop_nms_thresh)
        else:
            keep = np.arange(len(iou))
        oh, ow = orig_size

        def full_mask(j, r):
            p = parts[j]
            h, w = p["crop_size"]
            hb, wb = _padded_size(h), _padded_size(w)
            crop = np.unpackbits(p["bits"][r], count=hb * wb).reshape(hb, wb)[:h, :w].astype(bool)
            x0, y0 = p["crop_boxes"][r, :2] if len(p["crop_boxes"]) else (0, 0)
            out = np.zeros((oh, ow), bool)
            out[y0:y0 + h, x0:x0 + w] = crop
            return out

        masks = [full_mask(*source[i]) for i in keep]
        boxes, iou, stab, points, crop_boxes = boxes[keep], iou[keep], stab[keep], points[keep], crop_boxes[keep]
        if self.min_mask_region_area > 0 and masks:
            masks, boxes, keep2 = self._remove_small_regions(masks, boxes)
            masks = [masks[i] for i in keep2]
            boxes, iou, stab = boxes[keep2], iou[keep2], stab[keep2]
            points, crop_boxes = points[keep2], crop_boxes[keep2]
        if self.labeler is not None:
            label_idx, label_scores = self.labeler.label(image, masks)
        records = []
        for r, mask in enumerate(masks):
            rle = mask_io.mask_to_rle(mask)
            if self.output_mode == "binary_mask":
                seg = mask
            elif self.output_mode == "coco_rle":
                seg = mask_io.coco_encode_rle(rle)
            else:
                seg = rle
            records.append({
                "segmentation": seg,
                "area": mask_io.area_from_rle(rle),
                "bbox": mask_io.box_xyxy_to_xywh(boxes[r]),
                "predicted_iou": float(iou[r]),
                "point_coords": [points[r].tolist()],
                "stability_score": float(stab[r]),
                "crop_box": mask_io.box_xyxy_to_xywh(crop_boxes[r]),
            })
            if self.labeler is not None:
                records[-1].update(label=self.labeler.labels[label_idx[r]], label_score=float(label_scores[r]))
        return records

    def _remove_small_regions(self, masks, boxes):
        """Official postprocess_small_regions: fill small holes, drop small islands, then NMS preferring
        unchanged masks. Returns (masks, boxes, kept indices in order)."""
        new_masks, scores = [], []
        for mask in masks:
            mask, changed_h = mask_io.remove_small_regions(mask, self.min_mask_region_area, "holes")
            mask, changed_i = mask_io.remove_small_regions(mask, self.min_mask_region_area, "islands")
            new_masks.append(mask)
            scores.append(float(not (changed_h or changed_i)))
        new_boxes = np.stack([mask_io.mask_to_box(m) for m in new_masks])
        keep = U.nms_host(new_boxes, np.asarray(scores, np.float32), max(self.box_nms_thresh, self.crop_nms_thresh))
        # Masks that did not change keep their mask (identical) and box (identical), so take the new ones.
        return new_masks, new_boxes, keep
