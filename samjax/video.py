"""Track an object through a video with SAM 2, from clicks or a box on one frame.

    python -m samjax.video --checkpoint sam2.1_hiera_tiny.pt --frames frames/ --points "210,350;250,220,0" --out out/

--frames is a folder of JPEG frames (named by index, e.g. 00000.jpg, as the official predictor expects; extract a
video with `ffmpeg -i video.mp4 -q:v 2 -start_number 0 frames/%05d.jpg`). --points are "x,y[,label]" clicks in
pixels separated by ";" (label 1 foreground, the default, or 0 background); --box is "x0,y0,x1,y1". They go on
frame --frame (default 0) for object --obj-id. The object is tracked forward to the last frame and, when --frame is
not the first, backward to frame 0. Writes OUT/masks/<frame name>.png (a palette PNG: 0 background, 1 the object)
and OUT/overlay.gif (the frames with the mask tinted), with a progress bar. --checkpoint is an official SAM 2 / 2.1
.pt or a directory from samjax.weights.store.save_model (or python -m samjax.convert).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

PALETTE = [0, 0, 0, 30, 144, 255, 255, 99, 71, 50, 205, 50, 255, 215, 0]
TINT = np.array([30, 144, 255], np.float32)


def parse_points(text: str) -> tuple[np.ndarray, np.ndarray]:
    """ "x,y[,label];..." -> points (N, 2) float32, labels (N,) int32."""
    points, labels = [], []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        parts = item.split(",")
        try:
            values = [float(v) for v in parts]
        except ValueError:
            values = []
        if len(values) not in (2, 3) or (len(values) == 3 and values[2] not in (0.0, 1.0)):
            raise ValueError(f"--points: {item!r} is not x,y or x,y,label (label 1 foreground, 0 background)")
        points.append(values[:2])
        labels.append(int(values[2]) if len(values) == 3 else 1)
    if not points:
        raise ValueError("--points is empty: give x,y[,label] clicks separated by ';'")
    return np.array(points, np.float32), np.array(labels, np.int32)


def parse_box(text: str) -> np.ndarray:
    try:
        box = np.array([float(v) for v in text.split(",")], np.float32)
    except ValueError:
        box = np.zeros(0)
    if box.shape != (4,):
        raise ValueError(f"--box: {text!r} is not x0,y0,x1,y1")
    return box


def overlay(frame: np.ndarray, mask: np.ndarray) -> Image.Image:
    out = frame.astype(np.float32)
    out[mask] = 0.45 * out[mask] + 0.55 * TINT
    return Image.fromarray(out.round().astype(np.uint8))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m samjax.video", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="official SAM 2 / 2.1 .pt, or a converted SAM 2 directory")
    p.add_argument("--frames", required=True, help="folder of JPEG frames (<index>.jpg)")
    p.add_argument("--points", help='clicks "x,y[,label];..." in pixels (label 1 foreground, 0 background)')
    p.add_argument("--box", help='a box "x0,y0,x1,y1" in pixels')
    p.add_argument("--frame", type=int, default=0, help="index of the prompted frame (default 0)")
    p.add_argument("--obj-id", type=int, default=1, help="id of the object (default 1)")
    p.add_argument("--out", required=True, help="output folder (masks/*.png, overlay.gif)")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second of overlay.gif (default 10)")
    p.add_argument("--no-postprocessing", action="store_true",
                   help="the plain model (build_sam2_video_predictor's apply_postprocessing=False)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if a.points is None and a.box is None:
        p.error("give --points and/or --box")
    try:
        a.point_list = parse_points(a.points) if a.points is not None else (None, None)
        a.box_array = parse_box(a.box) if a.box is not None else None
    except ValueError as e:
        p.error(str(e))
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from samjax import runtime
    from samjax.infer import video

    checkpoint, frames_dir = Path(args.checkpoint), Path(args.frames)
    for path, what in ((checkpoint, "--checkpoint"), (frames_dir, "--frames")):
        if not path.exists():
            print(f"error: {what} {str(path)!r} does not exist", file=sys.stderr)
            return 2
    runtime.check_devices()
    predictor = video.load(checkpoint, apply_postprocessing=not args.no_postprocessing)
    try:
        state = predictor.init_state(str(frames_dir))
        points, labels = args.point_list
        predictor.add_new_points_or_box(state, args.frame, args.obj_id, points=points, labels=labels,
                                        box=args.box_array)
    except (ValueError, IndexError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    masks = {}
    progress = not args.no_progress
    for t, _, logits in predictor.propagate_in_video(state, start_frame_idx=args.frame, progress=progress):
        masks[t] = logits[0, 0] > 0
    if args.frame > 0:
        for t, _, logits in predictor.propagate_in_video(state, start_frame_idx=args.frame, reverse=True,
                                                         progress=progress):
            masks[t] = logits[0, 0] > 0
    out = Path(args.out)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    names = [p.stem for p in state.frames.paths]
    gif = []
    for t in sorted(masks):
        png = Image.frombytes("P", masks[t].shape[::-1], masks[t].astype(np.uint8).tobytes())
        png.putpalette(PALETTE)
        png.save(out / "masks" / f"{names[t]}.png")
        gif.append(overlay(state.frames.original(t), masks[t]))
    gif[0].save(out / "overlay.gif", save_all=True, append_images=gif[1:], duration=int(1000 / args.fps), loop=0)
    area = np.mean([m.mean() for m in masks.values()])
    print(f"{len(masks)} frames: masks in {out / 'masks'}, overlay {out / 'overlay.gif'} (object {args.obj_id}, "
          f"mean area {100 * area:.1f}% of the frame)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
