"""Names for automatic masks: CLIP zero-shot classification of each mask's crop.

    labeler = ClipLabeler.load("clip-vit-base-patch32/", ["cat", "sofa", "lamp"])   # or (ClipConfig, params)
    names, scores = labeler.label(image, masks)        # (N,) label indices, (N,) softmax probabilities

The crop (`crop_masks`): the mask's bounding box cut from the image, every pixel outside the mask set to CLIP's mean
colour, padded to a square with the same colour (centred, so the object keeps its shape), resized to CLIP's input
size with PIL bicubic (as CLIP's own preprocessing). This is the masked crop common in open-vocabulary
segmentation (OVSeg's masked crops; Grounded/labelled-SAM demos that blank the background): the rest of the box,
often another object, is taken out, and the mean colour normalises to 0, so it adds nothing to the patch tokens.
Each label is embedded once as "a photo of a {label}." (CLIP's basic prompt; `template` changes it); a crop's label is
the argmax of CLIP's logits over the labels, its score the softmax probability (CLIP's zero-shot classification).
Crops are embedded in chunks of at most CHUNK images, one compile per power-of-two chunk size.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from samjax.amg import mask_io
from samjax.infer.predictor import bucket
from samjax.models.clip import Clip, ClipConfig, normalize
from samjax.text import ClipTokenizer
from samjax.weights import clip as clip_weights

TEMPLATE = "a photo of a {}."
CHUNK = 32  # crops per encoder call: (32, 224, 224, 3) plus ViT-B activations stay well under a GiB


def parse_labels(labels: str | Sequence[str]) -> tuple[str, ...]:
    """"cat, sofa" or ["cat", "sofa"] -> ("cat", "sofa"); at least two distinct labels (softmax over one label is
    always 1)."""
    if isinstance(labels, str):
        labels = labels.split(",")
    if not isinstance(labels, Sequence) or not all(isinstance(x, str) for x in labels):
        raise TypeError(f"labels must be a comma-separated string or a list of strings, got {labels!r}")
    out = tuple(x.strip() for x in labels if x.strip())
    if len(out) < 2:
        raise ValueError(f"labels {labels!r}: give at least two labels to choose between, e.g. 'cat, sofa'")
    if len(set(out)) != len(out):
        raise ValueError(f"labels {out} repeat a label")
    return out


def crop_masks(image: np.ndarray, masks: Sequence[np.ndarray], size: int, fill: Sequence[int]) -> np.ndarray:
    """(H, W, 3) uint8 image and N (H, W) bool masks -> (N, size, size, 3) uint8 masked crops (module docstring).
    An empty mask gives a crop of `fill` only."""
    fill = np.asarray(fill, np.uint8)
    out = np.empty((len(masks), size, size, 3), np.uint8)
    for i, mask in enumerate(masks):
        mask = np.asarray(mask, bool)
        x0, y0, x1, y1 = mask_io.mask_to_box(mask)
        if not mask.any():
            out[i] = fill
            continue
        crop = np.where(mask[y0:y1 + 1, x0:x1 + 1, None], image[y0:y1 + 1, x0:x1 + 1], fill)
        h, w = crop.shape[:2]
        side = max(h, w)
        square = np.empty((side, side, 3), np.uint8)
        square[:] = fill
        top, left = (side - h) // 2, (side - w) // 2
        square[top:top + h, left:left + w] = crop
        out[i] = np.asarray(Image.fromarray(square).resize((size, size), Image.BICUBIC))
    return out


@functools.partial(jax.jit, static_argnames=("config",))
def _embed_texts(params, ids, *, config: ClipConfig):
    return normalize(Clip(config).apply({"params": params}, ids, method=Clip.encode_text))


@functools.partial(jax.jit, static_argnames=("config",))
def _embed_crops(params, crops, *, config: ClipConfig):
    """crops (N, S, S, 3) uint8 -> normalised image embeddings (N, E)."""
    x = (crops.astype(jnp.float32) / 255.0 - jnp.asarray(config.pixel_mean)) / jnp.asarray(config.pixel_std)
    return normalize(Clip(config).apply({"params": params}, x, method=Clip.encode_image))


class ClipLabeler:
    """Labels masks with CLIP (see the module docstring). `tokenizer`: CLIP's (ClipTokenizer)."""

    def __init__(self, config: ClipConfig, params: dict, tokenizer: ClipTokenizer, labels: str | Sequence[str],
                 template: str = TEMPLATE):
        if "{}" not in template:
            raise ValueError(f"template {template!r} must hold '{{}}' where the label goes")
        self.labels = parse_labels(labels)
        self.config, self.params = config, jax.device_put(params)
        self.template = template
        self.input_size = config.image_size
        self.fill = tuple(int(round(255 * m)) for m in config.pixel_mean)
        self.logit_scale = float(np.exp(np.asarray(params["logit_scale"])))
        ids = tokenizer([template.format(x) for x in self.labels], context_length=config.context_length)
        if int(ids.max()) >= config.vocab_size:
            raise ValueError(f"the tokenizer gives ids up to {int(ids.max())} but the model's vocabulary has "
                             f"{config.vocab_size}: not this model's tokenizer")
        self.text_embeddings = np.asarray(_embed_texts(self.params, ids, config=config))  # (L, E)

    @classmethod
    def load(cls, clip, labels: str | Sequence[str], template: str = TEMPLATE,
             tokenizer: ClipTokenizer | None = None) -> ClipLabeler:
        """`clip`: a CLIP checkpoint (a Hugging Face directory, a samjax.weights.clip.save_clip directory, or an
        OpenAI .pt / state-dict file: samjax.weights.clip.load_clip) or a loaded (ClipConfig, params) pair. The
        tokenizer comes from the directory's tokenizer files, else from an installed CLIP package's vocabulary."""
        path, config, params = clip_weights.checkpoint_or_pair(clip)
        if tokenizer is None:
            tokenizer = ClipTokenizer.for_checkpoint(path, context_length=config.context_length)
        return cls(config, params, tokenizer, labels, template)

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 crops -> (N, E) normalised CLIP image embeddings, in chunks of CHUNK."""
        out = []
        for start in range(0, len(crops), CHUNK):
            part = crops[start:start + CHUNK]
            padded = np.zeros((bucket(len(part)), *part.shape[1:]), np.uint8)
            padded[:len(part)] = part
            out.append(np.asarray(_embed_crops(self.params, padded, config=self.config))[:len(part)])
        return np.concatenate(out) if out else np.zeros((0, self.text_embeddings.shape[1]), np.float32)

    def label(self, image: np.ndarray, masks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """An (H, W, 3) uint8 image and N (H, W) bool masks -> (label indices (N,) int64 into `labels`, scores (N,)
        float32: the softmax probability of that label)."""
        if len(masks) == 0:
            return np.zeros((0,), np.int64), np.zeros((0,), np.float32)
        emb = self.embed_crops(crop_masks(image, masks, self.input_size, self.fill))
        logits = self.logit_scale * emb @ self.text_embeddings.T  # (N, L)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        best = probs.argmax(1)
        return best, probs[np.arange(len(best)), best].astype(np.float32)
