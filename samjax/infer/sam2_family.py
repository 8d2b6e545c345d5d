"""SAM 2's prompt side as a `families` adapter, so the automatic mask generator runs on a `Sam2Predictor`.

SAM 2 is not in `families.FAMILIES`: its images are resized in float with antialiasing on device, squashed to
S x S whatever their aspect ratio (sam2's SAM2Transforms), which SAM's host-side `prepare` (uint8 resize of the
longest side, padding) cannot express, so `samjax.infer.Predictor` does not serve it. `Sam2Predictor` encodes
images (`encode_images`) and hands this adapter (`Sam2Predictor.family`) to the generator, which needs only the
prompt side: coordinates to the S x S frame, the decoder, the low-res -> crop-size resize.

Differences from SAM that the generator sees through it:
- coordinates: (x / W, y / H) * S in float32 (SAM2Transforms.transform_coords with normalize=True);
- low-res logits (4g, 4g) go straight to the crop size (bilinear, align_corners=False: no crop of a padded frame);
- the decoder: SAM 2's mask decoder (high-res skips from the image's FPN levels, object-score token; the score does
  not gate the masks in the image predictor), outputs selected as SAM2ImagePredictor's (`select_outputs`: with
  multimask_output=False and the config's dynamic multimask, the single mask or the most confident multimask one);
- the generator's own defaults: SAM2AutomaticMaskGenerator's (`AMG_DEFAULTS`: pred_iou_thresh 0.8).

Features are (image_embed (B, g, g, C), (feat_s0 (B, 4g, 4g, C/8), feat_s1 (B, 2g, 2g, C/4))), as
`samjax.models.sam2.image_embeddings` makes them (empty high-res tuple for configs without high-res features).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import numpy as np

from samjax import transforms as T
from samjax.infer.families import SamFamily
from samjax.models import sam2 as S
from samjax.models.sam2.mask_decoder import select_outputs

DECODER_MODULES = ("sam_prompt_encoder", "sam_mask_decoder")


def to_input_frame(xy: np.ndarray, original_size: tuple[int, int], image_size: int, normalize: bool) -> np.ndarray:
    """SAM2Transforms.transform_coords in float32: (x / W, y / H) * S (or x * S for coordinates already in [0, 1])."""
    xy = np.array(xy, np.float32, copy=True)
    if normalize:
        h, w = original_size
        xy[..., 0] = xy[..., 0] / np.float32(w)
        xy[..., 1] = xy[..., 1] / np.float32(h)
    return xy * np.float32(image_size)


@dataclasses.dataclass(frozen=True)
class Sam2Family(SamFamily):
    """SAM 2 / 2.1 (`Sam2Config`) for the automatic mask generator: the prompt side of `families.SamFamily` (the
    image side is `Sam2Predictor.encode_images`). `sam` is the Sam2Config itself: image_size is the S x S input
    frame, mask_input_size the low-res side 4g, mask_threshold the model's."""

    NAME: ClassVar[str] = "sam2"
    # SAM2AutomaticMaskGenerator's defaults where they differ from SamAutomaticMaskGenerator's.
    AMG_DEFAULTS: ClassVar[dict[str, Any]] = {"pred_iou_thresh": 0.8}

    @property
    def sam(self) -> S.Sam2Config:
        return self.config

    def module(self):
        return S.Sam2(self.config)

    def num_masks(self, multimask_output: bool, **options) -> int:
        return self.config.num_multimask_outputs if multimask_output else 1

    # ---------------------------------------------------------------------------------------- variables
    def abstract_variables(self) -> dict:
        return {"params": S.abstract_params(self.config)}

    def decoder_variables(self, variables: dict) -> dict:
        return {"params": {k: variables["params"][k] for k in DECODER_MODULES}}

    # ---------------------------------------------------------------------------------------- host side
    def prepare(self, image: np.ndarray):
        raise NotImplementedError("SAM 2 resizes images in float on device: encode them with "
                                  "Sam2Predictor.encode_images (samjax.infer.load gives a Sam2Predictor)")

    def map_coords(self, coords: np.ndarray, original_size) -> np.ndarray:
        """(..., 2) (x, y) original pixels -> the S x S input frame, float32 as SAM2Transforms."""
        return to_input_frame(coords, original_size, self.config.image_size, True)

    def tokens(self, coords, labels, boxes, original_size, batch: int):
        raise NotImplementedError("SAM 2's prompt tokens are made by Sam2Predictor.predict (boxes first)")

    def upsample_matrix(self, input_len: int, original_len: int) -> np.ndarray:
        """Low-res logits straight to the original length (F.interpolate bilinear, align_corners=False): (original,
        4g). input_len is unused (SAM 2 has no padded frame to crop)."""
        return T.bilinear_matrix(self.config.mask_input_size, original_len).astype(np.float32)

    def postprocess(self, low_res: jax.Array, input_size, original_size) -> jax.Array:
        raise NotImplementedError("SAM 2's masks are upsampled by Sam2Predictor.predict")

    # -------------------------------------------------------------------------------------- device side
    def encode(self, variables: dict, images: jax.Array):
        raise NotImplementedError("encode SAM 2 images with Sam2Predictor.encode_images")

    def embedding(self, features) -> jax.Array:
        return features[0]

    def dense_pe(self, dvars: dict) -> jax.Array:
        return S.Sam2(self.config).apply(dvars, method=S.Sam2.dense_pe)

    def image_cache(self, dvars: dict, features, image_pe: jax.Array):
        """None: SAM 2's image-only decoder work (conv_s0 / conv_s1 on the high-res levels) is in the features."""
        return None

    def decode(self, dvars: dict, features, coords, labels, masks, multimask_output: bool, image_pe, cache,
               options: tuple = (), text=None):
        """Tokens (B, N, 2) / (B, N) in the S x S frame (IGNORE-padded), mask prompts (B, 4g, 4g) or None, one image's
        features (batch 1) -> low-res logits (B, M, 4g, 4g), iou (B, M) (SAM2ImagePredictor._predict's model part)."""
        if text is not None:
            raise ValueError("SAM 2 takes no text prompt")
        embed, high_res = features
        outs = S.Sam2(self.config).apply(dvars, embed, coords, labels, masks, list(high_res) or None,
                                         method=S.Sam2.decode_all)
        low, iou, _, _ = select_outputs(self.config, *outs, multimask_output=multimask_output)
        return low, iou

    def decode_lazy(self, dvars: dict, features, coords, labels, multimask_output: bool, image_pe, cache,
                    options: tuple = ()):
        """The whole decoder, masks included (no split before the output upscaling, unlike SAM's): the state is the
        low-res logits (P, M, 4g, 4g)."""
        return self.decode(dvars, features, coords, labels, None, multimask_output, image_pe, cache, options)

    def masks_from(self, dvars: dict, state) -> jax.Array:
        return state
