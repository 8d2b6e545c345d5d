"""sa1b_vitl: SAM ViT-L from scratch on SA-1B with the paper's recipe.

    python -m samjax.train --experiment=sa1b_vitl --workdir=DIR --config.data.train_files='/data/sa1b/*.tfrecord'

ViT-L: lr 4e-4, 180k iterations (milestones scaled from 60k / 86,666 of 90k to 120k / 173,332), layer decay 0.8,
drop path 0.4, batch 128 images; otherwise as sa1b_vith.

Expected result: not measured here (needs a TPU pod / GPU cluster).
"""

from samjax.models import SamConfig
from samjax.training.config import base_config


def get_config():
    c = base_config()
    c.model = SamConfig.vit_l(encoder_drop_path_rate=0.4, dtype="bfloat16").to_dict()
    c.optim.update(lr=4e-4, layer_decay=0.8, decay_steps=(120000, 173332))
    c.data.batch_size = 128
    c.train.num_steps = 180000
    return c
