"""OWL-ViT and OWLv2 open-vocabulary detectors in Flax Linen (Hugging Face OwlViTForObjectDetection /
Owlv2ForObjectDetection).

A CLIP backbone (`owlvit` / `owlv2`, samjax.models.clip) embeds the image into one feature per patch: every
post-LayerNorm patch token times the class token, through the detector's `layer_norm`. Per patch, `box_head`
predicts a box (centre x, centre y, width, height in [0, 1] of the model's square input, biased towards the patch's
own position and size), `class_head` a class embedding compared by cosine with each query (text embeddings, or an
image-guided query's class embedding) then shifted and scaled per patch, and OWLv2's `objectness_head` an
objectness logit. Names follow the HF state_dict (`class_head.dense0.weight` <-> `class_head/dense0/kernel`).

Shapes (OWL-ViT B/32): pixels (B, 768, 768, 3) normalised with CLIP_MEAN / CLIP_STD -> feature map (B, 24, 24, 768)
-> P = 576 patches; input_ids (B, Q, 16) -> query embeddings (B, Q, 512); logits (B, P, Q), pred_boxes (B, P, 4)
cxcywh, class_embeds (B, P, 512), objectness_logits (B, P) (v2).

    model = OwlViT(config)
    out = model.apply({"params": params}, pixels, input_ids)                             # text queries
    fmap = model.apply({"params": params}, pixels, method=OwlViT.image_embedder)          # image once ...
    q = model.apply({"params": params}, ids, method=OwlViT.text_embedder)                 # ... queries once
    out = model.apply({"params": params}, fmap, q[None], mask, method=OwlViT.predict)     # then combine
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from samjax.models.clip.model import Clip, normalize
from samjax.models.common import dense, gelu, layer_norm
from samjax.models.owlvit.config import OwlViTConfig

f32 = jnp.float32


def box_bias(grid_h: int, grid_w: int) -> np.ndarray:
    """Per patch, the logit of its grid corner (x, y) and of one patch's size: (grid_h * grid_w, 4) float32, rows in
    row-major patch order. Added to the box head's output before the sigmoid, so a zero prediction is the patch."""
    xx, yy = np.meshgrid(np.arange(1, grid_w + 1, dtype=np.float32) / np.float32(grid_w),
                         np.arange(1, grid_h + 1, dtype=np.float32) / np.float32(grid_h), indexing="xy")
    coords = np.clip(np.stack([xx, yy], -1).reshape(-1, 2), 0.0, 1.0)
    eps = np.float32(1e-4)
    coord_bias = np.log(coords + eps) - np.log1p(-coords + eps)
    size = np.broadcast_to(np.array([1 / grid_w, 1 / grid_h], np.float32), coords.shape)
    size_bias = np.log(size + eps) - np.log1p(-size + eps)
    return np.concatenate([coord_bias, size_bias], -1).astype(np.float32)


def center_to_corners(boxes: jax.Array) -> jax.Array:
    """(..., 4) cx, cy, w, h -> x0, y0, x1, y1."""
    c, wh = boxes[..., :2], boxes[..., 2:]
    return jnp.concatenate([c - 0.5 * wh, c + 0.5 * wh], -1)


