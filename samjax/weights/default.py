"""The model samjax ships: the small SAM that `make train` (experiments/tiny_synthetic.py) trains from scratch on
synthetic SA-1B-format data, so the first command a newcomer runs shows masks that mean something.

    samjax.infer.load()            # this model (also samjax.infer.load("tiny"))
    make default-model             # retrain it (make train), then copy it here with its model card:
    python -m samjax.weights.default --from workdir/tiny_synthetic

The directory beside this file (tiny_synthetic/) is a samjax model directory (config.json, params/) plus
model_card.json: the command and commit that made it, its seed and steps, and its held-out figures from the run's
eval.json. It segments synthetic shapes, not photos: for real images use an official checkpoint
(`samjax.infer.load("sam_vit_b_01ec64.pth")`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

NAME = "tiny"
DIR = Path(__file__).resolve().parent / "tiny_synthetic"
COMMAND = "python -m samjax.train --experiment=tiny_synthetic --workdir=workdir/tiny_synthetic"


def path() -> Path:
    """The shipped model directory; FileNotFoundError (with the way to make it) when this install lacks it."""
    if not (DIR / "config.json").is_file():
        raise FileNotFoundError(f"the shipped default model is missing from {DIR}: make it with `make default-model` "
                                "(trains tiny_synthetic, about 15 minutes on 2 cores)")
    return DIR


def card() -> dict:
    """The shipped model's card: {"command", "commit", "seed", "steps", "eval": held-out figures, ...}."""
    return json.loads((path() / "model_card.json").read_text())


def ship(workdir: str | Path, dest: str | Path = DIR, commit: str | None = None) -> dict:
    """Copy a finished tiny_synthetic run's model (WORKDIR/model) to `dest` with its model card; returns the card.
    commit: the commit whose code trained it (default: this checkout's HEAD, as right after `make train`)."""
    workdir = Path(workdir)
    model, evals = workdir / "model", workdir / "eval.json"
    if not (model / "config.json").is_file() or not evals.is_file():
        raise FileNotFoundError(f"{workdir} holds no finished run (model/config.json and eval.json): run "
                                f"`{COMMAND}` first")
    run_cfg = json.loads((workdir / "config.json").read_text())
    steps = {"128 px": run_cfg["train"]["num_steps"]}
    stages = list(zip(run_cfg["low_res"]["image_size"], run_cfg["low_res"]["num_steps"]))
    steps = {**{f"{size} px": n for size, n in stages}, **steps}
    if commit is None:
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                    cwd=Path(__file__).parent).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown"
    info = {"command": COMMAND, "commit": commit, "seed": run_cfg["seed"], "experiment": "tiny_synthetic",
            "steps": steps, "eval": json.loads(evals.read_text()),
            "note": "trained from scratch on synthetic shapes (samjax.data.synthetic): not Meta's SAM; for photos "
                    "use an official checkpoint"}
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(model, dest)
    (dest / "model_card.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m samjax.weights.default", description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="workdir", required=True, help="a finished tiny_synthetic workdir")
    p.add_argument("--commit", default=None, help="the commit that trained it (default: HEAD)")
    a = p.parse_args(argv)
    try:
        info = ship(a.workdir, commit=a.commit)
    except (FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"shipped {a.workdir}/model -> {DIR} (held-out single-point mIoU {info['eval']['miou_1pt']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
