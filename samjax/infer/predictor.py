"""Predictor: SamPredictor in JAX, with a cached image embedding, for every model family.

Two jitted functions: the encoder (one compile: images are padded to S x S on the host and the valid size is
passed as data) and the prompt-to-mask decoder (compiled per bucket of prompt tokens and prompt count, so
clicking more points re-uses compiled code). Upsampling to the original size is a third small jitted step,
compiled once per image size. What differs between SAM, HQ-SAM, MobileSAM and EfficientViT-SAM (encoder, input
size, decoder, variables) is the family adapter's (`samjax.infer.families`), a static argument of each.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from samjax import transforms as T
from samjax.infer.families import SamFamily, bucket, family_for
from samjax.infer.validate import (
    ImageNotSetError,
    check_boxes,
    check_image,
    check_mask_input,
    check_points,
    check_text_embedding,
    check_variables,
)

__all__ = ["Predictor", "bucket"]


# ------------------------------------------------------------------------------------------ jitted bodies
@functools.partial(jax.jit, static_argnames=("family",))
def _encode(variables, images, encoder_hw, *, family: SamFamily):
    """images (B, S, S, 3) uint8 zero-padded, encoder_hw (B, 2) their valid sizes -> the family's features pytree."""
    x = T.normalize(images, encoder_hw, family.sam.pixel_mean, family.sam.pixel_std)
    return family.encode(variables, x)


@functools.partial(jax.jit, static_argnames=("family",))
def dense_pe(dvars, *, family: SamFamily):
    """The image-grid positional encoding (1, g, g, C): a function of the parameters only, computed once."""
    return family.dense_pe(dvars)


@functools.partial(jax.jit, static_argnames=("family",))
def _image_cache(dvars, features, image_pe, *, family: SamFamily):
    """The decoder's image-only work for one image's features: the family's `image_cache`."""
    return family.image_cache(dvars, features, image_pe)


@functools.partial(jax.jit, static_argnames=("family", "multimask_output", "options"))
def _decode(dvars, features, coords, labels, masks, image_pe, cache, text=None, *, family: SamFamily,
            multimask_output: bool, options: tuple = ()):
    """Tokens (B, N, 2) / (B, N), optional mask prompts (B, 4g, 4g), image_pe (1, g, g, C) (`dense_pe`), cache
    (`_image_cache` of features), optional text prompts (B, D) -> low-res logits (B, M, 4g, 4g), iou (B, M)."""
    return family.decode(dvars, features, coords, labels, masks, multimask_output, image_pe, cache, options, text)


@functools.partial(jax.jit, static_argnames=("family", "input_size", "original_size", "return_logits", "batch"))
def _postprocess(low_res, *, family: SamFamily, input_size, original_size, return_logits: bool, batch: int):
    """The first `batch` prompts' low-res logits (B >= batch, M, 4g, 4g) -> masks (batch, M, H, W) at the original
    size (bool, or logits with return_logits). Slicing here, not eagerly before, saves a dispatch per call."""
    masks = family.postprocess(low_res[:batch], input_size, original_size)
    return masks if return_logits else masks > family.sam.mask_threshold


