"""Seconds per image of automatic mask generation: samjax vs the official SamAutomaticMaskGenerator.

Same CPU, same random ViT-B weights (official model randomised, converted with samjax.convert.from_torch), same
image, points_per_side=16, every other option at its default. samjax's compile time is reported separately
(it is paid once per model and image-size bucket). Both use every core of this machine.

    make bench-amg          # or: python -m benchmarks.amg [--image PATH] [--repeats 2] [--pred-iou-thresh 0]

samjax makes masks only for the points with a predicted IoU through `pred_iou_thresh` (the official generator
makes every mask, then filters). Random weights predict IoUs below the default 0.88 for every point, so the
default run is samjax's best case; `--pred-iou-thresh 0` makes every mask in both, the worst case.

The official package needs torchvision; where the PyPI wheel does not load beside the CPU torch build, the
labelled stand-in of tests/standins supplies `batched_nms` (a reference torch implementation; its time is
measured and printed so it can be discounted) and PIL resizing.

Results: benchmarks/results/amg.json (--out), with benchmarks.record's commit, command, device and date.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks import record


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", help="image file (default: scikit-image's coffee photo, 400x600)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--points-per-side", type=int, default=16)
    p.add_argument("--pred-iou-thresh", type=float, default=0.88, help="both generators (default: theirs)")
    record.add_out_argument(p, "amg")
    a = p.parse_args(argv)

    from samjax.amg import AutomaticMaskGenerator
    from samjax.convert import from_torch
    from samjax.infer import Predictor
    from samjax.models import SamConfig
    from tests.official import build_official, import_official

    torch, segment_anything = import_official()
    import segment_anything.automatic_mask_generator as official_amg

    if a.image:
        from PIL import Image

        image = np.asarray(Image.open(a.image).convert("RGB"))
    else:
        from skimage import data

        image = data.coffee()
    cfg = SamConfig.vit_b()
    sam = build_official(cfg, seed=0)
    predictor = Predictor(cfg, from_torch(sam.state_dict(), cfg))
    opts = dict(points_per_side=a.points_per_side, pred_iou_thresh=a.pred_iou_thresh)
    ours = AutomaticMaskGenerator(predictor, **opts)
    ref = segment_anything.SamAutomaticMaskGenerator(sam, **opts)

    nms_time = [0.0]
    real_nms = official_amg.batched_nms

    def timed_nms(*args, **kwargs):
        t = time.perf_counter()
        out = real_nms(*args, **kwargs)
        nms_time[0] += time.perf_counter() - t
        return out

    official_amg.batched_nms = timed_nms

    t = time.perf_counter()
    ours.generate(image)  # compiles
    first_s = time.perf_counter() - t
    ours_s, ref_s, ref_nms = [], [], []
    for _ in range(a.repeats):
        t = time.perf_counter()
        out = ours.generate(image)
        ours_s.append(time.perf_counter() - t)
        nms_time[0] = 0.0
        t = time.perf_counter()
        with torch.no_grad():
            ref_out = ref.generate(image)
        ref_s.append(time.perf_counter() - t)
        ref_nms.append(nms_time[0])
    # The image encoder is the same work in both (one ViT-B pass on the 1024 x 1024 input); time it alone so the
    # part automatic mask generation adds (point decoding, filtering, NMS, encoding of masks) can be compared.
    t = time.perf_counter()
    predictor.encode_images([image])[0].block_until_ready()
    ours_enc = time.perf_counter() - t
    t = time.perf_counter()
    with torch.no_grad():
        segment_anything.SamPredictor(sam).set_image(image)
    ref_enc = time.perf_counter() - t
    o, r = statistics.median(ours_s), statistics.median(ref_s)
    print(f"image {image.shape[1]}x{image.shape[0]}, ViT-B (random weights), points_per_side={a.points_per_side}, "
          f"pred_iou_thresh={a.pred_iou_thresh}, "
          f"{torch.get_num_threads()} torch threads, repeats={a.repeats}")
    print(f"{'':10s} {'s/image':>9s}  masks")
    print(f"{'official':10s} {r:9.2f}  {len(ref_out):5d}   "
          f"(of which batched_nms stand-in {statistics.median(ref_nms):.3f} s)")
    print(f"{'samjax':10s} {o:9.2f}  {len(out):5d}   (first call with compilation: {first_s:.2f} s)")
    print(f"samjax / official = {o / r:.3f}")
    print(f"image encoder alone: official {ref_enc:.2f} s, samjax {ours_enc:.2f} s; "
          f"beyond the encoder: official {r - ref_enc:.2f} s, samjax {o - ours_enc:.2f} s "
          f"(ratio {(o - ours_enc) / max(r - ref_enc, 1e-9):.3f})")
    record.write(record.out_path(a.out, "amg"), "amg", argv, image=a.image or "scikit-image coffee",
                 size=f"{image.shape[1]}x{image.shape[0]}", model="vit_b, random weights, float32",
                 points_per_side=a.points_per_side, pred_iou_thresh=a.pred_iou_thresh, repeats=a.repeats,
                 torch_threads=torch.get_num_threads(), samjax_s=o, official_s=r, ratio=o / r,
                 samjax_first_call_s=first_s, masks={"samjax": len(out), "official": len(ref_out)},
                 official_batched_nms_standin_s=statistics.median(ref_nms),
                 encoder_alone_s={"samjax": ours_enc, "official": ref_enc},
                 beyond_encoder_s={"samjax": o - ours_enc, "official": r - ref_enc})


if __name__ == "__main__":
    main()
