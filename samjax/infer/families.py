"""Model families in serving: the one place where the Predictor and the automatic mask generator meet a model.

Every SAM-like model answers prompts the same way from the outside (an image is encoded once; points, boxes and
mask prompts become low-res mask logits and predicted IoUs), and differs inside: the encoder and its input size,
what the decoder needs from the image besides the embedding, the decoder itself, the variables' collections. A
`Family` adapter holds those differences for one family; `family_for(config)` picks it by the config's class.
`samjax.infer.Predictor` and `samjax.amg.AutomaticMaskGenerator` call only the methods below, so a new family is one
subclass registered in `FAMILIES`, not a branch in either. (SAM 2 resizes its images in float on device, which
`prepare` cannot express: `Sam2Predictor` encodes them and carries `samjax.infer.sam2_family.Sam2Family`, the prompt
side of an adapter, not registered here, which is what the generator needs.)

An adapter is a frozen dataclass of its config (hashable): the jitted bodies take it as a static argument, so
predictors with equal configs share compiled code. Its methods come in three groups:

- host side (numpy, before and after the device): `prepare` (resize, pad: the encoder's input, the valid region,
  the prompt frame's input size), `tokens` (prompts in original pixels -> the decoder's padded token arrays),
  `postprocess` / `upsample_matrix` (low-res logits -> the original size);
- variables: `abstract_variables` (the {"params", "batch_stats"?} tree the converter and store give),
  `variables` (what a user passes -> that tree), `decoder_variables` (the part the prompt-side calls read);
- device side (traced inside jit): `encode` (normalised images -> the features pytree, batch first),
  `embedding` (its image embedding), `image_cache` (the decoder's work that depends on the image only, once per
  image), `decode` (prompts -> (low-res logits (B, M, 4g, 4g), iou (B, M))), and for the automatic mask generator
  `decode_lazy` + `masks_from` (the decoder without, then with, its mask-making tail, so that masks are made only
  for prompts that pass the predicted-IoU filter).

Families here: SAM (`SamConfig`), HQ-SAM (`HQSamConfig`: the encoder's early feature and the fused HQ feature,
one mask per prompt, `hq_token_only`), MobileSAM (`MobileSamConfig`) and EfficientViT-SAM (`EfficientViTSamConfig`:
L models encode 512 px images and answer prompts in the 1024 px frame, as the reference predictor maps them). The
last two reuse SAM's prompt encoder and decoder, and with them every decoder speed path of SAM (`image_cache`,
decoder groups, lazy mask making).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import numpy as np

from samjax import transforms as T
from samjax.models import (
    BOX_BOTTOM_RIGHT,
    BOX_TOP_LEFT,
    IGNORE,
    NOT_A_POINT,
    Sam,
    SamConfig,
    abstract_params,
    decode_prompts,
    efficientvit_sam,
    hq_sam,
    image_cache,
    mobile_sam,
    upscale_masks,
)
from samjax.models.efficientvit_sam import EfficientViTSam, EfficientViTSamConfig
from samjax.models.hq_sam import HQSam, HQSamConfig
from samjax.models.mobile_sam import MobileSam, MobileSamConfig
from samjax.weights import store

DECODER_MODULES = ("prompt_encoder", "mask_decoder")


def bucket(n: int) -> int:
    """Round a count up to a power of two (>= 1): the shapes the decoder is compiled for."""
    return 1 if n <= 1 else 2 ** math.ceil(math.log2(n))


@dataclasses.dataclass(frozen=True)
class SamFamily:
    """SAM (segment_anything): ViT encoder, prompt encoder, mask decoder; variables {"params"}."""

    config: Any
    NAME: ClassVar[str] = "sam"
    # Decode options a Predictor's predict / the generator accept for this family, with their defaults.
    OPTIONS: ClassVar[dict[str, Any]] = {}
    # The automatic mask generator's defaults that depend on the family (its reference generator's).
    AMG_DEFAULTS: ClassVar[dict[str, Any]] = {"pred_iou_thresh": 0.88}

    # ------------------------------------------------------------------------------- configs and sizes
    @property
    def sam(self) -> SamConfig:
        """The prompt encoder's and mask decoder's SamConfig: its image_size is the prompt frame (coordinates,
        low-res masks, mask prompts), its mask_threshold, pixel statistics and image format are the model's."""
        return self.config

    @property
    def encoder_size(self) -> int:
        """Side of the square, padded image the encoder takes."""
        return self.config.image_size

    def module(self):
        return Sam(self.config)

    def with_sam(self, **changes) -> SamFamily:
        """The same family with `changes` to its decoder SamConfig (dtype, decoder_matmul_dtype ...)."""
        return dataclasses.replace(self, config=self.config.replace(**changes))

    def for_encoder(self) -> SamFamily:
        """The adapter the encoder is compiled for: configs that differ in the decoder's product dtype only share it."""
        return self.with_sam(decoder_matmul_dtype="float32")

    def num_masks(self, multimask_output: bool, **options) -> int:
        """Masks per prompt that `decode` returns."""
        return self.sam.num_multimask_outputs if multimask_output else 1

    def check_options(self, options: dict) -> tuple:
        """Decode options -> a sorted, hashable tuple of (name, value) (a static jit argument); unknown ones raise."""
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise TypeError(f"{self.NAME} models take no decode option {unknown}; "
                            f"options: {sorted(self.OPTIONS) or 'none'}")
        return tuple(sorted({**self.OPTIONS, **options}.items()))

    # ---------------------------------------------------------------------------------------- variables
    def abstract_variables(self) -> dict:
        """Shapes of {"params"(, "batch_stats")}: what `variables` returns."""
        return {"params": abstract_params(self.config)}

    def variables(self, tree: dict) -> dict:
        """What users pass (SAM: the params dict of `init_params` / the converter, or {"params": ...}) ->
        {"params": ...(, "batch_stats": ...)}."""
        return tree if set(tree) <= {"params", "batch_stats"} and "params" in tree else {"params": tree}

    def decoder_variables(self, variables: dict) -> dict:
        """The prompt-side calls' variables: a jitted call flattens every leaf it is given, and an encoder's (177 of
        ViT-B's 314) cost ~0.4 ms in each one-prompt predict (2 cores)."""
        return {"params": {k: variables["params"][k] for k in DECODER_MODULES}}

    # ---------------------------------------------------------------------------------------- host side
    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int], tuple[int, int], tuple[int, int]]:
        """(H, W, 3) uint8 (checked, channels in the model's order) -> (the encoder's (S, S, 3) uint8, the valid
        (h, w) in it, the input size in the prompt frame (the official `input_size`), the original (H, W))."""
        padded, encoder_hw = T.resize_and_pad(image, self.encoder_size)
        h, w = image.shape[:2]
        return padded, encoder_hw, T.get_preprocess_shape(h, w, self.sam.image_size), (h, w)

    def map_coords(self, coords: np.ndarray, original_size) -> np.ndarray:
        """(..., 2) (x, y) original pixels -> the prompt frame (float64, as the official ResizeLongestSide)."""
        return T.apply_coords(coords, original_size, self.sam.image_size)

    def tokens(self, coords, labels, boxes, original_size, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Official token order (points, a not-a-point pad when there is no box, box corners), in the prompt frame,
        bucketed (prompt count and token count to powers of two) with IGNORE slots: ((Bb, Nb, 2), (Bb, Nb))."""
        parts_c, parts_l = [], []
        if coords is not None:
            parts_c.append(self.map_coords(coords, original_size))
            parts_l.append(labels)
            if boxes is None:
                parts_c.append(np.zeros((batch, 1, 2)))
                parts_l.append(np.full((batch, 1), NOT_A_POINT, np.int32))
        if boxes is not None:
            parts_c.append(self.map_coords(np.asarray(boxes).reshape(batch, 2, 2), original_size))
            parts_l.append(np.tile(np.array([[BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]], np.int32), (batch, 1)))
        n = sum(c.shape[1] for c in parts_c)
        nb, bb = bucket(max(n, 1)), bucket(batch)
        out_c = np.zeros((bb, nb, 2), np.float32)
        out_l = np.full((bb, nb), IGNORE, np.int32)
        if n:
            out_c[:batch, :n] = np.concatenate(parts_c, axis=1)
            out_l[:batch, :n] = np.concatenate(parts_l, axis=1)
        return out_c, out_l

    def upsample_matrix(self, input_len: int, original_len: int) -> np.ndarray:
        """One axis of the low-res -> original-size bilinear map (official postprocess_masks): (original, 4g)."""
        return T.postprocess_matrix(self.sam.mask_input_size, self.sam.image_size, input_len, original_len)

    def postprocess(self, low_res: jax.Array, input_size, original_size) -> jax.Array:
        """Low-res logits (..., 4g, 4g) -> logits at the original size (traced; sizes static)."""
        return T.postprocess_masks(low_res, input_size, original_size, self.sam.image_size)

    # -------------------------------------------------------------------------------------- device side
    def encode(self, variables: dict, images: jax.Array):
        """Normalised, padded images (B, S, S, 3) -> the features pytree (batch first): SAM's embeddings
        (B, g, g, C)."""
        module = self.module()
        return module.apply(variables, images, method=type(module).embed_images)

    def embedding(self, features) -> jax.Array:
        """The image embedding (B, g, g, C) within `encode`'s features."""
        return features

    def dense_pe(self, dvars: dict) -> jax.Array:
        """The image-grid positional encoding (1, g, g, C): a function of the parameters only."""
        return Sam(self.sam).apply(dvars, method=Sam.get_dense_pe)

    def image_cache(self, dvars: dict, features, image_pe: jax.Array):
        """The decoder's image-only work for one image's features (batch 1): `models.image_cache`."""
        return image_cache(dvars["params"], self.sam, self.embedding(features), image_pe)

    def decode(self, dvars: dict, features, coords, labels, masks, multimask_output: bool, image_pe, cache,
               options: tuple = (), text=None):
        """Tokens (B, N, 2) / (B, N) in the prompt frame, mask prompts (B, 4g, 4g) or None, the image's cache ->
        low-res logits (B, M, 4g, 4g), iou (B, M); in decoder groups where that is faster (`decode_prompts`).
        text: (B, D) CLIP embeddings, a text token per prompt (models with SamConfig.text_embed_dim > 0), or None."""
        return decode_prompts(dvars["params"], self.sam, self.embedding(features), coords, labels, masks,
                              multimask_output, image_pe, image_cache=cache, text_embedding=text)

    def decode_lazy(self, dvars: dict, features, coords, labels, multimask_output: bool, image_pe, cache,
                    options: tuple = ()):
        """`decode` without mask prompts, stopping before the masks: (per-prompt state pytree (P, ...), iou (P, M));
        `masks_from` makes the masks of any rows of the state. SAM: the transformer's image side and the
        hypernetwork outputs, (src (P, g, g, C), hyper_in (P, M, C/8))."""
        src, hyper_in, iou = decode_prompts(dvars["params"], self.sam, self.embedding(features), coords, labels, None,
                                            multimask_output, image_pe, image_cache=cache, upscale=False)
        return (src, hyper_in), iou

    def masks_from(self, dvars: dict, state) -> jax.Array:
        """Rows of `decode_lazy`'s state -> their low-res logits (P', M, 4g, 4g)."""
        src, hyper_in = state
        return upscale_masks(dvars["params"]["mask_decoder"], self.sam, src, hyper_in)


@dataclasses.dataclass(frozen=True)
class _SamDecoderFamily(SamFamily):
    """A family with its own image encoder in front of SAM's prompt encoder and mask decoder (config.sam): every
    prompt-side method is SAM's."""

    MODULE: ClassVar[type] = Sam
    ABSTRACT: ClassVar[Any] = None

    @property
    def sam(self) -> SamConfig:
        return self.config.sam

    @property
    def encoder_size(self) -> int:
        return self.config.encoder_input_size

    def module(self):
        return self.MODULE(self.config)

    def with_sam(self, **changes):
        return dataclasses.replace(self, config=self.config.replace(sam=self.config.sam.replace(**changes)))

    def abstract_variables(self) -> dict:
        return type(self).ABSTRACT(self.config)

    def variables(self, tree: dict) -> dict:
        return tree


@dataclasses.dataclass(frozen=True)
class MobileSamFamily(_SamDecoderFamily):
    """MobileSAM: TinyViT (BatchNorm: variables {"params", "batch_stats"}) at 1024 px + SAM's decoder."""

    NAME: ClassVar[str] = "mobile_sam"
    MODULE: ClassVar[type] = MobileSam
    ABSTRACT: ClassVar[Any] = staticmethod(mobile_sam.abstract_variables)


@dataclasses.dataclass(frozen=True)
class EfficientViTSamFamily(_SamDecoderFamily):
    """EfficientViT-SAM: encodes `config.encoder_input_size` px images (512 for L models, 1024 for XL) and answers
    prompts in config.sam's 1024 px frame, as efficientvit's EfficientViTSamPredictor: coordinates scaled to the
    1024 frame's resized size, low-res masks upsampled to 1024 and cropped to it."""

    NAME: ClassVar[str] = "efficientvit_sam"
    MODULE: ClassVar[type] = EfficientViTSam
    ABSTRACT: ClassVar[Any] = staticmethod(efficientvit_sam.abstract_variables)


@dataclasses.dataclass(frozen=True)
class HQSamFamily(_SamDecoderFamily):
    """HQ-SAM: features are (embedding, early feature); the image cache is the fused HQ feature (made once per image);
    one mask per prompt, selected as segment_anything_hq's MaskDecoderHQ does (with multimask_output, the best of
    SAM's multimask outputs plus the HQ mask; `hq_token_only`: the HQ mask alone)."""

    NAME: ClassVar[str] = "hq_sam"
    MODULE: ClassVar[type] = HQSam
    ABSTRACT: ClassVar[Any] = staticmethod(hq_sam.abstract_variables)
    OPTIONS: ClassVar[dict[str, Any]] = {"hq_token_only": False}

    def num_masks(self, multimask_output: bool, **options) -> int:
        return 1

    def embedding(self, features) -> jax.Array:
        return features[0]

    def image_cache(self, dvars: dict, features, image_pe: jax.Array):
        emb, interm = features
        return HQSam(self.config).apply(dvars, emb, interm, method=HQSam.hq_features)

    def decode(self, dvars, features, coords, labels, masks, multimask_output, image_pe, cache, options=(), text=None):
        if text is not None:
            raise ValueError("HQ-SAM takes no text prompt")
        return HQSam(self.config).apply(dvars, self.embedding(features), None, coords, labels, masks, None,
                                        multimask_output, dict(options).get("hq_token_only", False),
                                        image_pe=image_pe, hq_features=cache, method=HQSam.decode)

    def decode_lazy(self, dvars, features, coords, labels, multimask_output, image_pe, cache, options=()):
        low_res, iou = self.decode(dvars, features, coords, labels, None, multimask_output, image_pe, cache, options)
        return low_res, iou

    def masks_from(self, dvars, state):
        return state


FAMILIES: dict[type, type[SamFamily]] = {
    SamConfig: SamFamily,
    HQSamConfig: HQSamFamily,
    MobileSamConfig: MobileSamFamily,
    EfficientViTSamConfig: EfficientViTSamFamily,
}


def family_for(config) -> SamFamily:
    """The serving adapter of a model config (SamConfig, HQSamConfig, MobileSamConfig, EfficientViTSamConfig)."""
    cls = FAMILIES.get(type(config))
    if cls is None:
        try:
            name = store.family_name(config)
        except ValueError:
            name = type(config).__name__
        if name == "sam2":
            raise ValueError("SAM 2 models are served by samjax.infer.Sam2Predictor (samjax.infer.load gives one), "
                             "not Predictor; its prompt-side adapter is samjax.infer.sam2_family.Sam2Family")
        raise ValueError(f"no serving adapter for {name!r} models ({type(config).__name__}) yet: samjax.infer serves "
                         f"{', '.join(c.__name__ for c in FAMILIES)} (adapters: samjax/infer/families.py); "
                         "samjax.weights.store.load_model reads its converted variables")
    return cls(config)
