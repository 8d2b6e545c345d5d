"""CLIP in Flax Linen: a causal text transformer pooled at the end-of-text token, a ViT with a class token, and the
projections into the joint embedding.

Module and parameter names follow the Hugging Face `CLIPModel` state_dict (`text_model.encoder.layers.0.self_attn.
q_proj.weight` <-> `text_model/encoder/layers_0/self_attn/q_proj/kernel`), the layout OWL-ViT and OWLv2 embed under
`owlvit.` / `owlv2.`, so one set of modules serves all three; OpenAI's `clip` layout (fused `in_proj_weight`,
`c_fc` / `c_proj`, `ln_1` ...) maps onto it in samjax.weights.clip. One spelling differs from HF CLIP on purpose:
the vision tower's first norm is `pre_layernorm` (OWL-ViT's name; CLIPModel's is `pre_layrnorm`).

Shapes (ViT-B/32): input_ids (B, 77) int -> text features (B, 512); pixels (B, 224, 224, 3) normalised with
CLIP_MEAN / CLIP_STD -> tokens (B, 50, 768) -> image features (B, 512). Features are unnormalised (as the
references' `encode_text` / `get_text_features`); `Clip.__call__` gives the scaled cosine logits.

    model = Clip(config)
    params = init_params(config, jax.random.key(0))       # or samjax.weights.clip.load_clip(...)
    text = model.apply({"params": params}, ids, method=Clip.encode_text)          # (B, E)
    image = model.apply({"params": params}, pixels, method=Clip.encode_image)     # (B, E)
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from samjax.models.clip.config import ClipConfig
from samjax.models.common import conv, dense, gelu, layer_norm, partitioned

f32 = jnp.float32


def quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI's QuickGELU: x * sigmoid(1.702 x)."""
    return x * jax.nn.sigmoid(np.float32(1.702) * x)


def gelu_tanh(x: jax.Array) -> jax.Array:
    """The tanh approximation of GELU (HF "gelu_new" / "gelu_pytorch_tanh")."""
    return jax.nn.gelu(x, approximate=True)


ACTIVATION_FNS: dict[str, Callable] = {"quick_gelu": quick_gelu, "gelu": gelu, "gelu_tanh": gelu_tanh}


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (HF CLIPAttention). x (B, L, D) -> (B, L, D);
    `causal`: token i attends to tokens <= i (the text tower; padding after the end-of-text token then never
    reaches the pooled output, so no padding mask is needed)."""

    width: int
    heads: int
    causal: bool = False
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """mask: optional (B, 1, L, L) bool, True where query i may attend to key j."""
        b, length, _ = x.shape
        hd = self.width // self.heads
        q, k, v = (dense(self.width, ("embed", "heads"), name=f"{n}_proj", dtype=self.dtype)(x)
                   .reshape(b, length, self.heads, hd) for n in ("q", "k", "v"))
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=self.causal)  # (B, L, nh, hd), hd^-1/2
        return dense(self.width, ("heads", "embed"), name="out_proj", dtype=self.dtype)(out.reshape(b, length, -1))


class MLP(nn.Module):
    """fc1 -> activation -> fc2 (HF CLIPMLP; OpenAI mlp.c_fc / mlp.c_proj)."""

    width: int
    mlp_dim: int
    act: str
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = dense(self.mlp_dim, ("embed", "mlp"), name="fc1", dtype=self.dtype)(x)
        x = ACTIVATION_FNS[self.act](x)
        return dense(self.width, ("mlp", "embed"), name="fc2", dtype=self.dtype)(x)


class EncoderLayer(nn.Module):
    """Pre-norm residual block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    width: int
    heads: int
    mlp_dim: int
    act: str
    eps: float
    causal: bool = False
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        y = layer_norm("embed", eps=self.eps, name="layer_norm1", dtype=self.dtype)(x)
        x = x + Attention(self.width, self.heads, self.causal, self.dtype, name="self_attn")(y, mask)
        y = layer_norm("embed", eps=self.eps, name="layer_norm2", dtype=self.dtype)(x)
        return x + MLP(self.width, self.mlp_dim, self.act, self.dtype, name="mlp")(y)


