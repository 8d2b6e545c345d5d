"""Open-vocabulary detection with OWL-ViT / OWLv2: text queries -> boxes in the pixels of the original image.

    from samjax.infer.detect import OwlDetector
    # a HF OWL-ViT / OWLv2 directory (or weights.owlvit.save_owlvit's)
    detector = OwlDetector.load("owlv2-base-patch16/")
    dets = detector.detect([image], "a dog, a red car", threshold=0.1, top_k=100)
    dets[0].boxes (K, 4) XYXY pixels, dets[0].scores (K,) descending, dets[0].labels (K,) query index, dets[0].names

Pre-processing is transformers' (OwlViTImageProcessor / Owlv2ImageProcessor, checked against them in the tests):
- OWL-ViT: the image resized to the model's S x S (aspect ratio not kept) with PIL bicubic on uint8, on the host:
  exactly the HF processor, a few milliseconds, and every image size then shares one compiled detection.
- OWLv2: padded bottom / right to a black square, then resized to S x S the skimage way (Gaussian anti-aliasing
  with sigma (f - 1) / 2 for a downscale by f, linear interpolation over the full pixel extent, mirrored edges,
  clipped to the input's range). Both steps are linear and separable, so each axis is one (S, side) matrix
  (`owlv2_resize_matrix`), applied on the device as banded tiles (transforms.resize_with_tiles) whose weights are
  data: the host only zero-pads the uint8 image to a square bucket side (`square_bucket`), and one compile serves
  every image size of a bucket. (HF runs scipy on the host in float64: a 2000 px photo costs it ~0.5 s.)

Post-processing is HF's post_process_object_detection, on the device with static shapes: score = sigmoid(the
patch's best query logit), label = that query; boxes cx, cy, w, h in [0, 1] -> XYXY times (W, H) (OWL-ViT) or
max(H, W) (OWLv2: the padded square), clipped to the image (HF leaves boxes that stick out; SAM's box prompts must
lie inside); the `top_k` best patches, those with score > `threshold`, then optionally greedy NMS per label
(torchvision's batched_nms: boxes of different queries never suppress each other).

Compiled functions: the text embedding once per query bucket (queries padded to a power of two, the padding masked
out of the logits), the detection once per (image bucket, batch bucket, query bucket, top_k). Thresholds are data.
With a mesh (`samjax.parallel.data_mesh()`), image batches are split over its devices.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from samjax import transforms as T
from samjax.infer.ground import MAX_QUERIES, parse_queries
from samjax.infer.predictor import bucket
from samjax.infer.validate import check_image
from samjax.models.owlvit import OwlViT, OwlViTConfig, center_to_corners
from samjax.text import ClipTokenizer
from samjax.weights import owlvit as owl_weights

MIN_SIDE = 128  # the smallest OWLv2 image bucket


def square_bucket(side: int) -> int:
    """The padded square side an OWLv2 image of longest side `side` is sent as: the smallest of 128, 192, 256,
    384, 512, 768, ... (powers of two and 1.5 x powers of two) that holds it."""
    size = MIN_SIDE
    while True:
        for s in (size, size * 3 // 2):
            if s >= side:
                return s
        size *= 2


# ------------------------------------------------------------------------------------------ OWLv2 resize maths
def _mirror(idx: np.ndarray, n: int) -> np.ndarray:
    """scipy.ndimage's "mirror" boundary: reflect about the edge pixels' centres (d c b | a b c d | c b a)."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx > n - 1, period - idx, idx)


def _sigma(side: int, out: int) -> float:
    return max(0.0, (side / out - 1.0) / 2.0)


def _radius(sigma: float) -> int:
    return int(4.0 * sigma + 0.5)  # scipy.ndimage.gaussian_filter's truncate=4.0


@functools.lru_cache(maxsize=32)
def owlv2_resize_matrix(side: int, out: int) -> np.ndarray:
    """(out, side) float64: one axis of HF Owlv2ImageProcessor.resize (skimage.transform.resize with anti-aliasing,
    order 1) of a `side`-pixel axis to `out`: zoom (linear, grid mode, mirror) after Gaussian smoothing (sigma
    (side / out - 1) / 2 when downscaling, truncated at 4 sigma, mirror). Cached: read only."""
    f = side / out
    src = (np.arange(out) + 0.5) * f - 0.5  # grid mode: the full pixel extent is scaled
    i0 = np.floor(src).astype(np.int64)
    frac = src - i0
    zoom = np.zeros((out, side))
    rows = np.arange(out)
    np.add.at(zoom, (rows, _mirror(i0, side)), 1.0 - frac)
    np.add.at(zoom, (rows, _mirror(i0 + 1, side)), frac)
    sigma = _sigma(side, out)
    if sigma <= 0:
        return zoom
    x = np.arange(-_radius(sigma), _radius(sigma) + 1)
    w = np.exp(-0.5 * x ** 2 / sigma ** 2)
    w /= w.sum()
    gauss = np.zeros((side, side))
    cols = _mirror(np.arange(side)[:, None] + x[None], side)
    np.add.at(gauss, (np.broadcast_to(np.arange(side)[:, None], cols.shape), cols), np.broadcast_to(w, cols.shape))
    return zoom @ gauss


