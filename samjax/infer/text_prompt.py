"""The SAM paper's text prompt at inference (Kirillov et al. 2023, section 7.5 and appendix D.5): text through CLIP's
text tower, "without any modifications", and the embedding as a prompt to SAM (one sparse token,
`PromptEncoder.embed_text`), alone or with points and boxes ("when SAM fails to pick the right object from a text
prompt only, an additional point often fixes the prediction").

No public weights exist for SAM's text prompt: the released checkpoints have no text path (for those, text -> boxes
-> masks: samjax.infer.GroundedPredictor). This serves a SAM trained with one (SamConfig.text_embed_dim > 0,
experiments/text_prompt.py), with the CLIP whose image tower embedded its training crops: CLIP's alignment of its
text and image embeddings is what lets a model trained on image embeddings answer text.

    prompter = TextPrompter.load(samjax.infer.load("runs/text/model"), clip="clip-vit-large-patch14-336/")
    prompter.set_image(image)                                   # Predictor.set_image: the encoder, once
    masks, scores, logits = prompter.predict("a wheel")          # as Predictor.predict: (3, H, W), (3,), (3, 256, 256)
    masks, scores, logits = prompter.predict("a wheel", point_coords=np.array([[120, 80]]), point_labels=np.array([1]))
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import numpy as np

from samjax.infer.families import bucket
from samjax.infer.predictor import Predictor
from samjax.models.clip import Clip, ClipConfig, normalize
from samjax.text import ClipTokenizer
from samjax.weights import clip as clip_weights

TEXT_MODULES = ("text_model", "text_projection", "logit_scale")  # what of CLIP `Clip.encode_text` reads


@functools.partial(jax.jit, static_argnames=("config",))
def _embed_texts(params, ids, *, config: ClipConfig):
    """ids (N, L) int32 -> l2-normalised CLIP text embeddings (N, E)."""
    return normalize(Clip(config).apply({"params": params}, ids, method=Clip.encode_text))


class TextPrompter:
    """Text prompts for a Predictor whose SAM has a text prompt; CLIP's text tower and tokenizer beside it.

    `template` formats each text before tokenizing ("{}": the text as given, the paper's; e.g. "a photo of a {}.")."""

    def __init__(self, predictor: Predictor, clip_config: ClipConfig, clip_params: dict, tokenizer: ClipTokenizer,
                 template: str = "{}"):
        dim = predictor.family.sam.text_embed_dim
        if not dim:
            raise ValueError("this SAM has no text prompt (SamConfig.text_embed_dim is 0, as in every released "
                             "checkpoint: no public weights exist for SAM's text prompt); train one with "
                             "experiments/text_prompt.py, or use text -> boxes -> masks "
                             "(samjax.infer.GroundedPredictor)")
        if clip_config.embed_dim != dim:
            raise ValueError(f"the CLIP's embeddings have {clip_config.embed_dim} values but the SAM's text prompt "
                             f"takes {dim}: not the CLIP it was trained with")
        if "{}" not in template:
            raise ValueError(f"template {template!r} must hold '{{}}' where the text goes")
        if tokenizer.vocab_size > clip_config.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the CLIP's vocabulary only "
                             f"{clip_config.vocab_size}: not this model's tokenizer")
        missing = [k for k in TEXT_MODULES if k not in clip_params]
        if missing:
            raise ValueError(f"clip_params lack CLIP's text tower {missing}")
        self.predictor, self.clip_config, self.tokenizer, self.template = predictor, clip_config, tokenizer, template
        self.clip_params = jax.device_put({k: clip_params[k] for k in TEXT_MODULES})

    @classmethod
    def load(cls, predictor: Predictor, clip, template: str = "{}",
             tokenizer: ClipTokenizer | None = None) -> TextPrompter:
        """`clip`: a CLIP checkpoint (a Hugging Face directory, a samjax.weights.clip.save_clip directory, or an
        OpenAI .pt / state-dict file: samjax.weights.clip.load_clip) or a loaded (ClipConfig, params) pair; the
        tokenizer from the directory's files, else from an installed CLIP package (ClipTokenizer.for_checkpoint)."""
        path, config, params = clip_weights.checkpoint_or_pair(clip)
        if tokenizer is None:
            tokenizer = ClipTokenizer.for_checkpoint(path, context_length=config.context_length)
        return cls(predictor, config, params, tokenizer, template)

    def embed(self, texts: str | Sequence[str]) -> np.ndarray:
        """Texts -> (N, E) float32 l2-normalised CLIP text embeddings (batches padded to powers of two: few
        compiles)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"give one or more non-empty texts, got {texts!r}")
        ids = self.tokenizer([self.template.format(t.strip()) for t in texts],
                             context_length=self.clip_config.context_length)
        padded = np.zeros((bucket(len(ids)), ids.shape[1]), np.int32)
        padded[:len(ids)] = ids
        return np.asarray(_embed_texts(self.clip_params, padded, config=self.clip_config))[:len(ids)]

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        self.predictor.set_image(image, image_format)

    def predict(self, text: str, point_coords=None, point_labels=None, box=None, multimask_output: bool = True,
                return_logits: bool = False):
        """One text prompt (plus optional points / a box) on the current image -> Predictor.predict's (masks (C, H, W),
        iou_predictions (C,), low_res_logits (C, 256, 256)); C = 3 with multimask_output (a text names a kind of thing:
        pick by predicted IoU, or add a point), else 1."""
        return self.predictor.predict(point_coords, point_labels, box, multimask_output=multimask_output,
                                      return_logits=return_logits, text_embedding=self.embed(text)[0])

    def predict_batch(self, texts: Sequence[str], multimask_output: bool = True, return_logits: bool = False):
        """B texts on the current image in one decoder call -> Predictor.predict_batch's (masks (B, C, H, W), iou
        (B, C), logits (B, C, 256, 256))."""
        return self.predictor.predict_batch(multimask_output=multimask_output, return_logits=return_logits,
                                            text_embedding=self.embed(texts))