class Encoder(nn.Module):
    """`layers` EncoderLayers of one tower ("text" or "vision") of `config`; `last_mask` (B, 1, L, L) bool, if
    given, restricts the last layer's attention (see `VisionTransformer`)."""

    config: ClipConfig
    tower: str

    @nn.compact
    def __call__(self, x: jax.Array, last_mask: jax.Array | None = None) -> jax.Array:
        cfg, t = self.config, self.tower
        n = getattr(cfg, f"{t}_layers")
        for i in range(n):
            x = EncoderLayer(getattr(cfg, f"{t}_width"), getattr(cfg, f"{t}_heads"), getattr(cfg, f"{t}_mlp_dim"),
                             getattr(cfg, f"{t}_act"), getattr(cfg, f"{t}_layer_norm_eps"), causal=t == "text",
                             dtype=cfg.jnp_dtype, name=f"layers_{i}")(x, last_mask if i == n - 1 else None)
        return x


def _table(num: int, dim: int, axes: tuple[str, str], name: str, dtype) -> nn.Embed:
    return nn.Embed(num, dim, dtype=dtype, param_dtype=f32, name=name,
                    embedding_init=partitioned(nn.initializers.normal(0.02), axes))


class TextEmbeddings(nn.Module):
    """token_embedding (vocab, D) and position_embedding (context, D): ids (B, L) -> (B, L, D), L <= context."""

    config: ClipConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        cfg = self.config
        length = input_ids.shape[-1]
        if length > cfg.context_length:
            raise ValueError(f"{length} text tokens exceed the model's context_length {cfg.context_length}")
        tokens = _table(cfg.vocab_size, cfg.text_width, ("vocab", "embed"), "token_embedding", cfg.jnp_dtype)
        positions = _table(cfg.context_length, cfg.text_width, ("positions", "embed"), "position_embedding",
                           cfg.jnp_dtype)
        return tokens(input_ids) + positions(jnp.arange(length))


class TextTransformer(nn.Module):
    """input_ids (B, L) int -> (last hidden state after final_layer_norm (B, L, D), pooled (B, D)): the
    output at the end-of-text token (config.eos_token_id: None = the largest id's position)."""

    config: ClipConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
        cfg = self.config
        input_ids = jnp.asarray(input_ids)
        if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
            raise ValueError(f"input_ids must be (B, L) integers, got {input_ids.shape} {input_ids.dtype}")
        x = TextEmbeddings(cfg, name="embeddings")(input_ids)
        x = Encoder(cfg, "text", name="encoder")(x)
        x = layer_norm("embed", eps=cfg.text_layer_norm_eps, name="final_layer_norm", dtype=cfg.jnp_dtype)(x)
        if cfg.eos_token_id is None:
            eot = jnp.argmax(input_ids, axis=-1)
        else:
            eot = jnp.argmax(input_ids == cfg.eos_token_id, axis=-1)  # first occurrence
        return x, jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0]


class VisionEmbeddings(nn.Module):
    """pixels (B, S, S, C) -> [class token, patches] + position_embedding: (B, 1 + g*g, D), patches row-major."""

    config: ClipConfig

    @nn.compact
    def __call__(self, pixels: jax.Array) -> jax.Array:
        cfg, dt = self.config, self.config.jnp_dtype
        if pixels.ndim != 4 or pixels.shape[1:] != (cfg.image_size, cfg.image_size, cfg.in_chans):
            raise ValueError(f"pixels must be (B, {cfg.image_size}, {cfg.image_size}, {cfg.in_chans}) normalised "
                             f"floats (NHWC), got {tuple(pixels.shape)}")
        cls = self.param("class_embedding", partitioned(nn.initializers.normal(cfg.vision_width ** -0.5), ("embed",)),
                         (cfg.vision_width,), f32)
        patches = conv(cfg.vision_width, cfg.patch_size, stride=cfg.patch_size, axes=("in_channels", "embed"),
                       use_bias=False, name="patch_embedding", dtype=dt)(pixels.astype(dt))
        b = patches.shape[0]
        patches = patches.reshape(b, -1, cfg.vision_width)
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(dt), (b, 1, cfg.vision_width)), patches], axis=1)
        positions = _table(cfg.num_positions, cfg.vision_width, ("positions", "embed"), "position_embedding", dt)
        return x + positions(jnp.arange(cfg.num_positions))


