"""samjax vs the official PyTorch SAM, side by side on this CPU: encoder, prompt-to-mask, automatic masks; and
OWL-ViT B/32 vs transformers' torch OwlViTForObjectDetection; SAM 2.1 tiny vs the official sam2.

    make bench                      # = python -m benchmarks.cpu [--repeats 5] [--sections encoder,prompt,...]

Same machine, same random ViT-B weights (the official model randomised, converted with samjax.convert.from_torch),
same image (scikit-image's coffee, 400x600), float32 in both, every core. Rows: median seconds of samjax and of
the official code, timed in --repeats alternating rounds (one call per side per round; ten for one prompt), and
their ratio (samjax / official; < 1 is faster), plus samjax's first call (compilation included) in this process
and in a fresh process that finds JAX's persistent compilation cache (samjax.runtime) already filled.

- encoder: one 1024x1024 ViT-B pass (set_image: preprocessing + encoder).
- prompt: one point -> 3 masks at the image's size (predict), and 64 single-point prompts in one call
  (samjax predict_batch vs official predict_torch + postprocessing), on a cached embedding. Then both again with
  samjax's decoder products with the image side in bfloat16 (`SamConfig.decoder_matmul_dtype`, float32 elsewhere;
  the official code as before, timed again), and that mode's thresholded-mask IoU against samjax's float32 masks.
- families: the MobileSAM (TinyViT-5M, 1024 px) and EfficientViT-SAM L0 (512 px) encoders against their reference
  packages' (mobilesam-mirror, efficientsam; random weights, converted), and samjax's MobileSAM encoder against
  samjax's ViT-B encoder (set_image on the same image; the decoders are SAM's and timed above).
- amg: automatic mask generation, points_per_side=16, other options at their defaults (encoder included); then
  the same with pred_iou_thresh=0, where samjax, like the official generator, makes the masks of every point (at
  the defaults it skips the points whose predicted IoUs all fail the filter: all of them with random weights).
- owlvit: one OWL-ViT B/32 forward (a 768x768 image, 2 text queries of 16 tokens -> logits and boxes of its 576
  patches): samjax's jitted OwlViT against transformers' OwlViTForObjectDetection with the same random weights
  (HF's initialisation, converted by samjax.weights.owlvit), inputs already preprocessed on both sides, and the
  largest difference of their logits.
- sam2: SAM 2.1 tiny (sam2.1_hiera_t, random weights through samjax.weights.sam2, the official sam2 1.1.0 package
  without its CUDA extension): the image encoder (set_image, 1024x1024), and one tracked video frame of one object
  with a full memory (7 memories, pointers; propagate_in_video over one frame of an 8-frame 480x640 clip after a
  first pass), with its image encoder (a frame not cached) and without (the frame's features cached).

Prints a table and writes benchmarks/results/cpu.json (--out): benchmarks.record's commit, command, device and
date, the rows (seconds per call of each side, ratio, samjax's first call) and the extra figures printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import record

ROWS: list[dict] = []
EXTRA: dict = {}  # figures printed beside the rows (bf16 agreement, IoU filter, fresh-process first calls)


def side_by_side(ours, official, rounds: int, calls: int = 1) -> tuple[float, float]:
    """Median seconds per call of `ours` and of `official`, timed in `rounds` alternating blocks of `calls` calls
    each: both sides meet the same phases of a shared machine (on a shared 2-core VM one side's figure can move by
    ~25% between blocks a minute apart), and a block's calls follow each other as an application's do."""
    times: tuple[list, list] = ([], [])
    for _ in range(rounds):
        for fn, out in zip((ours, official), times):
            for _ in range(calls):
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
    return statistics.median(times[0]), statistics.median(times[1])


def row(what: str, ours: float, official: float, first: float | None = None, note: str = "") -> None:
    ROWS.append({"what": what, "samjax_s": ours, "reference_s": official, "ratio": ours / official,
                 "first_call_s": first, "note": note})
    f = f"{first:.2f} s" if first is not None else "-"
    print(f"{what:42s} samjax {ours:9.4f} s  official {official:9.4f} s  ratio {ours / official:6.3f}  first {f} "
          f"{note}", flush=True)


def prompt_rows_bf16(cfg, params, image, ours, ref, one, batch, batch_torch, repeats: int) -> None:
    """The prompt rows again with the decoder's image-side products in bfloat16 (SamConfig.decoder_matmul_dtype;
    float32 everywhere else), and their masks' agreement with the float32 Predictor's on the batch's 64 points."""
    from samjax.infer import Predictor
    from samjax.training.losses import mask_iou

    mixed = Predictor(cfg.replace(decoder_matmul_dtype="bfloat16"), params)
    mixed.set_image(image)  # the float32 Predictor's compiled encoder: the config differs in the decoder only
    mixed.features.block_until_ready()
    t = time.perf_counter()
    mixed.predict(*one)
    first = time.perf_counter() - t
    row("prompt: 1 point, decoder products bf16", *side_by_side(lambda: mixed.predict(*one), lambda: ref.predict(*one),
                                                                repeats, 10), first)
    t = time.perf_counter()
    masks_bf16 = mixed.predict_batch(*batch)[0]
    first = time.perf_counter() - t
    row("prompt: batch of 64, decoder products bf16", *side_by_side(
        lambda: mixed.predict_batch(*batch), lambda: ref.predict_torch(*batch_torch), repeats), first, "(per call)")
    masks_f32 = ours.predict_batch(*batch)[0]
    iou = np.asarray(mask_iou(masks_bf16.astype(np.float32), masks_f32))  # 1.0 / 0.0 "logits" over threshold 0
    differ = float(np.mean(masks_bf16 != masks_f32))
    EXTRA["decoder_bf16_vs_float32"] = {"masks": int(iou.size), "iou_min": float(iou.min()),
                                        "iou_mean": float(iou.mean()), "pixels_differing": differ}
    print(f"decoder products bf16 vs float32, the batch's {iou.size} masks: thresholded IoU min {iou.min():.4f}, "
          f"mean {iou.mean():.4f}; pixels that differ {differ:.2e}", flush=True)


