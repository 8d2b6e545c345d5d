"""The demo: the model samjax ships, segmenting images it never saw, with the IoU of every mask against the truth.

    python -m samjax.demo --out out/demo                                    # the shipped model, synthetic images
    python -m samjax.demo --checkpoint sam_vit_b_01ec64.pth --out out/demo   # an official checkpoint, a photo
    python -m samjax.demo --random-vit-b --out out/demo                      # the real ViT-B at 1024, random weights

By default it loads the small SAM that samjax ships (samjax.weights.default: trained from scratch on synthetic
shapes by `make train`), makes held-out synthetic images on the fly (another seed than training), and prompts it as
a user would: one click on every object of every image (the mean IoU against the ground truth is the headline),
then on the first image a box, three clicks, and automatic masks. It writes overlay.png (the four panels, each
titled with its IoU), masks/ (one PNG per clicked object) and prints the timings. With --checkpoint it segments a
real photo from one click (no ground truth there); --random-vit-b times the real architecture on random weights
converted from an official-format state dict (its masks are meaningless).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from samjax import convert, figures, infer, runtime
from samjax.data.synthetic import decoded_sample
from samjax.evaluate import interior_point, iou
from samjax.models import SamConfig
from samjax.weights import default as default_model

COLORS = np.array([[30, 144, 255], [255, 99, 71], [50, 205, 50]], np.float32)
# The images the demo makes: another seed than tiny_synthetic's data (seed 0), its size and its objects.
DEMO_SEED, DEMO_IMAGES, SIZE = 2024, 4, 128
REAL_PHOTOS = "for real photos pass an official checkpoint: python -m samjax.demo --checkpoint sam_vit_b_01ec64.pth"


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


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def shipped(out: Path, images: int = DEMO_IMAGES, seed: int = DEMO_SEED) -> dict:
    """The default demo (see the module docstring). Returns {"miou_points", "ious", "panels"}."""
    predictor, t_load = timed(infer.load)
    card = default_model.card()
    print(f"model: the shipped tiny_synthetic SAM ({t_load:.1f} s to load), trained by `{card['command']}` "
          f"(seed {card['seed']}, held-out single-point mIoU {card['eval']['miou_1pt']:.3f}); "
          f"not Meta's SAM: {REAL_PHOTOS}")
    (out / "masks").mkdir(parents=True, exist_ok=True)
    ious, first = [], None
    for k in range(images):
        image, gt = decoded_sample(seed, k + 1, SIZE, SIZE, num_objects=6, min_object_frac=0.1, min_mask_area=256)
        _, t_enc = timed(lambda image=image: (predictor.set_image(image), predictor.features.block_until_ready()))
        row = []
        for j, target in enumerate(gt):
            point = np.array([interior_point(target)[::-1]], np.float64) + 0.5  # (x, y) pixel centre
            (masks, scores, _), t_prompt = timed(lambda p=point: predictor.predict(p, np.array([1])))
            best = masks[np.argmax(scores)]
            row.append(iou(best, target))
            Image.fromarray(best.astype(np.uint8) * 255).save(out / "masks" / f"image{k}_object{j}.png")
        ious += row
        print(f"image {k}: {len(gt)} objects, one click each: IoU {', '.join(f'{v:.2f}' for v in row)} "
              f"(encoder {1e3 * t_enc:.0f} ms, last prompt {1e3 * t_prompt:.1f} ms)")
        first = first if first is not None else (image, gt)
    image, gt = first
    res, t_panels = timed(lambda: figures.prompt_panels(predictor, image, gt))
    miou = float(np.mean(ious))
    title = (f"samjax's shipped model on held-out synthetic images: one click per object, mean IoU {miou:.2f} over "
             f"{len(ious)} objects of {images} images")
    figures.draw(image, res, title, out / "overlay.png")
    print("image 0, the figure: " + ", ".join(f"{k} IoU {v:.2f}" for k, v in res["ious"].items())
          + f", automatic masks: {len(res['anns'])} ({t_panels:.1f} s for the four panels)")
    print(f"mean IoU of one click per object, against the ground truth: {miou:.3f} over {len(ious)} objects")
    print(f"wrote {out / 'overlay.png'} and {len(ious)} masks in {out / 'masks'}")
    print(f"({REAL_PHOTOS})")
    return {"miou_points": miou, "ious": ious, "panels": res["ious"]}


def photo(out: Path, predictor, source: str, image: np.ndarray, point) -> None:
    """One click on a photo (no ground truth): the three masks with their predicted IoUs, and the timings."""
    print(f"model: {source}")
    _, t_first = timed(lambda: (predictor.set_image(image), predictor.features.block_until_ready()))
    _, t_enc = timed(lambda: (predictor.set_image(image), predictor.features.block_until_ready()))
    print(f"image encoder: {t_first:.1f} s first call (compile + run), {t_enc:.2f} s cached")
    coords, labels = np.array([point]), np.array([1])
    predictor.predict(point_coords=coords, point_labels=labels)  # compile
    (masks, scores, _), t_prompt = timed(lambda: predictor.predict(point_coords=coords, point_labels=labels))
    print(f"prompt -> 3 masks: {1e3 * t_prompt:.1f} ms (the image embedding is cached)")
    out.mkdir(parents=True, exist_ok=True)
    overlay(image, masks, scores, point).save(out / "overlay.png")
    best = int(np.argmax(scores))
    Image.fromarray((masks[best] * 255).astype(np.uint8)).save(out / "mask_best.png")
    print(f"wrote {out / 'overlay.png'} (3 masks, IoU predictions {', '.join(f'{s:.3f}' for s in scores)}) and "
          f"{out / 'mask_best.png'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samjax.demo", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", default="out/demo", help="output directory")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="official SAM .pth or a directory from python -m samjax.convert")
    source.add_argument("--random-vit-b", action="store_true",
                        help="the real ViT-B at 1024 with random weights (timing the architecture; masks meaningless)")
    parser.add_argument("--image", help="with --checkpoint / --random-vit-b: an image file (default: "
                        "scikit-image's bundled 'chelsea' photo)")
    parser.add_argument("--point", help="x,y pixel of the foreground click (default: image centre)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (--random-vit-b)")
    args = parser.parse_args(argv)
    out = Path(args.out)
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
        from skimage import data  # noqa: PLC0415 - the bundled photo, only on the photo paths

        image = data.chelsea()
    h, w = image.shape[:2]
    try:
        point = tuple(float(v) for v in args.point.split(",")) if args.point else (w / 2, h / 2)
        if len(point) != 2:
            raise ValueError
    except ValueError:
        print(f"error: --point must be 'x,y' pixels, got {args.point!r}", file=sys.stderr)
        return 2
    if not (args.checkpoint or args.random_vit_b):
        if args.image or args.point:
            print("error: --image and --point are for a photo: give --checkpoint (an official checkpoint) or "
                  "--random-vit-b; the shipped model segments synthetic shapes", file=sys.stderr)
            return 2
        runtime.check_devices()
        try:
            shipped(out)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0

    runtime.check_devices()
    if args.checkpoint:
        try:
            predictor = infer.load(args.checkpoint)
        except (FileNotFoundError, ValueError, ImportError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        photo(out, predictor, args.checkpoint, image, point)
        return 0
    print("NOTE: --random-vit-b: the weights are RANDOM and the masks are meaningless (this times the architecture). "
          + REAL_PHOTOS)
    config = SamConfig.vit_b()
    (predictor, t_build) = timed(lambda: infer.Predictor(config, convert.from_torch(
        convert.random_state_dict(config, seed=args.seed), config)))  # official key names, shapes, layouts
    photo(out, predictor, f"random ViT-B (seed {args.seed}) converted from an official-format state dict "
          f"({t_build:.1f} s to build)", image, point)
    return 0


if __name__ == "__main__":
    sys.exit(main())
