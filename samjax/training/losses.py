"""SAM's training loss: 20 focal + 1 dice + 1 MSE(predicted IoU, actual IoU), per mask and per output.

All functions take low-res logits `logits` (..., H, W) (any float dtype; computed in float32), boolean targets
`target` (..., H, W) of the same shape, and return one value per mask (...). The caller picks which output to
backpropagate (the lowest-loss multimask output for an ambiguous prompt, else the single-mask output) and
averages over valid masks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

f32 = jnp.float32


def sigmoid_focal_loss(logits: jax.Array, target: jax.Array, alpha: float = 0.25, gamma: float = 2.0) -> jax.Array:
    """Mean over pixels of the focal loss (Lin et al.; alpha weights positives, 1 - alpha negatives). (...)"""
    x, t = logits.astype(f32), target.astype(f32)
    p = jax.nn.sigmoid(x)
    ce = jnp.maximum(x, 0) - x * t + jnp.log1p(jnp.exp(-jnp.abs(x)))  # stable BCE-with-logits
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.mean(axis=(-2, -1))


def dice_loss(logits: jax.Array, target: jax.Array, smooth: float = 1.0) -> jax.Array:
    """1 - (2 |p t| + s) / (|p| + |t| + s) with p = sigmoid(logits), per mask. (...)"""
    p, t = jax.nn.sigmoid(logits.astype(f32)), target.astype(f32)
    inter = (p * t).sum(axis=(-2, -1))
    return 1.0 - (2.0 * inter + smooth) / (p.sum(axis=(-2, -1)) + t.sum(axis=(-2, -1)) + smooth)


IOU_LOSSES = ("mse", "l1")


def mask_iou(logits: jax.Array, target: jax.Array, threshold: float = 0.0) -> jax.Array:
    """IoU of (logits > threshold) with target, per mask; 1 where both are empty. No gradient. (...)"""
    pred = jax.lax.stop_gradient(logits) > threshold
    inter = (pred & target).sum(axis=(-2, -1)).astype(f32)
    union = (pred | target).sum(axis=(-2, -1)).astype(f32)
    return jnp.where(union > 0, inter / jnp.maximum(union, 1.0), 1.0)


def sam_loss(logits: jax.Array, iou_pred: jax.Array, target: jax.Array, focal_weight: float = 20.0,
             dice_weight: float = 1.0, iou_weight: float = 1.0, focal_alpha: float = 0.25,
             focal_gamma: float = 2.0, iou_loss: str = "mse") -> dict[str, jax.Array]:
    """Loss parts for every output of every mask.

    logits (P, K, H, W): K mask outputs per prompt; iou_pred (P, K); target (P, H, W) bool.
    Returns dict of (P, K) arrays: "loss" (the weighted total), "mask" (the weighted focal + dice; loss.choose_by
    "mask" picks the lowest-loss output by it), "focal", "dice", "iou_mse" (the IoU prediction's loss: squared
    error, the paper's, or with iou_loss "l1" the absolute error, SAM 2's), "iou" (actual IoU).
    """
    if iou_loss not in IOU_LOSSES:
        raise ValueError(f"loss.iou_loss must be one of {IOU_LOSSES}, got {iou_loss!r}")
    t = jnp.broadcast_to(target[:, None], logits.shape)
    focal = sigmoid_focal_loss(logits, t, focal_alpha, focal_gamma)
    dice = dice_loss(logits, t)
    iou = mask_iou(logits, t)
    err = iou_pred.astype(f32) - iou
    iou_mse = jnp.square(err) if iou_loss == "mse" else jnp.abs(err)
    mask = focal_weight * focal + dice_weight * dice
    return {"loss": mask + iou_weight * iou_mse, "mask": mask, "focal": focal, "dice": dice, "iou_mse": iou_mse,
            "iou": iou}


def object_score_loss(score_logits: jax.Array, present: jax.Array) -> jax.Array:
    """SAM 2's object-score loss (loss_class: a sigmoid focal loss with gamma 0 and no alpha, i.e. binary cross
    entropy) against "the object is present". score_logits (P, 1), present (P,) float 0/1 -> (P,)."""
    x = score_logits.astype(f32)[:, 0]
    return jnp.maximum(x, 0) - x * present + jnp.log1p(jnp.exp(-jnp.abs(x)))