def family_rows(image, vit_b, repeats: int) -> None:
    """Encoder rows of MobileSAM and EfficientViT-SAM L0 against their references, and MobileSAM against ViT-B."""
    import jax
    import torch
    from efficientsam.models.efficientvit.sam import EfficientViTSamPredictor
    from mobile_sam import SamPredictor

    from samjax.infer import Predictor
    from samjax.models.efficientvit_sam import EfficientViTSamConfig
    from samjax.models.mobile_sam import MobileSamConfig
    from samjax.weights import efficientvit_sam, mobile_sam
    from tests.efficientvit_sam.test_efficientvit_sam_parity import (
        build_reference as build_ev,
    )
    from tests.mobile_sam.test_mobile_sam_parity import build_reference as build_mobile

    def encoder(predictor):
        def run():
            predictor.set_image(image)
            jax.block_until_ready(predictor.features)
        return run

    for name, cfg, build, weights, ref_predictor in (
            ("MobileSAM encoder (TinyViT-5M, 1024)", MobileSamConfig.mobile_sam(), build_mobile, mobile_sam,
             SamPredictor),
            ("EfficientViT-SAM L0 encoder (512)", EfficientViTSamConfig.l0(), build_ev, efficientvit_sam,
             EfficientViTSamPredictor)):
        ref_model = build(cfg)
        ours = Predictor(cfg, weights.from_torch(ref_model.state_dict(), cfg))
        ref = ref_predictor(ref_model)
        run = encoder(ours)
        t = time.perf_counter()
        run()
        first = time.perf_counter() - t
        with torch.no_grad():
            ref.set_image(image)
            row(name, *side_by_side(run, lambda ref=ref: ref.set_image(image), repeats), first)
        if name.startswith("MobileSAM"):
            mobile = run
    ratio = side_by_side(mobile, encoder(vit_b), repeats)
    row("samjax MobileSAM encoder vs samjax ViT-B", *ratio, None, "(official column: samjax ViT-B)")


