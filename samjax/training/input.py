"""The training input: synthetic data made once in the workdir, the grain pipeline of this process's batches, and
its global arrays on the mesh.

Batch (per process, numpy; B = data.batch_size / processes, M = data.max_masks_per_image, S = image_size,
m = mask_input_size = 4 x grid):
    image (B, S, S, 3) uint8, input_hw (B, 2) int32, masks (B, M, m, m) bool, mask_valid (B, M) bool,
    boxes (B, M, 4) float32 XYXY pixels of the S x S input.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from samjax import parallel
from samjax.data.pipeline import PipelineConfig, make_iterator
from samjax.data.sa1b import convert
from samjax.data.synthetic import write_synthetic
from samjax.models import SamConfig


def prepare_synthetic(cfg, workdir: str) -> tuple[str, str]:
    """Synthetic SA-1B images -> the real converter -> TFRecords in WORKDIR/data/{train,eval} (made once)."""
    s = cfg.data.synthetic
    out = {}
    for split, n, first in (("train", s.num_train, 1), ("eval", s.num_eval, 1_000_000)):
        dst = os.path.join(workdir, "data", split)
        if not os.path.exists(os.path.join(dst, "done")):
            raw = os.path.join(workdir, "data", f"{split}_raw")
            # every core for thousands of images (tiny_synthetic's: 56 s -> 30 s on 2); small sets skip the spawns
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            workers = cores if n >= 1000 else 1
            write_synthetic(raw, n, seed=cfg.seed, size=(s.height, s.width), first_id=first,
                            num_objects=s.objects or None, min_object_frac=s.get("min_object_frac", 0.04),
                            min_mask_area=s.get("min_mask_area", 0), workers=workers)
            convert([raw], dst, num_shards=max(1, min(s.shards, n)), workers=workers, progress=False)
            open(os.path.join(dst, "done"), "w").close()
        out[split] = os.path.join(dst, "*.tfrecord")
    return out["train"], out["eval"]


def make_input(cfg, model_cfg: SamConfig, files: str):
    nproc = jax.process_count()
    if cfg.data.batch_size % (nproc * cfg.train.grad_accum):
        raise ValueError(f"global batch {cfg.data.batch_size} must divide by processes x grad_accum "
                         f"({nproc} x {cfg.train.grad_accum})")
    pcfg = PipelineConfig(files=files, image_size=model_cfg.image_size, mask_size=model_cfg.mask_input_size,
                          max_masks_per_image=cfg.data.max_masks_per_image,
                          max_mask_area_fraction=cfg.data.max_mask_area_fraction,
                          batch_size=cfg.data.batch_size // nproc, shuffle_window=cfg.data.shuffle_window,
                          seed=cfg.seed, num_epochs=None, worker_count=cfg.data.worker_count,
                          cycle_length=cfg.data.cycle_length, skip_corrupt=cfg.data.skip_corrupt)
    return make_iterator(pcfg)


TRAIN_KEYS = ("image", "input_hw", "masks", "mask_valid", "boxes")


def batch_spec(cfg, model_cfg: SamConfig, mesh) -> dict:
    """The global training batch as jax.ShapeDtypeStructs sharded like `to_global` (ahead-of-time compilation)."""
    b, m, s, k = cfg.data.batch_size, cfg.data.max_masks_per_image, model_cfg.image_size, model_cfg.mask_input_size
    sh = NamedSharding(mesh, P(parallel.BATCH_AXES))
    shapes = {"image": ((b, s, s, 3), np.uint8), "input_hw": ((b, 2), np.int32), "masks": ((b, m, k, k), np.bool_),
              "mask_valid": ((b, m), np.bool_), "boxes": ((b, m, 4), np.float32)}
    return {key: jax.ShapeDtypeStruct(*shapes[key], sharding=sh) for key in TRAIN_KEYS}


def to_global(batch: dict, mesh) -> dict:
    """This process's numpy batch -> global arrays sharded over (data, fsdp) on the batch axis."""
    sh = NamedSharding(mesh, P(parallel.BATCH_AXES))
    return {k: jax.make_array_from_process_local_data(sh, np.asarray(batch[k])) for k in TRAIN_KEYS}
