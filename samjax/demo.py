"""The demo: point-prompted segmentation of a real photo, written as an overlay PNG.

    python -m samjax.demo --out out/demo                                   # embedded default (random weights)
    python -m samjax.demo --checkpoint sam_vit_b_01ec64.pth --out out/demo  # real weights: real masks

With no checkpoint it builds the ViT-B architecture, makes a randomly initialised state dict in the official
format, converts it with the real converter and segments scikit-image's bundled `chelsea` photo. RANDOM
WEIGHTS GIVE MEANINGLESS MASKS: the run shows the whole path (conversion, encoder, prompt decoder, output
files) and its speed, not segmentation quality. Pass an official .pth (or a converted directory) for that.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLORS = np.array([[30, 144, 255], [255, 99, 71], [50, 205, 50]], np.float32)


def overlay(image: np.ndarray, masks: np.ndarray, scores: np.ndarray, point: tuple[float, float]) -> Image.Image:
    """One panel per mask: the photo with the mask tinted, its score, and the prompt point. (H, 3W', 3) RGB."""
    panels = []
    for i, (mask, score) in enumerate(zip(masks, scores)):
        tinted = image.astype(np.float32)
        tinted[mask] = 0.45 * tinted[mask] + 0.55 * COLORS[i % len(COLORS)]
        panel = Image.fromarray(tinted.round().astype(np.uint8))
        draw = ImageDraw.Draw(panel)
        x, y = point
        draw.ellipse([x - 6, y - 6, x + 6, y + 6], fill=(255, 215, 0), outline=(0, 0, 0), width=2)
        draw.rectangle([0, 0, 150, 18], fill=(0, 0, 0))
        draw.text((4, 3), f"mask {i}  IoU pred {score:.3f}", fill=(255, 255, 255))
        panels.append(panel)
    out = Image.new("RGB", (sum(p.width for p in panels), image.shape[0]))
    for i, p in enumerate(panels):
        out.paste(p, (i * image.shape[1], 0))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samjax.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="output directory")
    parser.add_argument("--checkpoint", help="official SAM .pth or a directory from python -m samjax.convert")
    parser.add_argument("--image", help="an image file (default: scikit-image's bundled 'chelsea' photo)")
    parser.add_argument("--point", help="x,y pixel of the foreground click (default: image centre)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)

    from samjax import convert, infer, runtime
    from samjax.models import SamConfig

    if args.image:
        path = Path(args.image)
        if not path.is_file():
            print(f"error: image {str(path)!r} does not exist: give an image file (jpg, png, ...), or leave out "
                  "--image for the bundled photo", file=sys.stderr)
            return 2
        try:
            image = np.asarray(Image.open(path).convert("RGB"))
        except OSError as e:
            print(f"error: cannot read {path} as an image ({e})", file=sys.stderr)
            return 2
    else:
        from skimage import data

        image = data.chelsea()
    h, w = image.shape[:2]
    try:
        point = tuple(float(v) for v in args.point.split(",")) if args.point else (w / 2, h / 2)
        if len(point) != 2:
            raise ValueError
    except ValueError:
        print(f"error: --point must be 'x,y' pixels, got {args.point!r}", file=sys.stderr)
        return 2

    runtime.check_devices()
    t0 = time.perf_counter()
    if args.checkpoint:
        try:
            predictor = infer.load(args.checkpoint)
        except (FileNotFoundError, ValueError, ImportError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        source = args.checkpoint
    else:
        print("NOTE: no --checkpoint given, so the weights are RANDOM and the masks are meaningless.\n"
              "      For real masks: python -m samjax.demo --checkpoint sam_vit_b_01ec64.pth (official SAM weights).")
        config = SamConfig.vit_b()
        state_dict = convert.random_state_dict(config, seed=args.seed)  # official key names, shapes, layouts
        predictor = infer.Predictor(config, convert.from_torch(state_dict, config))
        source = f"random ViT-B (seed {args.seed}) converted from an official-format state dict"
    t_load = time.perf_counter() - t0
    print(f"model: {source}; {predictor.config.encoder_depth} blocks, embed {predictor.config.encoder_embed_dim}"
          f" ({t_load:.1f} s to build)")

    t0 = time.perf_counter()
    predictor.set_image(image)
    predictor.features.block_until_ready()
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    predictor.set_image(image)
    predictor.features.block_until_ready()
    t_encode = time.perf_counter() - t0
    print(f"image encoder: {t_first:.1f} s first call (compile + run), {t_encode:.2f} s cached")

    coords, labels = np.array([point]), np.array([1])
    predictor.predict(point_coords=coords, point_labels=labels)  # compile
    t0 = time.perf_counter()
    masks, scores, _ = predictor.predict(point_coords=coords, point_labels=labels)
    print(f"prompt -> 3 masks: {1e3 * (time.perf_counter() - t0):.1f} ms (the image embedding is cached)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overlay(image, masks, scores, point).save(out / "overlay.png")
    best = int(np.argmax(scores))
    Image.fromarray((masks[best] * 255).astype(np.uint8)).save(out / "mask_best.png")
    print(f"wrote {out / 'overlay.png'} (3 masks, IoU predictions {', '.join(f'{s:.3f}' for s in scores)}) and "
          f"{out / 'mask_best.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