def owlvit_rows(repeats: int) -> None:
    """OWL-ViT B/32 forward, samjax vs transformers (module docstring)."""
    import jax
    import torch
    import transformers

    from samjax.models.owlvit import OwlViT, OwlViTConfig
    from samjax.weights.owlvit import from_hf

    torch.manual_seed(0)
    ref = transformers.OwlViTForObjectDetection(transformers.OwlViTConfig()).eval()  # B/32 at 768, random
    config = OwlViTConfig.from_hf_config(ref.config.to_dict())
    params = jax.device_put(from_hf(ref.state_dict(), config))
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((1, 768, 768, 3)).astype(np.float32)
    ids = np.zeros((1, 2, 16), np.int32)
    ids[0, :, :6] = rng.integers(1, 49406, (2, 6))
    ids[0, :, 6] = 49407
    forward = jax.jit(lambda p, x, t: {k: v for k, v in OwlViT(config).apply({"params": p}, x, t).items()
                                       if k in ("logits", "pred_boxes")})
    tp, tids = torch.as_tensor(pixels.transpose(0, 3, 1, 2).copy()), torch.as_tensor(ids[0].astype(np.int64))

    def ours():
        return jax.block_until_ready(forward(params, pixels, ids))

    def theirs():
        with torch.no_grad():
            return ref(input_ids=tids, pixel_values=tp, attention_mask=(tids > 0).long())

    t = time.perf_counter()
    out = ours()
    first = time.perf_counter() - t
    ref_logits = theirs().logits.numpy()
    diff = np.abs(np.asarray(out["logits"]) - ref_logits).max()
    row("owlvit: B/32 forward, 768x768, 2 queries", *side_by_side(ours, theirs, repeats), first,
        f"(logits differ by {diff:.1e} at most, of |logits| up to {np.abs(ref_logits).max():.1f})")


def sam2_rows(repeats: int) -> None:
    """SAM 2.1 tiny vs the official sam2 package: image encoder, and a tracked video frame (see the docstring)."""
    import torch
    from PIL import Image
    from skimage import data

    from samjax.infer import sam2 as image_api
    from samjax.infer import video as video_api
    from samjax.models import sam2 as S
    from samjax.weights import sam2 as sam2_weights
    from tests.sam2.official_sam2 import (
        build_official_sam2,
        build_official_video_predictor,
        official_image_predictor,
        state_dict_numpy,
    )

    cfg = S.Sam2Config.from_name("sam2.1_hiera_t")
    model = build_official_sam2("sam2.1_hiera_t", 1024, seed=0)
    params = sam2_weights.from_torch(state_dict_numpy(model), cfg)
    ours, ref = image_api.Sam2Predictor(cfg, params), official_image_predictor(model)
    image = data.coffee()

    def ours_set():
        ours.set_image(image)
        ours.get_image_embedding()  # waits for the encoder

    t = time.perf_counter()
    ours_set()
    first = time.perf_counter() - t
    with torch.no_grad():
        ref.set_image(image)
        row("sam2 tiny: encoder (set_image, 1024x1024)", *side_by_side(ours_set, lambda: ref.set_image(image),
                                                                       repeats), first)

    frames = tempfile.mkdtemp(prefix="samjax_bench_frames_")
    yy, xx = np.mgrid[:480, :640]
    for k in range(8):
        f = np.stack([90 + 30 * np.sin(xx / 17.0), 100 + 30 * np.cos(yy / 13.0), 110 + 0 * xx], -1)
        f[(xx - (150 + 20 * k)) ** 2 + (yy - 220) ** 2 < 60 ** 2] = (220, 50, 40)
        Image.fromarray(f.astype(np.uint8)).save(os.path.join(frames, f"{k:05d}.jpg"), quality=95)
    official = build_official_video_predictor("sam2.1_hiera_t", 1024, seed=0)
    video = video_api.Sam2VideoPredictor(cfg, sam2_weights.from_torch(state_dict_numpy(official), cfg))
    states = []
    for predictor in (video, official):
        state = predictor.init_state(frames)
        predictor.add_new_points_or_box(state, 0, 1, points=[[150.0, 220.0]], labels=[1])
        for _ in predictor.propagate_in_video(state):  # the memory bank fills (and samjax compiles)
            pass
        states.append(state)

    def one_frame(predictor, state, frame):
        kwargs = {"progress": False} if predictor is video else {}
        for _ in predictor.propagate_in_video(state, start_frame_idx=frame, max_frame_num_to_track=0, **kwargs):
            pass

    turn = {"ours": 0, "official": 0}

    def alternate(predictor, state, key):  # frames 6 and 7 in turn: each call finds its frame's features uncached
        turn[key] += 1
        one_frame(predictor, state, 6 + turn[key] % 2)

    with torch.inference_mode():
        row("sam2 tiny: video frame, 1 object (encoder included)", *side_by_side(
            lambda: alternate(video, states[0], "ours"), lambda: alternate(official, states[1], "official"), repeats))
        row("sam2 tiny: video frame, 1 object (features cached)", *side_by_side(
            lambda: one_frame(video, states[0], 7), lambda: one_frame(official, states[1], 7), repeats))


