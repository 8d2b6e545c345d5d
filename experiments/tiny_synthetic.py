"""tiny_synthetic: the embedded default. Makes synthetic SA-1B-format data, trains a small SAM from scratch on CPU.

    python -m samjax.train --experiment=tiny_synthetic --workdir=/tmp/tiny

Writes WORKDIR/data (synthetic SA-1B jpg+json -> samjax.data.sa1b converter -> TFRecords, through the real
pipeline), trains, evaluates on held-out synthetic images (WORKDIR/eval.json), exports WORKDIR/model
(samjax.infer.load format) and segments a held-out image with it (WORKDIR/demo.png). Re-running resumes: finished
stages are skipped.

Data: 128x128 images, a textured background with 6 overlapping shapes (ellipses, rectangles, star polygons, blobs)
of random textures, heights 0.1-0.6 of the side, about half with 1-3 textured parts (a point on a part is
ambiguous); occlusion makes every mask the visible region. Only visible masks of at least 256 px are annotated.
10000 train / 400 held-out images (disjoint ids; ~1500 held-out masks, a standard error of ~0.007).
Single-point mIoU: one point at each mask's interior centre, the highest-predicted-IoU of the 3 outputs, IoU on
the model's low-res grid (samjax.evaluate.tfrecord).

Model: 8 px patches, a 4-block 96-wide encoder, a 64-wide decoder, trained in three stages of fixed step counts
(progressive resizing, config.low_res): 5000 steps at 64x64, 1900 at 96x96, then 1200 at 128x128, the position
tables grown before each larger size (samjax.weights.resolution). The step counts, not a time budget, end each
stage, so the result is the same on any machine.

Expected result (benchmarks/results/tiny_synthetic.json has each run's figures, commit and command): held-out
single-point mIoU of at least 0.70 on every seed (0.725-0.738 over seeds 0/1/2); about 14 minutes on a quiet
2-core CPU. The deviations from the paper's recipe below are for a from-scratch CPU budget; each comment says why.
"""

from samjax.models import SamConfig
from samjax.training.config import base_config

DECAY_STEPS = (500, 850, 1100)


def get_config():
    c = base_config()
    c.model = SamConfig(
        image_size=128, patch_size=8, encoder_embed_dim=96, encoder_depth=4, encoder_num_heads=4,
        window_size=4, encoder_global_attn_indexes=(1, 3), prompt_embed_dim=64, mask_in_chans=16,
        decoder_depth=2, decoder_num_heads=4, decoder_mlp_dim=256, iou_head_hidden_dim=64,
        encoder_drop_path_rate=0.0, dtype="float32").to_dict()
    # 8 px patches: 16x16 tokens and a 64x64 mask grid: a step costs 3.3x that of 16 px patches and learns ~2.5x as
    # much. Tied q/k init of the decoder's attentions: the point's Fourier PE matches its own cell's image PE from
    # step 0, so the all-background plateau ends sooner.
    c.init.decoder_qk_gain = 1.0
    # Objects 0.1-0.6 of the side (13-77 px); masks under 256 px (parts, occluded slivers) are not annotated.
    # 10000 training images, made on every core: with 1000 the model overfits them.
    c.data.synthetic.update(num_train=10000, num_eval=400, height=128, width=128, objects=6, shards=4,
                            min_object_frac=0.1, min_mask_area=256)
    # 4 mask slots per image (images have 3.8 annotated masks on average: more slots would be mostly padding the
    # decoder computes all the same), 4 images per step.
    c.data.update(batch_size=4, max_masks_per_image=4, worker_count=0, shuffle_window=64)
    # lr 3e-3 leaves the plateau soonest, then mIoU stalls and each x0.3 decay lifts it: the decays come in the last,
    # 128 px stage, at 500 / 850 / 1100 of its 1200 steps. Muon (samjax.training.optim.direction) for the dense
    # kernels and Adam for the rest, a deviation from the paper's AdamW: it learns far more per step here (+0.06
    # single-point mIoU on the mean of 3 seeds); its updates are scaled to Adam's RMS, so lr and decay carry over.
    c.optim.update(kind="muon", lr=3e-3, warmup_steps=50, decay_steps=DECAY_STEPS, decay_factor=0.3,
                   layer_decay=0.9, weight_decay=0.05)
    # 2 rounds (first prompt, then one error-region click with the mask prompt) instead of the paper's 11, for the
    # CPU budget (1 round would never train the mask-prompt path, and 3 and 5 clicks then score below 1 click).
    # Point first prompts 75% (paper 50%): the held-out metric is single-point. The rounds after the first are
    # unrolled (small models on CPU: no stacked residuals to zero-fill and copy).
    c.prompts.update(num_click_rounds=1, no_click_rounds=0, box_prob=0.25, unroll_rounds=True)
    # Focal weighs 2, not the paper's 20: at 20 the all-background prediction traps a tiny model for hundreds of steps.
    c.loss.focal_weight = 2.0
    # Progressive resizing: 5000 steps at 64x64 (8x8 tokens, a step ~0.26x the cost of one at 128) and 1900 at 96x96
    # (~0.55x), both held at lr 3e-3, then 1200 at 128x128 with the decays above.
    c.low_res.update(image_size=(64, 96), num_steps=(5000, 1900))
    c.train.update(num_steps=1200, log_every=100, ckpt_every=1000)
    c.eval.update(every=0, num_images=400, max_masks_per_image=8, batch_masks=8)
    c.export.demo = True
    return c
