"""Interactive prompt simulation for training (SAM paper, appendix): 11 rounds per mask, on device, static shapes.

Round 0: a foreground point drawn uniformly from the mask (or only from its interior: `point_depth`), or (with
probability `box_prob`) the mask's box with Gaussian noise of sd `box_noise_frac` x its side on each coordinate,
clipped to `box_noise_max` pixels.
Rounds 1..: each adds one click drawn uniformly from the error region of the previous prediction (foreground
click in a false negative, background click in a false positive), except `no_click_rounds` rounds which add
none: one at a random position among the click rounds, and the last. Every round after the first gets the
previous round's unthresholded low-res logits of its highest-predicted-IoU mask as the mask prompt (no gradient).

The loss of a round backpropagates through the lowest-loss multimask output when the prompt is ambiguous (round
0 with a single point) and through the single-mask output otherwise (so rounds 1.. make only that output); "lowest" by
the total loss, or by focal + dice alone (`loss.choose_by` "mask", SAM 2's rule). The IoU head is trained on every
output the round uses (all 3 multimask outputs when ambiguous), so their predicted IoUs can rank them at inference.

Token layout (N = 2 + num_click_rounds): slots 0-1 hold the first prompt (the point and a not-a-point pad, label
-1, or the two box corners, labels 2/3); slot 2 + k holds the k-th click; unused slots are IGNORE (see
models.prompt_encoder). The pad is the official prompt format: SamPredictor (and samjax.infer) add one to every
prompt without a box, so a model is trained on the token set it is served with.
Coordinates are (x, y) pixels of the S x S input; masks live on the m x m low-res grid (m = 4g), cell (i, j)
covering pixels [j r, (j + 1) r) horizontally with r = S / m.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from samjax.models import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, IGNORE, NOT_A_POINT
from samjax.training import losses

f32 = jnp.float32


# jax.checkpoint_policies for the rounds: recompute everything, or keep the matrix products' outputs. Keeping them
# doubled the ViT-B step's temporary memory and was 4% slower on an H200 (benchmarks/README.md): the
# rounds are bound by memory traffic, so the default recomputes everything.
REMAT_POLICIES = ("nothing_saveable", "dots_with_no_batch_dims_saveable", "dots_saveable")


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    num_click_rounds: int = 8      # rounds that add an error-region click
    no_click_rounds: int = 2       # rounds that add nothing (one random among the clicks, one last); 0, 1 or 2
    box_prob: float = 0.5          # first prompt: box with this probability, else one foreground point
    box_noise_frac: float = 0.1    # box corner noise sd, as a fraction of the box side
    box_noise_max: float = 20.0    # ... clipped to this many pixels
    point_depth: float = 0.0       # first point only from cells at least this fraction of the mask's deepest cell
    #                                deep (0: uniform over the mask, the paper's; 1: the deepest cells, where
    #                                samjax.evaluate puts its point); depth = chessboard distance to the background
    point_depth_max: int = 16      # ... depth counted up to this many cells
    remat_rounds: bool = False     # recompute each round's decoder activations in the backward pass (memory)
    remat_policy: str = "nothing_saveable"  # with remat_rounds: what each round keeps (REMAT_POLICIES)
    unroll_rounds: bool = False    # unroll the rounds' scan (small models on CPU: no zero-filled residual stacks)

    def __post_init__(self):
        if not 0.0 <= self.point_depth <= 1.0:
            raise ValueError(f"prompts.point_depth must be in [0, 1] (a fraction of the mask's deepest cell), "
                             f"got {self.point_depth}")
        if self.point_depth_max < 1:
            raise ValueError(f"prompts.point_depth_max must be at least 1 cell, got {self.point_depth_max}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"prompts.remat_policy must be one of {REMAT_POLICIES} (jax.checkpoint_policies), "
                             f"got {self.remat_policy!r}")

    @property
    def num_rounds(self) -> int:
        return 1 + self.num_click_rounds + self.no_click_rounds

    @property
    def num_tokens(self) -> int:
        return 2 + self.num_click_rounds


def sample_cells(rng: jax.Array, region: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A uniformly random True cell of each region (P, m, m) -> (row, col) each (P,) int32, and `any` (P,) bool.

    Uniform via the argmax of i.i.d. uniform noise restricted to the region; rows whose region is empty get an
    arbitrary cell and any=False.
    """
    p, h, w = region.shape
    noise = jax.random.uniform(rng, region.shape)
    flat = jnp.where(region, noise, -1.0).reshape(p, h * w)
    idx = jnp.argmax(flat, axis=-1)
    return (idx // w).astype(jnp.int32), (idx % w).astype(jnp.int32), region.reshape(p, -1).any(-1)


def mask_depth(masks: jax.Array, max_depth: int) -> jax.Array:
    """Chessboard distance of each cell to the nearest background cell (the image border counts as background),
    capped at max_depth: masks (P, m, m) bool -> (P, m, m) int32, 0 outside the mask, 1 on its boundary.
    Counts how many 3x3 erosions each cell survives."""
    x = masks.astype(f32)
    depth = x
    for _ in range(max_depth - 1):
        x = jax.lax.reduce_window(jnp.pad(x, ((0, 0), (1, 1), (1, 1))), jnp.inf, jax.lax.min, (1, 3, 3),
                                  (1, 1, 1), "VALID")
        depth = depth + x
    return depth.astype(jnp.int32)


def cell_to_coords(rng: jax.Array | None, row: jax.Array, col: jax.Array, image_size: int, grid: int) -> jax.Array:
    """Cells (P,) on the m x m grid -> (x, y) (P, 2) pixels of the S x S input; uniform inside the cell (rng) or
    at its centre (rng None)."""
    r = image_size / grid
    u = jnp.full(row.shape + (2,), 0.5, f32) if rng is None else jax.random.uniform(rng, row.shape + (2,))
    xy = (jnp.stack([col, row], -1).astype(f32) + u) * r - 0.5
    return jnp.clip(xy, 0.0, image_size - 1.0)


def initial_prompts(rng: jax.Array, masks: jax.Array, boxes: jax.Array, image_size: int,
                    cfg: PromptConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
    """First prompt per mask. masks (P, m, m) bool, boxes (P, 4) XYXY pixels ->
    coords (P, N, 2) f32, labels (P, N) int32, is_point (P,) bool."""
    p, m = masks.shape[0], masks.shape[-1]
    k_pt, k_cell, k_box, k_noise = jax.random.split(rng, 4)
    region = masks
    if cfg.point_depth > 0:  # only the mask's interior: cells at least point_depth x its deepest cell's depth
        depth = mask_depth(masks, cfg.point_depth_max)
        deepest = depth.reshape(p, -1).max(-1)[:, None, None]
        region = depth >= jnp.maximum(1, jnp.ceil(cfg.point_depth * deepest))
    row, col, _ = sample_cells(k_pt, region)
    point = cell_to_coords(k_cell, row, col, image_size, m)  # (P, 2)
    is_point = jax.random.uniform(k_box, (p,)) >= cfg.box_prob
    side = jnp.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, -1)  # (P, 4): w h w h
    noise = jnp.clip(jax.random.normal(k_noise, (p, 4)) * cfg.box_noise_frac * side,
                     -cfg.box_noise_max, cfg.box_noise_max)
    box = jnp.clip(boxes + noise, 0.0, image_size - 1.0)
    box = jnp.concatenate([jnp.minimum(box[:, :2], box[:, 2:]), jnp.maximum(box[:, :2], box[:, 2:])], -1)
    first = jnp.where(is_point[:, None, None], jnp.stack([point, jnp.zeros_like(point)], 1), box.reshape(p, 2, 2))
    first_labels = jnp.where(is_point[:, None], jnp.array([1, NOT_A_POINT], jnp.int32),
                             jnp.array([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], jnp.int32))
    n = cfg.num_tokens
    coords = jnp.zeros((p, n, 2), f32).at[:, :2].set(first)
    labels = jnp.full((p, n), IGNORE, jnp.int32).at[:, :2].set(first_labels)
    return coords, labels, is_point


def error_click(rng: jax.Array, pred: jax.Array, target: jax.Array, image_size: int) -> tuple[jax.Array, jax.Array]:
    """One click uniform in the error region of pred vs target (P, m, m) bool -> coords (P, 2), label (P,)
    (1 in a false negative, 0 in a false positive, IGNORE where the prediction is perfect)."""
    k_cell, k_jit = jax.random.split(rng)
    row, col, any_err = sample_cells(k_cell, pred != target)
    coords = cell_to_coords(k_jit, row, col, image_size, pred.shape[-1])
    fn = jnp.take_along_axis(target.reshape(target.shape[0], -1), (row * target.shape[-1] + col)[:, None], 1)[:, 0]
    return coords, jnp.where(any_err, fn.astype(jnp.int32), IGNORE)


def round_schedule(rng: jax.Array, cfg: PromptConfig) -> jax.Array:
    """(num_rounds,) bool: whether round r adds a click (round 0 never; see module docstring)."""
    r = cfg.num_rounds
    add = jnp.ones((r,), bool).at[0].set(False)
    if cfg.no_click_rounds >= 1:
        add = add.at[r - 1].set(False)
    if cfg.no_click_rounds >= 2:  # one more, at a random position among rounds 1 .. r - 2
        pos = jax.random.randint(rng, (), 1, r - 1)
        add = jnp.where(jnp.arange(r) == pos, False, add)
    return add


FirstDecodeFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, ...]]
NextDecodeFn = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, ...]]


