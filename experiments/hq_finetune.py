"""hq_finetune: HQ-SAM's recipe (Ke et al. 2023): SAM frozen, the HQ output token and the global-local fusion layers
trained with HQ-SAM's loss, starting from a converted official SAM checkpoint.

    python -m samjax.convert --checkpoint sam_vit_l_0b3195.pth --out ckpt/sam_vit_l
    python -m samjax.train --experiment=hq_finetune --workdir=/tmp/hq \
        --config.init.path=ckpt/sam_vit_l --config.data.train_files='/data/hqseg44k_tfrecord/*.tfrecord'

The model is HQSamConfig.sam_hq_vit_l() (the family's flagship; `--config.model.sam.encoder_*` for another size,
matching the SAM checkpoint). Only `samjax.models.hq_sam.TRAINABLE` layers change (samjax.training.objectives:
"hq_sam"); the SAM layers come from config.init.path, the HQ layers are freshly initialised. Per mask one prompt,
a noisy box or a foreground point (the first round of samjax.training.prompts; the reference also uses noisy mask
prompts), the HQ mask alone (hq_token_only), loss sigmoid CE + dice over 112 x 112 uncertainty-sampled points.
Reference recipe (segment_anything_hq train/train.py): AdamW lr 1e-3, no weight decay, 12 epochs of HQSeg-44K
(44k images), batch 4 per GPU on 8 GPUs, lr x 0.1 after 10 epochs. The result is a model directory that
`samjax.infer.load` serves as an HQ-SAM.

Expected result: not measured here (no official weights or HQSeg-44K in this environment); the smoke test
(tests/test_family_training.py) runs a tiny HQ-SAM for a few steps.
"""

from samjax.models.hq_sam import HQSamConfig
from samjax.training.config import base_config


def get_config():
    c = base_config()
    c.model = HQSamConfig.sam_hq_vit_l().to_dict()
    c.objective = {"kind": "hq_sam", "num_points": 112 * 112}
    c.init.update(kind="sam", path="")
    c.optim.update(lr=1e-3, weight_decay=0.0, layer_decay=1.0, warmup_steps=0, decay_steps=(13750,),
                   decay_factor=0.1)
    c.prompts.update(box_prob=0.5)
    c.data.update(batch_size=32, max_masks_per_image=1)
    c.train.update(num_steps=16500, ckpt_every=1000, log_every=50)
    c.eval.update(every=0, num_images=0)
    return c
