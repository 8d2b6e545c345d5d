"""Reference packages of the SAM families (MobileSAM, HQ-SAM, EfficientViT-SAM) for parity tests, with every weight
randomised, and the prompt cases the family parity tests share.

References: `mobile_sam` (the official MobileSAM code as packaged by mobilesam-mirror 1.0.0), `segment_anything_hq`
0.3, `efficientsam` 1.0.0 (vendors efficientvit's SAM). timm and torchvision do not import here: the labelled
stand-ins in tests/standins/ are put on sys.path when the real packages cannot be imported.
"""

from __future__ import annotations

import sys

import numpy as np

from samjax import transforms as T
from samjax.models import IGNORE, NOT_A_POINT
from tests.official import import_official, put_standins_on_path

ATOL = 1e-4
PREPROCESSING_BUFFERS = ("pixel_mean", "pixel_std")


def import_references():
    """torch, with segment_anything importable and timm (or its stand-in) on the path."""
    torch, _ = import_official()
    try:
        import timm.models.layers
    except Exception:
        for name in [k for k in sys.modules if k == "timm" or k.startswith("timm.")]:
            del sys.modules[name]
        put_standins_on_path()
        import timm

        assert getattr(timm, "STANDIN", False)
    return torch


def randomize_(model, seed: int) -> None:
    """Random values in every parameter and floating buffer of a torch model, none trivial: Linear / Conv weights
    ~ N(0, 1/fan_in), norm weights ~ 1 + N(0, 0.1^2), BatchNorm running means ~ N(0, 0.1^2) and variances
    ~ U(0.5, 1.5), attention biases ~ N(0, 1), everything else (biases, tokens, position tables, zero-initialised
    tensors) ~ N(0, 0.1^2); BatchNorm counters random integers. The preprocessing constants (`pixel_mean`,
    `pixel_std`: non-persistent buffers, in no checkpoint) keep their values, so the reference predictors
    normalise images as the model's config says. Call `.eval()` afterwards: TinyViT caches its
    attention biases when switched to eval mode."""
    torch = import_references()
    gen = torch.Generator().manual_seed(seed)
    done = set()

    def fill(t, std, mean=0.0):
        t.copy_(mean + std * torch.randn(t.shape, generator=gen))
        done.add(id(t))

    conv_types = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, conv_types):
                fill(m.weight, (m.weight.numel() / m.weight.shape[0]) ** -0.5)
            elif isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                fill(m.running_mean, 0.1)
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
                done.add(id(m.running_var))
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))
                fill(m.weight, 0.1, 1.0)
            elif isinstance(m, torch.nn.Embedding):
                fill(m.weight, 1.0)
            elif hasattr(m, "weight") and isinstance(m.weight, torch.Tensor) and m.weight.ndim == 1:
                fill(m.weight, 0.1, 1.0)  # LayerNorm, LayerNorm2d
        for name, p in list(model.named_parameters()) + list(model.named_buffers()):
            if id(p) in done or not p.is_floating_point() or name in PREPROCESSING_BUFFERS:
                continue
            fill(p, 1.0 if name.endswith(("attention_biases", "positional_encoding_gaussian_matrix")) else 0.1)


