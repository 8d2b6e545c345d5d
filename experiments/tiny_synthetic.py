"""tiny_synthetic: the embedded default. Makes synthetic SA-1B-format data, trains a small SAM from scratch on CPU.

    python -m samjax.train --experiment=tiny_synthetic --workdir=/tmp/tiny

Writes WORKDIR/data (synthetic SA-1B jpg+json -> samjax.data.sa1b converter -> TFRecords, through the real
pipeline), trains (AdamW, warmup + step decay, layer decay, focal + dice + IoU-MSE, on-device prompt simulation
with the lowest-loss-of-3 rule), evaluates on held-out synthetic images (WORKDIR/eval.json), exports WORKDIR/model
(samjax.infer.load format) and segments a held-out image with it (WORKDIR/demo.png).

Data: 128x128 images, each a textured background (flat+noise, stripes, checkers, gradients) with 6 overlapping
shapes (ellipses, rectangles, star polygons, blobs) of random textures, heights log-uniform in 0.1-0.6 of the side
(13-77 px), about half with 1-3 textured parts (own masks: a point on a part is ambiguous); occlusion makes every
mask the visible region; 1000 train / 40 held-out images (disjoint image ids). Single-point mIoU: one point at each
mask's interior centre, the highest-predicted-IoU of the 3 outputs, IoU on the 32x32 low-res grid
(samjax.evaluate).

Deviations from the paper's recipe, each measured (short runs on the shared 2-core machine, eval on 24 held-out
images; "escape" = first step with non-zero mIoU):
  * focal:dice 2:1 (paper 20:1); 2 prompt rounds (the first prompt, then one error-region click with the previous
    mask as prompt) instead of 11; first prompt a point 75% of the time (paper 50%); lr 3e-3, decay at step 1100.
  * objects from 0.1 of the side (generator default 0.04): at 0.04 ~60% of the held-out masks are smaller than
    one 16 px patch (under 16 cells of the 32x32 grid), and those score 0.08-0.28 IoU.
  run (600 steps unless noted)                   1pt mIoU @300   @450    @600 (oracle)   note
  4 rounds, lr 1e-3, box 0.5 (previous default)  -               -       -               train mIoU 0.21 @500
  2 rounds, lr 1e-3                              0 @225          -       -               stopped at 225
  2 rounds, lr 3e-3                              0.032           0.225   0.215 (0.333)   escape ~300
  2 rounds, lr 1e-3, dice only (focal 0)         -               -       -               all-foreground to 200
  2 rounds, lr 3e-3, box 0.25                    0.128           0.231   0.268 (0.339)   escape ~275
  2 rounds, lr 3e-3, objects >= 0.1              0.141           0.238   0.288 (0.364)   escape ~290
  ... + focal alpha off (-1)                     0 @150          -       -               stopped at 175
  ... + lr 1e-2 (warmup 100)                     0.171           0.171   -               escape ~225, then stalls
Step time (same process, machine loaded): 4 rounds 0.86-1.01 s, 2 rounds 0.21-0.48 s, 1 round 0.17 s; patch 8
(16x16 grid, 64x64 masks) 4.2 s vs 0.77-0.95 s at patch 16 (1.9 s with 4 masks per image): too slow for 13 min.

Measured (2026-11-26, 2-core CPU shared with other engineers' jobs, load average 5-8, no accelerator; this exact
config and command, fresh workdir /tmp/conv/final2): wall 14m03s in all (data + conversion, 780 s of training =
1223 steps x 8 images at ~13 img/s, the lr decay at 1100 included, eval, export, demo); held-out (40 images, 286
masks) single-point mIoU 0.388 (oracle best-of-3 0.497; after 3 clicks 0.514, after 5 clicks 0.554). The same
model on 40 held-out images of the generator's default sizes (objects from 0.04): 0.368 (oracle 0.499). The same
config with the decay at 3000 (not reached): 1275 steps, 0.386.
The 0.70 target is NOT reached. What limits it: the model sits ~300 steps on an all-background plateau (its
length hardly moves with lr, loss weights, data or prompt mix above), then learns slowly; the IoU head picks the
best of the 3 masks only part of the time (single-point vs oracle gap ~0.1); and a shared machine halves the
steps that fit in the 780 s training budget (~1250 here; ~3500 estimated, not measured, for a quiet 2-core
machine from the 2-round step time).
Re-running the command resumes for another 780 s.
Previous default (4 rounds, lr 1e-3, objects from 0.04), measured on a less loaded machine: 1818 steps in 780 s,
held-out single-point 0.404 on objects from 0.04 (this config's model scores 0.368 there after 1223 steps).
"""

from samjax.experiment import base_config
from samjax.models import SamConfig

MEASURED = {"wall": "14m03s", "steps": 1223, "images_per_s": 13, "machine": "2-core CPU, shared (load 5-8)",
            "miou_1pt": 0.388, "miou_1pt_oracle": 0.497, "miou_click3": 0.514, "miou_click5": 0.554,
            "miou_1pt_default_sizes": 0.368}


def get_config():
    c = base_config()
    c.model = SamConfig(
        image_size=128, patch_size=16, encoder_embed_dim=96, encoder_depth=4, encoder_num_heads=4,
        window_size=4, encoder_global_attn_indexes=(1, 3), prompt_embed_dim=64, mask_in_chans=16,
        decoder_depth=2, decoder_num_heads=4, decoder_mlp_dim=256, iou_head_hidden_dim=64,
        encoder_drop_path_rate=0.0, dtype="float32").to_dict()
    # Objects 0.1-0.6 of the side (13-77 px; parts smaller): the generator's default 0.04 makes ~60% of the masks
    # smaller than one 16 px patch / 16 cells of the 32x32 mask grid, below what this model resolves (measured).
    c.data.synthetic.update(num_train=1000, num_eval=40, height=128, width=128, objects=6, shards=4,
                            min_object_frac=0.1)
    c.data.update(batch_size=8, max_masks_per_image=8, worker_count=0, shuffle_window=64)
    # lr 3e-3 left the empty plateau at ~300 steps (1e-3: ~400 before); 1e-2 at ~225 but then stalled. The /10
    # decay at 1100 falls inside the budget even on a shared machine (train mIoU flat from step ~800 at 3e-3).
    c.optim.update(lr=3e-3, warmup_steps=50, decay_steps=(1100,), layer_decay=0.9, weight_decay=0.05)
    # 2 rounds (first prompt, then one error-region click with the mask prompt) instead of the paper's 11: the
    # decoder rounds dominate the CPU step: 2 rounds run at about twice the steps/s of 4 and learn about as fast
    # per step (train mIoU ~0.22 at step 500 either way). Point first prompts 75% (paper 50%): the held-out
    # metric is single-point, and it escaped the empty plateau sooner (measured, docstring).
    c.prompts.update(num_click_rounds=1, no_click_rounds=0, box_prob=0.25)
    # Deviation from the paper's 20:1 focal:dice for a from-scratch CPU budget: at 20 the all-background
    # prediction traps a tiny model for hundreds of steps (measured), so focal weighs 2 here.
    c.loss.focal_weight = 2.0
    c.train.update(num_steps=3600, log_every=50, ckpt_every=500, max_seconds=780.0)
    c.eval.update(every=0, num_images=40, max_masks_per_image=8, batch_masks=8)
    c.export.demo = True
    return c
