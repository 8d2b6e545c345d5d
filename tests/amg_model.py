"""A tiny official SAM briefly trained on synthetic shapes, so automatic mask generation has something to find.

With random weights every mask is speckle over the whole image, NMS collapses them to one, and comparing two
generators proves nothing. A few hundred Adam steps on `samjax.data.synthetic` images (points inside objects,
the best of the multimask outputs against the object mask, plus the IoU head) give local, varied masks and
spread predicted IoUs. Deterministic (seeded, single-threaded torch), about 15-30 s on one CPU core.
"""

from __future__ import annotations

import functools

import numpy as np

from samjax.models import SamConfig

# Image 64 px, patch 4: a 16 x 16 embedding grid and 64 x 64 low-res masks (the official 1024 / 16 / 256 shape
# ratios, scaled down), windowed + global attention, 3 multimask outputs.
AMG_CONFIG = SamConfig(image_size=64, patch_size=4, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                       window_size=4, encoder_global_attn_indexes=(1,), prompt_embed_dim=32, mask_in_chans=8,
                       decoder_depth=2, decoder_num_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32)


def synthetic_image(seed: int, image_id: int, h: int, w: int, num_objects: int | None = None):
    """(H, W, 3) uint8 RGB and (K, H, W) bool object masks from samjax.data.synthetic."""
    from samjax.data.synthetic import decoded_sample

    return decoded_sample(seed, image_id, h, w, num_objects)


@functools.lru_cache(maxsize=1)
def trained_official(steps: int = 300, seed: int = 0):
    """The official torch `Sam` for AMG_CONFIG after `steps` training steps (cached per process)."""
    import torch
    import torch.nn.functional as F

    from tests.official import build_official, import_official

    import_official()
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sam = build_official(AMG_CONFIG, seed).train()
        cfg = AMG_CONFIG
        s, h, w = cfg.image_size, 48, 64  # training images are already in the resized frame (long side 64)
        pool = [synthetic_image(1000 + seed, i, h, w, num_objects=10) for i in range(48)]
        mean = torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1)
        std = torch.tensor(cfg.pixel_std).view(1, 3, 1, 1)
        imgs = torch.zeros(len(pool), 3, s, s)
        imgs[:, :, :h, :w] = (torch.tensor(np.stack([p[0] for p in pool])).permute(0, 3, 1, 2).float() - mean) / std
        opt = torch.optim.AdamW(sam.parameters(), lr=2e-3, weight_decay=0.0)
        rng = np.random.default_rng(seed)
        for step in range(steps):
            batch = rng.choice(len(pool), 4, replace=False)
            emb = sam.image_encoder(imgs[batch])
            loss = 0.0
            for j, b in enumerate(batch):
                masks = pool[b][1]
                picks = rng.choice(len(masks), min(6, len(masks)), replace=False)
                pts, gts = [], []
                for k in picks:
                    ys, xs = np.nonzero(masks[k])
                    r = rng.integers(len(ys))
                    pts.append([xs[r], ys[r]])
                    gt = np.zeros((s, s), np.float32)
                    gt[:h, :w] = masks[k]
                    gts.append(gt)
                pts_t = torch.tensor(np.array(pts), dtype=torch.float32)[:, None]
                sparse, dense = sam.prompt_encoder(points=(pts_t, torch.ones(len(pts), 1, dtype=torch.int)),
                                                   boxes=None, masks=None)
                low, iou = sam.mask_decoder(image_embeddings=emb[j:j + 1], image_pe=sam.prompt_encoder.get_dense_pe(),
                                            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                            multimask_output=True)
                gt = torch.tensor(np.array(gts))[:, None]  # (P, 1, s, s); low-res masks are s x s here
                bce = F.binary_cross_entropy_with_logits(low, gt.expand_as(low), reduction="none").mean((-2, -1))
                prob = low.sigmoid()
                dice = 1 - (2 * (prob * gt).sum((-2, -1)) + 1) / (prob.sum((-2, -1)) + gt.sum((-2, -1)) + 1)
                per = bce + dice  # (P, 3)
                best = per.argmin(1)
                with torch.no_grad():
                    pred = low > 0
                    inter = (pred & (gt > 0)).sum((-2, -1)).float()
                    union = (pred | (gt > 0)).sum((-2, -1)).float().clamp(min=1)
                    true_iou = inter / union
                loss = loss + per.gather(1, best[:, None]).mean() + F.mse_loss(iou, true_iou)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return sam.eval()