def simulate(decode_first: FirstDecodeFn, decode_next: NextDecodeFn, masks: jax.Array, boxes: jax.Array,
             valid: jax.Array, rng: jax.Array, image_size: int, cfg: PromptConfig,
             loss_kwargs: dict | None = None, first: tuple | None = None) -> tuple[jax.Array, dict]:
    """Runs the rounds; returns (scalar loss, metrics).

    decode_first(coords (P, N, 2), labels (P, N)) -> every output: logits (P, K, m, m), iou_pred (P, K), K = 1 +
        num_multimask (index 0: the single-mask output). Round 0: no mask prompt yet.
    decode_next(coords, labels, mask_prompt (P, m, m)) -> the single-mask output only: logits (P, 1, m, m),
        iou_pred (P, 1). Rounds 1..: unambiguous, so only output 0 is used (loss, next mask prompt and click).
        The image embeddings are closed over (computed once per image by the caller).
    Models with an object-score head (SAM 2) return its logits (P, 1) third from both: each round then adds
    loss_kwargs["object_score_weight"] (default 1) x its binary cross-entropy against "the target is not empty", and
    keeps the mask and IoU losses only where it is not (SAM 2's MultiStepMultiMasksAndIous).
    masks (P, m, m) bool targets, boxes (P, 4) XYXY, valid (P,) bool (padding slots carry no loss).
    Loss: mean over rounds of the mean over valid masks. Metrics: loss parts, "miou_first" / "miou_last" (IoU of
    the highest-predicted-IoU mask of round 0 / the last round), "num_masks".
    first: the first prompt made by the caller instead of `initial_prompts`, (coords (P, N, 2), labels (P, N),
    ambiguous (P,) bool: rows trained like a single point, through the lowest-loss multimask output); the
    text-prompt objective's (samjax.training.text_prompt), whose CLIP prompt lives outside the point slots.
    """
    loss_kwargs = dict(loss_kwargs or {})
    # Which loss picks the lowest-loss output of an ambiguous round: "loss", the total (IoU term included), or
    # "mask", focal + dice alone (SAM 2's training code).
    choose_by = loss_kwargs.pop("choose_by", "total")
    if choose_by not in ("total", "mask"):
        raise ValueError(f"loss.choose_by must be 'total' or 'mask', got {choose_by!r}")
    choose_by = "loss" if choose_by == "total" else "mask"
    iou_weight = loss_kwargs.get("iou_weight", 1.0)
    object_score_weight = loss_kwargs.pop("object_score_weight", 1.0)
    present = masks.reshape(masks.shape[0], -1).any(-1).astype(f32)  # (P,): the object is in the target

    def with_object_score(per_mask, scores):
        """per_mask (P,) plus the object-score loss of decode's optional third output (`scores`: [] or [(P, 1)])."""
        if not scores:
            return per_mask
        return present * per_mask + object_score_weight * losses.object_score_loss(scores[0], present)
    k_init, k_sched, k_rounds = jax.random.split(rng, 3)
    coords, labels, is_point = initial_prompts(k_init, masks, boxes, image_size, cfg) if first is None else first
    add_click = round_schedule(k_sched, cfg)
    slot = 2 + jnp.cumsum(add_click) - 1  # token slot of the click added in round r (when add_click[r])
    w = valid.astype(f32)
    denom = jnp.maximum(w.sum(), 1.0)
    mean = lambda a: (a * w).sum() / denom  # noqa: E731
    keys = jax.random.split(k_rounds, cfg.num_rounds)

    def next_prompt(r, coords, labels, sel_logits, key):
        """The click for round r + 1 (when it adds one), from round r's chosen mask."""
        nxt = jnp.minimum(r + 1, cfg.num_rounds - 1)
        add_next = add_click[nxt] & (r + 1 < cfg.num_rounds)
        c_xy, c_lab = error_click(key, sel_logits > 0, masks, image_size)
        at = (jnp.arange(coords.shape[1]) == slot[nxt])[None, :] & add_next
        return jnp.where(at[..., None], c_xy[:, None, :], coords), jnp.where(at, c_lab[:, None], labels)

    def first_round(coords, labels):
        logits, iou_pred, *scores = decode_first(coords, labels)
        parts = losses.sam_loss(logits, iou_pred, masks, **loss_kwargs)
        # a single point is ambiguous: the lowest-loss multimask output is backpropagated and the IoU head is
        # trained on all of them; a box trains the single-mask output
        best = 1 + jnp.argmin(parts[choose_by][:, 1:], axis=-1)
        chosen = jnp.where(is_point, best, 0)
        pick = lambda a: jnp.take_along_axis(a, chosen[:, None], 1)[:, 0]  # noqa: E731
        iou_mse = jnp.where(is_point, parts["iou_mse"][:, 1:].mean(-1), parts["iou_mse"][:, 0])
        per_mask = with_object_score(pick(parts["mask"]) + iou_weight * iou_mse, scores)
        # mask prompt and next click: the highest-predicted-IoU mask among the outputs this round uses
        sel = jnp.where(is_point, 1 + jnp.argmax(iou_pred[:, 1:], -1), 0)
        sel_logits = jax.lax.stop_gradient(jnp.take_along_axis(logits, sel[:, None, None, None], 1)[:, 0]).astype(f32)
        sel_iou = jnp.take_along_axis(parts["iou"], sel[:, None], 1)[:, 0]
        coords, labels = next_prompt(0, coords, labels, sel_logits, keys[0])
        out = {"loss": mean(per_mask), "focal": mean(pick(parts["focal"])), "dice": mean(pick(parts["dice"])),
               "iou_mse": mean(iou_mse), "miou": mean(sel_iou)}
        return (coords, labels, sel_logits), out

    def later_round(carry, xs):
        coords, labels, prev = carry
        r, key = xs
        logits, iou_pred, *scores = decode_next(coords, labels, prev)
        parts = {k: v[:, 0] for k, v in losses.sam_loss(logits, iou_pred, masks, **loss_kwargs).items()}
        sel_logits = jax.lax.stop_gradient(logits[:, 0]).astype(f32)
        coords, labels = next_prompt(r, coords, labels, sel_logits, key)
        out = {"loss": mean(with_object_score(parts["mask"] + iou_weight * parts["iou_mse"], scores)),
               "focal": mean(parts["focal"]),
               "dice": mean(parts["dice"]), "iou_mse": mean(parts["iou_mse"]), "miou": mean(parts["iou"])}
        return (coords, labels, sel_logits), out

    policy = getattr(jax.checkpoint_policies, cfg.remat_policy)
    if cfg.remat_rounds:
        first_round = jax.checkpoint(first_round, policy=policy)
        later_round = jax.checkpoint(later_round, policy=policy)
    carry, first = first_round(coords, labels)
    rounds = jnp.arange(1, cfg.num_rounds)
    _, later = jax.lax.scan(later_round, carry, (rounds, keys[1:]), unroll=cfg.unroll_rounds)
    per_round = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, later)
    metrics = {k: per_round[k].mean() for k in ("loss", "focal", "dice", "iou_mse")}
    metrics["miou_first"] = per_round["miou"][0]
    metrics["miou_last"] = per_round["miou"][-1]
    metrics["num_masks"] = w.sum()
    return metrics["loss"], metrics
