"""Convert SA-1B as released (tar shards of sa_N.jpg + sa_N.json, or extracted folders) to TFRecord shards.

    python -m samjax.data.sa1b --input /data/sa1b_tars --output /data/sa1b_tfrecord --num-shards 1000 [--workers 16]

--input: one or more tar files, folders (of tars and/or extracted jpg/json pairs) or globs. Output:
`DIR/sa1b-00000-of-01000.tfrecord` ... (tf.train.Example, schema in `samjax.data.example`; the JPEG bytes are
kept as they are), readable by `tf.data.TFRecordDataset` and by `samjax.data.pipeline` without TensorFlow.

Samples are sorted by (source, name) and cut into `num-shards` contiguous blocks; `--workers` processes convert
one shard at a time each. Every sample is validated (`samjax.data.sa1b_format`): a corrupt or inconsistent one
(bad JSON field, bad RLE, a JPEG that does not decode or does not match the JSON, a non-image member, a jpg
without its json) is reported and skipped, never written, and counted in the final summary.

Resume: a shard is written to a temporary file, renamed into place, then marked done by `<shard>.done.json`
(its counts and problems). Re-running the same command skips shards marked done and redoes the rest, so an
interrupted conversion is finished by running it again. `DIR/conversion.json` records the sample count and
shard count; a re-run with a different `--num-shards` or input is refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import multiprocessing
import os
import re
import sys
import tarfile
import time

from tqdm import tqdm

from samjax.data.example import encode_record
from samjax.data.sa1b_format import SA1BError, parse_sample
from samjax.data.tfrecord import TFRecordWriter


@dataclasses.dataclass(frozen=True)
class SampleRef:
    """Where one sample's two files are: in a tar (byte offsets) or on disk (offset -1: whole file)."""

    name: str          # "<source>:<stem>", for messages
    jpg: tuple[str, int, int]   # (path, offset, size)
    json: tuple[str, int, int]


