"""Training metrics: analytic FLOP count and MFU, a console progress line, and TensorBoard event files.

FLOPs count a multiply-add as 2. `train_flops_per_step` = 3 x forward (forward + backward), plus one more
encoder forward when the encoder blocks are rematerialised; the decoder runs once per prompt per round, as the
step runs it: round 0 without a mask prompt and with every output (a single point is ambiguous), later rounds with
the previous mask as prompt and only the single-mask output their loss uses (`rounds_flops`).
MFU = train FLOPs per step / (step seconds x devices x peak FLOP/s per device); the peak comes from the
config (`peak_flops`) or a table of known accelerators (bf16 dense), and MFU is left out when unknown (CPU).
"""

from __future__ import annotations

import math
import os
import sys
import time

import jax

from samjax.models import SamConfig

# bf16 dense peak FLOP/s per device, by substring of jax's device_kind.
PEAK_FLOPS = {"v5p": 459e12, "v5 lite": 197e12, "v5e": 197e12, "v6": 918e12, "v4": 275e12, "v3": 123e12,
              "H100": 989e12, "H200": 989e12, "A100": 312e12, "B200": 2250e12}


def peak_flops_per_device(device=None) -> float | None:
    kind = (device or jax.devices()[0]).device_kind
    for key, flops in PEAK_FLOPS.items():
        if key.lower() in kind.lower():
            return flops
    return None


