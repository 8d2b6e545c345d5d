"""mobilesam_distill: MobileSAM's decoupled distillation (Zhang et al. 2023): a TinyViT-5M image encoder learns the
image embeddings of a frozen SAM ViT-H teacher (mean squared error between the two (B, 64, 64, 256) embeddings).

    python -m samjax.convert --checkpoint sam_vit_h_4b8939.pth --out ckpt/sam_vit_h
    python -m samjax.train --experiment=mobilesam_distill --workdir=/tmp/mobilesam \
        --config.objective.teacher_path=ckpt/sam_vit_h --config.data.train_files='/data/sa1b/tfrecord/*.tfrecord'

samjax.training.objectives "distill": the student (config.model, MobileSamConfig.mobile_sam()) runs its TinyViT in
training mode (BatchNorm statistics carried as the step's model state), the teacher (config.objective.teacher, a
SamConfig) runs frozen in the same step on the same images (the reference saves the teacher's embeddings to disk
first; the loss is the same). The exported model directory is a MobileSAM with the teacher's prompt encoder and mask
decoder, as MobileSAM ships. Reference recipe: 1% of SA-1B (~100k images), 8 epochs, AdamW lr 1e-3 with weight
decay 5e-4, batch 8 per GPU.

Expected result: not measured here (no SA-1B or official weights in this environment); the smoke test
(tests/test_family_training.py) distils a tiny teacher into a tiny TinyViT for a few steps.
"""

from samjax.models import SamConfig
from samjax.models.mobile_sam import MobileSamConfig
from samjax.training.config import base_config


def get_config():
    c = base_config()
    c.model = MobileSamConfig.mobile_sam().to_dict()
    c.objective = {"kind": "distill", "teacher": SamConfig.vit_h().to_dict(), "teacher_path": ""}
    c.init.update(kind="scratch", path="")
    c.optim.update(lr=1e-3, weight_decay=5e-4, layer_decay=1.0, warmup_steps=250, decay_steps=(100000,))
    c.data.update(batch_size=64, max_masks_per_image=1)
    c.train.update(num_steps=12500, ckpt_every=1000, log_every=50)
    c.eval.update(every=0, num_images=0)
    return c