def first_call_in_fresh_process(cache_dir: str) -> dict:
    """Runs this module's --first-calls in a new process sharing `cache_dir`: its compile times with a warm cache."""
    env = dict(os.environ, SAMJAX_COMPILATION_CACHE=cache_dir)
    out = subprocess.run([sys.executable, "-m", "benchmarks.cpu", "--first-calls"], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def first_calls() -> dict:
    """Compile + first run of the encoder and of the prompt decoder (one point) on a fresh Predictor."""
    import jax
    from skimage import data

    from samjax.infer import Predictor
    from samjax.models import SamConfig, init_params

    cfg = SamConfig.vit_b()
    predictor = Predictor(cfg, init_params(cfg, jax.random.PRNGKey(0)))
    image = data.coffee()
    t = time.perf_counter()
    predictor.set_image(image)
    predictor.features.block_until_ready()
    enc = time.perf_counter() - t
    t = time.perf_counter()
    predictor.predict(np.array([[300.0, 200.0]]), np.array([1]))
    return {"encoder": enc, "prompt": time.perf_counter() - t}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sections", default="encoder,prompt,amg,families,owlvit,sam2")
    ap.add_argument("--first-calls", action="store_true", help=argparse.SUPPRESS)
    record.add_out_argument(ap, "cpu")
    args = ap.parse_args(argv)
    from samjax import runtime

    if args.first_calls:
        runtime.enable_compilation_cache()
        print(json.dumps(first_calls()))
        return 0
    cache_dir = tempfile.mkdtemp(prefix="samjax_bench_cache_")
    runtime.enable_compilation_cache(cache_dir)
    if args.sections == "sam2":  # the SAM 2 rows alone: no ViT-B to build
        sam2_rows(args.repeats)
        print_table()
        write(args, argv)
        return 0

    sections = args.sections.split(",")
    if not set(sections) & {"encoder", "prompt", "amg", "families"}:  # OWL-ViT only: no SAM to build or compile
        owlvit_rows(args.repeats)
        print_table()
        write(args, argv)
        return 0

    import torch
    from skimage import data

    from samjax.amg import AutomaticMaskGenerator
    from samjax.convert import from_torch
    from samjax.infer import Predictor
    from samjax.models import SamConfig
    from tests.official import build_official, import_official

    _, sa = import_official()
    cfg = SamConfig.vit_b()
    sam = build_official(cfg, seed=0)
    params = from_torch(sam.state_dict(), cfg)
    image = data.coffee()
    ours, ref = Predictor(cfg, params), sa.SamPredictor(sam)
    EXTRA["setup"] = {"model": "vit_b, random weights, float32", "image": f"{image.shape[1]}x{image.shape[0]}",
                      "torch_threads": torch.get_num_threads(), "repeats": args.repeats}
    print(f"ViT-B, random weights, image {image.shape[1]}x{image.shape[0]}, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} cores, medians over {args.repeats} alternating rounds", flush=True)

    def ours_set():  # set_image returns once the encoder is dispatched; wait for it
        ours.set_image(image)
        ours.features.block_until_ready()

    t = time.perf_counter()
    ours_set()
    enc_first = time.perf_counter() - t
    with torch.no_grad():
        ref.set_image(image)
        if "encoder" in sections:
            row("encoder (set_image, 1024x1024)", *side_by_side(ours_set, lambda: ref.set_image(image), args.repeats),
                enc_first)
        if "prompt" in sections:
            pt, lab = np.array([[300.0, 200.0]]), np.array([1])
            t = time.perf_counter()
            ours.predict(pt, lab)
            first = time.perf_counter() - t
            row("prompt: 1 point -> 3 masks", *side_by_side(lambda: ours.predict(pt, lab), lambda: ref.predict(pt, lab),
                                                            args.repeats, 10), first)
            rng = np.random.default_rng(0)
            pts = rng.uniform([0, 0], [image.shape[1], image.shape[0]], (64, 1, 2))
            labs = np.ones((64, 1), np.int64)
            t = time.perf_counter()
            ours.predict_batch(pts, labs)
            first = time.perf_counter() - t
            tp = torch.as_tensor(ref.transform.apply_coords(pts, image.shape[:2]), dtype=torch.float32)
            tl = torch.as_tensor(labs)
            row("prompt: batch of 64 points -> 64x3 masks", *side_by_side(
                lambda: ours.predict_batch(pts, labs), lambda: ref.predict_torch(tp, tl), args.repeats), first,
                "(per call)")
            prompt_rows_bf16(cfg, params, image, ours, ref, (pt, lab), (pts, labs), (tp, tl), args.repeats)
        if "amg" in sections:
            # Default thresholds, then pred_iou_thresh=0: with it every prompt's masks are made, the work the official
            # generator always does. (samjax makes masks only for prompts with a predicted IoU through the filter;
            # random weights predict IoUs below the default 0.88 for every point, so the first row is its best case.)
            for name, opts in (("amg: points_per_side=16 (encoder included)", {}),
                               ("amg: same, pred_iou_thresh=0 (every mask made)", {"pred_iou_thresh": 0.0})):
                gen = AutomaticMaskGenerator(ours, points_per_side=16, **opts)
                ref_gen = sa.SamAutomaticMaskGenerator(sam, points_per_side=16, **opts)
                t = time.perf_counter()
                n_ours = len(gen.generate(image))
                first = time.perf_counter() - t
                reps = max(1, args.repeats // 2)
                row(name, *side_by_side(lambda g=gen: g.generate(image), lambda g=ref_gen: g.generate(image), reps),
                    first, f"({n_ours} masks kept)")
            ours.set_image(image)
            grid = gen.point_grids[0] * [image.shape[1], image.shape[0]]
            best = np.concatenate([np.asarray(ours.predict_batch(g[:, None], np.ones((len(g), 1), np.int64))[1]).max(1)
                                   for g in np.array_split(grid, -(-len(grid) // 64))])
            EXTRA["amg_points_through_default_iou_filter"] = {"points": len(best), "passing": int((best > 0.88).sum()),
                                                              "best_predicted_iou": float(best.max())}
            print(f"points whose best predicted IoU passes the default pred_iou_thresh 0.88: {(best > 0.88).sum()} of "
                  f"{len(best)} (max {best.max():.3f})")
    if "families" in sections:
        family_rows(image, ours, args.repeats)
    if "owlvit" in sections:
        del ref, sam  # the SAM side's memory back before the 153M-parameter OWL-ViT pair
        owlvit_rows(args.repeats)
    if "sam2" in sections:
        sam2_rows(args.repeats)
    fresh = first_call_in_fresh_process(cache_dir)
    EXTRA["first_call_fresh_process_warm_cache_s"] = {"set_image": fresh["encoder"], "predict": fresh["prompt"]}
    print(f"\nfirst call in a fresh process with the persistent compilation cache: encoder {fresh['encoder']:.2f} s "
          f"(this process, cold: {enc_first:.2f} s), prompt {fresh['prompt']:.2f} s")
    print_table()
    print(f"| fresh process, warm compilation cache: first set_image / first predict | {fresh['encoder']:.2f} s / "
          f"{fresh['prompt']:.2f} s | | | |")
    write(args, argv)
    return 0


def print_table() -> None:
    print("\n| measurement | samjax | reference | samjax / reference | samjax first call |\n|---|---|---|---|---|")
    for r in ROWS:
        f = f"{r['first_call_s']:.2f} s" if r["first_call_s"] is not None else "-"
        print(f"| {r['what']} {r['note']} | {r['samjax_s'] * 1e3:.1f} ms | {r['reference_s'] * 1e3:.1f} ms | "
              f"{r['ratio']:.3f} | {f} |")


def write(args, argv) -> None:
    """The rows and extra figures, with the run's metadata, to args.out (benchmarks.record)."""
    record.write(record.out_path(args.out, "cpu"), "cpu", argv, sections=args.sections.split(","), rows=ROWS,
                 **EXTRA)


if __name__ == "__main__":
    sys.exit(main())