def photo_input(photo: np.ndarray, size: int, mean, std) -> tuple[np.ndarray, tuple[int, int]]:
    """The official preprocessing of `photo` for an encoder taking `size` px: resized longest side, normalised,
    zero-padded -> (1, size, size, 3) float32 and the resized (h, w)."""
    img = T.resize_image(photo, size).astype(np.float32)
    h, w = img.shape[:2]
    img = (img - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return T.pad_image(img, size)[None].astype(np.float32), (h, w)


# Prompt cases in the original photo's pixels (skimage's chelsea, 300 x 451): point, points, box, combined, mask.
POINTS = np.array([[220.0, 150.0], [100.0, 60.0], [400.0, 250.0]])
LABELS = np.array([1, 0, 1])
BOX = np.array([80.0, 40.0, 330.0, 260.0])
CASES = {  # name -> (number of points, box?, mask prompt?)
    "point": (1, False, False), "points": (3, False, False), "box": (0, True, False),
    "points_box": (2, True, False), "points_mask": (3, False, True), "mask": (0, False, True),
    "point_box_mask": (1, True, True),
}


def case_prompts(case: str, original_size, frame: int, num_tokens: int = 8):
    """One prompt of `case` in the `frame`-px input frame: (reference kwargs for PromptEncoder as numpy, or None
    entries) and (coords (1, num_tokens, 2), labels (1, num_tokens)) for samjax, padded with IGNORE tokens."""
    n, use_box, _ = CASES[case]
    pts = T.apply_coords(POINTS[:n], original_size, frame)[None] if n else None
    box = T.apply_boxes(BOX[None], original_size, frame) if use_box else None
    coords, labels = [], []
    if n:
        coords += list(pts[0])
        labels += list(LABELS[:n])
        if box is None:
            coords.append([0.0, 0.0])
            labels.append(NOT_A_POINT)
    if box is not None:
        coords += list(box.reshape(2, 2))
        labels += [2, 3]
    c = np.zeros((1, num_tokens, 2), np.float32)
    lab = np.full((1, num_tokens), IGNORE, np.int32)
    c[0, :len(coords)] = np.asarray(coords, np.float32).reshape(-1, 2) if coords else 0
    lab[0, :len(labels)] = labels
    ref = {"points": None if pts is None else (pts.astype(np.float32), LABELS[None, :n].astype(np.int32)),
           "boxes": None if box is None else box.astype(np.float32)}
    return ref, (c, lab)


def reference_prompts(torch, ref: dict, mask: np.ndarray | None):
    """`case_prompts`' reference entries (and a (1, 4g, 4g) mask prompt or None) as torch tensors for
    PromptEncoder(points=, boxes=, masks=)."""
    points = ref["points"]
    return dict(points=None if points is None else (torch.as_tensor(points[0]), torch.as_tensor(points[1])),
                boxes=None if ref["boxes"] is None else torch.as_tensor(ref["boxes"]),
                masks=None if mask is None else torch.as_tensor(np.array(mask[:, None], np.float32)))


def assert_masks_match(ours_logits: np.ndarray, ref_logits: np.ndarray) -> None:
    """Masks (logits > 0) identical, except where the reference logit lies within ATOL of the threshold (there the
    sign is rounding noise in either implementation); such pixels must be rare."""
    ours, ref = np.asarray(ours_logits) > 0, np.asarray(ref_logits) > 0
    differ = ours != ref
    decided = np.abs(ref_logits) > ATOL
    assert not (differ & decided).any(), f"{int((differ & decided).sum())} mask pixels differ away from the threshold"
    assert differ.mean() < 1e-4, f"{differ.mean():.2e} of mask pixels differ (all at |logit| <= {ATOL})"


def check_cases(torch, ref_decode, our_decode, ref_postprocess, original_size, frame: int, input_size,
                mask_size: int, cases=tuple(CASES)) -> int:
    """Every prompt case through the reference and samjax: low-res logits and IoU within ATOL, masks identical
    (low-res and at the original size). The mask prompt is the reference's own low-res output for the "points"
    case (iterative refinement).

    ref_decode(prompt_encoder_kwargs) -> (low_res (1, M, 4g, 4g), iou (1, M)) torch tensors;
    our_decode(coords, labels, masks (1, 4g, 4g), mask_valid (1,) bool) -> numpy / jax (low_res, iou): every case
    passes a mask array, valid or not (samjax's `mask_valid`), so one compiled decoder serves all cases;
    ref_postprocess(low_res torch) -> logits at the original size (torch); mask_size: the decoder's 4g.
    Returns the number of cases checked."""
    mask_prompt = None
    zeros = np.zeros((1, mask_size, mask_size), np.float32)
    for case in ("points",) + tuple(c for c in cases if c != "points"):
        ref_kw, (coords, labels) = case_prompts(case, original_size, frame)
        mask = mask_prompt if CASES[case][2] else None
        with torch.no_grad():
            r_low, r_iou = ref_decode(reference_prompts(torch, ref_kw, mask))
            r_big = ref_postprocess(r_low).numpy()
        r_low, r_iou = r_low.numpy(), r_iou.numpy()
        assert np.isfinite(r_low).all() and np.isfinite(r_iou).all(), case
        valid = np.array([mask is not None])
        o_low, o_iou = (np.asarray(x) for x in our_decode(coords, labels, zeros if mask is None else mask, valid))
        assert o_low.shape == r_low.shape and o_iou.shape == r_iou.shape, (case, o_low.shape, r_low.shape)
        np.testing.assert_allclose(o_low, r_low, atol=ATOL, rtol=0, err_msg=f"low-res logits, {case}")
        np.testing.assert_allclose(o_iou, r_iou, atol=ATOL, rtol=0, err_msg=f"IoU, {case}")
        assert_masks_match(o_low, r_low)
        o_big = np.asarray(T.postprocess_masks(o_low, input_size, original_size, frame))
        assert_masks_match(o_big, r_big)
        assert np.isfinite(r_low).all() and np.abs(r_low).max() > 0.1, (case, np.abs(r_low).max())
        if case == "points":
            mask_prompt = np.array(r_low[:, 0])  # (1, 4g, 4g)
    return len(cases)
