"""The grain input pipeline: TFRecord shards -> fixed-shape numpy batches, on every JAX process.

    cfg = PipelineConfig(files="/data/sa1b/*.tfrecord", image_size=1024, batch_size=8, worker_count=8)
    it = make_iterator(cfg)            # grain DatasetIterator, checkpointable
    batch = next(it)

Each batch (B = batch_size per process, S = image_size, m = mask_size, M = max_masks_per_image)::

    image:       (B, S, S, 3) uint8      longest side -> S (PIL bilinear, official rounding), zero pad bottom/right
    input_hw:    (B, 2) int32            valid (h, w) after the resize
    original_hw: (B, 2) int32
    masks:       (B, M, m, m) bool       targets in the padded frame at m x m (area average >= 0.5)
    mask_valid:  (B, M) bool             False for padding slots
    boxes:       (B, M, 4) float32       XYXY, pixels of the S x S input
    image_id:    (B,) int64

(per-image details: `samjax.data.preprocess.process_record`, also usable without grain).

Stages: the sorted file list is split across JAX processes (process i reads files i, i + n, ...: disjoint, and
together all of them); the process's files are shuffled per epoch (seed, epoch) and repeated `num_epochs` times
(None: forever); `cycle_length` files are read at once and interleaved (`source.TFRecordFileDataset`, CRCs
checked); records are shuffled in a window of `shuffle_window`; each is decoded and processed; batches are
stacked; `worker_count` > 0 runs all of it in that many processes (grain `mp_prefetch`, each worker on its own
files). Processes holding fewer files get fewer records: for multi-host training repeat forever (`num_epochs=None`)
and count steps.

Checkpointing: the iterator's state is small (file offsets and positions) and saved with orbax next to the model::

    mngr.save(step, args=ocp.args.Composite(state=..., data=grain.checkpoint.CheckpointSave(it)))
    mngr.restore(step, args=ocp.args.Composite(state=..., data=grain.checkpoint.CheckpointRestore(it)))

A restored iterator (same config) yields exactly the batches the original would have.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
from collections.abc import Sequence

import grain
import numpy as np

from samjax.data.example import RecordFormatError, decode_record
from samjax.data.preprocess import ImageDecodeError, process_record
from samjax.data.source import DropCorrupt, TFRecordFileDataset, count_corrupt

log = logging.getLogger(__name__)

__all__ = ["PipelineConfig", "make_dataset", "make_iterator", "files_for_process", "corrupt_records_skipped"]


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    files: str | Sequence[str]             # glob pattern(s) or paths of TFRecord shards (ours or TFDS's)
    image_size: int = 1024                  # S: model input side
    mask_size: int | None = None            # m: target mask side; None -> image_size // 4
    max_masks_per_image: int = 64           # M
    max_mask_area_fraction: float = 0.9     # masks covering more of the image are dropped before sampling
    batch_size: int = 8                     # per process
    shuffle_window: int = 256               # records; memory ~ window * record size (~0.5-1 MB for SA-1B)
    seed: int = 0
    num_epochs: int | None = None           # None: repeat forever
    worker_count: int = 0                   # grain mp_prefetch processes (0: in this process)
    worker_buffer_size: int = 2             # batches buffered per worker
    cycle_length: int = 8                   # files interleaved at once (per worker)
    skip_corrupt: bool = False              # skip+count corrupt records instead of raising
    process_index: int | None = None        # None: jax.process_index()
    process_count: int | None = None        # None: jax.process_count()

    @property
    def resolved_mask_size(self) -> int:
        return self.image_size // 4 if self.mask_size is None else self.mask_size


def list_files(files: str | Sequence[str]) -> list[str]:
    """Expands globs; sorted, de-duplicated. FileNotFoundError if nothing matches."""
    patterns = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    out: set[str] = set()
    for p in patterns:
        p = os.fspath(p)
        matches = glob.glob(p) if glob.has_magic(p) else ([p] if os.path.exists(p) else [])
        if not matches:
            raise FileNotFoundError(f"no TFRecord files match {p!r}")
        out.update(matches)
    return sorted(out)


def files_for_process(cfg: PipelineConfig) -> list[str]:
    """This process's disjoint share of the files: files[process_index::process_count]."""
    if cfg.process_index is None or cfg.process_count is None:
        import jax  # noqa: PLC0415 (only when the config leaves it to JAX)

    index = jax.process_index() if cfg.process_index is None else cfg.process_index
    count = jax.process_count() if cfg.process_count is None else cfg.process_count
    files = list_files(cfg.files)
    if not 0 <= index < count:
        raise ValueError(f"process_index {index} not in [0, {count})")
    if len(files) < count:
        raise ValueError(f"{len(files)} files cannot be split across {count} processes: write at least one shard "
                         "per process (e.g. --num-shards a multiple of the process count)")
    return files[index::count]


@dataclasses.dataclass(frozen=True)
class _OpenFile:  # picklable (mp_prefetch workers get the dataset pickled)
    num_files: int
    skip_corrupt: bool

    def __call__(self, index: int, path: str) -> TFRecordFileDataset:
        return TFRecordFileDataset(path, epoch=index // self.num_files, skip_corrupt=self.skip_corrupt)


@dataclasses.dataclass(frozen=True)
class _Process:
    cfg: PipelineConfig

    def __call__(self, element: dict) -> dict[str, np.ndarray]:
        c = self.cfg
        if "corrupt" in element:
            return element
        try:
            rec = decode_record(element["data"])
            return process_record(rec, image_size=c.image_size, mask_size=c.resolved_mask_size,
                                  max_masks=c.max_masks_per_image, max_area_fraction=c.max_mask_area_fraction,
                                  seed=c.seed, epoch=element["epoch"])
        except (RecordFormatError, ImageDecodeError, ValueError) as e:
            where = f"record at byte offset {element['offset']} of {element['path']}"
            if not c.skip_corrupt:
                raise type(e)(f"{where}: {e}") from e
            log.warning("skipping %s: %s", where, e)
            return {"corrupt": f"{where}: {e}"}


def make_dataset(cfg: PipelineConfig) -> grain.IterDataset:
    """The pipeline as a grain IterDataset (see module docstring)."""
    files = files_for_process(cfg)
    ds = grain.MapDataset.source(files).shuffle(seed=cfg.seed).repeat(cfg.num_epochs)
    ds = ds.map_with_index(_OpenFile(len(files), cfg.skip_corrupt))
    ds = grain.experimental.InterleaveIterDataset(ds, cycle_length=max(1, min(cfg.cycle_length, len(files))))
    if cfg.shuffle_window > 1:
        ds = grain.experimental.WindowShuffleIterDataset(ds, window_size=cfg.shuffle_window, seed=cfg.seed)
    ds = ds.map(_Process(cfg))
    if cfg.skip_corrupt:
        ds = DropCorrupt(ds)
    ds = ds.batch(cfg.batch_size, drop_remainder=True)
    if cfg.worker_count > 0:
        from absl import flags  # noqa: PLC0415 (mp_prefetch reads absl flags, unparsed when jax is a library)

        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count,
                                                         per_worker_buffer_size=cfg.worker_buffer_size))
    return ds


def make_iterator(cfg: PipelineConfig) -> grain.DatasetIterator:
    """A checkpointable iterator of batches (shapes in the module docstring). Close it when done."""
    return iter(make_dataset(cfg))


def corrupt_records_skipped(it: grain.DatasetIterator) -> int:
    """Corrupt TFRecord records skipped so far by this iterator (with skip_corrupt=True)."""
    return count_corrupt(it.get_state())
