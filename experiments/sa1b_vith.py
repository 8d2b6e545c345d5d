"""sa1b_vith: SAM ViT-H from scratch on SA-1B with the paper's recipe (SAM paper, appendix A).

    python -m samjax.data.sa1b --input /data/sa1b_tars --output /data/sa1b_tfrecord --num-shards 1000
    python -m samjax.train --experiment=sa1b_vith --workdir=gs://.../sam_vith \
        --config.data.train_files='/data/sa1b_tfrecord/*.tfrecord' --config.mesh.fsdp=8
    # MAE-initialised encoder, as the paper: --config.init.kind=mae --config.init.path=mae_pretrain_vit_huge.pth

Recipe: AdamW (0.9, 0.999), lr 8e-4, 250 warmup iterations, /10 at 60k and 86,666 of 90k iterations, weight
decay 0.1, layer-wise lr decay 0.8, drop path 0.4, batch 256 images, up to 64 masks per image, masks above 90% of
the image dropped, 11 rounds of prompt simulation, bf16 compute with float32 master weights.

Expected result: not measured here (needs a TPU pod / GPU cluster; the paper trains 90k iterations on 256 A100s).
"""

from samjax.training.config import base_config


def get_config():
    return base_config()  # the base config is this recipe