def encoder_flops(cfg: SamConfig) -> float:
    """Forward FLOPs of the image encoder for one image."""
    g, c, p = cfg.grid_size, cfg.encoder_embed_dim, cfg.patch_size
    hidden = int(c * cfg.encoder_mlp_ratio)
    tokens = g * g
    total = 2 * tokens * p * p * cfg.in_chans * c  # patch embedding
    for i in range(cfg.encoder_depth):
        total += 2 * tokens * c * (3 * c + c + 2 * hidden)  # qkv, proj, mlp
        w = g if (i in cfg.encoder_global_attn_indexes or cfg.window_size == 0) else cfg.window_size
        padded = math.ceil(g / w) * w
        n_win, lw = (padded // w) ** 2, w * w
        total += 4 * n_win * lw * lw * c  # q k^T and attn v
        if cfg.encoder_use_rel_pos:
            total += 4 * n_win * lw * w * c  # decomposed relative positions (h and w)
    n = cfg.prompt_embed_dim
    total += 2 * tokens * c * n + 2 * tokens * n * n * 9  # neck
    return float(total)


def decoder_flops(cfg: SamConfig, num_tokens: int, mask_prompt: bool = True, outputs: int | None = None) -> float:
    """Forward FLOPs of prompt encoder (mask branch) + mask decoder for one prompt of `num_tokens` tokens, making
    `outputs` masks (default all `num_mask_tokens`)."""
    g, c = cfg.grid_size, cfg.prompt_embed_dim
    ci = c // cfg.attention_downsample_rate
    img, tok = g * g, cfg.num_mask_tokens + 1 + num_tokens
    attn_tok_img = 2 * tok * c * ci + 2 * 2 * img * c * ci + 4 * tok * img * ci + 2 * tok * ci * c
    attn_img_tok = 2 * img * c * ci + 2 * 2 * tok * c * ci + 4 * tok * img * ci + 2 * img * ci * c
    self_attn = 2 * tok * c * c * 4 + 4 * tok * tok * c
    mlp = 2 * 2 * tok * c * cfg.decoder_mlp_dim
    total = cfg.decoder_depth * (self_attn + attn_tok_img + mlp + attn_img_tok) + attn_tok_img
    total += 2 * (2 * g) ** 2 * c * (c // 4) + 2 * (4 * g) ** 2 * (c // 4) * (c // 8)  # output upscaling
    # hypernetwork MLPs (c -> c -> c -> c/8) and each mask's product with the upscaled features
    outputs = cfg.num_mask_tokens if outputs is None else outputs
    total += outputs * (2 * (2 * c * c + c * (c // 8)) + 2 * (4 * g) ** 2 * (c // 8))
    total += 2 * cfg.iou_head_depth * c * cfg.iou_head_hidden_dim
    if mask_prompt:
        m = cfg.mask_in_chans
        total += 2 * (2 * g) ** 2 * 4 * (m // 4) + 2 * g * g * 4 * (m // 4) * m + 2 * g * g * m * c
    return float(total)


def train_flops_per_step(cfg: SamConfig, images: int, masks_per_image: int, rounds: int, num_tokens: int,
                         freeze_encoder: bool = False) -> float:
    """Training FLOPs of one step over the global batch."""
    enc = encoder_flops(cfg) * images
    enc *= 1 if freeze_encoder else (4 if cfg.encoder_remat else 3)
    dec = 3 * rounds_flops(cfg, rounds, num_tokens, masks_per_image) * images
    return enc + dec


def rounds_flops(cfg: SamConfig, rounds: int, num_tokens: int, masks: int) -> float:
    """Forward FLOPs of one image's prompt rounds for its `masks` prompts, as the training step computes them:
    round 0 with no mask prompt and every output, each later round with the mask prompt and the single-mask
    output; in every round the first decoder layer's three image-side projections (token->image keys and values,
    image->token queries) of the image embedding are made once per image (`models.image_cache`, and in later rounds
    `Sam.decode(factor_mask_prompt=True)`, which projects each prompt's mask_in_chans-wide mask features instead)."""
    g, c = cfg.grid_size, cfg.prompt_embed_dim
    ci = c // cfg.attention_downsample_rate
    side = 3 * 2 * g * g * c * ci  # once per image and round
    factored = 3 * 2 * g * g * cfg.mask_in_chans * ci  # per prompt in rounds with a mask prompt
    first = decoder_flops(cfg, num_tokens, mask_prompt=False) - side
    later = decoder_flops(cfg, num_tokens, mask_prompt=True, outputs=1) - side + factored
    return rounds * side + masks * (first + (rounds - 1) * later)


class TensorBoard:
    """Scalars to WORKDIR/tensorboard/events.out.tfevents.* (tensorboard's writer; no TensorFlow needed)."""

    def __init__(self, logdir: str):
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: PLC0415
            from tensorboard.summary.writer.event_file_writer import EventFileWriter  # noqa: PLC0415
        except ImportError:  # optional dependency
            print("tensorboard is not installed: no event files (pip install tensorboard)", file=sys.stderr)
            self._writer = None
            return
        os.makedirs(logdir, exist_ok=True)
        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        self._writer = EventFileWriter(logdir)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self._writer is None:
            return
        summary = self._summary_pb2.Summary(value=[self._summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                                                   for k, v in values.items()])
        self._writer.add_event(self._event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def progress_line(step: int, total: int, m: dict[str, float], eta_s: float | None) -> str:
    """One console line from a metrics dict (keys as written by samjax.train)."""
    if "focal" in m:  # the SAM recipe's parts
        loss = [f"loss {m['loss']:.4f} (focal {m['focal']:.4f} dice {m['dice']:.3f} iou {m['iou_mse']:.4f})",
                f"mIoU first {m['miou_first']:.3f} last {m['miou_last']:.3f}"]
    else:  # another objective (samjax.training.objectives): its own metrics
        skip = {"loss", "lr", "grad_norm", "images_per_s", "mfu", "finite", "streak", "nonfinite"}
        loss = [f"loss {m['loss']:.4f}"] + [f"{k} {v:.4g}" for k, v in m.items() if k not in skip]
    parts = [f"step {step}/{total}", *loss, f"lr {m['lr']:.2e}", f"gnorm {m['grad_norm']:.3f}",
             f"{m['images_per_s']:.1f} img/s"]
    if "mfu" in m:
        parts.append(f"MFU {100 * m['mfu']:.1f}%")
    if m.get("nonfinite"):
        parts.append(f"skipped {int(m['nonfinite'])}")
    if eta_s is not None:
        parts.append(f"eta {int(eta_s // 60)}m{int(eta_s % 60):02d}s")
    return " | ".join(parts)