def _tile_width(square: int, out: int, tile: int = T.TILE) -> int:
    """The input window of a tile of `tile` output rows, for every side up to `square` (a bound: the zoom spans
    (tile - 1) * f + 2 inputs, the Gaussian adds its radius on both sides), a multiple of 8, at most `square`."""
    f = square / out
    span = math.ceil((tile - 1) * f) + 2 + 2 * _radius(_sigma(square, out)) + 1
    return min(square, -(-span // 8) * 8)


@functools.lru_cache(maxsize=64)
def owlv2_tiles(length: int, side: int, square: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """One axis of the OWLv2 resize of an image padded to `side` (its longest side) and sent zero-padded to
    `square`: the valid `length` columns of `owlv2_resize_matrix(side, out)`, zero beyond, as
    `transforms.interpolation_tiles` with the window of the `square` bucket. Cached: read only."""
    m = np.zeros((out, square))
    m[:, :length] = owlv2_resize_matrix(side, out)[:, :length]
    return T.interpolation_tiles(m, width=_tile_width(square, out))


# ------------------------------------------------------------------------------------------ jitted bodies
def _owlv2_pixels(images, tiles, hw, size: int):
    """images (B, Sq, Sq, 3) uint8 zero-padded, tiles per image ((B, T), (B, T, tile, R)) x 2, hw (B, 2) ->
    (B, size, size, 3) float32 in [0, 1]: HF's pad + resize + clip to the padded input's range."""
    x = images.astype(jnp.float32) / 255.0
    rows = jnp.arange(x.shape[1])[None, :, None] < hw[:, 0, None, None]
    cols = jnp.arange(x.shape[2])[None, None, :] < hw[:, 1, None, None]
    valid = (rows & cols)[..., None]
    square = (hw[:, 0] == hw[:, 1])  # else the black padding is part of the input the output is clipped to
    lo = jnp.min(jnp.where(valid, x, jnp.inf), axis=(1, 2, 3))
    hi = jnp.max(jnp.where(valid, x, -jnp.inf), axis=(1, 2, 3))
    lo, hi = jnp.where(square, lo, jnp.minimum(lo, 0.0)), jnp.where(square, hi, jnp.maximum(hi, 0.0))

    def one(img, sh, bh, sw, bw):
        y = T.resize_with_tiles(jnp.moveaxis(img, -1, 0), (sh, bh), (sw, bw))[:, :size, :size]
        return jnp.moveaxis(y, 0, -1)

    y = jax.vmap(one)(x, *tiles)
    return jnp.clip(y, lo[:, None, None, None], hi[:, None, None, None])


def _nms_per_label(boxes, labels, keep, thresh):
    """Greedy NMS over (B, K) candidates sorted by descending score: a box is dropped when an earlier kept box of
    the same label overlaps it with IoU > thresh. -> keep (B, K) bool."""
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    lt = jnp.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    rb = jnp.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    wh = jnp.clip(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / jnp.maximum(area[:, :, None] + area[:, None, :] - inter, 1e-9)
    k = boxes.shape[1]
    later = jnp.arange(k)[None, :] > jnp.arange(k)[:, None]
    overlaps = (iou > thresh) & (labels[:, :, None] == labels[:, None, :]) & later[None]  # (B, K, K)

    def step(i, keep):
        return keep & ~(keep[:, i, None] & overlaps[:, i])

    return jax.lax.fori_loop(0, k, step, keep)


@functools.partial(jax.jit, static_argnames=("config",))
def _embed_queries(params, ids, *, config: OwlViTConfig):
    """ids (Q, L) -> normalised query embeddings (Q, E)."""
    return OwlViT(config).apply({"params": params}, ids, method=OwlViT.text_embedder)


@functools.partial(jax.jit, static_argnames=("config", "top_k"))
def _detect(params, images, tiles, hw, queries, query_mask, threshold, nms_thresh, *, config: OwlViTConfig,
            top_k: int):
    """images (B, S, S, 3) uint8 (OWL-ViT, resized on the host) or (B, Sq, Sq, 3) zero-padded with their `tiles`
    (OWLv2); hw (B, 2) original sizes; queries (Q, E), query_mask (Q,) -> boxes (B, K, 4) XYXY pixels, scores
    (B, K) descending, labels (B, K) int32, keep (B, K) bool."""
    s = config.clip.image_size
    mean, std = jnp.asarray(config.clip.pixel_mean), jnp.asarray(config.clip.pixel_std)
    if tiles is None:
        x = images.astype(jnp.float32) / 255.0
    else:
        x = _owlv2_pixels(images, tiles, hw, s)
    pixels = (x - mean) / std
    b = images.shape[0]
    model = OwlViT(config)
    fmap = model.apply({"params": params}, pixels, method=OwlViT.image_embedder)
    out = model.apply({"params": params}, fmap, jnp.broadcast_to(queries, (b, *queries.shape)),
                      jnp.broadcast_to(query_mask, (b, query_mask.shape[0])), method=OwlViT.predict)
    logits = out["logits"]  # (B, P, Q); padded queries at float32's lowest
    scores, labels = jax.nn.sigmoid(logits.max(-1)), logits.argmax(-1).astype(jnp.int32)
    h, w = hw[:, 0].astype(jnp.float32), hw[:, 1].astype(jnp.float32)
    if config.version == 2:
        side = jnp.maximum(h, w)
        scale = jnp.stack([side, side, side, side], -1)
    else:
        scale = jnp.stack([w, h, w, h], -1)
    boxes = center_to_corners(out["pred_boxes"]) * scale[:, None, :]
    limit = jnp.stack([w, h, w, h], -1)[:, None, :]
    boxes = jnp.clip(boxes, 0.0, limit)
    scores, idx = jax.lax.top_k(scores, top_k)  # sorted, ties: lower index first
    boxes = jnp.take_along_axis(boxes, idx[..., None], axis=1)
    labels = jnp.take_along_axis(labels, idx, axis=1)
    keep = _nms_per_label(boxes, labels, scores > threshold, nms_thresh)
    return boxes, scores, labels, keep


# ------------------------------------------------------------------------------------------------ detector
@dataclasses.dataclass(frozen=True)
class Detections:
    """One image's detections, best first: boxes (K, 4) float32 XYXY pixels of the original image, scores (K,)
    float32 in (0, 1), labels (K,) int32 indices into `queries`."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    queries: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        """The query text of each detection."""
        return [self.queries[i] for i in self.labels]

    def __len__(self) -> int:
        return len(self.scores)


class OwlDetector:
    """OWL-ViT / OWLv2 text-query detection on images of any size (see the module docstring)."""

    def __init__(self, config: OwlViTConfig, params: dict, tokenizer: ClipTokenizer,
                 mesh: jax.sharding.Mesh | None = None, max_queries: int = MAX_QUERIES):
        """`tokenizer`: CLIP's, with OWL's 16-token context (ClipTokenizer.from_pretrained of the checkpoint
        directory). `mesh`: split image batches over its devices (see `samjax.parallel.data_mesh`)."""
        if tokenizer.vocab_size > config.clip.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary only "
                             f"{config.clip.vocab_size}: not this model's tokenizer")
        self.config, self.mesh, self.max_queries = config, mesh, max_queries
        self.tokenizer = tokenizer
        if mesh is None:
            self.params = jax.device_put(params)
        else:
            self.params = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        self._queries: tuple | None = None
        self._query_embeds = None

    @classmethod
    def load(cls, path: str | Path, mesh: jax.sharding.Mesh | None = None,
             tokenizer: ClipTokenizer | None = None) -> OwlDetector:
        """From a Hugging Face OWL-ViT / OWLv2 directory (config.json, model.safetensors or pytorch_model.bin, and
        tokenizer.json or vocab.json + merges.txt), e.g. google/owlv2-base-patch16-ensemble, or one written by
        samjax.weights.owlvit.save_owlvit. Anything else gets the converter's error."""
        config, params = owl_weights.load_owlvit(path)
        if tokenizer is None:
            try:
                tokenizer = ClipTokenizer.from_pretrained(path, context_length=config.clip.context_length)
            except FileNotFoundError as e:
                raise FileNotFoundError(f"{e}: an OWL checkpoint directory needs its tokenizer files, or pass "
                                        "tokenizer=ClipTokenizer...") from None
        return cls(config, params, tokenizer, mesh=mesh)

    # --- queries
    def embed_queries(self, queries: Sequence[str]) -> tuple[jax.Array, np.ndarray]:
        """Queries -> (embeddings (Qb, E) on device, mask (Qb,) bool), Qb = the power-of-two bucket; cached for the
        last query list."""
        queries = tuple(queries)
        if queries != self._queries:
            ids = self.tokenizer(list(queries), context_length=self.config.clip.context_length)
            qb = bucket(len(queries))
            padded = np.zeros((qb, ids.shape[1]), np.int32)
            padded[:len(queries)] = ids
            self._query_embeds = _embed_queries(self.params, padded, config=self.config)
            self._queries = queries
        mask = np.arange(bucket(len(queries))) < len(queries)
        return self._query_embeds, mask

    # --- images
    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, int]:
        """(H, W, 3) uint8 -> the array sent to the device and its bucket (OWL-ViT: always the model size)."""
        s = self.config.clip.image_size
        if self.config.version == 1:
            return np.asarray(Image.fromarray(image).resize((s, s), Image.BICUBIC)), s
        square = square_bucket(max(image.shape[:2]))
        return T.pad_image(image, square), square

    def _tiles(self, hw: Sequence[tuple[int, int]], square: int, n: int):
        """OWLv2 resize tiles of images of sizes `hw` sent as `square` buckets, stacked for a batch of n >= len(hw):
        (starts_h (n, T), blocks_h (n, T, tile, R), starts_w, blocks_w)."""
        s = self.config.clip.image_size
        parts = []
        for h, w in list(hw) + [hw[0]] * (n - len(hw)):  # batch padding repeats image 0's (discarded) tiles
            side = max(h, w)
            parts.append((*owlv2_tiles(h, side, square, s), *owlv2_tiles(w, side, square, s)))
        return tuple(np.stack(x) for x in zip(*parts))

    def detect(self, images: Sequence[np.ndarray], text: str | Sequence[str], threshold: float = 0.1,
               top_k: int = 100, nms_thresh: float | None = None) -> list[Detections]:
        """Detections of the queries in `text` ("dog, red car" or a list) in each (H, W, 3) uint8 RGB image: at
        most `top_k` boxes per image with score > `threshold`, best first; `nms_thresh`: per-label NMS IoU (None:
        none, as HF's post-processing)."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        images = [check_image(im, "RGB") for im in images]
        queries = parse_queries(text, self.max_queries)
        if not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
        if nms_thresh is not None and not 0.0 < nms_thresh <= 1.0:
            raise ValueError(f"nms_thresh must be in (0, 1] or None, got {nms_thresh!r}")
        top_k = min(int(top_k), self.config.num_patches)
        query_embeds, query_mask = self.embed_queries(queries)
        prepared = [self._prepare(im) for im in images]
        groups: dict[int, list[int]] = {}
        for i, (_, square) in enumerate(prepared):
            groups.setdefault(square, []).append(i)
        results: list[Detections | None] = [None] * len(images)
        for square, idx in groups.items():
            out = self._run([prepared[i][0] for i in idx], [images[i].shape[:2] for i in idx], square, query_embeds,
                            query_mask, threshold, 1.0 if nms_thresh is None else nms_thresh, top_k)
            for i, dets in zip(idx, out):
                results[i] = Detections(*dets, queries=queries)
        return results

    def _run(self, arrays, hw, square, query_embeds, query_mask, threshold, nms_thresh, top_k):
        n = len(arrays)
        ndev = 1 if self.mesh is None else self.mesh.devices.size
        size = -(-max(bucket(n), ndev) // ndev) * ndev
        batch = np.zeros((size, *arrays[0].shape), np.uint8)
        batch[:n] = np.stack(arrays)
        sizes = np.zeros((size, 2), np.int32)
        sizes[:n] = hw
        sizes[n:] = hw[0]
        tiles = self._tiles(hw, square, size) if self.config.version == 2 else None
        if self.mesh is not None:
            data = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(self.mesh.axis_names))
            batch, sizes, tiles = jax.device_put((batch, sizes, tiles), data)
        boxes, scores, labels, keep = jax.device_get(_detect(
            self.params, batch, tiles, sizes, query_embeds, query_mask, np.float32(threshold),
            np.float32(nms_thresh), config=self.config, top_k=top_k))
        return [(boxes[i][keep[i]], scores[i][keep[i]], labels[i][keep[i]]) for i in range(n)]
