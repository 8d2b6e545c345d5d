"""sam2_finetune: fine-tune SAM 2 (image level) from an official SAM 2.1 checkpoint on one's own masks.

    python -m samjax.train --experiment=sam2_finetune --workdir=/tmp/ft2 \
        --config.init.path=sam2.1_hiera_tiny.pt --config.data.train_files='/data/mine_tfrecord/*.tfrecord'

Data: the same TFRecords as SAM's recipes (python -m samjax.data.sa1b / samjax.data.coco, see experiments/finetune.py)
and the same on-device prompt simulation (a point or a noisy box, then clicks in the error region, the previous
logits as mask prompt). The objective "sam2" (samjax.training.objectives) embeds images with Hiera + FPN and decodes
with SAM 2's heads; the memory modules stay frozen. `init.path` is an official `sam2.1_hiera_*.pt` or a samjax SAM 2
directory (python -m samjax.convert); the model fields must match it (default: sam2.1_hiera_t; for another size set
`config.model` from `Sam2Config.from_name(...)` in a copy of this file). The run exports WORKDIR/model, which
`samjax.infer.load` / `samjax.infer.video.load` serve.

Recipe, after SAM 2.1's own fine-tuning config (sam2/configs/sam2.1_training/sam2.1_hiera_b+_MOSE_finetune.yaml),
image-level: AdamW, lr 5e-6 with layer decay 0.9 over the Hiera blocks, weight decay 0.1, drop path 0.1, bfloat16
compute; loss 20 focal + 1 dice + 1 IoU (L1, on every output of an ambiguous prompt) + 1 object score (binary cross
entropy against "the mask is not empty"), the backpropagated output of an ambiguous prompt chosen by focal + dice
(`loss.choose_by="mask"`). Differences from the official recipe: images only (no memory, no video clips), losses
on the low-res (4g x 4g) logits the pipeline's masks come at (officially on the upsampled ones), a step decay
instead of the cosine schedule, and the pipeline's longest-side resize with zero padding where SAM 2 resizes images
to the square (the predictor squashes them; fine-tuning on squashed images needs a pipeline option: not yet).
Evaluation during training (samjax.evaluate) is SAM's: off here.

Expected result: not measured (no official weights or real data here); tests/sam2/test_sam2_train.py runs it on a
tiny SAM 2 and synthetic data.
"""

from samjax.models.sam2 import Sam2Config
from samjax.training.config import base_config
from samjax.weights.store import config_to_dict


def get_config():
    c = base_config()
    c.model = config_to_dict(Sam2Config.from_name("sam2.1_hiera_t", drop_path_rate=0.1, dtype="bfloat16"))
    c.objective = {"kind": "sam2"}
    c.init.update(kind="sam", path="")
    c.optim.update(lr=5e-6, warmup_steps=100, decay_steps=(8000,), layer_decay=0.9, weight_decay=0.1,
                   freeze_image_encoder=False)
    c.loss.update(focal_weight=20.0, dice_weight=1.0, iou_weight=1.0, iou_loss="l1", choose_by="mask",
                  object_score_weight=1.0)
    c.data.update(batch_size=16, max_masks_per_image=16)
    c.train.update(num_steps=10000, ckpt_every=500, log_every=20)
    c.eval.update(every=0, num_images=0)
    c.fit.auto = False  # samjax.training.fit's rule knows SAM's fields only
    return c
