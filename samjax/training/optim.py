"""The SAM paper's optimizer recipe: AdamW, linear warmup then step decay, layer-wise lr decay, a weight-decay mask.

    tx = make_optimizer(cfg.optim, params, encoder_depth)      # an optax.GradientTransformation
    update = -lr(step) * layer_mult(param) * (adam(grad) + wd * mask(param) * param)

- schedule(step): linear warmup 0 -> lr over `warmup_steps`, then lr x decay_factor^(number of `decay_steps`
  milestones passed) (ViT-H: /10 at 60k and 86,666 of 90k).
- Layer-wise lr decay (BEiT / MAE convention): layer id 0 for the patch embedding and absolute position
  embedding, i + 1 for `image_encoder/blocks_i`, depth + 1 for everything else (neck, prompt encoder, mask
  decoder); the multiplier is layer_decay ** (depth + 1 - id).
- Weight decay on every weight except biases, norms (every 1-D parameter) and position embeddings (`pos_embed`,
  the relative-position tables `rel_pos_h/w`).
- Frozen (multiplier 0, no decay): the prompt encoder's random Fourier matrix (a buffer officially), and the whole
  image encoder when `freeze_image_encoder`.
- `kind="muon"` (not the paper's; `tiny_synthetic` uses it): Muon (Jordan et al. 2024; optax.contrib) for the
  dense layers' 2-D kernels, their Nesterov momentum orthogonalised by Newton-Schulz and scaled to an Adam update's
  RMS (`muon_rms`, Liu et al. 2025), so that lr, weight decay and layer decay apply unchanged; Adam for every other
  parameter (convolutions, embeddings, norms, biases, position tables).
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import optax

FOURIER = ("prompt_encoder", "pe_layer", "positional_encoding_gaussian_matrix")
FOURIER_SAM2 = ("sam_prompt_encoder",) + FOURIER[1:]  # SAM 2 names its prompt encoder sam_prompt_encoder
NO_DECAY_NAMES = ("pos_embed", "rel_pos_h", "rel_pos_w", "pos_embed_window")


def _names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def schedule(lr: float, warmup_steps: int, decay_steps=(), decay_factor: float = 0.1):
    """step (int array) -> learning rate (float32)."""
    milestones = jnp.asarray(tuple(decay_steps) or (2**31 - 1,), jnp.int32)

    def fn(step):
        step = jnp.asarray(step)
        warm = jnp.minimum(1.0, (step.astype(jnp.float32) + 1.0) / max(warmup_steps, 1)) if warmup_steps else 1.0
        n = (step[..., None] >= milestones).sum(-1) if decay_steps else 0
        return jnp.asarray(lr * warm * decay_factor ** n, jnp.float32)

    return fn


def layer_id(names: tuple[str, ...], depth: int) -> int:
    """Layer index of a parameter for layer-wise lr decay (see module docstring)."""
    if names[0] == "image_encoder":
        if names[1] == "trunk":  # SAM 2: Hiera's blocks and embeddings sit in image_encoder/trunk
            names = names[1:]
        if names[1] in ("patch_embed", "pos_embed", "pos_embed_window"):
            return 0
        m = re.fullmatch(r"blocks_(\d+)", names[1])
        if m:
            return int(m.group(1)) + 1
    return depth + 1


def lr_multipliers(params: Any, depth: int, layer_decay: float, freeze_image_encoder: bool = False) -> Any:
    """Tree like params of float multipliers (python floats)."""
    def mult(path, _):
        names = _names(path)
        if names in (FOURIER, FOURIER_SAM2) or (freeze_image_encoder and names[0] == "image_encoder"):
            return 0.0
        return float(layer_decay ** (depth + 1 - layer_id(names, depth)))

    return jax.tree_util.tree_map_with_path(mult, params)


def decay_mask(params: Any) -> Any:
    """Tree like params of bools: True where weight decay applies."""
    def use(path, p):
        names = _names(path)
        return not (p.ndim <= 1 or names[-1] in NO_DECAY_NAMES or names in (FOURIER, FOURIER_SAM2))

    return jax.tree_util.tree_map_with_path(use, params)


def scale_by_tree(multipliers: Any) -> optax.GradientTransformation:
    """Multiplies each update by a fixed per-parameter constant."""
    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, k: u * jnp.asarray(k, u.dtype), updates, multipliers), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


OPTIMIZERS = ("adamw", "muon")


def is_matrix(path, p) -> bool:
    """A dense layer's 2-D kernel (in, out): what Muon orthogonalises. Convolutions, embeddings, tables: Adam."""
    return _names(path)[-1] == "kernel" and len(p.shape) == 2


def scale_to_rms(rms: float) -> optax.GradientTransformation:
    """Scales an orthogonalised (m, n) update by sqrt(max(m, n)) * rms: its RMS becomes ~rms, an Adam update's,
    so Adam's learning rate and weight decay carry over (Liu et al. 2025, "Muon is scalable")."""
    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u: u * (rms * max(u.shape) ** 0.5), updates), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def direction(cfg, params: Any) -> optax.GradientTransformation:
    """The update direction before weight decay and lr: Adam ("adamw"), or ("muon") Muon's orthogonalised Nesterov
    momentum for dense kernels (`is_matrix`, beta muon_beta, RMS muon_rms) and Adam for every other parameter."""
    kind = cfg.get("kind", "adamw")
    adam = optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    if kind == "adamw":
        return adam
    if kind != "muon":
        raise ValueError(f"config.optim.kind must be one of {OPTIMIZERS}, got {kind!r}")
    from optax.contrib import MuonDimensionNumbers, scale_by_muon  # noqa: PLC0415

    labels = jax.tree_util.tree_map_with_path(lambda path, p: "muon" if is_matrix(path, p) else "adam", params)
    muon = optax.chain(
        scale_by_muon(beta=cfg.muon_beta,
                      weight_dimension_numbers=lambda t: jax.tree.map(lambda _: MuonDimensionNumbers(), t)),
        scale_to_rms(cfg.muon_rms))
    return optax.partition({"muon": muon, "adam": adam}, labels)


def make_optimizer(cfg, params: Any, depth: int) -> optax.GradientTransformation:
    """cfg: kind, lr, b1, b2, eps, weight_decay, layer_decay, warmup_steps, decay_steps, decay_factor,
    freeze_image_encoder (and muon_beta, muon_rms for kind "muon").

    params may be abstract (shapes only). The learning rate at step t is `schedule(...)(t)` (optax's own count).
    """
    lr_fn = schedule(cfg.lr, cfg.warmup_steps, tuple(cfg.decay_steps), cfg.decay_factor)
    return optax.chain(
        direction(cfg, params),
        optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask(params)),
        scale_by_tree(lr_multipliers(params, depth, cfg.layer_decay, cfg.get("freeze_image_encoder", False))),
        optax.scale_by_learning_rate(lr_fn),
    )
