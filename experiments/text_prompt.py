"""text_prompt: the SAM paper's text prompt (Kirillov et al. 2023, section 7.5 and appendix D.5), trained.

    python -m samjax.convert --checkpoint sam_vit_h_4b8939.pth --out ckpt/sam_vit_h
    python -m samjax.train --experiment=text_prompt --workdir=runs/text_prompt --config.init.path=ckpt/sam_vit_h \
        --config.objective.clip_path=clip-vit-large-patch14-336 \
        --config.data.train_files='/data/sa1b/tfrecord/*.tfrecord'

NO PUBLIC WEIGHTS EXIST for SAM's text prompt: the released SAM checkpoints have no text path (the paper's text
model was never published), so this experiment trains one. Without it, text reaches SAM only as detector boxes
(python -m samjax.ground, samjax.infer.GroundedPredictor).

What it does (samjax.training.objectives "text_prompt", samjax.training.text_prompt): a ViT-H SAM with a text token
in its prompt encoder (SamConfig.text_embed_dim = 768, CLIP ViT-L/14@336px's embedding width, "the largest publicly
available CLIP model", as the paper) learns, for each mask of at least 100^2 pixels, to segment it from the CLIP
image embedding of its crop (the box grown 1-2x, squared, 336 px, half the crops with the background blanked, CLIP's
class token attending only to the mask's patches in its last layer) as the first prompt, followed by the recipe's
error-region clicks and mask prompts with the text token kept; SAM's loss, every SAM parameter trained, CLIP frozen
(its image tower rides along in the step). At inference the CLIP text embedding of a phrase takes the image
embedding's place (samjax.infer.text_prompt.TextPrompter), which works because CLIP aligns the two.
`--config.objective.clip_path` is a Hugging Face CLIP directory (openai/clip-vit-large-patch14-336) or an OpenAI .pt;
serve the exported WORKDIR/model with the same CLIP:

    prompter = TextPrompter.load(samjax.infer.load("runs/text_prompt/model"), clip="clip-vit-large-patch14-336")

Follows the paper: CLIP ViT-L/14@336px, l2-normalised embeddings, the D.5 crops, 120k iterations at batch 128, the
other settings SAM's defaults (AdamW 8e-4, 250 warmup steps, the two x0.1 decays at the same fractions of the run,
64 masks per image, 11 prompt rounds). Differs: it starts from SAM's checkpoint (`config.init`; `init.kind=mae` for
the paper's start), uses the masks the data holds (the paper's come from its first two data-engine stages, which
SA-1B does not release), has no large-scale jitter, and counts the 100^2 pixels in the 1024 px input frame (the paper
in the original image). CLIP costs: ViT-L/14@336 on every mask's crop is forward-only but ~0.4 TFLOP per crop, so 64
masks per image cost several times the ViT-H encoder's training step; `--config.data.max_masks_per_image=16` cuts it
4x.

Expected result: not measured here (no SA-1B, CLIP ViT-L or SAM weights, and no accelerator budget in this
environment); the paper shows qualitative results only ("a wheel", "beaver tooth grille"; an added point fixes many
misses) and calls the text prompt "exploratory and not entirely robust". The smoke test (tests/text/test_text_prompt.py)
trains a tiny SAM with a tiny random CLIP for a few steps and prompts the exported model with text.
"""

from samjax.models import SamConfig
from samjax.models.clip import ClipConfig
from samjax.training.config import base_config

STEPS = 120_000


def get_config():
    c = base_config()
    clip = ClipConfig.vit_l14_336(dtype="bfloat16")  # forward only, frozen: bfloat16 as SAM's own compute
    c.model = SamConfig.vit_h(encoder_drop_path_rate=0.4, dtype="bfloat16", text_embed_dim=clip.embed_dim).to_dict()
    c.objective = {"kind": "text_prompt", "clip": clip.to_dict(), "clip_path": "", "text_prob": 1.0,
                   "min_mask_area": 100.0 ** 2, "expand": (1.0, 2.0), "zero_out_prob": 0.5, "mask_attention": True}
    c.init.update(kind="sam", path="")
    # SAM's schedule (decays at 60k and 86,666 of 90k) stretched to the paper's 120k iterations.
    c.optim.update(decay_steps=(STEPS * 2 // 3, STEPS * 86666 // 90000))
    c.data.update(batch_size=128)
    c.train.update(num_steps=STEPS)
    c.eval.update(every=0, num_images=0)
    return c