def _natural(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _pair(source: str, files: dict[str, dict[str, tuple]], problems: list[str]) -> list[SampleRef]:
    out = []
    for stem in sorted(files, key=_natural):
        kinds = files[stem]
        if "jpg" not in kinds or "json" not in kinds:
            have, miss = next(iter(kinds)), ("json" if "jpg" in kinds else "jpg")
            problems.append(f"{source}:{stem}.{have}: no matching {stem}.{miss}; skipped")
            continue
        out.append(SampleRef(f"{source}:{stem}", kinds["jpg"], kinds["json"]))
    return out


def _scan_tar(path: str, problems: list[str]) -> list[SampleRef]:
    files: dict[str, dict[str, tuple]] = {}
    try:
        with tarfile.open(path, "r:") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                base = os.path.basename(m.name)
                stem, ext = os.path.splitext(base)
                ext = ext.lower().lstrip(".")
                if ext not in ("jpg", "json"):
                    problems.append(f"{path}:{m.name}: unexpected member (expected sa_N.jpg / sa_N.json); skipped")
                    continue
                files.setdefault(stem, {})[ext] = (path, m.offset_data, m.size)
    except (tarfile.TarError, OSError) as e:
        problems.append(f"{path}: unreadable tar ({e}); samples after the damage skipped")
    return _pair(path, files, problems)


def _scan_dir_files(path: str, names: list[str], problems: list[str]) -> list[SampleRef]:
    files: dict[str, dict[str, tuple]] = {}
    for base in names:
        stem, ext = os.path.splitext(base)
        ext = ext.lower().lstrip(".")
        if ext in ("jpg", "json"):
            files.setdefault(stem, {})[ext] = (os.path.join(path, base), -1, -1)
    return _pair(path, files, problems)


def scan_inputs(inputs: list[str]) -> tuple[list[SampleRef], list[str]]:
    """All samples under `inputs` in a stable order, and the problems found while listing them."""
    problems: list[str] = []
    samples: list[SampleRef] = []
    paths: list[str] = []
    for p in inputs:
        matches = sorted(glob.glob(p)) if glob.has_magic(p) else [p]
        if not matches or not all(os.path.exists(m) for m in matches):
            raise FileNotFoundError(f"--input {p!r}: no such file or folder")
        paths += matches
    for p in sorted(set(paths), key=_natural):
        if os.path.isdir(p):
            names = sorted(os.listdir(p), key=_natural)
            for n in names:
                if n.endswith(".tar"):
                    samples += _scan_tar(os.path.join(p, n), problems)
            samples += _scan_dir_files(p, [n for n in names if os.path.isfile(os.path.join(p, n))], problems)
        elif p.endswith(".tar"):
            samples += _scan_tar(p, problems)
        else:
            raise ValueError(f"--input {p!r}: expected a .tar shard or a folder")
    return samples, problems


def _read(loc: tuple[str, int, int]) -> bytes:
    path, offset, size = loc
    with open(path, "rb") as f:
        if offset < 0:
            return f.read()
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise SA1BError(f"{path}: truncated member at byte {offset} ({len(data)} of {size} bytes)")
    return data


def shard_path(out: str, k: int, n: int, prefix: str = "sa1b") -> str:
    return os.path.join(out, f"{prefix}-{k:05d}-of-{n:05d}.tfrecord")


def load_sample(ref: SampleRef):
    """One SA-1B sample -> Record (raises SA1BError / OSError)."""
    return parse_sample(_read(ref.jpg), _read(ref.json), ref.name)


def convert_shard(job: tuple) -> dict:
    """Writes shard k of n from its items (load(item) -> Record, or ValueError / OSError: reported and skipped);
    returns (and stores in the .done.json marker) its counts."""
    out, prefix, k, n, items, load = job
    final = shard_path(out, k, n, prefix)
    tmp = f"{final}.tmp-{os.getpid()}"
    written, masks, problems = 0, 0, []
    with TFRecordWriter(tmp) as w:
        for item in items:
            try:
                rec = load(item)
            except (ValueError, OSError) as e:
                problems.append(str(e))
                continue
            w.write(encode_record(rec))
            written += 1
            masks += len(rec["rle_counts"])
    os.replace(tmp, final)
    summary = {"shard": os.path.basename(final), "images": written, "masks": masks, "skipped": len(problems),
               "problems": problems}
    marker_tmp = f"{final}.done.json.tmp-{os.getpid()}"
    with open(marker_tmp, "w") as f:
        json.dump(summary, f)
    os.replace(marker_tmp, final + ".done.json")
    return summary


def _load_marker(path: str) -> dict | None:
    try:
        with open(path + ".done.json") as f:
            summary = json.load(f)
        return summary if os.path.exists(path) else None
    except (OSError, json.JSONDecodeError):
        return None


def write_shards(out: str, items: list, num_shards: int, load, manifest: dict, *, prefix: str, desc: str,
                 workers: int | None = None, progress: bool = True, problems: list[str] = ()) -> dict:
    """Cuts `items` into `num_shards` contiguous blocks and writes (or, after an interruption, finishes) the shards
    `OUT/PREFIX-k-of-n.tfrecord`. `load` must be a module-level function (it runs in worker processes).
    `manifest` describes the input: a re-run into the same folder with another one is refused."""
    if num_shards < 1:
        raise ValueError("--num-shards must be >= 1")
    os.makedirs(out, exist_ok=True)
    mpath = os.path.join(out, "conversion.json")
    if os.path.exists(mpath):
        with open(mpath) as f:
            old = json.load(f)
        if old != manifest:
            raise ValueError(f"{out} holds a conversion of other input or shard count ({old}); this run is "
                             f"{manifest}. Use another --output or delete it.")
    else:
        with open(mpath + ".tmp", "w") as f:
            json.dump(manifest, f)
        os.replace(mpath + ".tmp", mpath)
    for stale in glob.glob(os.path.join(out, "*.tmp-*")):  # left by an interrupted run
        os.remove(stale)

    done, jobs = {}, []
    for k in range(num_shards):
        block = items[k * len(items) // num_shards:(k + 1) * len(items) // num_shards]
        summary = _load_marker(shard_path(out, k, num_shards, prefix))
        if summary is not None:
            done[k] = summary
        else:
            jobs.append((out, prefix, k, num_shards, block, load))
    resumed = len(done)
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    t0 = time.time()
    bar = tqdm(total=sum(len(j[4]) for j in jobs), unit="img", desc=desc, disable=not progress)
    if workers == 1:
        results = map(convert_shard, jobs)
    else:
        pool = multiprocessing.get_context("spawn").Pool(workers)
        results = pool.imap_unordered(convert_shard, jobs)
    try:
        for s in results:
            done[int(s["shard"].split("-")[-3])] = s
            bar.update(s["images"] + s["skipped"])
            bar.set_postfix(skipped=sum(d["skipped"] for d in done.values()))
    finally:
        bar.close()
        if workers > 1:
            pool.close()
            pool.join()
    problems = list(problems) + [p for k in sorted(done) for p in done[k]["problems"]]
    return {
        "output": out, "shards": num_shards, "shards_resumed": resumed, "shards_written": len(jobs),
        "images": sum(d["images"] for d in done.values()), "masks": sum(d["masks"] for d in done.values()),
        "skipped": len(problems), "problems": problems, "seconds": round(time.time() - t0, 1),
    }


def convert(inputs: list[str], out: str, num_shards: int, workers: int | None = None,
            progress: bool = True) -> dict:
    """Runs (or resumes) the conversion; returns the summary dict printed by the CLI."""
    if num_shards < 1:
        raise ValueError("--num-shards must be >= 1")
    samples, scan_problems = scan_inputs(inputs)
    manifest = {"num_samples": len(samples), "num_shards": num_shards,
                "first": samples[0].name if samples else None, "last": samples[-1].name if samples else None}
    return write_shards(out, samples, num_shards, load_sample, manifest, prefix="sa1b", desc="SA-1B -> TFRecord",
                        workers=workers, progress=progress, problems=scan_problems)


def print_summary(s: dict) -> None:
    """The CLI's report: the problems (first 50) on stderr, one summary line on stdout."""
    for prob in s["problems"][:50]:
        print(f"skipped: {prob}", file=sys.stderr)
    if len(s["problems"]) > 50:
        print(f"... and {len(s['problems']) - 50} more (see the .done.json markers)", file=sys.stderr)
    print(f"done: {s['images']} images, {s['masks']} masks in {s['shards']} shards under {s['output']} "
          f"({s['shards_written']} written now, {s['shards_resumed']} already done); "
          f"{s['skipped']} samples/files skipped; {s['seconds']} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, nargs="+", help="tar shards, folders or globs")
    p.add_argument("--output", required=True)
    p.add_argument("--num-shards", type=int, required=True)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    print_summary(convert(a.input, a.output, a.num_shards, a.workers, progress=not a.no_progress))
    return 0


if __name__ == "__main__":
    sys.exit(main())
