"""Sam: image encoder + prompt encoder + mask decoder, and the functions that build its parameters.

Official: segment_anything/modeling/sam.py. Use as a pure function:

    model = Sam(config)
    params = init_params(config, jax.random.key(0))         # plain nested dict of float32 arrays
    emb = model.apply({"params": params}, images, method=Sam.embed_images)        # (B, g, g, C)
    masks, iou = model.apply({"params": params}, emb, coords, labels, method=Sam.decode)
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.models.attention import target_platform
from samjax.models.sam.config import SamConfig
from samjax.models.sam.image_encoder import ImageEncoderViT
from samjax.models.sam.mask_decoder import MaskDecoder
from samjax.models.sam.prompt_encoder import IGNORE, PromptEncoder


class Sam(nn.Module):
    config: SamConfig

    def setup(self):
        self.image_encoder = ImageEncoderViT(self.config)
        self.prompt_encoder = PromptEncoder(self.config)
        self.mask_decoder = MaskDecoder(self.config)

    def __call__(self, images, coords, labels, masks=None, mask_valid=None, multimask_output: bool = True):
        return self.decode(self.embed_images(images), coords, labels, masks, mask_valid, multimask_output)

    def embed_images(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Normalised, padded images (B, S, S, 3) -> image embeddings (B, g, g, C).

        train=True turns on drop path (config.encoder_drop_path_rate) and needs rngs={"dropout": key}.
        """
        return self.image_encoder(images, train)

    def get_dense_pe(self) -> jax.Array:
        return self.prompt_encoder.get_dense_pe()

    def decode(self, image_embeddings: jax.Array, coords: jax.Array, labels: jax.Array, masks: jax.Array | None = None,
               mask_valid: jax.Array | None = None, multimask_output: bool = True, all_outputs: bool = False,
               image_pe: jax.Array | None = None, image_cache: dict | None = None, upscale: bool = True,
               outputs: tuple[int, ...] | None = None, factor_mask_prompt: bool = False,
               text_embedding: jax.Array | None = None, text_valid: jax.Array | None = None):
        """Prompts -> low-res mask logits (B, M, 4g, 4g) and predicted IoU (B, M).

        image_embeddings (B|1, g, g, C); coords (B, N, 2) in the resized frame; labels (B, N) (see
        prompt_encoder); masks (B, 4g, 4g) optional mask prompts; mask_valid (B,) optional. `all_outputs`
        returns all 1 + num_multimask outputs (training); otherwise the official multimask selection.
        image_pe (1, g, g, C): `get_dense_pe()` computed once by the caller (it depends on the parameters only; on
        a 2-core CPU its 4096 x 128 sines and cosines were 5.6 of a single prompt's 30 ms); None: computed here.
        image_cache: `image_cache(params, config, image_embeddings, image_pe)` of these (batch-1) embeddings, made
        once per image; used for prompts without mask prompts, ignored with them.
        upscale=False returns (src, hyper_in, iou) instead, without the masks (`MaskDecoder.predict_masks`).
        outputs: exactly these of the 1 + num_multimask outputs, in this order (overrides the two options above).
        factor_mask_prompt: with mask prompts (all valid) and batch-1 embeddings, the first layer projects the image
        side as (embedding + b) W once and the mask features h (F W) per prompt, where the dense embedding is
        h F + b (`PromptEncoder.mask_projection`): the same sums without three (g*g, C) x (C, C') products per prompt.
        text_embedding: (B, text_embed_dim) CLIP embeddings, one text token per prompt after the point / box tokens
        (models with SamConfig.text_embed_dim > 0 only; `PromptEncoder.embed_text`); text_valid (B,) bool: rows
        whose text token takes part (False: as if absent, the token is masked out like an IGNORE slot).
        """
        if factor_mask_prompt:
            if masks is None or mask_valid is not None or image_embeddings.shape[0] != 1:
                raise ValueError("factor_mask_prompt needs mask prompts for every row and batch-1 image embeddings")
            sparse, _ = self.prompt_encoder(coords, labels)
            sparse, token_mask = self._with_text(sparse, labels != IGNORE, text_embedding, text_valid)
            h = self.prompt_encoder.mask_features(masks)  # (P, g, g, m)
            f, b = self.prompt_encoder.mask_projection()
            dense = jnp.einsum("phwm,mc->phwc", h, f) + b
            g, c = h.shape[1], f.shape[1]
            shared = (image_embeddings.astype(f.dtype) + b).reshape(1, g * g, c)
            factored = (shared, h.reshape(h.shape[0], g * g, -1), f)
            image_pe = self.get_dense_pe() if image_pe is None else image_pe
            return self.mask_decoder.predict_masks(image_embeddings, image_pe, sparse, dense, token_mask,
                                                   upscale=upscale, outputs=outputs, factored=factored)
        sparse, dense = self.prompt_encoder(coords, labels, masks, mask_valid)
        sparse, token_mask = self._with_text(sparse, labels != IGNORE, text_embedding, text_valid)
        if masks is None:
            dense = dense[:1]  # the same no-mask embedding for every prompt: let the decoder share it
        else:
            image_cache = None  # each prompt's image side differs from the cached one
        if image_cache is not None and image_embeddings.shape[0] != 1:
            raise ValueError(f"image_cache is for one image's embeddings (batch 1), got {image_embeddings.shape}")
        image_pe = self.get_dense_pe() if image_pe is None else image_pe
        args = (image_embeddings, image_pe, sparse, dense, token_mask)
        if outputs is not None:
            return self.mask_decoder.predict_masks(*args, cache=image_cache, upscale=upscale, outputs=outputs)
        if all_outputs:
            return self.mask_decoder.predict_masks(*args, cache=image_cache, upscale=upscale)
        return self.mask_decoder(*args, multimask_output=multimask_output, cache=image_cache, upscale=upscale)

    def _with_text(self, sparse: jax.Array, token_mask: jax.Array, text_embedding: jax.Array | None,
                   text_valid: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """Sparse tokens (B, N, C) and their mask (B, N) with the text token appended ((B, N + 1, C), (B, N + 1)),
        or as they are without a text embedding."""
        if text_embedding is None:
            if text_valid is not None:
                raise ValueError("text_valid was given without text_embedding")
            return sparse, token_mask
        b = sparse.shape[0]
        if text_embedding.shape[0] != b:
            raise ValueError(f"{text_embedding.shape[0]} text embeddings for {b} prompts")
        text = self.prompt_encoder.embed_text(text_embedding).astype(sparse.dtype)
        valid = jnp.ones((b,), bool) if text_valid is None else text_valid.astype(bool)
        if valid.shape != (b,):
            raise ValueError(f"text_valid must be ({b},) bool, got {tuple(valid.shape)}")
        text = jnp.where(valid[:, None, None], text, 0.0)  # an absent token is zero, as an IGNORE slot
        return jnp.concatenate([sparse, text], axis=1), jnp.concatenate([token_mask, valid[:, None]], axis=1)


def image_cache(params: dict, config: SamConfig, image_embeddings: jax.Array, image_pe: jax.Array) -> dict:
    """The decoder's work that depends on the image only, done once per image instead of once per prompt call.

    Until the first image->token attention, the decoder's image side is the embedding plus the no-mask embedding,
    the same for every prompt without a mask prompt. Its projections in the first layer (token->image keys and
    values, image->token queries: 3 x 4096 x 256 x 128 multiply-adds for ViT sizes) are made here, in the compute
    dtype, exactly as `transformer.Attention` would make them. image_embeddings (1, g, g, C), image_pe (1, g, g, C)
    -> {attention name: {"q" | "k" | "v": (1, heads, head_dim, g*g)}} (heads x head_dim = C / attention_downsample_rate)
    for `Sam.decode(image_cache=)`.
    """
    dt, c = config.jnp_dtype, config.prompt_embed_dim
    if image_embeddings.shape[0] != 1:
        raise ValueError(f"image_cache is per image: embeddings of batch 1, got {image_embeddings.shape}")
    no_mask = params["prompt_encoder"]["no_mask_embed"]["embedding"][0]
    keys = (image_embeddings.astype(dt) + no_mask.astype(dt)).reshape(1, -1, c)
    keys_pe = keys + image_pe.astype(dt).reshape(1, -1, c)
    layer = params["mask_decoder"]["transformer"]["layers_0"]
    nh = config.decoder_num_heads

    # Head-major, the layout the decoder's products read: transposed here once per image instead of by XLA in every
    # call.
    def proj(attn, name, x):
        p = layer[attn][f"{name}_proj"]
        y = x @ p["kernel"].astype(dt) + p["bias"].astype(dt)
        return y.reshape(1, y.shape[1], nh, -1).transpose(0, 2, 3, 1)

    return {"cross_attn_token_to_image": {"k": proj("cross_attn_token_to_image", "k", keys_pe),
                                          "v": proj("cross_attn_token_to_image", "v", keys)},
            "cross_attn_image_to_token": {"q": proj("cross_attn_image_to_token", "q", keys_pe)}}


# Prompts per decoder pass, by platform. From the first layer on, every prompt has its own image-side tensors
# (4096 x 256 float32 = 4 MB each for ViT sizes, several per layer); on a CPU, groups of 4 keep them in the
# last-level cache through the LayerNorms and residual adds, which are memory passes (benchmarks/README.md has the
# measurement). Accelerators decode all prompts at once (None).
DECODE_GROUP = {"cpu": 4}


def decode_group_size(num_prompts: int, group: int | None = None) -> int:
    """Prompts per decoder pass for `num_prompts`: `group`, or by default DECODE_GROUP of the platform being compiled
    for; all of them at once where the group does not divide them (see `decode_prompts`)."""
    g = DECODE_GROUP.get(target_platform(), num_prompts) if group is None else group
    return g if 0 < g < num_prompts and num_prompts % g == 0 else num_prompts


def decode_prompts(params: dict, config: SamConfig, image_embeddings: jax.Array, coords: jax.Array,
                   labels: jax.Array, masks: jax.Array | None = None, multimask_output: bool = True,
                   image_pe: jax.Array | None = None, all_outputs: bool = False, image_cache: dict | None = None,
                   upscale: bool = True, group: int | None = None, text_embedding: jax.Array | None = None):
    """`Sam.decode` for a batch of P prompts, in groups of `decode_group_size(P, group)` one after another (lax.map)
    where that is faster; the same values as one call up to float rounding. image_embeddings (P|1, g, g, C); image_cache
    (`image_cache` of batch-1 embeddings) skips the decoder's image-only work for prompts without mask prompts;
    upscale=False: (src, hyper_in, iou) without the masks, see `Sam.decode`; text_embedding (P, D): a text token per
    prompt (models with text_embed_dim > 0)."""
    model = Sam(config)

    def run(emb, c, lab, m, t):
        return model.apply({"params": params}, emb, c, lab, m, None, multimask_output, all_outputs,
                           image_pe=image_pe, image_cache=image_cache, upscale=upscale, text_embedding=t,
                           method=Sam.decode)

    p = coords.shape[0]
    g = decode_group_size(p, group)
    if g == p:
        return run(image_embeddings, coords, labels, masks, text_embedding)
    split = lambda x: None if x is None else x.reshape(p // g, g, *x.shape[1:])  # noqa: E731
    per_prompt = image_embeddings.shape[0] == p != 1
    xs = (split(image_embeddings) if per_prompt else None, split(coords), split(labels), split(masks),
          split(text_embedding))
    out = jax.lax.map(lambda a: run(image_embeddings if a[0] is None else a[0], *a[1:]), xs)
    return jax.tree.map(lambda x: x.reshape(p, *x.shape[2:]), out)


def _dummy_inputs(config: SamConfig):
    s = config.image_size
    return (jnp.zeros((1, s, s, config.in_chans), jnp.float32), jnp.zeros((1, 1, 2), jnp.float32),
            jnp.ones((1, 1), jnp.int32), jnp.zeros((1, 4 * config.grid_size, 4 * config.grid_size), jnp.float32))


def _boxed_init(config: SamConfig, rng: jax.Array):
    return Sam(config).init(rng, *_dummy_inputs(config))["params"]


@functools.lru_cache(maxsize=8)
def _jitted_init(config: SamConfig):
    # Jitted so XLA drops the forward pass that `init` traces; cached so each config compiles once.
    return jax.jit(lambda r: nn.meta.unbox(_boxed_init(config, r)))


def init_params(config: SamConfig, rng: jax.Array) -> dict:
    """Freshly initialised parameters: a plain nested dict of float32 arrays (logical-axis boxes removed)."""
    return _jitted_init(config)(rng)


def init_text_params(config: SamConfig, rng: jax.Array) -> dict:
    """Fresh parameters of the prompt encoder's text layers only ({"text_projection", "text_embed"}, the subtrees of
    params["prompt_encoder"]), for adding a text prompt to a SAM without one (samjax.training's "text_prompt")."""
    if not config.text_embed_dim:
        raise ValueError("config.text_embed_dim is 0: a SAM without a text prompt has no text layers")
    boxed = PromptEncoder(config).init(rng, jnp.zeros((1, config.text_embed_dim), jnp.float32),
                                       method=PromptEncoder.embed_text)["params"]
    return nn.meta.unbox(boxed)


@functools.lru_cache(maxsize=16)
def abstract_params(config: SamConfig) -> dict:
    """Shapes and dtypes of the parameters (jax.ShapeDtypeStruct), without computing anything. Cached: read only."""
    return nn.meta.unbox(jax.eval_shape(functools.partial(_boxed_init, config), jax.random.key(0)))


def param_logical_axes(config: SamConfig) -> dict:
    """The logical axis names of every parameter, as a tree of PartitionSpecs (see samjax.parallel)."""
    return nn.get_partition_spec(jax.eval_shape(functools.partial(_boxed_init, config), jax.random.key(0)))