def _iou_with_whole_image(corners: jax.Array) -> tuple[jax.Array, jax.Array]:
    """IoU and generalised IoU of each (..., 4) corner box with the unit box [0, 0, 1, 1]."""
    area = (corners[..., 2] - corners[..., 0]) * (corners[..., 3] - corners[..., 1])
    wh = jnp.clip(jnp.minimum(corners[..., 2:], 1.0) - jnp.maximum(corners[..., :2], 0.0), 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = 1.0 + area - inter
    iou = inter / union
    hull = jnp.clip(jnp.maximum(corners[..., 2:], 1.0) - jnp.minimum(corners[..., :2], 0.0), 0.0)
    hull_area = hull[..., 0] * hull[..., 1]
    return iou, iou - (hull_area - union) / hull_area


class BoxPredictionHead(nn.Module):
    """dense0 -> GELU -> dense1 -> GELU -> dense2: (B, P, D) -> (B, P, out_dim)."""

    width: int
    out_dim: int
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = gelu(dense(self.width, ("embed", "mlp"), name="dense0", dtype=self.dtype)(x))
        x = gelu(dense(self.width, ("mlp", "embed"), name="dense1", dtype=self.dtype)(x))
        return dense(self.out_dim, ("embed", None), name="dense2", dtype=self.dtype)(x)


class ClassPredictionHead(nn.Module):
    """Patch features (B, P, D) and queries (B, Q, E) -> logits (B, P, Q) and class embeddings (B, P, E).

    logits = (cos(dense0(feature), query) + logit_shift(feature)) * (elu(logit_scale(feature)) + 1); a query whose
    mask is False gets float32's lowest value. Without queries: (None, unnormalised class embeddings)."""

    out_dim: int
    dtype: jnp.dtype = f32

    @nn.compact
    def __call__(self, feats: jax.Array, queries: jax.Array | None, query_mask: jax.Array | None = None):
        class_embeds = dense(self.out_dim, ("embed", "joint_embed"), name="dense0", dtype=self.dtype)(feats)
        shift = dense(1, ("embed", None), name="logit_shift", dtype=self.dtype)(feats)
        scale = dense(1, ("embed", None), name="logit_scale", dtype=self.dtype)(feats)
        if queries is None:
            return None, class_embeds
        class_embeds = normalize(class_embeds, 1e-6)
        logits = jnp.einsum("bpd,bqd->bpq", class_embeds, normalize(queries, 1e-6))
        logits = (logits + shift) * (jax.nn.elu(scale) + 1.0)
        if query_mask is not None:
            logits = jnp.where(query_mask[:, None, :], logits, jnp.finfo(f32).min)
        return logits.astype(f32), class_embeds


class OwlViT(nn.Module):
    """OWL-ViT (config.version 1) or OWLv2 (2). See the module docstring for the methods and shapes."""

    config: OwlViTConfig

    def setup(self):
        cfg = self.config
        clip, dt = cfg.clip, cfg.clip.jnp_dtype
        self.backbone = Clip(clip, name=cfg.model_type)
        self.class_head = ClassPredictionHead(clip.text_width, dt)
        self.box_head = BoxPredictionHead(clip.vision_width, 4, dt)
        if cfg.version == 2:
            self.objectness_head = BoxPredictionHead(clip.vision_width, 1, dt)
        self.layer_norm = layer_norm("embed", eps=clip.vision_layer_norm_eps, dtype=dt)

    def __call__(self, pixels: jax.Array, input_ids: jax.Array) -> dict[str, jax.Array]:
        """Text-query detection (HF `forward`). pixels (B, S, S, 3); input_ids (B, Q, L) with all-zero rows (a
        first token of 0) for padded queries -> logits (B, P, Q) (padded queries at float32's lowest), pred_boxes
        (B, P, 4), class_embeds (B, P, E), image_embeds (B, g, g, D), text_embeds (B, Q, E) (normalised) and
        objectness_logits (B, P) for OWLv2."""
        b, q, length = input_ids.shape
        fmap = self.image_embedder(pixels)
        text = self.text_embedder(input_ids.reshape(b * q, length)).reshape(b, q, -1)
        return {**self.predict(fmap, text, input_ids[..., 0] > 0), "text_embeds": text}

    def image_embedder(self, pixels: jax.Array) -> jax.Array:
        """pixels (B, S, S, 3) normalised -> feature map (B, g, g, D)."""
        tokens = self.backbone.vision_model(pixels)  # (B, 1 + g*g, D), after post_layernorm
        feats = self.layer_norm(tokens[:, 1:] * tokens[:, :1])
        g = self.config.grid_size
        return feats.reshape(feats.shape[0], g, g, feats.shape[-1])

    def text_embedder(self, input_ids: jax.Array) -> jax.Array:
        """input_ids (N, L <= 16) -> query embeddings (N, E), L2-normalised (HF OwlViTModel's text_embeds)."""
        return normalize(self.backbone.encode_text(input_ids))

    def class_predictor(self, feats: jax.Array, queries: jax.Array | None = None,
                        query_mask: jax.Array | None = None):
        """feats (B, P, D), queries (B, Q, E), query_mask (B, Q) bool -> (logits (B, P, Q), class_embeds)."""
        return self.class_head(feats, queries, query_mask)

    def box_predictor(self, feats: jax.Array) -> jax.Array:
        """feats (B, P, D) -> boxes (B, P, 4) cx, cy, w, h in [0, 1] of the model input."""
        g = self.config.grid_size
        return jax.nn.sigmoid(self.box_head(feats) + box_bias(g, g))

    def objectness_predictor(self, feats: jax.Array) -> jax.Array:
        """OWLv2: feats (B, P, D) -> objectness logits (B, P). No gradient flows back into the features."""
        if self.config.version != 2:
            raise ValueError("objectness is an OWLv2 head; this is an OWL-ViT (version 1) config")
        return self.objectness_head(jax.lax.stop_gradient(feats))[..., 0]

    def predict(self, feature_map: jax.Array, queries: jax.Array, query_mask: jax.Array | None = None):
        """feature_map (B, g, g, D) and queries (B, Q, E), query_mask (B, Q) -> logits (B, P, Q), pred_boxes
        (B, P, 4), class_embeds (B, P, E), image_embeds (= feature_map), objectness_logits (B, P) (v2)."""
        b, g, _, d = feature_map.shape
        feats = feature_map.reshape(b, g * g, d)
        logits, class_embeds = self.class_predictor(feats, queries, query_mask)
        out = {"logits": logits, "pred_boxes": self.box_predictor(feats), "class_embeds": class_embeds,
               "image_embeds": feature_map}
        if self.config.version == 2:
            out["objectness_logits"] = self.objectness_predictor(feats)
        return out

    def embed_image_query(self, query_feature_map: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The query embedding of each query image: (query_embeds (B, 1, E), box index (B,), pred_boxes (B, P, 4)).

        OWLv2: the class embedding of the most object-like patch. OWL-ViT: among patches whose box overlaps the
        whole image by at least 0.8 x the best IoU (generalised IoU where no box overlaps), the one least similar
        to the image's mean class embedding (HF `embed_image_query`, without its per-image Python loop)."""
        b, g, _, d = query_feature_map.shape
        feats = query_feature_map.reshape(b, g * g, d)
        _, class_embeds = self.class_predictor(feats)
        boxes = self.box_predictor(feats)
        if self.config.version == 2:
            index = jnp.argmax(self.objectness_predictor(feats), axis=-1)
        else:
            iou, giou = _iou_with_whole_image(center_to_corners(boxes))
            iou = jnp.where(jnp.all(iou == 0.0, axis=-1, keepdims=True), giou, iou)
            selected = iou >= 0.8 * iou.max(-1, keepdims=True)
            mean_sim = jnp.einsum("bd,bpd->bp", class_embeds.mean(1), class_embeds)
            index = jnp.argmin(jnp.where(selected, mean_sim, jnp.inf), axis=-1)
        query = jnp.take_along_axis(class_embeds, index[:, None, None], axis=1)
        return query, index, boxes

    def image_guided_detection(self, pixels: jax.Array, query_pixels: jax.Array) -> dict[str, jax.Array]:
        """One query image per target image: pixels, query_pixels (B, S, S, 3) -> logits (B, P, 1),
        target_pred_boxes (B, P, 4), query_pred_boxes (B, P, 4), class_embeds (B, P, E), image_embeds and
        query_image_embeds (B, g, g, D), query_box_index (B,) (HF `image_guided_detection`)."""
        query_fmap = self.image_embedder(query_pixels)
        fmap = self.image_embedder(pixels)
        query, index, query_boxes = self.embed_image_query(query_fmap)
        b, g, _, d = fmap.shape
        feats = fmap.reshape(b, g * g, d)
        logits, class_embeds = self.class_predictor(feats, query)
        return {"logits": logits, "target_pred_boxes": self.box_predictor(feats), "query_pred_boxes": query_boxes,
                "class_embeds": class_embeds, "image_embeds": fmap, "query_image_embeds": query_fmap,
                "query_box_index": index}


def _boxed_init(config: OwlViTConfig, rng: jax.Array):
    s, c = config.clip.image_size, config.clip.in_chans
    pixels = jnp.zeros((1, s, s, c), f32)
    ids = jnp.zeros((1, 1, config.clip.context_length), jnp.int32)

    def everything(model, pixels, ids):  # reach the projections and logit_scale that detection never uses
        out = model(pixels, ids)
        model.backbone(pixels, ids[0])
        return out

    return OwlViT(config).init(rng, pixels, ids, method=everything)["params"]


@functools.lru_cache(maxsize=8)
def _jitted_init(config: OwlViTConfig):
    return jax.jit(lambda r: nn.meta.unbox(_boxed_init(config, r)))


def init_params(config: OwlViTConfig, rng: jax.Array) -> dict:
    """Freshly initialised parameters: a plain nested dict of float32 arrays (logical-axis boxes removed)."""
    return _jitted_init(config)(rng)


@functools.lru_cache(maxsize=16)
def abstract_params(config: OwlViTConfig) -> dict:
    """Shapes and dtypes of the parameters (jax.ShapeDtypeStruct), without computing anything. Cached: read only."""
    return nn.meta.unbox(jax.eval_shape(functools.partial(_boxed_init, config), jax.random.key(0)))


def param_logical_axes(config: OwlViTConfig) -> dict:
    """The logical axis names of every parameter, as a tree of PartitionSpecs (see samjax.sharding)."""
    return nn.get_partition_spec(jax.eval_shape(functools.partial(_boxed_init, config), jax.random.key(0)))
