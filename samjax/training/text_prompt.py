"""The SAM paper's text prompt, trained (Kirillov et al. 2023, section 7.5 and appendix D.5): the objective
"text_prompt" of samjax.training.objectives, run by experiments/text_prompt.py. No public weights exist for it: the
released SAM checkpoints have no text path, and this trains one.

What the paper does, and what this module follows:
- "for each manually collected mask with area larger than 100^2 we extract the CLIP image embedding. Then, during
  training, we prompt SAM with the extracted CLIP image embeddings as its first interaction" (7.5). Here a mask
  smaller than `min_mask_area` pixels of the S x S input carries no loss (D.5: "we discard all masks with an area
  smaller than 100^2 pixels"); the masks are whatever the data holds (the paper's come from its first two data-engine
  stages, which SA-1B does not release).
- D.5's crop: "expand the bounding box around each mask by a random factor from 1x to 2x, square-crop the expanded
  box to maintain its aspect ratio, and resize it to 336 x 336 pixels" (CLIP ViT-L/14@336px; here CLIP's own
  image_size), "with 50% probability we zero-out pixels outside the mask" (here: set to 0 after CLIP's
  normalisation, i.e. CLIP's mean colour, as samjax.amg.labels' masked crops; the part of a crop outside the image
  is that colour too), and "masked attention in the last layer to restrict attention from the output token to the
  image positions inside the mask" (`VisionTransformer(class_attention=)`: the patches the mask covers at least half
  of, or its best-covered patch where none is). "our prompt is the output token embedding": CLIP's image feature,
  l2-normalised ("which we l2 normalize prior to use"; SAM's prompt encoder normalises again, `embed_text`).
- "For training we supply the CLIP-based prompt first, followed by additional iterative point prompts": round 0 is
  the CLIP embedding alone (the point slots empty, IGNORE), the rounds after it add error-region clicks and the mask
  prompt as the SAM recipe does (samjax.training.prompts), the text token kept. A CLIP prompt names a kind of thing,
  not one instance, so round 0 trains like a single point: the lowest-loss of the multimask outputs. `text_prob` < 1
  gives the other masks the recipe's point / box first prompt instead (keeps a fine-tuned SAM's geometric prompts in
  practice; the paper states no such mix: default 1).
- At inference the CLIP *text* embedding takes the image embedding's place (samjax.infer.text_prompt), "without any
  modifications": CLIP aligns the two, so no text is needed in training.
Not followed: large-scale jitter (the input pipeline has none) and the paper's 120k iterations at batch 128 from
its own initialisation (experiments/text_prompt.py starts from a SAM checkpoint by default).

The crops are made on the device, inside the step, from the batch the SAM recipe already gets (images, low-res
masks, boxes): each an antialiased linear resampling (`jax.image.scale_and_translate`) of the image, of the mask for
the zeroing and of the mask at CLIP's patch grid for the attention. CLIP's vision tower and projection ride along in
the trained tree under "clip", frozen (the optimizer's mask), its output under stop_gradient.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from samjax import transforms as T
from samjax.models import IGNORE, Sam, SamConfig, image_cache
from samjax.models.clip import Clip, ClipConfig, normalize
from samjax.models.clip import abstract_params as clip_abstract_params
from samjax.models.clip import param_logical_axes as clip_logical_axes
from samjax.training import prompts

f32 = jnp.float32
CLIP_KEY = "clip"  # the frozen CLIP image tower's place in the trained tree, beside SAM's modules
CLIP_MODULES = ("vision_model", "visual_projection", "logit_scale")  # what of CLIP `Clip.encode_image` reads


@dataclasses.dataclass(frozen=True)
class TextPromptOptions:
    """config.objective's fields for kind "text_prompt" (see the module docstring)."""

    clip: ClipConfig                        # the CLIP whose image tower embeds the crops (and whose text tower serves)
    clip_path: str = ""                     # its checkpoint (samjax.weights.clip.load_clip); "": seeded (smoke runs)
    text_prob: float = 1.0                  # masks whose first prompt is the CLIP embedding (the rest: point / box)
    min_mask_area: float = 100.0 ** 2       # masks smaller than this (pixels of the S x S input) carry no loss
    expand: tuple[float, float] = (1.0, 2.0)  # the crop's box expansion factor, uniform in this range
    zero_out_prob: float = 0.5              # crops whose pixels outside the mask are set to CLIP's mean colour
    mask_attention: bool = True             # the class token attends only to patches in the mask in the last layer

    def __post_init__(self):
        problems = []
        if not 0.0 <= self.text_prob <= 1.0:
            problems.append(f"text_prob must be in [0, 1], got {self.text_prob}")
        if not 0.0 <= self.zero_out_prob <= 1.0:
            problems.append(f"zero_out_prob must be in [0, 1], got {self.zero_out_prob}")
        if len(self.expand) != 2 or not 1.0 <= self.expand[0] <= self.expand[1]:
            problems.append(f"expand must be (low, high) with 1 <= low <= high, got {self.expand}")
        if self.min_mask_area < 0:
            problems.append(f"min_mask_area must be >= 0 pixels, got {self.min_mask_area}")
        if problems:
            raise ValueError("config.objective (text_prompt): " + "; ".join(problems))

    @classmethod
    def from_objective(cls, objective) -> TextPromptOptions:
        """config.objective (a ConfigDict, FrozenConfigDict or dict) -> options; unknown fields are an error."""
        d = objective.to_dict() if hasattr(objective, "to_dict") else dict(objective)
        d.pop("kind", None)
        if "clip" not in d:
            raise ValueError("config.objective.clip (a ClipConfig dict, e.g. ClipConfig.vit_l14_336().to_dict()) is "
                             "required for the text_prompt objective")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"config.objective (text_prompt) has unknown fields {unknown}; known: {sorted(known)}")
        clip = d.pop("clip")
        clip = ClipConfig.from_dict(clip.to_dict() if hasattr(clip, "to_dict") else dict(clip))
        if "expand" in d:
            d["expand"] = tuple(float(v) for v in d["expand"])
        return cls(clip=clip, **d)


