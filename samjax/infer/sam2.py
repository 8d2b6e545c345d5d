"""Sam2Predictor: SAM 2's image predictor (sam2.sam2_image_predictor.SAM2ImagePredictor) in JAX.

    predictor = samjax.infer.load("sam2.1_hiera_tiny.pt")    # an official .pt or a converted directory
    predictor.set_image(image)                                # (H, W, 3) uint8 RGB; runs Hiera + FPN once
    masks, scores, logits = predictor.predict(point_coords=np.array([[500, 375]]), point_labels=np.array([1]))
    # masks (3, H, W) bool, scores (3,), logits (3, 256, 256): as SAM2ImagePredictor.predict

SAM 2's pre- and post-processing (sam2/utils/transforms.py SAM2Transforms), not SAM's: the image is scaled to
[0, 1], resized to the square S x S input whatever its aspect ratio (bilinear with antialiasing, torchvision's
`Resize` of a tensor), normalised with the ImageNet mean / std; prompts are scaled by S / W and S / H; the low-res
logits (4g x 4g) go straight back to the original size (bilinear, align_corners=False). Optional hole / sprinkle
filling of the low-res masks (`max_hole_area`, `max_sprinkle_area`, officially a CUDA kernel) runs on the host
(scipy, 8-connected components). The returned low-res logits are clamped to [-32, 32] as officially.

Compiled functions, shared by every predictor of an equal config: the encoder (one shape: every image is S x S
after resizing), the resize of each image size, and the decoder per bucket of prompt tokens and prompt count
(padded with IGNORE tokens, masked out of attention: clicking more points re-uses compiled code).
`predict_batch` is the official one: one call over the images of `set_image_batch`, prompt lists per image.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from scipy import ndimage

from samjax import transforms as T
from samjax.infer.predictor import bucket
from samjax.infer.sam2_family import Sam2Family, to_input_frame
from samjax.infer.validate import (
    ImageNotSetError,
    check_boxes,
    check_image,
    check_mask_input,
    check_points,
    check_variables,
)
from samjax.models import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, IGNORE, NOT_A_POINT
from samjax.models import sam2 as S
from samjax.models.sam2.layers import bilinear_matrix as torch_bilinear_matrix
from samjax.models.sam2.mask_decoder import select_outputs
from samjax.weights import sam2 as sam2_weights
from samjax.weights import store
from samjax.weights.pth import load_torch_checkpoint

f32 = jnp.float32
LOGIT_CLAMP = 32.0  # the official predictors clamp returned / re-fed low-res logits to [-32, 32]


# ------------------------------------------------------------------------------------------- transforms ---

@functools.lru_cache(maxsize=32)
def square_resize_tiles(length: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One axis of SAM2Transforms' resize (length -> size, bilinear, antialias) as `T.interpolation_tiles`."""
    return T.interpolation_tiles(torch_bilinear_matrix(length, size, antialias=True))


