"""finetune: start from a converted official SAM checkpoint and train on one's own masks.

    python -m samjax.convert --checkpoint sam_vit_b_01ec64.pth --out ckpt/sam_vit_b
    # SA-1B-format data (sa_N.jpg + sa_N.json) -> TFRecords
    python -m samjax.data.sa1b --input /data/mine --output /data/mine_tfrecord --num-shards 8
    # or COCO-format instance masks (polygons / RLE) -> the same TFRecords
    python -m samjax.data.coco --annotations /data/mine/instances.json --images /data/mine/images \
        --output /data/mine_tfrecord --num-shards 8
    python -m samjax.train --experiment=finetune --workdir=/tmp/ft \
        --config.init.path=ckpt/sam_vit_b --config.data.train_files='/data/mine_tfrecord/*.tfrecord' \
        [--config.optim.freeze_image_encoder=True] [--config.model.encoder_depth=32 ... for ViT-H: see below]

The model fields must match the checkpoint (default: ViT-B). For ViT-H use
`--experiment=finetune` with `--config.model.*` from SamConfig.vit_h(), or edit a copy of this file.
Recipe: AdamW lr 1e-5 (a tenth of a fine-tuning-scale 1e-4), warmup 100, layer decay 0.8, weight decay 0.1,
drop path 0.1, batch 16 images x 32 masks, 11 rounds of prompt simulation; `freeze_image_encoder` trains only
the prompt encoder and mask decoder (the encoder then runs without gradients).

Expected result: not measured here (no official weights are downloadable in this environment).
"""

from samjax.models import SamConfig
from samjax.training.config import base_config


def get_config():
    c = base_config()
    c.model = SamConfig.vit_b(encoder_drop_path_rate=0.1, dtype="bfloat16").to_dict()
    c.init.update(kind="sam", path="")
    c.optim.update(lr=1e-5, warmup_steps=100, decay_steps=(8000,), layer_decay=0.8, freeze_image_encoder=False)
    c.data.update(batch_size=16, max_masks_per_image=32)
    c.train.update(num_steps=10000, ckpt_every=500, log_every=20)
    c.eval.every = 1000
    return c
