"""Throughput benchmark of the input pipeline on SA-1B-sized synthetic data (not a test).

    python -m samjax.data.bench [--images 16] [--size 1500x2250] [--image-size 1024] [--workers 0]

Generates `--images` synthetic SA-1B images (~100 masks each at 1500x2250), converts them to TFRecord, then
times the full pipeline (read + CRC, Example decode, JPEG decode, resize+pad, RLE decode + mask downsampling of up
to 64 masks, batching) after one warm-up batch. With `--workers 0` everything runs in one process on one core,
so images/s is images/s per core; with workers > 0 it is divided by the worker count.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from samjax.data.pipeline import PipelineConfig, make_iterator
from samjax.data.sa1b import convert
from samjax.data.synthetic import write_synthetic
from samjax.data.tfrecord import CRC32C_IMPLEMENTATION


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--size", default="1500x2250")
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--epochs", type=int, default=2)
    a = p.parse_args(argv)
    h, w = (int(v) for v in a.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as d:
        t = time.time()
        write_synthetic(os.path.join(d, "raw"), a.images, seed=0, size=(h, w))
        s = convert([os.path.join(d, "raw")], os.path.join(d, "tfr"), num_shards=4, workers=os.cpu_count(),
                    progress=False)
        print(f"data: {s['images']} images {h}x{w}, {s['masks'] / max(s['images'], 1):.0f} masks/image "
              f"({time.time() - t:.0f} s to make)")
        cfg = PipelineConfig(files=os.path.join(d, "tfr", "*.tfrecord"), image_size=a.image_size,
                             batch_size=a.batch_size, shuffle_window=16, num_epochs=a.epochs,
                             worker_count=a.workers, process_index=0, process_count=1)
        it = make_iterator(cfg)
        next(it)  # warm-up (worker start-up, imports)
        n, t = 0, time.perf_counter()
        for batch in it:
            n += len(batch["image_id"])
        dt = time.perf_counter() - t
        it.close()
    cores = max(a.workers, 1)
    print(f"pipeline: {n} images in {dt:.2f} s = {n / dt:.2f} images/s with {cores} core(s) "
          f"-> {n / dt / cores:.2f} images/s per core (image_size {a.image_size}, crc32c {CRC32C_IMPLEMENTATION})")


if __name__ == "__main__":
    main()