# ------------------------------------------------------------------------------------------------ predictor
class Predictor:
    """SamPredictor in JAX: `set_image` once, then `predict` / `predict_batch` for any number of prompts.

    Works for every family of `samjax.infer.families` (SAM, HQ-SAM, MobileSAM, EfficientViT-SAM): `config` is the
    family's config, `params` SAM's params dict or a family's variables ({"params", "batch_stats"}) as the
    converters and `samjax.weights.store` give them."""

    def __init__(self, config, params: dict, mesh: jax.sharding.Mesh | None = None):
        """`mesh`: encode image batches data-parallel over its devices (see `data_mesh`); None: one device."""
        self.family = family = family_for(config)
        variables = family.variables(params)
        check_variables(variables, family.abstract_variables(), type(config).__name__)
        self.config = config
        self.mesh = mesh
        if mesh is None:
            self.variables = jax.device_put(variables)
        else:
            self.variables = jax.device_put(variables, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        self.params = self.variables["params"]
        # Compiled code is shared by every Predictor with an equal config (the family is a static argument); the
        # encoder's by those whose configs differ in the decoder's product dtype only.
        self._encode = functools.partial(_encode, family=family.for_encoder())
        self._decode = functools.partial(_decode, family=family)
        self._image_cache = functools.partial(_image_cache, family=family)
        self._postprocess = functools.partial(_postprocess, family=family)
        # The prompt-side calls take the decoder's variables only (see SamFamily.decoder_variables).
        self.decoder_variables = family.decoder_variables(self.variables)
        self.image_pe = dense_pe(self.decoder_variables, family=family)  # (1, g, g, C), shared by every prompt
        self.reset_image()

    # --- image
    def _prepare(self, image, image_format: str):
        """Check, reorder channels, resize and pad: -> (the encoder's (S, S, 3) uint8, its valid (h, w), the input
        size in the prompt frame, the original (H, W)) (SamFamily.prepare)."""
        image = check_image(image, image_format)
        if image_format != self.family.sam.image_format:
            image = image[..., ::-1]
        return self.family.prepare(image)

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Compute and cache the embedding of an (H, W, 3) uint8 image."""
        padded, encoder_hw, input_size, original_size = self._prepare(image, image_format)
        self.reset_image()
        self.original_size, self.input_size = original_size, input_size
        self._use_features(self._encode(self.variables, padded[None], np.array([encoder_hw], np.int32)))
        self.is_image_set = True

    def _use_features(self, features) -> None:
        """Make features (the family's pytree, batch 1) the current image's, with the decoder's image-only work done
        once for all of its prompts (SAM: `models.image_cache`)."""
        self.features = features
        self.image_cache = self._image_cache(self.decoder_variables, features, self.image_pe)

    def encode_images(self, images, image_format: str = "RGB"):
        """Embed many images in one encoder call: list of (H, W, 3) uint8 (sizes may differ).

        Returns (features (the family's pytree, batch B) on device, input_sizes [(h, w)] in the prompt frame,
        original_sizes [(H, W)]). The batch is padded to a power of two (and to a multiple of the mesh's devices,
        over which it is split data-parallel) so few shapes are compiled; features of the padding rows are dropped.
        """
        if len(images) == 0:
            raise ValueError("images is empty")
        s = self.family.encoder_size
        padded, encoder_hw, input_sizes, original_sizes = map(list, zip(*(self._prepare(im, image_format)
                                                                          for im in images)))
        n = len(padded)
        ndev = 1 if self.mesh is None else self.mesh.devices.size
        size = max(bucket(n), ndev)
        size = -(-size // ndev) * ndev
        batch = np.zeros((size, s, s, 3), np.uint8)
        batch[:n] = np.stack(padded)
        hw = np.zeros((size, 2), np.int32)
        hw[:n] = encoder_hw
        if self.mesh is not None:
            data = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(self.mesh.axis_names))
            batch, hw = jax.device_put(batch, data), jax.device_put(hw, data)
        features = self._encode(self.variables, batch, hw)
        if size != n:
            features = jax.tree.map(lambda x: x[:n], features)
        return features, input_sizes, original_sizes

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
        i = i % n
        self._use_features(jax.tree.map(lambda x: x[i:i + 1], self.batch_features) if n > 1 else self.batch_features)
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
        return np.asarray(self.family.embedding(self.features))

    def _require_image(self):
        if not self.is_image_set:
            raise ImageNotSetError("no image is set: call predictor.set_image(image) before predict() or "
                                   "get_image_embedding()")

    # --- prompts
    def _tokens(self, coords, labels, boxes, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """The decoder's token arrays for these prompts (SamFamily.tokens)."""
        return self.family.tokens(coords, labels, boxes, self.original_size, batch)

    def _run(self, coords, labels, boxes, masks, batch, multimask_output, return_logits, options, text=None):
        tok_c, tok_l = self._tokens(coords, labels, boxes, batch)
        if masks is not None:
            masks = np.concatenate([masks, np.zeros((tok_c.shape[0] - batch, *masks.shape[1:]), np.float32)])
        if text is not None:  # padding rows repeat the first embedding (their outputs are dropped)
            text = np.concatenate([text, np.repeat(text[:1], tok_c.shape[0] - batch, axis=0)])
        low_res, iou = self._decode(self.decoder_variables, self.features, tok_c, tok_l, masks, self.image_pe,
                                    self.image_cache, text, multimask_output=multimask_output, options=options)
        masks_out = self._postprocess(low_res, input_size=self.input_size, original_size=self.original_size,
                                      return_logits=return_logits, batch=batch)
        return np.asarray(masks_out), np.asarray(iou)[:batch], np.asarray(low_res)[:batch]

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output: bool = True,
                return_logits: bool = False, text_embedding=None, **options):
        """One prompt, as segment_anything.SamPredictor.predict.

        point_coords (N, 2) (x, y) pixels of the original image; point_labels (N,) 1 fg / 0 bg; box (4,) XYXY;
        mask_input (1, 256, 256) low-res logits from a previous call. Returns masks (C, H, W) bool (float
        logits with return_logits), iou_predictions (C,), low_res_logits (C, 256, 256); C = 3 or 1 (HQ-SAM:
        always 1, as its reference). `options`: the family's decode options (HQ-SAM: hq_token_only=False).
        text_embedding (D,): a CLIP embedding as the paper's text prompt, alone or with the others, for a SAM trained
        with one (SamConfig.text_embed_dim = D > 0; experiments/text_prompt.py; no public weights exist);
        samjax.infer.text_prompt.TextPrompter makes it from text.
        """
        self._require_image()
        return tuple(x[0] for x in self._predict(point_coords, point_labels, box, mask_input, multimask_output,
                                                 return_logits, batched=False, options=options, text=text_embedding))

    def predict_batch(self, point_coords=None, point_labels=None, boxes=None, mask_input=None,
                      multimask_output: bool = True, return_logits: bool = False, text_embedding=None, **options):
        """B prompts on the cached image in one call: point_coords (B, N, 2) + point_labels (B, N) and/or
        boxes (B, 4), mask_input (B, 1, 256, 256), text_embedding (B, D) (see `predict`). Returns masks (B, C, H, W),
        iou (B, C), logits (B, C, 256, 256)."""
        self._require_image()
        return self._predict(point_coords, point_labels, boxes, mask_input, multimask_output, return_logits,
                             batched=True, options=options, text=text_embedding)

    def _predict(self, coords, labels, boxes, mask_input, multimask_output, return_logits, batched, options,
                 text=None):
        options = self.family.check_options(options)
        if coords is None and labels is not None:
            raise ValueError("point_labels were given without point_coords")
        if coords is None and boxes is None and mask_input is None and text is None:
            raise ValueError("no prompt: give point_coords + point_labels, a box, a mask_input and/or a "
                             "text_embedding")
        if text is not None:
            text = check_text_embedding(text, self.family.sam.text_embed_dim, batched)
        if coords is not None:
            coords, labels = check_points(coords, labels, self.original_size, batched)
        if boxes is not None:
            boxes = check_boxes(boxes, self.original_size, batched)
        size = self.family.sam.mask_input_size
        masks = None if mask_input is None else check_mask_input(mask_input, size, batched)
        sizes = {name: x.shape[0] for name, x in (("point_coords", coords), ("boxes", boxes), ("mask_input", masks),
                                                  ("text_embedding", text)) if x is not None}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"prompt batch sizes differ: {sizes}")
        return self._run(coords, labels, boxes, masks, next(iter(sizes.values())), multimask_output, return_logits,
                         options, text)
