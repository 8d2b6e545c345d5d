"""Predictor: SamPredictor in JAX, with a cached image embedding.

Two jitted functions: the encoder (one compile: images are padded to S x S on the host and the valid size is
passed as data) and the prompt-to-mask decoder (compiled per bucket of prompt tokens and prompt count, so
clicking more points re-uses compiled code). Upsampling to the original size is a third small jitted step,
compiled once per image size.
"""

from __future__ import annotations

import functools
import math

import jax
import numpy as np

from samjax import transforms as T
from samjax.infer.validate import (ImageNotSetError, check_boxes, check_image, check_mask_input, check_params,
                                   check_points)
from samjax.models import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, IGNORE, NOT_A_POINT, Sam, SamConfig, decode_prompts, image_cache


def bucket(n: int) -> int:
    """Round a count up to a power of two (>= 1): the shapes the decoder is compiled for."""
    return 1 if n <= 1 else 2 ** math.ceil(math.log2(n))


# ------------------------------------------------------------------------------------------ jitted bodies
@functools.partial(jax.jit, static_argnames=("config",))
def _encode(params, images, input_hw, *, config: SamConfig):
    """images (B, S, S, 3) uint8 zero-padded, input_hw (B, 2) -> embeddings (B, g, g, C)."""
    x = T.normalize(images, input_hw, config.pixel_mean, config.pixel_std)
    return Sam(config).apply({"params": params}, x, method=Sam.embed_images)


@functools.partial(jax.jit, static_argnames=("config",))
def dense_pe(params, *, config: SamConfig):
    """The image-grid positional encoding (1, g, g, C): a function of the parameters only, computed once."""
    return Sam(config).apply({"params": params}, method=Sam.get_dense_pe)


@functools.partial(jax.jit, static_argnames=("config",))
def _image_cache(params, features, image_pe, *, config: SamConfig):
    """The decoder's image-only work for features (1, g, g, C): `models.image_cache`."""
    return image_cache(params, config, features, image_pe)


@functools.partial(jax.jit, static_argnames=("config", "multimask_output"))
def _decode(params, features, coords, labels, masks, image_pe, cache, *, config: SamConfig, multimask_output: bool):
    """Tokens (B, N, 2) / (B, N), optional mask prompts (B, 4g, 4g), image_pe (1, g, g, C) (`dense_pe`), cache
    (`_image_cache` of features) -> low-res logits (B, M, 4g, 4g), iou (B, M)."""
    return decode_prompts(params, config, features, coords, labels, masks, multimask_output, image_pe,
                          image_cache=cache)


@functools.partial(jax.jit, static_argnames=("config", "input_size", "original_size", "return_logits", "batch"))
def _postprocess(low_res, *, config: SamConfig, input_size, original_size, return_logits: bool, batch: int):
    """The first `batch` prompts' low-res logits (B >= batch, M, 4g, 4g) -> masks (batch, M, H, W) at the original
    size (bool, or logits with return_logits). Slicing here, not eagerly before, saves a dispatch per call."""
    masks = T.postprocess_masks(low_res[:batch], input_size, original_size, config.image_size)
    return masks if return_logits else masks > config.mask_threshold