def check_model(model: SamConfig, clip: ClipConfig) -> None:
    """The SAM must take the CLIP's embeddings as its text prompt."""
    if not isinstance(model, SamConfig):
        raise TypeError(f"the text_prompt objective trains a SamConfig model, got {type(model).__name__}")
    if model.text_embed_dim != clip.embed_dim:
        raise ValueError(f"config.model.text_embed_dim ({model.text_embed_dim}) must equal the CLIP's embed_dim "
                         f"({clip.embed_dim}): SAM's text prompt is that CLIP's embedding")


def image_tower_differences(a: ClipConfig, b: ClipConfig) -> dict[str, tuple]:
    """The fields the image tower and its normalisation read where two CLIP configs differ: {field: (a's, b's)}."""
    fields = [f.name for f in dataclasses.fields(ClipConfig)
              if f.name.startswith("vision_") or f.name in ("embed_dim", "image_size", "patch_size", "in_chans",
                                                            "pixel_mean", "pixel_std")]
    return {k: (getattr(a, k), getattr(b, k)) for k in fields if getattr(a, k) != getattr(b, k)}


def clip_tower(tree: dict) -> dict:
    """A CLIP params (or axes) tree -> the part the crops need (CLIP_MODULES)."""
    return {k: tree[k] for k in CLIP_MODULES}


def abstract_clip(clip: ClipConfig) -> dict:
    return clip_tower(clip_abstract_params(clip))


def clip_axes(clip: ClipConfig) -> dict:
    return clip_tower(clip_logical_axes(clip))


