"""The model side of the annotation tool: embeddings cached on disk, prompt decoding, masks as SA-1B records.

One `Predictor` serves every annotator. An image's embedding is computed once (`Predictor.encode_images`) and
kept in OUT/.cache/embeddings/<model fingerprint>/<sha256 of the image file>.npy, and the last few in memory;
when an image is opened the next one's embedding (and, with --prefill, its automatic masks) is computed ahead in
a background thread. Decoding makes the image's embedding the Predictor's current one (`set_embedding`) and
calls `Predictor.predict`, under one lock: the masks are exactly those of `Predictor.predict` on that image.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from samjax.amg import mask_io
from samjax.annotate.storage import CACHE, ImageStore, load_rgb
from samjax.infer import Predictor

MEMORY_EMBEDDINGS = 8  # embeddings kept in memory (ViT-H: 4 MiB each)
STABILITY_OFFSET = 1.0  # as the official automatic mask generator


def model_fingerprint(checkpoint: str | os.PathLike | None, predictor: Predictor) -> str:
    """A short id of the model for cache paths: its config and its checkpoint files' names, sizes and times."""
    h = hashlib.sha256(json.dumps(predictor.config.to_dict(), sort_keys=True).encode())
    if checkpoint is not None:
        path = Path(checkpoint).resolve()
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                st = f.stat()
                h.update(f"{f.relative_to(path.parent)}:{st.st_size}:{st.st_mtime_ns}".encode())
    else:  # parameters given in memory: hash the decoder's values (small) and the encoder's shapes
        for leaf in _leaves(predictor.decoder_variables["params"]):
            h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
        h.update(str([np.shape(x) for x in _leaves(predictor.params)]).encode())
        h.update(np.asarray(_leaves(predictor.params["image_encoder"])[0]).tobytes()[:65536])
    return h.hexdigest()[:16]


def _leaves(tree) -> list:
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in _leaves(tree[k])]
    return [tree]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:32]


class Embedding:
    """One image's embedding: features (1, g, g, C) float32, input_size (h, w), original_size (H, W)."""

    def __init__(self, features: np.ndarray, input_size, original_size):
        self.features = features
        self.input_size = tuple(int(v) for v in input_size)
        self.original_size = tuple(int(v) for v in original_size)