class VisionTransformer(nn.Module):
    """pixels (B, S, S, C) -> every token after post_layernorm (B, 1 + g*g, D); token 0 is the class token, CLIP's
    pooled output. (The references apply post_layernorm to the class token for CLIP and to all tokens for OWL-ViT;
    it is per token, so this is both.)

    class_attention: optional (B, g*g) bool, the patches (row-major) the class token may attend to in the last layer
    (besides itself); the other tokens attend as usual. The SAM paper's text-prompt training (appendix D.5) embeds a
    mask's crop this way, "masked attention in the last layer to restrict attention from the output token to the
    image positions inside the mask". None: CLIP as released."""

    config: ClipConfig

    @nn.compact
    def __call__(self, pixels: jax.Array, class_attention: jax.Array | None = None) -> jax.Array:
        cfg = self.config
        eps, dt = cfg.vision_layer_norm_eps, cfg.jnp_dtype
        x = VisionEmbeddings(cfg, name="embeddings")(pixels)
        x = layer_norm("embed", eps=eps, name="pre_layernorm", dtype=dt)(x)
        mask = None
        if class_attention is not None:
            b, length = x.shape[:2]
            if class_attention.shape != (b, length - 1):
                raise ValueError(f"class_attention must be ({b}, {length - 1}) bool (one per patch), got "
                                 f"{tuple(class_attention.shape)}")
            first = jnp.concatenate([jnp.ones((b, 1), bool), class_attention.astype(bool)], axis=1)  # (B, L)
            rows = jnp.arange(length)[None, :, None] == 0  # (1, L, 1): the class token's row
            mask = jnp.where(rows, first[:, None, :], True)[:, None]  # (B, 1, L, L)
        x = Encoder(cfg, "vision", name="encoder")(x, mask)
        return layer_norm("embed", eps=eps, name="post_layernorm", dtype=dt)(x)


class Clip(nn.Module):
    """Both towers, their projections into the joint embedding (no bias) and the learned log temperature."""

    config: ClipConfig

    def setup(self):
        cfg = self.config
        self.text_model = TextTransformer(cfg)
        self.vision_model = VisionTransformer(cfg)
        self.text_projection = dense(cfg.embed_dim, ("embed", "joint_embed"), use_bias=False, dtype=cfg.jnp_dtype)
        self.visual_projection = dense(cfg.embed_dim, ("embed", "joint_embed"), use_bias=False, dtype=cfg.jnp_dtype)
        self.logit_scale = self.param("logit_scale", partitioned(nn.initializers.constant(cfg.logit_scale_init), ()),
                                      (), f32)

    def __call__(self, pixels: jax.Array, input_ids: jax.Array) -> jax.Array:
        """-> logits_per_image (B_images, B_texts): exp(logit_scale) x cosine similarity (transpose for per text)."""
        image = normalize(self.encode_image(pixels))
        text = normalize(self.encode_text(input_ids))
        return jnp.exp(self.logit_scale) * image @ text.T

    def encode_text(self, input_ids: jax.Array) -> jax.Array:
        """input_ids (B, L <= context_length) int -> text features (B, E), unnormalised."""
        return self.text_projection(self.text_model(input_ids)[1])

    def encode_image(self, pixels: jax.Array, class_attention: jax.Array | None = None) -> jax.Array:
        """pixels (B, S, S, C) normalised -> image features (B, E), unnormalised. class_attention (B, g*g) bool:
        the patches the class token attends to in the last layer (`VisionTransformer`; None: all)."""
        return self.visual_projection(self.vision_model(pixels, class_attention)[:, 0])


def normalize(x: jax.Array, eps: float = 0.0) -> jax.Array:
    """x / ||x|| over the last axis (+ eps in the denominator where a reference adds one)."""
    return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + eps)


def _dummy_inputs(config: ClipConfig):
    s = config.image_size
    return jnp.zeros((1, s, s, config.in_chans), f32), jnp.zeros((1, config.context_length), jnp.int32)


def _boxed_init(config: ClipConfig, rng: jax.Array):
    return Clip(config).init(rng, *_dummy_inputs(config))["params"]


@functools.lru_cache(maxsize=8)
def _jitted_init(config: ClipConfig):
    return jax.jit(lambda r: nn.meta.unbox(_boxed_init(config, r)))


def init_params(config: ClipConfig, rng: jax.Array) -> dict:
    """Freshly initialised parameters: a plain nested dict of float32 arrays (logical-axis boxes removed)."""
    return _jitted_init(config)(rng)


@functools.lru_cache(maxsize=16)
def abstract_params(config: ClipConfig) -> dict:
    """Shapes and dtypes of the parameters (jax.ShapeDtypeStruct), without computing anything. Cached: read only."""
    return nn.meta.unbox(jax.eval_shape(functools.partial(_boxed_init, config), jax.random.key(0)))


def param_logical_axes(config: ClipConfig) -> dict:
    """The logical axis names of every parameter, as a tree of PartitionSpecs (see samjax.sharding)."""
    return nn.get_partition_spec(jax.eval_shape(functools.partial(_boxed_init, config), jax.random.key(0)))