# ------------------------------------------------------------------------------------------------ predictor
class Predictor:
    """SamPredictor in JAX: `set_image` once, then `predict` / `predict_batch` for any number of prompts."""

    def __init__(self, config: SamConfig, params: dict, mesh: jax.sharding.Mesh | None = None):
        """`mesh`: encode image batches data-parallel over its devices (see `data_mesh`); None: one device."""
        check_params(params, config)
        self.config = config
        self.mesh = mesh
        if mesh is None:
            self.params = jax.device_put(params)
        else:
            self.params = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        # Compiled code is shared by every Predictor with an equal config (the config is a static argument); the
        # encoder's by those whose configs differ in the decoder's product dtype only.
        self._encode = functools.partial(_encode, config=config.replace(decoder_matmul_dtype="float32"))
        self._decode = functools.partial(_decode, config=config)
        self._image_cache = functools.partial(_image_cache, config=config)
        self._postprocess = functools.partial(_postprocess, config=config)
        # The prompt-side calls take the decoder's parameters only: a jitted call flattens every leaf it is
        # given, and the image encoder's 177 of 314 (ViT-B) cost ~0.4 ms in each one-prompt predict (2 cores).
        self.decoder_params = {k: self.params[k] for k in ("prompt_encoder", "mask_decoder")}
        self.image_pe = dense_pe(self.params, config=config)  # (1, g, g, C), shared by every image and prompt
        self.reset_image()

    # --- image
    def _prepare(self, image, image_format: str) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """Check, reorder channels, resize the longest side and pad: -> ((S, S, 3) uint8, input (h, w), original (H, W))."""
        image = check_image(image, image_format)
        if image_format != self.config.image_format:
            image = image[..., ::-1]
        padded, input_size = T.resize_and_pad(image, self.config.image_size)
        return padded, input_size, tuple(image.shape[:2])

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Compute and cache the embedding of an (H, W, 3) uint8 image."""
        padded, input_size, original_size = self._prepare(image, image_format)
        self.reset_image()
        self.original_size, self.input_size = original_size, input_size
        self._use_features(self._encode(self.params, padded[None], np.array([input_size], np.int32)))
        self.is_image_set = True

    def _use_features(self, features) -> None:
        """Make features (1, g, g, C) the current image's, with the decoder's image-only work done once for all
        of its prompts (`models.image_cache`; one prompt's decode on 2 cores 18.8 -> 17.9 ms)."""
        self.features = features
        self.image_cache = self._image_cache(self.decoder_params, features, self.image_pe)

    def encode_images(self, images, image_format: str = "RGB"):
        """Embed many images in one encoder call: list of (H, W, 3) uint8 (sizes may differ).

        Returns (features (B, g, g, C) on device, input_sizes [(h, w)], original_sizes [(H, W)]). The batch is
        padded to a power of two (and to a multiple of the mesh's devices, over which it is split data-parallel)
        so few shapes are compiled; features of the padding rows are dropped.
        """
        if len(images) == 0:
            raise ValueError("images is empty")
        s = self.config.image_size
        padded, input_sizes, original_sizes = map(list, zip(*(self._prepare(im, image_format) for im in images)))
        n = len(padded)
        ndev = 1 if self.mesh is None else self.mesh.devices.size
        size = max(bucket(n), ndev)
        size = -(-size // ndev) * ndev
        batch = np.zeros((size, s, s, 3), np.uint8)
        batch[:n] = np.stack(padded)
        hw = np.zeros((size, 2), np.int32)
        hw[:n] = input_sizes
        if self.mesh is not None:
            data = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(self.mesh.axis_names))
            batch, hw = jax.device_put(batch, data), jax.device_put(hw, data)
        features = self._encode(self.params, batch, hw)
        return features[:n] if size != n else features, input_sizes, original_sizes

    def set_images(self, images, image_format: str = "RGB") -> None:
        """Embed a batch of images in one call (data-parallel over the mesh, if any); `select_image(i)` then
        makes image i the one `predict` works on. Image 0 is selected."""
        self.reset_image()
        self.batch_features, self.batch_input_sizes, self.batch_original_sizes = self.encode_images(images,
                                                                                                    image_format)
        self.select_image(0)

    def select_image(self, i: int) -> None:
        """Predict on image i of the last `set_images` batch (no encoder work)."""
        if getattr(self, "batch_features", None) is None:
            raise ImageNotSetError("no image batch is set: call predictor.set_images(images) first")
        n = len(self.batch_input_sizes)
        if not -n <= i < n:
            raise IndexError(f"image index {i} out of range for a batch of {n}")
        self._use_features(self.batch_features[i:i + 1] if n > 1 else self.batch_features)
        self.input_size, self.original_size = self.batch_input_sizes[i], self.batch_original_sizes[i]
        self.is_image_set = True

    def set_embedding(self, features, input_size: tuple[int, int], original_size: tuple[int, int]) -> None:
        """Make a stored embedding the current image's, as `set_image` of that image would: features (1, g, g, C)
        from `get_image_embedding` or `encode_images`, input_size (h, w) of the resized image, original_size
        (H, W). For servers that keep embeddings on disk and switch between images without re-encoding."""
        g, c = self.config.grid_size, self.config.prompt_embed_dim
        if tuple(np.shape(features)) != (1, g, g, c):
            raise ValueError(f"features must be (1, {g}, {g}, {c}) (this model's embedding), got {np.shape(features)}")
        input_size, original_size = tuple(int(v) for v in input_size), tuple(int(v) for v in original_size)
        if input_size != T.get_preprocess_shape(*original_size, self.config.image_size):
            raise ValueError(f"input_size {input_size} is not the resized size of an image of {original_size}")
        self.reset_image()
        self.original_size, self.input_size = original_size, input_size
        self._use_features(jax.device_put(np.asarray(features, np.float32)))
        self.is_image_set = True

    def reset_image(self) -> None:
        self.is_image_set = False
        self.batch_features = self.batch_input_sizes = self.batch_original_sizes = None
        self.features = self.image_cache = None
        self.original_size = None
        self.input_size = None

    def get_image_embedding(self) -> np.ndarray:
        """The cached embedding, (1, g, g, C) float32 (channels last; the official returns (1, C, g, g))."""
        self._require_image()
        return np.asarray(self.features)

    def _require_image(self):
        if not self.is_image_set:
            raise ImageNotSetError("no image is set: call predictor.set_image(image) before predict() or "
                                   "get_image_embedding()")

    # --- prompts
    def _tokens(self, coords, labels, boxes, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Official token order (points, a not-a-point pad when there is no box, box corners), bucketed with IGNORE."""
        s, orig = self.config.image_size, self.original_size
        parts_c, parts_l = [], []
        if coords is not None:
            parts_c.append(T.apply_coords(coords, orig, s))
            parts_l.append(labels)
            if boxes is None:
                parts_c.append(np.zeros((batch, 1, 2)))
                parts_l.append(np.full((batch, 1), NOT_A_POINT, np.int32))
        if boxes is not None:
            parts_c.append(T.apply_boxes(boxes, orig, s).reshape(batch, 2, 2))
            parts_l.append(np.tile(np.array([[BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]], np.int32), (batch, 1)))
        n = sum(c.shape[1] for c in parts_c)
        nb, bb = bucket(max(n, 1)), bucket(batch)
        out_c = np.zeros((bb, nb, 2), np.float32)
        out_l = np.full((bb, nb), IGNORE, np.int32)
        if n:
            out_c[:batch, :n] = np.concatenate(parts_c, axis=1)
            out_l[:batch, :n] = np.concatenate(parts_l, axis=1)
        return out_c, out_l

    def _run(self, coords, labels, boxes, masks, batch, multimask_output, return_logits):
        tok_c, tok_l = self._tokens(coords, labels, boxes, batch)
        if masks is not None:
            masks = np.concatenate([masks, np.zeros((tok_c.shape[0] - batch, *masks.shape[1:]), np.float32)])
        low_res, iou = self._decode(self.decoder_params, self.features, tok_c, tok_l, masks, self.image_pe,
                                    self.image_cache, multimask_output=multimask_output)
        masks_out = self._postprocess(low_res, input_size=self.input_size, original_size=self.original_size,
                                      return_logits=return_logits, batch=batch)
        return np.asarray(masks_out), np.asarray(iou)[:batch], np.asarray(low_res)[:batch]

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output: bool = True,
                return_logits: bool = False):
        """One prompt, as segment_anything.SamPredictor.predict.

        point_coords (N, 2) (x, y) pixels of the original image; point_labels (N,) 1 fg / 0 bg; box (4,) XYXY;
        mask_input (1, 256, 256) low-res logits from a previous call. Returns masks (C, H, W) bool (float
        logits with return_logits), iou_predictions (C,), low_res_logits (C, 256, 256); C = 3 or 1.
        """
        self._require_image()
        return tuple(x[0] for x in self._predict(point_coords, point_labels, box, mask_input, multimask_output,
                                                 return_logits, batched=False))

    def predict_batch(self, point_coords=None, point_labels=None, boxes=None, mask_input=None,
                      multimask_output: bool = True, return_logits: bool = False):
        """B prompts on the cached image in one call: point_coords (B, N, 2) + point_labels (B, N) and/or
        boxes (B, 4), mask_input (B, 1, 256, 256). Returns masks (B, C, H, W), iou (B, C), logits (B, C, 256, 256)."""
        self._require_image()
        return self._predict(point_coords, point_labels, boxes, mask_input, multimask_output, return_logits,
                             batched=True)

    def _predict(self, coords, labels, boxes, mask_input, multimask_output, return_logits, batched):
        if coords is None and labels is not None:
            raise ValueError("point_labels were given without point_coords")
        if coords is None and boxes is None and mask_input is None:
            raise ValueError("no prompt: give point_coords + point_labels, a box, and/or a mask_input")
        if coords is not None:
            coords, labels = check_points(coords, labels, self.original_size, batched)
        if boxes is not None:
            boxes = check_boxes(boxes, self.original_size, batched)
        masks = None if mask_input is None else check_mask_input(mask_input, self.config.mask_input_size, batched)
        sizes = {name: x.shape[0] for name, x in (("point_coords", coords), ("boxes", boxes), ("mask_input", masks))
                 if x is not None}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"prompt batch sizes differ: {sizes}")
        return self._run(coords, labels, boxes, masks, next(iter(sizes.values())), multimask_output, return_logits)