class Engine:
    """Predictor + embedding cache + background work (prefetch, automatic masks for --prefill)."""

    def __init__(self, predictor: Predictor, images: ImageStore, out_dir: str | os.PathLike, model_name: str,
                 fingerprint: str, prefill: dict | None = None):
        """prefill: options of `AutomaticMaskGenerator` (points_per_side, pred_iou_thresh, ...), or None."""
        self.predictor = predictor
        self.images = images
        self.model_name = model_name
        self.cache_dir = Path(out_dir).resolve() / CACHE / "embeddings" / fingerprint
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.prefill_options = prefill
        self._generator = None
        self._lock = threading.Lock()  # the Predictor's current image
        self._current: str | None = None  # digest of the image whose embedding the Predictor holds
        self._digests: dict[Path, tuple[tuple[int, int], str]] = {}  # path -> ((mtime, size), sha256)
        self._memory: OrderedDict[str, Embedding] = OrderedDict()
        self._memory_lock = threading.Lock()
        self._pending: dict[str, concurrent.futures.Future] = {}
        self._pending_lock = threading.Lock()
        self._work = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="samjax-annotate")
        self.stats = {"encoded": 0, "from_disk": 0, "from_memory": 0}

    def close(self) -> None:
        self._work.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------------------------------ embeddings
    def _key(self, image_id: str) -> tuple[Path, str]:
        """(path, content digest) of the image; the digest is recomputed only when the file changes."""
        path = self.images.path(image_id)
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        known = self._digests.get(path)
        if known is None or known[0] != stamp:
            known = (stamp, file_digest(path))
            self._digests[path] = known
        return path, known[1]

    def _compute(self, image_id: str, digest: str, path: Path) -> Embedding:
        cached = self.cache_dir / f"{digest}.npz"
        if cached.exists():
            try:
                with np.load(cached) as z:
                    emb = Embedding(z["features"], z["input_size"], z["original_size"])
                self.stats["from_disk"] += 1
                return emb
            except (OSError, ValueError, KeyError):  # a damaged cache file: compute again
                pass
        features, input_sizes, original_sizes = self.predictor.encode_images([load_rgb(path)])
        emb = Embedding(np.asarray(features), input_sizes[0], original_sizes[0])
        buf = io.BytesIO()
        np.savez(buf, features=emb.features, input_size=np.array(emb.input_size),
                 original_size=np.array(emb.original_size))
        tmp = cached.with_name(f".{cached.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, cached)
        self.stats["encoded"] += 1
        return emb

    def embedding(self, image_id: str) -> tuple[Embedding, bool]:
        """(the image's embedding, whether it was ready before this call). Computes it at most once: a call
        while the background thread computes it waits for that result."""
        path, digest = self._key(image_id)
        with self._memory_lock:
            hit = self._memory.get(digest)
            if hit is not None:
                self._memory.move_to_end(digest)
                self.stats["from_memory"] += 1
                return hit, True
        with self._pending_lock:
            fut = self._pending.get(digest)
            mine = fut is None
            if mine:
                fut = concurrent.futures.Future()
                self._pending[digest] = fut
        if not mine:
            return fut.result(), False
        try:
            emb = self._compute(image_id, digest, path)
            fut.set_result(emb)
        except BaseException as e:
            fut.set_exception(e)
            raise
        finally:
            with self._pending_lock:
                self._pending.pop(digest, None)
        with self._memory_lock:
            self._memory[digest] = emb
            while len(self._memory) > MEMORY_EMBEDDINGS:
                self._memory.popitem(last=False)
        return emb, False

    def submit(self, fn, *args) -> concurrent.futures.Future:
        """Run fn(*args) in the background thread (one at a time, in order)."""
        return self._work.submit(fn, *args)

    def prefetch(self, image_id: str | None) -> concurrent.futures.Future | None:
        """Compute `image_id`'s embedding (and automatic masks with --prefill) in the background thread."""
        if image_id is None:
            return None
        return self._work.submit(self._prefetch, image_id)

    def _prefetch(self, image_id: str) -> None:
        self.embedding(image_id)

    # ---------------------------------------------------------------------------------------------- decode
    def _select(self, emb: Embedding, digest: str) -> None:
        """Make the image the Predictor's current one (call with self._lock held)."""
        if self._current != digest:
            self.predictor.set_embedding(emb.features, emb.input_size, emb.original_size)
            self._current = digest

    def decode(self, image_id: str, points, labels, box, multimask: bool = True, logits: bool = False):
        """`Predictor.predict` on the image: (masks (C, H, W) bool, scores (C,)), plus the (C, H, W) logits
        when `logits` (a second call with return_logits=True). ValueError for a bad prompt."""
        coords = np.asarray(points, np.float64).reshape(-1, 2) if len(points) else None
        labs = np.asarray(labels, np.int32) if len(points) else None
        box_arr = None if box is None else np.asarray(box, np.float64)
        emb, _ = self.embedding(image_id)  # before the lock: others decode while this image is encoded
        digest = self._key(image_id)[1]
        with self._lock:
            self._select(emb, digest)
            masks, scores, _ = self.predictor.predict(point_coords=coords, point_labels=labs, box=box_arr,
                                                      multimask_output=multimask)
            raw = None
            if logits:
                raw = self.predictor.predict(point_coords=coords, point_labels=labs, box=box_arr,
                                             multimask_output=multimask, return_logits=True)[0]
        return masks, scores, raw

    # ---------------------------------------------------------------------------------------- annotations
    def person_record(self, image_id: str, points, labels, box, candidate: int, multimask: bool,
                      annotator: str) -> dict[str, Any]:
        """The SA-1B annotation of a prompt's chosen mask (decoded again here: the server's mask is the record)."""
        masks, scores, logits = self.decode(image_id, points, labels, box, multimask, logits=True)
        if not 0 <= candidate < len(masks):
            raise ValueError(f"candidate must be 0..{len(masks) - 1}, got {candidate}")
        mask = masks[candidate]
        if not mask.any():
            raise ValueError("the chosen mask is empty: add a point or pick another candidate")
        stability = mask_io_stability(logits[candidate], self.predictor.config.mask_threshold)
        fg = [list(map(float, p)) for p, lab in zip(points, labels) if lab == 1]
        rec = mask_record(mask, float(scores[candidate]), stability, fg or [interior_point(mask)])
        rec.update(source="person", annotator=annotator, model=self.model_name,
                   prompt={"points": [list(map(float, p)) for p in points], "labels": [int(v) for v in labels],
                           "box": None if box is None else [float(v) for v in box], "candidate": int(candidate),
                           "multimask": bool(multimask)})
        return rec

    # ----------------------------------------------------------------------------------- stage 2: prefill
    def generator(self):
        if self._generator is None:
            from samjax.amg import AutomaticMaskGenerator  # noqa: PLC0415 - only with --prefill

            self._generator = AutomaticMaskGenerator(self.predictor, **self.prefill_options)
        return self._generator

    def model_records(self, image_id: str) -> list[dict[str, Any]]:
        """The automatic mask generator's masks of the image as SA-1B records with source "model"."""
        t0 = time.time()
        anns = self.generator().generate(load_rgb(self.images.path(image_id)))
        out = []
        for a in anns:
            rec = mask_record(a["segmentation"], float(a["predicted_iou"]), float(a["stability_score"]),
                              [list(map(float, p)) for p in a["point_coords"]], crop_box=a["crop_box"])
            rec.update(source="model", annotator=None, model=self.model_name,
                       prompt={"points": rec["point_coords"], "labels": [1] * len(rec["point_coords"]), "box": None,
                               "candidate": None, "multimask": True})
            out.append(rec)
        self.stats["last_prefill_seconds"] = round(time.time() - t0, 2)
        return out


def mask_io_stability(logits: np.ndarray, threshold: float) -> float:
    """|logits > t + 1| / |logits > t - 1| of one (H, W) mask (the official stability score)."""
    inter = int(np.count_nonzero(logits > threshold + STABILITY_OFFSET))
    union = int(np.count_nonzero(logits > threshold - STABILITY_OFFSET))
    return inter / union if union else 0.0


def interior_point(mask: np.ndarray) -> list[float]:
    """The mask pixel farthest from its border, (x, y): SA-1B's point_coords for a mask made without a
    foreground click (a box alone)."""
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return [float(x), float(y)]


def mask_record(mask: np.ndarray, predicted_iou: float, stability: float, point_coords, crop_box=None) -> dict:
    """An SA-1B annotation (without id) of an (H, W) bool mask: COCO RLE, bbox XYWH (inclusive extent, as the
    official generator), area, predicted_iou, point_coords, stability_score, crop_box (the whole image)."""
    h, w = mask.shape
    rle = mask_io.coco_encode_rle(mask_io.mask_to_rle(mask))
    box = mask_io.box_xyxy_to_xywh(mask_io.mask_to_box(mask))
    return {"segmentation": {"size": [h, w], "counts": rle["counts"]}, "bbox": [int(v) for v in box],
            "area": int(mask.sum()), "predicted_iou": predicted_iou, "point_coords": point_coords,
            "stability_score": stability,
            "crop_box": [int(v) for v in (crop_box if crop_box is not None else [0, 0, w, h])]}