# ================================================================================================= the crops
def crop_boxes(rng: jax.Array, boxes: jax.Array, expand: tuple[float, float]) -> tuple[jax.Array, jax.Array]:
    """boxes (P, 4) XYXY -> the square crops' centres (P, 2) (x, y) and sides (P,): each box grown by a factor
    uniform in `expand`, then squared to its longer side (the paper's "square-crop ... to maintain its aspect
    ratio"); at least one pixel."""
    factor = jax.random.uniform(rng, boxes.shape[:1], minval=expand[0], maxval=expand[1])
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = jnp.maximum(jnp.max(boxes[:, 2:] - boxes[:, :2], axis=-1) * factor, 1.0)
    return centre, side


def _resample(x: jax.Array, centre: jax.Array, side: jax.Array, out: int, unit: float) -> jax.Array:
    """The square [centre - side/2, centre + side/2]^2 (in pixels; x's cells are `unit` pixels wide) of x (H, W, ...)
    -> (out, out, ...), antialiased linear (zero weight outside x)."""
    scale = out * unit / side
    start = (centre - side / 2) / unit  # (x, y) in x's cells
    return jax.image.scale_and_translate(x, (out, out, *x.shape[2:]), (0, 1), jnp.stack([scale, scale]),
                                         -jnp.stack([start[1], start[0]]) * scale, "linear", antialias=True)


def mask_crops(rng: jax.Array, image: jax.Array, input_hw: jax.Array, masks: jax.Array, boxes: jax.Array,
               clip: ClipConfig, opts: TextPromptOptions) -> tuple[jax.Array, jax.Array]:
    """One image's masks as CLIP inputs. image (S, S, 3) uint8 padded, input_hw (2,) its valid (h, w); masks (M, m, m)
    bool on the low-res grid; boxes (M, 4) XYXY pixels -> (pixels (M, R, R, 3) CLIP-normalised, class_attention
    (M, (R / patch)^2) bool), R = clip.image_size."""
    s, m = image.shape[0], masks.shape[-1]
    r, grid = clip.image_size, clip.grid_size
    k_box, k_zero = jax.random.split(rng)
    rows, cols = jnp.arange(s)[:, None], jnp.arange(s)[None, :]
    inside = ((rows < input_hw[0]) & (cols < input_hw[1]))[..., None]
    x = (image.astype(f32) / 255.0 - jnp.asarray(clip.pixel_mean, f32)) / jnp.asarray(clip.pixel_std, f32)
    x = jnp.where(inside, x, 0.0)  # outside the image: CLIP's mean colour
    centre, side = crop_boxes(k_box, boxes, opts.expand)
    cell = s / m

    def one(mask, c, sd, zero):
        pixels = _resample(x, c, sd, r, 1.0)
        in_mask = _resample(mask.astype(f32), c, sd, r, cell) > 0.5
        pixels = jnp.where(zero & ~in_mask[..., None], 0.0, pixels)
        cover = _resample(mask.astype(f32), c, sd, grid, cell).reshape(-1)  # share of each patch in the mask
        attend = cover >= jnp.minimum(0.5, cover.max())  # at least the best-covered patch
        return pixels, attend

    zero = jax.random.uniform(k_zero, boxes.shape[:1]) < opts.zero_out_prob
    return jax.vmap(one)(masks, centre, side, zero)


def crop_embeddings(clip_params: dict, clip: ClipConfig, pixels: jax.Array, class_attention: jax.Array | None):
    """CLIP image features of crops (P, R, R, 3) (`mask_crops`) -> (P, E), l2-normalised, without gradient."""
    feats = Clip(clip).apply({"params": clip_params}, pixels, class_attention, method=Clip.encode_image)
    return jax.lax.stop_gradient(normalize(feats.astype(f32), 1e-6))