@functools.lru_cache(maxsize=32)
def upsample_tiles(low_res: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """One axis of the low-res logits -> original size resize (bilinear, align_corners=False, no antialias)."""
    return T.interpolation_tiles(T.bilinear_matrix(low_res, length).astype(np.float32))


def normalisation(config: S.Sam2Config) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) on the [0, 1] scale SAM 2 normalises (config.pixel_mean / std are on 0..255: / 255)."""
    return (np.asarray(config.pixel_mean, np.float64) / 255).astype(np.float32), \
        (np.asarray(config.pixel_std, np.float64) / 255).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("size",))
def _preprocess(image, tiles_h, tiles_w, mean, std, *, size: int):
    """image (H, W, 3) uint8 -> (1, S, S, 3) float32: / 255, antialiased bilinear resize to S x S, normalise."""
    x = jnp.moveaxis(image.astype(f32) / 255.0, -1, 0)  # (3, H, W)
    x = T.resize_with_tiles(x, tiles_h, tiles_w)[:, :size, :size]
    return ((jnp.moveaxis(x, 0, -1) - mean) / std)[None]


def preprocess(image: np.ndarray, config: S.Sam2Config) -> jax.Array:
    """SAM2Transforms on an (H, W, 3) uint8 RGB image: (1, S, S, 3) float32 on device. One compile per image size."""
    s = config.image_size
    mean, std = normalisation(config)
    return _preprocess(image, square_resize_tiles(image.shape[0], s), square_resize_tiles(image.shape[1], s),
                       mean, std, size=s)


@functools.partial(jax.jit, static_argnames=("size", "return_logits", "threshold", "batch"))
def _upsample(low_res, tiles_h, tiles_w, *, size: tuple[int, int], return_logits: bool, threshold: float,
              batch: int):
    """The first `batch` rows of low-res logits (B, C, 4g, 4g) -> (batch, C, H, W) logits or masks (> threshold)."""
    x = T.resize_with_tiles(low_res[:batch], tiles_h, tiles_w)[..., :size[0], :size[1]]
    return x if return_logits else x > threshold


def upsample(low_res, original_size: tuple[int, int], *, return_logits: bool = True, threshold: float = 0.0,
             batch: int | None = None):
    """Low-res logits (B, C, 4g, 4g) -> (B, C, H, W) at the original size (bool masks unless return_logits)."""
    h, w = original_size
    low = low_res.shape[-1]
    return _upsample(low_res, upsample_tiles(low, h), upsample_tiles(low, w), size=(h, w),
                     return_logits=return_logits, threshold=float(threshold),
                     batch=low_res.shape[0] if batch is None else batch)


def fill_small_regions(logits: np.ndarray, region: np.ndarray, max_area: float, value: float) -> np.ndarray:
    """Where `region` (..., h, w) bool has an 8-connected component of at most `max_area` pixels, set the logits to
    `value` (sam2's hole filling and sprinkle removal, which officially label components with a CUDA kernel)."""
    out = np.array(logits, np.float32, copy=True)
    flat_out, flat_region = out.reshape(-1, *out.shape[-2:]), region.reshape(-1, *region.shape[-2:])
    eight = np.ones((3, 3), bool)
    for i in range(flat_region.shape[0]):
        labels, n = ndimage.label(flat_region[i], structure=eight)
        if n == 0:
            continue
        areas = np.bincount(labels.ravel())
        small = (areas <= max_area)
        small[0] = False
        flat_out[i][small[labels]] = value
    return out


def postprocess_low_res(low_res: np.ndarray, threshold: float, max_hole_area: float,
                        max_sprinkle_area: float) -> np.ndarray:
    """SAM2Transforms.postprocess_masks before its resize: holes (background components <= max_hole_area) become
    threshold + 10, sprinkles (foreground components <= max_sprinkle_area) threshold - 10."""
    out = np.asarray(low_res, np.float32)
    if max_hole_area > 0:
        out = fill_small_regions(out, out <= threshold, max_hole_area, threshold + 10.0)
    if max_sprinkle_area > 0:
        out = fill_small_regions(out, out > threshold, max_sprinkle_area, threshold - 10.0)
    return out


# ------------------------------------------------------------------------------------------ jitted model ---

def _subset(params: dict, modules: tuple[str, ...]) -> dict:
    # SAM2Base's own tensors (no_mem_embed, ...) are always kept: Sam2.setup declares them.
    return {k: v for k, v in params.items() if k in modules or not isinstance(v, dict)}


def encoder_config(config: S.Sam2Config) -> S.Sam2Config:
    """The config the encoder is compiled for: the post-processing switches (dynamic multimask, binarised click
    masks, non-overlapping memories) reset, since the image encoder does not read them. Predictors that differ only
    there (e.g. apply_postprocessing on and off, image and video) share one compiled encoder."""
    return config.replace(dynamic_multimask_via_stability=False, dynamic_multimask_stability_delta=0.05,
                          dynamic_multimask_stability_thresh=0.98, binarize_mask_from_pts_for_mem_enc=False,
                          non_overlap_masks_for_mem_enc=False)


def encoder_params(params: dict) -> dict:
    """What the image encoder reads: Hiera + FPN, and the mask decoder (its conv_s0 / conv_s1 run once per image).
    The image and video predictors pass this same tree, so they share one compiled encoder."""
    return _subset(params, ("image_encoder", "sam_mask_decoder"))


def decoder_params(params: dict) -> dict:
    """What the prompt path reads: the SAM heads (not Hiera, not the memory modules)."""
    return _subset(params, ("sam_prompt_encoder", "sam_mask_decoder"))


@functools.partial(jax.jit, static_argnames=("config",))
def encode_backbone(params, images, *, config: S.Sam2Config) -> dict:
    """images (B, S, S, 3) normalised -> SAM2Base.forward_image's dict ("backbone_fpn", "vision_pos_enc",
    "vision_features"). The one compiled image encoder of the image and video predictors."""
    return S.forward_image(params, config, images)


@functools.partial(jax.jit, static_argnames=("config", "multimask_output"))
def _decode(params, image_embed, high_res, coords, labels, mask_input, *, config: S.Sam2Config,
            multimask_output: bool):
    """One image's embedding (1, g, g, C) for B prompts: tokens (B, N, 2) / (B, N) (IGNORE-padded), mask_input
    (B, 4g, 4g) or None -> low-res logits (B, M, 4g, 4g), iou (B, M), object score logits (B, 1)."""
    outs = S.Sam2(config).apply({"params": params}, image_embed, coords, labels, mask_input, list(high_res) or None,
                                method=S.Sam2.decode_all)
    low, iou, _, score = select_outputs(config, *outs, multimask_output=multimask_output)
    return low, iou, score


def prompt_tokens(coords, labels, boxes, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """SAM2ImagePredictor._predict's token order (box corners first, then points, then the not-a-point pad that
    SAM 2's prompt encoder adds without a separate box), padded to powers of two (tokens with IGNORE, prompts with
    empty rows). coords (B, N, 2) / boxes (B, 2, 2) already in the S x S frame. -> (B', N', 2) float32,
    (B', N') int32."""
    parts_c, parts_l = [], []
    if boxes is not None:
        parts_c.append(boxes)
        parts_l.append(np.tile(np.array([[BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]], np.int32), (batch, 1)))
    if coords is not None:
        parts_c.append(coords)
        parts_l.append(labels)
    if parts_c:  # officially points=None (a mask alone) gives no sparse token at all, not even the pad
        parts_c.append(np.zeros((batch, 1, 2), np.float32))
        parts_l.append(np.full((batch, 1), NOT_A_POINT, np.int32))
    n = sum(c.shape[1] for c in parts_c)
    out_c = np.zeros((bucket(batch), bucket(max(n, 1)), 2), np.float32)
    out_l = np.full(out_c.shape[:2], IGNORE, np.int32)
    if n:
        out_c[:batch, :n] = np.concatenate(parts_c, axis=1)
        out_l[:batch, :n] = np.concatenate(parts_l, axis=1)
    return out_c, out_l


def as_rgb_array(image, image_format: str = "RGB") -> np.ndarray:
    """A numpy (H, W, 3) uint8 RGB image from numpy (RGB or BGR) or a PIL image, checked (samjax.infer.validate)."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    image = check_image(image, image_format)
    return np.ascontiguousarray(image[..., ::-1]) if image_format == "BGR" else image


# ------------------------------------------------------------------------------------------- predictor ---

class Sam2Predictor:
    """SAM2ImagePredictor in JAX: `set_image` (or `set_image_batch`) once, then `predict` for any prompts."""

    def __init__(self, config: S.Sam2Config, params: dict, mask_threshold: float = 0.0, max_hole_area: float = 0.0,
                 max_sprinkle_area: float = 0.0, mesh: jax.sharding.Mesh | None = None):
        """`mesh`: encode `set_image_batch` images data-parallel over its devices; None: one device."""
        check_variables(params, S.abstract_params(config), "Sam2Config")
        self.config, self.mesh = config, mesh
        self.mask_threshold = float(mask_threshold)
        self.max_hole_area, self.max_sprinkle_area = float(max_hole_area), float(max_sprinkle_area)
        # committed to one device (or replicated over the mesh) whatever the params came as: a compiled call's cache
        # key includes whether each argument is committed (orbax-restored arrays are, numpy ones are not)
        where = jax.devices()[0] if mesh is None else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        self.params = jax.device_put(params, where)
        self.encoder_params, self.decoder_params = encoder_params(self.params), decoder_params(self.params)
        # what the automatic mask generator reads (samjax.amg): the prompt-side adapter and its variables
        self.family = Sam2Family(config)
        self.decoder_variables = {"params": self.decoder_params}
        self.reset_predictor()

    # --- images
    def reset_predictor(self) -> None:
        """Forget the image(s) and their embeddings."""
        self._is_image_set, self._is_batch = False, False
        self._features = None
        self._orig_hw: list[tuple[int, int]] = []

    reset_image = reset_predictor

    @property
    def is_image_set(self) -> bool:
        return self._is_image_set

    def _embed(self, images: list[np.ndarray]):
        x = [preprocess(im, self.config) for im in images]
        n = len(x)
        ndev = 1 if self.mesh is None else self.mesh.devices.size
        size = -(-max(bucket(n), ndev) // ndev) * ndev  # few compiled batch sizes; divisible over the mesh
        batch = jnp.concatenate(x + [jnp.zeros_like(x[0])] * (size - n)) if size > 1 else x[0]
        if self.mesh is not None:
            batch = jax.device_put(batch, jax.sharding.NamedSharding(
                self.mesh, jax.sharding.PartitionSpec(self.mesh.axis_names)))
        embed, high_res = S.image_embeddings(self.params, self.config, encode_backbone(
            self.encoder_params, batch, config=encoder_config(self.config)))
        return embed[:n], tuple(h[:n] for h in high_res)

    def set_image(self, image, image_format: str = "RGB") -> None:
        """Compute and cache the embedding of one (H, W, 3) uint8 image (numpy RGB / BGR, or a PIL image)."""
        image = as_rgb_array(image, image_format)
        self.reset_predictor()
        self._features = self._embed([image])
        self._orig_hw = [tuple(image.shape[:2])]
        self._is_image_set = True

    def set_image_batch(self, image_list, image_format: str = "RGB") -> None:
        """Embed several images (sizes may differ) in one encoder call, for `predict_batch`."""
        if not isinstance(image_list, (list, tuple)) or not image_list:
            raise ValueError("set_image_batch expects a non-empty list of (H, W, 3) uint8 images")
        images = [as_rgb_array(im, image_format) for im in image_list]
        self.reset_predictor()
        self._features = self._embed(images)
        self._orig_hw = [tuple(im.shape[:2]) for im in images]
        self._is_image_set, self._is_batch = True, True

    def encode_images(self, images, image_format: str = "RGB"):
        """Embed many images (sizes may differ) in one encoder call, without setting them (the automatic mask
        generator's call, as `Predictor.encode_images`): -> (features (image_embed (B, g, g, C), high-res levels
        tuple) on device, input sizes [(S, S)] (every image is squashed to S x S), original sizes [(H, W)])."""
        if len(images) == 0:
            raise ValueError("images is empty")
        images = [as_rgb_array(im, image_format) for im in images]
        s = self.config.image_size
        return self._embed(images), [(s, s)] * len(images), [tuple(im.shape[:2]) for im in images]

    def get_image_embedding(self) -> np.ndarray:
        """The image embedding (B, g, g, C) float32, channels last (+ no_mem_embed, as the official keeps it; the
        official returns (B, C, g, g))."""
        self._require_image()
        return np.asarray(self._features[0])

    def _require_image(self) -> None:
        if not self._is_image_set:
            raise ImageNotSetError("no image is set: call predictor.set_image(image) (or set_image_batch) before "
                                   "predict() or get_image_embedding()")

    # --- prompts
    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output: bool = True,
                return_logits: bool = False, normalize_coords: bool = True, return_object_score: bool = False):
        """SAM2ImagePredictor.predict: point_coords (N, 2) or (B, N, 2) (x, y) pixels (in [0, 1] with
        normalize_coords=False), point_labels (N,) / (B, N) 1 fg / 0 bg, box (4,) or (B, 4) XYXY, mask_input
        (1, 4g, 4g) or (B, 1, 4g, 4g) low-res logits of a previous call. Returns masks (C, H, W) bool (logits with
        return_logits), iou (C,), low-res logits (C, 4g, 4g) clamped to [-32, 32]; with B > 1 prompts each gains a
        leading B. C = 3 with multimask_output, else 1. return_object_score adds the object score logits ((1,) /
        (B, 1); > 0: the object is present), which the official predictor computes and drops."""
        self._require_image()
        out = self._predict(-1, point_coords, point_labels, box, mask_input, multimask_output, return_logits,
                            normalize_coords)
        out = tuple(x[0] if x.shape[0] == 1 else x for x in out)  # the official squeeze(0)
        return out if return_object_score else out[:3]

    def predict_batch(self, point_coords_batch=None, point_labels_batch=None, box_batch=None, mask_input_batch=None,
                      multimask_output: bool = True, return_logits: bool = False, normalize_coords: bool = True):
        """SAM2ImagePredictor.predict_batch: after `set_image_batch`, one prompt set per image (lists indexed like
        the images, entries as `predict` takes them) -> (masks list, iou list, low-res logits list)."""
        self._require_image()
        if not self._is_batch:
            raise ValueError("predict_batch works on the images of set_image_batch(images); after set_image use "
                             "predict (which also takes (B, N, 2) points / (B, 4) boxes for B prompts)")
        n = len(self._orig_hw)
        lists = {"point_coords_batch": point_coords_batch, "point_labels_batch": point_labels_batch,
                 "box_batch": box_batch, "mask_input_batch": mask_input_batch}
        for name, v in lists.items():
            if v is not None and len(v) != n:
                raise ValueError(f"{name} has {len(v)} entries for {n} images")
        outs = []
        for i in range(n):
            pick = [None if v is None else v[i] for v in lists.values()]
            o = self._predict(i, *pick, multimask_output, return_logits, normalize_coords)
            outs.append(tuple(x[0] if x.shape[0] == 1 else x for x in o[:3]))
        return tuple(list(x) for x in zip(*outs))

    def _predict(self, img_idx, coords, labels, boxes, mask_input, multimask_output, return_logits, normalize):
        cfg = self.config
        hw = self._orig_hw[img_idx]
        bounds = hw if normalize else (1, 1)
        if coords is None and labels is not None:
            raise ValueError("point_labels were given without point_coords")
        if coords is None and boxes is None and mask_input is None:
            raise ValueError("no prompt: give point_coords + point_labels, a box, and/or a mask_input")
        sizes = {}
        if coords is not None:
            batched = np.ndim(coords) == 3
            coords, labels = check_points(coords, labels, bounds, batched)
            coords = to_input_frame(coords, hw, cfg.image_size, normalize)
            sizes["point_coords"] = coords.shape[0]
        if boxes is not None:
            boxes = check_boxes(boxes, bounds, np.ndim(boxes) == 2)
            boxes = to_input_frame(boxes.reshape(-1, 2, 2), hw, cfg.image_size, normalize)
            sizes["box"] = boxes.shape[0]
        if mask_input is not None:
            mask_input = check_mask_input(mask_input, cfg.mask_input_size, np.ndim(mask_input) == 4)
            sizes["mask_input"] = mask_input.shape[0]
        if len(set(sizes.values())) > 1:
            raise ValueError(f"prompt batch sizes differ: {sizes}")
        b = next(iter(sizes.values()))
        tok_c, tok_l = prompt_tokens(coords, labels, boxes, b)
        if mask_input is not None:
            mask_input = np.concatenate([mask_input, np.zeros((tok_c.shape[0] - b, *mask_input.shape[1:]),
                                                              np.float32)])
        embed = self._features[0][img_idx:img_idx + 1] if img_idx != -1 else self._features[0][-1:]
        high_res = tuple(h[img_idx:img_idx + 1] if img_idx != -1 else h[-1:] for h in self._features[1])
        low, iou, score = _decode(self.decoder_params, embed, high_res, tok_c, tok_l, mask_input, config=cfg,
                                  multimask_output=multimask_output)
        to_upsample = low
        if self.max_hole_area > 0 or self.max_sprinkle_area > 0:
            to_upsample = postprocess_low_res(np.asarray(low[:b]), self.mask_threshold, self.max_hole_area,
                                              self.max_sprinkle_area)
        masks = upsample(to_upsample, hw, return_logits=return_logits, threshold=self.mask_threshold, batch=b)
        low = np.clip(np.asarray(low[:b]), -LOGIT_CLAMP, LOGIT_CLAMP)
        return np.asarray(masks), np.asarray(iou)[:b], low, np.asarray(score)[:b]


# ------------------------------------------------------------------------------------------------ load ---

def load_model(checkpoint: str | os.PathLike, *, config: S.Sam2Config | None = None, dtype: str | None = None,
               state_dict=None) -> tuple[S.Sam2Config, dict]:
    """(config, params) from an official SAM 2 / 2.1 `.pt` (or its already read `state_dict`) or a converted
    directory (samjax.weights.store.save_model). `config`: for a `.pt`, instead of the detected preset (another image
    size); dtype overrides the compute dtype."""
    path = Path(checkpoint)
    if state_dict is not None or (path.suffix in (".pt", ".pth") and not path.is_dir()):
        sd = load_torch_checkpoint(path) if state_dict is None else state_dict
        params, config = sam2_weights.from_state_dict(sd, config, str(path))
    else:
        config, params = store.load_model(path)
        if not isinstance(config, S.Sam2Config):
            raise ValueError(f"{str(path)!r} holds a {store.family_name(config)} model, not SAM 2: use "
                             "samjax.infer.load for it")
    return (config.replace(dtype=dtype) if dtype else config), params


def with_postprocessing(config: S.Sam2Config, video: bool = False) -> S.Sam2Config:
    """build_sam2(..., apply_postprocessing=True), the official default: dynamic multimask via stability (and for
    video, masks from clicks binarised for the memory encoder)."""
    config = config.replace(dynamic_multimask_via_stability=True, dynamic_multimask_stability_delta=0.05,
                            dynamic_multimask_stability_thresh=0.98)
    return config.replace(binarize_mask_from_pts_for_mem_enc=True) if video else config


def load(checkpoint: str | os.PathLike, *, config: S.Sam2Config | None = None, dtype: str | None = None,
         mesh: jax.sharding.Mesh | None = None, apply_postprocessing: bool = True, state_dict=None,
         **predictor_kwargs) -> Sam2Predictor:
    """A Sam2Predictor from an official `.pt` or a converted directory (see `load_model`). apply_postprocessing
    (default True, as build_sam2) turns on dynamic multimask via stability; False gives the plain model.
    predictor_kwargs: mask_threshold, max_hole_area, max_sprinkle_area."""
    config, params = load_model(checkpoint, config=config, dtype=dtype, state_dict=state_dict)
    if apply_postprocessing:
        config = with_postprocessing(config)
    return Sam2Predictor(config, params, mesh=mesh, **predictor_kwargs)
