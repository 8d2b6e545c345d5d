"""Tiny random models for the text-prompt tests, built once per process: an OWL-ViT / OWLv2 detector, a CLIP model,
a SAM model, and CLIP's real tokenizer (from the BPE vocabulary clip-anytorch ships; skipped without it).

The detector and CLIP keep CLIP's real vocabulary size (49408 rows of a 32-wide table) so the real tokenizer's ids
fit; everything else is as small as the architectures allow. Weights are random: the tests check plumbing, shapes,
compilation counts and parity with the references, never what the models find.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from samjax.models import SamConfig
from samjax.models.clip import ClipConfig
from samjax.models.owlvit import OwlViTConfig

VOCAB = 49408
# as HF OwlViTConfig / Owlv2Config keyword arguments (the parity tests build transformers' models from them)
OWL_HF_KW = dict(text_config=dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=2),
                 vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                    image_size=32, patch_size=8),
                 projection_dim=32)
CLIP_CONFIG = ClipConfig(embed_dim=32, context_length=77, vocab_size=VOCAB, text_width=32, text_heads=2,
                         text_layers=1, text_mlp_dim=64, image_size=32, patch_size=8, vision_width=32,
                         vision_heads=2, vision_layers=1, vision_mlp_dim=64)
SAM_CONFIG = SamConfig(image_size=64, patch_size=8, encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=2,
                       window_size=0, encoder_global_attn_indexes=(), prompt_embed_dim=32, mask_in_chans=8,
                       decoder_depth=1, decoder_num_heads=2, decoder_mlp_dim=32, iou_head_hidden_dim=16)


def owl_config(version: int) -> OwlViTConfig:
    """The tiny detector's config, as OwlViTConfig.from_hf_config reads transformers' config of OWL_HF_KW."""
    text, vision = OWL_HF_KW["text_config"], OWL_HF_KW["vision_config"]
    clip = ClipConfig(embed_dim=32, context_length=16, vocab_size=VOCAB, text_width=text["hidden_size"],
                      text_heads=2, text_layers=1, text_mlp_dim=64, image_size=32, patch_size=8,
                      vision_width=vision["hidden_size"], vision_heads=2, vision_layers=1, vision_mlp_dim=64,
                      logit_scale_init=2.6592)
    return OwlViTConfig(clip, version)


@functools.cache
def tokenizer(context_length: int):
    from samjax.text import ClipTokenizer

    try:
        return ClipTokenizer.from_clip_package(context_length=context_length)
    except FileNotFoundError as e:
        pytest.skip(f"no CLIP BPE vocabulary: {e}")


def random_params(abstract, seed: int) -> dict:
    """Numpy values in the shapes of `abstract` (a tree of ShapeDtypeStruct), without compiling an init: norm
    scales 1 + N(0, 0.1^2), matrices and kernels N(0, 1 / fan_in), other vectors N(0, 0.1^2), logit scales 2."""
    rng = np.random.default_rng(seed)

    def one(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        noise = rng.standard_normal(leaf.shape)
        if "logit_scale" in jax.tree_util.keystr(path) and leaf.ndim == 0:
            value = 2.0 + 0.1 * noise
        elif "scale" in name:
            value = 1.0 + 0.1 * noise
        elif leaf.ndim >= 2:
            value = noise * np.prod(leaf.shape[:-1]) ** -0.5
        else:
            value = 0.1 * noise
        return value.astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(one, abstract)


@functools.cache
def owl_params(version: int) -> dict:
    from samjax.models.owlvit import abstract_params

    return random_params(abstract_params(owl_config(version)), version)


@functools.cache
def owl_detector(version: int):
    from samjax.infer.detect import OwlDetector

    return OwlDetector(owl_config(version), owl_params(version), tokenizer(16))


@functools.cache
def clip_params() -> dict:
    from samjax.models.clip import abstract_params

    return random_params(abstract_params(CLIP_CONFIG), 7)


@functools.cache
def sam_params() -> dict:
    from samjax.models import abstract_params

    return random_params(abstract_params(SAM_CONFIG), 3)


def images(seed: int = 0, sizes=((48, 64), (40, 30))) -> list[np.ndarray]:
    """Smooth random images (blobs of colour) of the given (H, W) sizes, uint8 RGB."""
    rng = np.random.default_rng(seed)
    out = []
    for h, w in sizes:
        yy, xx = np.mgrid[:h, :w]
        img = np.zeros((h, w, 3))
        for _ in range(4):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, max(h, w) / 2)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2] = rng.uniform(0, 255, 3)
        out.append((img + rng.uniform(0, 20, img.shape)).clip(0, 255).astype(np.uint8))
    return out