# ================================================================================================= the loss
def make_loss(sc, batch_sh: NamedSharding):
    """loss_fn(params, model_state, batch, rng) -> (loss, (metrics, model_state)) of one (micro)batch: the SAM
    recipe's encoder and prompt rounds (samjax.training.step.make_loss_fn) with the CLIP prompt first and its text
    token in every round. params: SAM's modules plus CLIP_KEY (the frozen image tower)."""
    model_cfg: SamConfig = sc.model
    opts = TextPromptOptions.from_objective(sc.objective)
    check_model(model_cfg, opts.clip)
    model = Sam(model_cfg)
    loss_kwargs = sc.loss.to_dict()
    freeze = sc.optim.freeze_image_encoder
    every_output = tuple(range(model_cfg.num_mask_tokens))
    s, cell_area = model_cfg.image_size, (model_cfg.image_size / model_cfg.mask_input_size) ** 2

    def loss_fn(params, model_state, batch, rng):
        sam_p = sam_params(params)
        k_drop, k_crop, k_first, k_text, k_rounds = jax.random.split(rng, 5)
        images = T.normalize(batch["image"], batch["input_hw"], model_cfg.pixel_mean, model_cfg.pixel_std)
        emb = model.apply({"params": sam_p}, images, True, rngs={"dropout": k_drop}, method=Sam.embed_images)
        if freeze:
            emb = jax.lax.stop_gradient(emb)
        b, m = batch["masks"].shape[:2]
        image_pe = model.apply({"params": sam_p}, method=Sam.get_dense_pe)
        flat = lambda x: jax.lax.with_sharding_constraint(x.reshape(b * m, *x.shape[2:]), batch_sh)  # noqa: E731
        per_image = lambda x: x.reshape(b, m, *x.shape[1:])  # noqa: E731

        # The CLIP prompt of every mask: its crop through the frozen image tower.
        crops = jax.vmap(lambda *a: mask_crops(*a, opts.clip, opts))(
            jax.random.split(k_crop, b), batch["image"], batch["input_hw"], batch["masks"], batch["boxes"])
        pixels, attend = (flat(x) for x in crops)
        text = crop_embeddings(params[CLIP_KEY], opts.clip, pixels, attend if opts.mask_attention else None)

        masks, boxes = flat(batch["masks"]), flat(batch["boxes"])
        valid = flat(batch["mask_valid"]) & (masks.sum((1, 2)) * cell_area >= opts.min_mask_area)
        coords, labels, is_point = prompts.initial_prompts(k_first, masks, boxes, s, sc.prompts)
        use_text = valid & (jax.random.uniform(k_text, valid.shape) < opts.text_prob)
        labels = jnp.where(use_text[:, None], IGNORE, labels)  # a CLIP first prompt: no point or box beside it
        text_b, use_b = per_image(text), per_image(use_text)

        # As the SAM recipe's rounds: each image's embedding serves its M prompts as batch 1 (vmap over images).
        def decode_first(coords, labels):
            def one(e, c, lab, t, tv):
                cache = image_cache(sam_p, model_cfg, e[None], image_pe)
                return model.apply({"params": sam_p}, e[None], c, lab, image_pe=image_pe, image_cache=cache,
                                   outputs=every_output, text_embedding=t, text_valid=tv, method=Sam.decode)
            return jax.tree.map(flat, jax.vmap(one)(emb, per_image(coords), per_image(labels), text_b, use_b))

        def decode_next(coords, labels, prev):
            def one(e, c, lab, pm, t, tv):
                return model.apply({"params": sam_p}, e[None], c, lab, pm, image_pe=image_pe, outputs=(0,),
                                   factor_mask_prompt=True, text_embedding=t, text_valid=tv, method=Sam.decode)
            return jax.tree.map(flat, jax.vmap(one)(emb, per_image(coords), per_image(labels), per_image(prev),
                                                    text_b, use_b))

        loss, metrics = prompts.simulate(decode_first, decode_next, masks, boxes, valid, k_rounds, s, sc.prompts,
                                         loss_kwargs, first=(coords, labels, is_point | use_text))
        metrics["text_prompts"] = use_text.sum().astype(f32)
        return loss, (metrics, model_state)

    return loss_fn


def sam_params(params: dict) -> dict:
    """The trained tree -> SAM's params (without the CLIP tower)."""
    return {k: v for k, v in params.items() if k != CLIP_KEY}
