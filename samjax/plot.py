"""Training curves from a run's TensorBoard event files, as a PNG (no TensorBoard server needed).

    python -m samjax.plot WORKDIR [--out curves.png]      # default: WORKDIR/curves.png

Left: the loss (`train/loss`) and its parts (focal, dice, IoU MSE, as logged). Right: mIoU of the first and
last prompt-simulation rounds on the training batches (`train/miou_first`, `train/miou_last`) and the held-out
single-point mIoU (`eval/miou_1pt`) where the run evaluated. Tags are those `samjax.train` writes
(samjax.training.metrics.TensorBoard); WORKDIR may be the run's workdir or its tensorboard/ folder. A run with
low-resolution stages (config.low_res: WORKDIR/low_res/tensorboard, WORKDIR/low_res/low_res/...) is drawn as one
curve: the smallest size's steps first, the main stage's last, a dashed line where the image size grows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

LOSS_TAGS = {"train/loss": "loss", "train/focal": "focal", "train/dice": "dice", "train/iou_mse": "IoU MSE"}
MIOU_TAGS = {"train/miou_first": "train, first prompt", "train/miou_last": "train, last round",
             "eval/miou_1pt": "held-out, 1 point"}


def event_dir(workdir: str | Path) -> Path:
    """WORKDIR/tensorboard if it exists, else WORKDIR itself; FileNotFoundError when it holds no event files."""
    workdir = Path(workdir)
    logdir = workdir / "tensorboard" if (workdir / "tensorboard").is_dir() else workdir
    if not any(logdir.glob("events.out.tfevents.*")):
        raise FileNotFoundError(f"no TensorBoard event files in {str(logdir)!r}: give the --workdir of a "
                                "python -m samjax.train run (it writes WORKDIR/tensorboard/events.out.tfevents.*)")
    return logdir


def read_scalars(workdir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every scalar tag -> (steps (T,) int64, values (T,) float64), sorted by step; a resumed run's repeated
    steps keep the last value written."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415

    acc = EventAccumulator(str(event_dir(workdir)), size_guidance={"scalars": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        by_step = {e.step: e.value for e in acc.Scalars(tag)}
        steps = np.array(sorted(by_step), np.int64)
        out[tag] = (steps, np.array([by_step[s] for s in steps], np.float64))
    return out


def read_run(workdir: str | Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[tuple[int, str]]]:
    """read_scalars of a run, with its low-resolution stages' curves (WORKDIR/low_res, and WORKDIR/low_res/low_res
    before that, ...) put before the main stage's: returns (scalars, switches), switches [(the step where a stage
    starts, "64 -> 128 px"), ...] in order, [] without such stages."""
    scalars = read_scalars(workdir)
    stage = Path(workdir) / "low_res"
    if not (stage / "tensorboard").is_dir() or not any((stage / "tensorboard").glob("events.out.tfevents.*")):
        return scalars, []
    first, switches = read_run(stage)
    switch = int(max(steps[-1] for steps, _ in first.values()))
    merged = {}
    for tag in set(scalars) | set(first):
        a_steps, a_vals = first.get(tag, (np.zeros(0, np.int64), np.zeros(0)))
        b_steps, b_vals = scalars.get(tag, (np.zeros(0, np.int64), np.zeros(0)))
        merged[tag] = (np.concatenate([a_steps, b_steps + switch]), np.concatenate([a_vals, b_vals]))
    return merged, [*switches, (switch, _switch_label(Path(workdir)))]


def plot_curves(scalars: dict[str, tuple[np.ndarray, np.ndarray]], title: str = "",
                switches: list[tuple[int, str]] = ()):
    """A matplotlib Figure: loss curves (left, log scale) and mIoU curves (right); `switches` [(step, label), ...]:
    a dashed line at each step (where the image size grows)."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, tags in ((ax_loss, LOSS_TAGS), (ax_miou, MIOU_TAGS)):
        for tag, label in tags.items():
            if tag in scalars:
                steps, values = scalars[tag]
                style = "o-" if len(steps) < 5 or tag.startswith("eval/") else "-"
                ax.plot(steps, values, style, label=label, lw=1.5 if tag in ("train/loss", "eval/miou_1pt") else 1)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    ax_loss.set_title("loss")
    if ax_loss.lines and all(np.all(line.get_ydata() > 0) for line in ax_loss.lines):
        ax_loss.set_yscale("log")
    for ax in (ax_loss, ax_miou):
        for step, label in switches:
            ax.axvline(step, color="0.4", ls="--", lw=1, label=label)
        if ax.lines:
            ax.legend(fontsize=8)
    ax_miou.set_title("mIoU")
    ax_miou.set_ylim(0, 1)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m samjax.plot", description=__doc__.splitlines()[0])
    p.add_argument("workdir", help="a python -m samjax.train --workdir (or its tensorboard/ folder)")
    p.add_argument("--out", help="PNG to write (default: WORKDIR/curves.png)")
    a = p.parse_args(argv)
    try:
        scalars, switches = read_run(a.workdir)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "train/loss" not in scalars:
        print(f"error: the event files in {a.workdir} have no train/loss curve (tags: {sorted(scalars)})",
              file=sys.stderr)
        return 2
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")  # a file, no display
    out = Path(a.out) if a.out else Path(a.workdir) / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_curves(scalars, title=f"training run {Path(a.workdir).resolve().name}", switches=switches)
    fig.savefig(out, dpi=100)
    steps = scalars["train/loss"][0]
    print(f"wrote {out} ({len(steps)} logged steps, {int(steps[0])}..{int(steps[-1])}; "
          f"{', '.join(t for t in (*LOSS_TAGS, *MIOU_TAGS) if t in scalars)})")
    return 0


def _switch_label(workdir: Path) -> str:
    """"64 -> 128 px" from the config.json files of WORKDIR/low_res and WORKDIR, where present."""
    try:
        sizes = [json.loads((d / "config.json").read_text())["model"]["image_size"] for d in (workdir / "low_res",
                                                                                            workdir)]
    except (OSError, KeyError, ValueError):
        return "image size grows"
    return f"{sizes[0]} -> {sizes[1]} px"


if __name__ == "__main__":
    sys.exit(main())
