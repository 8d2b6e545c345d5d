"""Resumable per-image results and the final JSON + Markdown report of an evaluation task.

    OUT/TASK.jsonl       one JSON line per finished image ({"key": ..., ...}), appended as images finish
    OUT/TASK_run.json    the settings of the run (checkpoint, data, options): a rerun with other settings is refused
    OUT/TASK.json        the metrics (written at the end of every run, from all lines of TASK.jsonl)
    OUT/TASK.md          the same as a Markdown table (also printed)

A killed run leaves at most one incomplete last line; it is cut off when the log is opened again, and the images
already in the log are skipped.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


class ResultLog:
    """Append-only JSONL of per-image records, keyed by record["key"]."""

    def __init__(self, out_dir: str | os.PathLike, task: str, settings: dict):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"{task}.jsonl"
        run = self.dir / f"{task}_run.json"
        settings = json.loads(json.dumps(settings))  # as it will read back (tuples -> lists)
        if run.is_file() and self.path.is_file():
            old = json.loads(run.read_text())
            diff = [f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in sorted(set(old) | set(settings))
                    if old.get(k) != settings.get(k)]
            if diff:
                raise ValueError(f"{self.dir} holds a {task} run with other settings ({'; '.join(diff)}); use "
                                 f"another --out, or delete {self.path.name} to start over")
        run.write_text(json.dumps(settings, indent=2))
        self.records: dict[str, dict] = {}
        if self.path.is_file():
            self._read()

    def _read(self) -> None:
        data = self.path.read_bytes()
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # a line cut short by a kill: dropped below
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break
            self.records[rec["key"]] = rec
            good += len(line)
        if good != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def add(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.records[record["key"]] = record


def fmt(value, digits: int = 1, scale: float = 100.0) -> str:
    """A metric for the table: value x scale with `digits` decimals; '-' for missing / NaN / negative (pycocotools'
    -1 for 'no ground truth')."""
    if value is None or (isinstance(value, float) and (math.isnan(value) or value < 0)):
        return "-"
    return f"{value * scale:.{digits}f}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(out_dir: str | os.PathLike, task: str, metrics: dict, table: str, title: str) -> tuple[Path, Path]:
    """OUT/TASK.json (metrics) and OUT/TASK.md (title + table)."""
    out_dir = Path(out_dir)
    js, md = out_dir / f"{task}.json", out_dir / f"{task}.md"
    js.write_text(json.dumps(metrics, indent=2))
    md.write_text(f"# {title}\n\n{table}\n")
    return js, md
