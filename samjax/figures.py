"""The README figure: predictor masks and automatic masks of a samjax model on a held-out synthetic image.

    python -m samjax.figures --model workdir/tiny_synthetic/model --out docs/overlay.png      # `make figures`

Four panels on one image that the model never saw (samjax.data.synthetic, another seed than training): one
click -> the highest-scoring of the three masks; a box; three clicks (two foreground, one background); and
automatic mask generation. Prompts come from the image's ground-truth objects; each panel gives the IoU with the
object it targets. The title names the model and, when the model directory sits in a training workdir, the
steps trained and the held-out mIoU from its eval.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no backend chosen for the importing program

import samjax.infer
from samjax import runtime, viz
from samjax.amg import AutomaticMaskGenerator
from samjax.data.synthetic import decoded_sample
from samjax.evaluate import interior_point, iou


def describe_model(model_dir: Path) -> str:
    """"tiny_synthetic/model, 1818 training steps, held-out 1-point mIoU 0.40 (266 masks)": what the workdir around
    model_dir says about it (checkpoints/ and eval.json, where present)."""
    workdir = model_dir.parent
    parts = [f"{workdir.name}/{model_dir.name}"]
    steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
    if steps:
        parts.append(f"{max(steps)} training steps")
        stages, stage = [], workdir / "low_res"
        while (stage / "done.json").is_file():  # low-resolution stages (config.low_res) before, the largest first
            low = json.loads((stage / "done.json").read_text())
            stages.insert(0, f"{low['step']} at {low['image_size']} px")
            stage = stage / "low_res"
        if stages:
            parts[-1] += " after " + " and ".join(stages)
    if (workdir / "eval.json").is_file():
        ev = json.loads((workdir / "eval.json").read_text())
        parts.append(f"held-out 1-point mIoU {ev['miou_1pt']:.2f} ({ev.get('num_masks', '?')} masks)")
    return ", ".join(parts)


def render(model_dir: str | Path, out: str | Path, seed: int = 2024, image_id: int = 3, points_per_side: int = 16,
           pred_iou_thresh: float = 0.3, stability_score_thresh: float = 0.6) -> dict:
    """Writes the PNG; returns {"path", "ious": per prompt panel, "num_auto_masks"}."""
    model_dir = Path(model_dir)
    predictor = samjax.infer.load(model_dir)
    size = predictor.config.image_size
    image, gt = decoded_sample(seed, image_id, size, size)
    res = prompt_panels(predictor, image, gt, points_per_side, pred_iou_thresh, stability_score_thresh)
    draw(image, res, f"samjax on a held-out synthetic image; model: {describe_model(model_dir)}", out)
    return {"path": str(out), "ious": res["ious"], "num_auto_masks": len(res["anns"])}


def prompt_panels(predictor, image: np.ndarray, gt: np.ndarray, points_per_side: int = 16,
                  pred_iou_thresh: float = 0.3, stability_score_thresh: float = 0.6) -> dict:
    """The four panels' predictions on one image with ground-truth objects gt (K, H, W): one click (the
    highest-scoring of three masks), a box, three clicks, and automatic masks. -> {"prompts", "masks": {panel: (H, W)
    bool}, "ious": {panel: IoU with its object}, "anns": the generator's records}."""
    pr = prompts_from_objects(gt)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(point_coords=pr["point"], point_labels=np.array([1]))
    out = {"1 click": masks[np.argmax(scores)],
           "box": predictor.predict(box=pr["box"], multimask_output=False)[0][0],
           "3 clicks": predictor.predict(point_coords=pr["clicks"], point_labels=pr["click_labels"],
                                         multimask_output=False)[0][0]}
    anns = AutomaticMaskGenerator(predictor, points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
                                  stability_score_thresh=stability_score_thresh).generate(image)
    objects = pr["objects"]
    ious = {name: iou(out[name], objects[i]) for i, name in enumerate(out)}
    return {"prompts": pr, "masks": out, "ious": ious, "anns": anns, "points_per_side": points_per_side}


def draw(image: np.ndarray, res: dict, title: str, out: str | Path) -> Path:
    """`prompt_panels`' result as one figure of four panels, each titled with its IoU."""
    pr = res["prompts"]
    fig = Figure(figsize=(13, 3.9))
    axes = fig.subplots(1, 4)
    panels = [("1 click", pr["point"], np.array([1]), None), ("box", None, None, pr["box"]),
              ("3 clicks", pr["clicks"], pr["click_labels"], None)]
    for ax, (name, pts, labels, b) in zip(axes, panels):
        ax.imshow(image)
        viz.show_mask(ax, res["masks"][name])
        if pts is not None:
            viz.show_points(ax, pts, labels, size=120)
        if b is not None:
            viz.show_box(ax, b)
        ax.set_title(f"{name}: IoU {res['ious'][name]:.2f} with its object", fontsize=9)
    viz.show_anns(axes[3], res["anns"], image=image)
    side = res["points_per_side"]
    axes[3].set_title(f"automatic: {len(res['anns'])} masks ({side}x{side} points)", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    return out


def prompts_from_objects(masks: np.ndarray) -> dict:
    """Prompts (x, y pixel centres) for the objects of a synthetic image, (K, H, W) bool ground-truth masks, K >= 3:
    objects (the masks, largest first); point (1, 2) deep inside object 0 (the maximum of its distance
    transform); box (4,) XYXY around object 1; clicks (3, 2) with click_labels (3,): two foreground clicks on
    object 2 (its interior centre, and the centre of its larger side beside that) and one background click in
    no object at all."""
    objects = sorted(masks, key=lambda m: -m.sum())
    if len(objects) < 3:
        raise ValueError(f"need at least 3 objects, got {len(objects)}")
    inside = lambda m: np.array(interior_point(m)[::-1], np.float64) + 0.5  # noqa: E731  (row, col) -> (x, y)
    ys, xs = np.nonzero(objects[1])
    r, c = interior_point(objects[2])
    left, right = objects[2].copy(), objects[2].copy()
    left[:, c:] = False
    right[:, : c + 1] = False
    side = left if left.sum() >= right.sum() else right
    free = ~masks.any(0)
    clicks = [inside(objects[2]), inside(side) if side.any() else inside(objects[2]),
              inside(free) if free.any() else inside(objects[0])]
    return {"objects": objects, "point": inside(objects[0])[None], "box": np.array([xs.min(), ys.min(), xs.max() + 1,
            ys.max() + 1], np.float64), "clicks": np.stack(clicks), "click_labels": np.array([1, 1, 0])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m samjax.figures", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a samjax model dir, e.g. workdir/tiny_synthetic/model")
    p.add_argument("--out", default="docs/overlay.png", help="PNG to write")
    p.add_argument("--points-per-side", type=int, default=16, help="automatic mask generation grid")
    p.add_argument("--seed", type=int, default=2024, help="synthetic image seed (training uses 0)")
    a = p.parse_args(argv)
    runtime.check_devices()
    try:
        res = render(a.model, a.out, seed=a.seed, points_per_side=a.points_per_side)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size_kb = Path(res["path"]).stat().st_size / 1024
    print(f"wrote {res['path']} ({size_kb:.0f} KB): IoU " +
          ", ".join(f"{k} {v:.2f}" for k, v in res["ious"].items()) + f"; {res['num_auto_masks']} automatic masks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
