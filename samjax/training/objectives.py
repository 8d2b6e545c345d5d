"""Training objectives: what the compiled step computes and which parameters it changes, named by `StepConfig.kind`
(an experiment's `config.objective.kind`).

    "sam"      the SAM paper's recipe: every parameter of a SamConfig model, the prompt-round simulation and SAM's
               loss. Its loss lives in samjax.training.step; this module only describes its parameters.
    "hq_sam"   HQ-SAM's recipe (Ke et al. 2023, segment_anything_hq's train/train.py): an HQSamConfig model whose SAM
               part (encoder, prompt encoder, SAM's decoder layers) is frozen, the HQ output token and the fusion
               layers (`hq_sam.TRAINABLE`) trained. One prompt per mask (a noisy box or a foreground point, as the
               first round of samjax.training.prompts), the HQ mask alone (hq_token_only, one output) and HQ's loss:
               sigmoid cross-entropy + dice over `num_points` points of the low-res logits, three quarters at the
               most uncertain of `oversample` x as many random points and the rest random (Mask2Former's point
               sampling, which HQ-SAM's loss_masks uses).
    "distill"  MobileSAM's encoder distillation (Zhang et al. 2023): a MobileSamConfig student's TinyViT learns the
               image embeddings of a frozen SAM teacher (`config.objective.teacher`, a SamConfig dict), loss the
               mean squared error between the two (B, g, g, C) embeddings. TinyViT's BatchNorm runs in training mode;
               its running statistics are the step's `model_state`. The exported MobileSAM takes the teacher's prompt
               encoder and mask decoder, as MobileSAM does.
    "sam2"     SAM 2 / 2.1 fine-tuned on images (a Sam2Config model; experiments/sam2_finetune.py): Hiera + FPN once
               per image (drop path on), SAM's prompt rounds through SAM 2's decoder (high-res skips, every output in
               round 0, the single-mask output after), SAM 2's loss: the config's focal / dice / IoU weights, and the
               object-score head's binary cross-entropy against "the target is not empty", the mask and IoU terms
               kept only where it is not (samjax.training.prompts.simulate). The memory modules are not on the
               image path and stay frozen (`IMAGE_PATH`). Video training is not here.
    "text_prompt"  the SAM paper's text prompt (section 7.5, appendix D.5; samjax.training.text_prompt,
               experiments/text_prompt.py): a SamConfig model with text_embed_dim > 0, every SAM parameter trained
               with SAM's loss and prompt rounds, the first prompt of each mask the CLIP image embedding of its crop
               (a frozen CLIP image tower, `config.objective.clip` / `clip_path`, riding along under "clip"). The
               exported SAM is prompted with CLIP text embeddings (samjax.infer.text_prompt). No public weights exist
               for it.

An `Objective` gives the step the tree it trains (frozen parts included: gradients flow through SAM's frozen decoder
to the HQ token; the teacher rides along), the optimizer's mask over it, the collections carried from step to step
(`model_state`, e.g. batch_stats), the data sizes, the loss, the initial values and the exported model directory's
(config, variables).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from samjax import transforms as T
from samjax.models import (
    IGNORE,
    NOT_A_POINT,
    Sam,
    SamConfig,
    abstract_params,
    hq_sam,
    init_params,
    init_text_params,
    mobile_sam,
    param_logical_axes,
)
from samjax.models.clip import init_params as clip_init_params
from samjax.models.hq_sam import HQSam, HQSamConfig
from samjax.models.mobile_sam import MobileSam, MobileSamConfig
from samjax.models.sam2 import Sam2, Sam2Config
from samjax.models.sam2 import abstract_params as sam2_abstract_params
from samjax.models.sam2 import forward_image as sam2_forward_image
from samjax.models.sam2 import image_embeddings as sam2_image_embeddings
from samjax.models.sam2 import init_params as sam2_init_params
from samjax.models.sam2 import param_logical_axes as sam2_logical_axes
from samjax.training import prompts, text_prompt
from samjax.training.init import initial_params
from samjax.weights import clip as clip_weights
from samjax.weights import sam2 as sam2_weights
from samjax.weights import store

f32 = jnp.float32
KINDS = ("sam", "hq_sam", "distill", "sam2", "text_prompt")


def point_sample(x: jax.Array, coords: jax.Array) -> jax.Array:
    """torch's grid_sample (bilinear, align_corners=False, zeros outside) at points: x (P, H, W), coords (P, N, 2)
    (x, y) in [0, 1] -> (P, N)."""
    h, w = x.shape[-2:]
    px, py = coords[..., 0] * w - 0.5, coords[..., 1] * h - 0.5
    x0, y0 = jnp.floor(px), jnp.floor(py)
    out = 0.0
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - jnp.abs(px - xi)) * (1 - jnp.abs(py - yi))
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            flat = (jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)).astype(jnp.int32)
            vals = jnp.take_along_axis(x.reshape(x.shape[0], -1), flat, axis=1)
            out = out + jnp.where(inside, wgt * vals, 0.0)
    return out


def uncertain_points(rng: jax.Array, logits: jax.Array, num_points: int, oversample: float = 3.0,
                     importance: float = 0.75) -> jax.Array:
    """Mask2Former's get_uncertain_point_coords_with_randomness: (P, num_points, 2) in [0, 1], `importance` of them
    the most uncertain (logit nearest 0) of oversample x num_points random points, the rest uniform."""
    p = logits.shape[0]
    k_over, k_rand = jax.random.split(rng)
    over = jax.random.uniform(k_over, (p, int(num_points * oversample), 2))
    uncertainty = -jnp.abs(point_sample(logits, over))
    n_unc = int(importance * num_points)
    idx = jax.lax.top_k(uncertainty, n_unc)[1]
    picked = jnp.take_along_axis(over, idx[..., None], axis=1)
    return jnp.concatenate([picked, jax.random.uniform(k_rand, (p, num_points - n_unc, 2))], axis=1)


def hq_mask_loss(rng: jax.Array, logits: jax.Array, target: jax.Array, valid: jax.Array, num_points: int):
    """HQ-SAM's loss_masks: logits (P, m, m), target (P, m, m) bool, valid (P,) -> (sigmoid CE, dice), each summed
    over valid masks and divided by their number."""
    coords = uncertain_points(rng, jax.lax.stop_gradient(logits.astype(f32)), num_points)
    x = point_sample(logits.astype(f32), coords)
    t = point_sample(target.astype(f32), coords)
    ce = (jnp.maximum(x, 0) - x * t + jnp.log1p(jnp.exp(-jnp.abs(x)))).mean(-1)
    s = jax.nn.sigmoid(x)
    dice = 1.0 - (2.0 * (s * t).sum(-1) + 1.0) / (s.sum(-1) + t.sum(-1) + 1.0)
    w = valid.astype(f32)
    n = jnp.maximum(w.sum(), 1.0)
    return (ce * w).sum() / n, (dice * w).sum() / n


# ================================================================================================ objectives
@dataclasses.dataclass(frozen=True)
class Objective:
    """The SAM recipe's parameters (its loss: samjax.training.step). Subclasses override what differs."""

    KIND: ClassVar[str] = "sam"

    def abstract_params(self, model) -> Any:
        return abstract_params(model)

    def logical_axes(self, model) -> Any:
        return param_logical_axes(model)

    def abstract_model_state(self, model) -> dict | None:
        """Collections carried between steps and updated by the loss (not the optimizer), or None."""
        return None

    def trainable(self, params) -> Any | None:
        """A tree of bools over params: which leaves the optimizer may change (None: all)."""
        return None

    def encoder_depth(self, model) -> int:
        """Depth for layer-wise lr decay (samjax.training.optim)."""
        return model.encoder_depth

    def data_config(self, model) -> SamConfig:
        """The SamConfig whose image_size and mask_input_size the input pipeline makes batches for."""
        return model

    def initial(self, cfg, model) -> tuple[Any, dict | None]:  # pragma: no cover - the SAM path uses training.init
        raise NotImplementedError

    def export(self, model, params, model_state) -> tuple[Any, Any]:
        """(config, tree) of the trained model for samjax.weights.store.save_model."""
        return model.replace(encoder_drop_path_rate=0.0, encoder_remat=False, dtype="float32"), params


@dataclasses.dataclass(frozen=True)
class HQObjective(Objective):
    KIND: ClassVar[str] = "hq_sam"

    def abstract_params(self, model: HQSamConfig):
        return hq_sam.abstract_variables(model)["params"]

    def logical_axes(self, model: HQSamConfig):
        return hq_sam.variable_logical_axes(model)["params"]

    def abstract_model_state(self, model: HQSamConfig):
        stats = hq_sam.abstract_variables(model).get("batch_stats")
        return None if stats is None else {"batch_stats": stats}

    def trainable(self, params):
        return hq_sam.trainable_mask(params)

    def encoder_depth(self, model: HQSamConfig) -> int:
        return model.sam.encoder_depth

    def data_config(self, model: HQSamConfig) -> SamConfig:
        return model.sam

    def initial(self, cfg, model: HQSamConfig):
        """HQ layers freshly initialised (seeded); SAM's layers from config.init.path (a SAM .pth or samjax SAM
        directory, as HQ-SAM starts from SAM's checkpoint) or, without one, seeded too (smoke runs)."""
        variables = jax.tree.map(np.asarray, hq_sam.init_variables(model, jax.random.PRNGKey(cfg.seed)))
        if cfg.init.path:
            from samjax.training.init import load_init_params

            sam = load_init_params(cfg, model.sam)
            params = variables["params"]
            for module in ("image_encoder", "prompt_encoder"):
                params[module] = sam[module]
            params["mask_decoder"] = {**params["mask_decoder"], **sam["mask_decoder"]}
        stats = variables.get("batch_stats")
        return variables["params"], None if stats is None else {"batch_stats": stats}

    def export(self, model, params, model_state):
        return model, {"params": params, **(model_state or {})}

    def loss(self, sc, batch_sh):
        model = HQSam(sc.model)
        num_points = int(sc.objective.get("num_points", 112 * 112))
        size = sc.model.sam.image_size

        def loss_fn(params, model_state, batch, rng):
            k_prompt, k_loss = jax.random.split(rng)
            variables = {"params": params, **(model_state or {})}
            x = T.normalize(batch["image"], batch["input_hw"], sc.model.sam.pixel_mean, sc.model.sam.pixel_std)
            emb, interm = jax.lax.stop_gradient(model.apply(variables, x, method=HQSam.embed_images))  # SAM frozen
            feats = model.apply(variables, emb, interm, method=HQSam.hq_features)  # trained fusion, once per image
            b, m = batch["masks"].shape[:2]
            rep = lambda a: jax.lax.with_sharding_constraint(jnp.repeat(a, m, axis=0), batch_sh)  # noqa: E731
            flat = lambda a: jax.lax.with_sharding_constraint(a.reshape(b * m, *a.shape[2:]), batch_sh)  # noqa: E731
            masks, valid = flat(batch["masks"]), flat(batch["mask_valid"])
            coords, labels, _ = prompts.initial_prompts(k_prompt, masks, flat(batch["boxes"]), size, sc.prompts)
            logits, _ = model.apply(variables, rep(emb), None, coords, labels, multimask_output=False,
                                    hq_token_only=True, hq_features=rep(feats), method=HQSam.decode)
            ce, dice = hq_mask_loss(k_loss, logits[:, 0], masks, valid, num_points)
            return ce + dice, ({"loss_mask": ce, "loss_dice": dice, "num_masks": valid.sum().astype(f32)},
                               model_state)

        return loss_fn


@dataclasses.dataclass(frozen=True)
class DistillObjective(Objective):
    """params = {"student": the TinyViT's params, "teacher": the SAM teacher's params (frozen)}."""

    KIND: ClassVar[str] = "distill"

    @staticmethod
    def teacher(objective) -> SamConfig:
        """The teacher's SamConfig from StepConfig.objective (a FrozenConfigDict)."""
        return SamConfig.from_dict(objective["teacher"].to_dict())

    def abstract_params(self, model: MobileSamConfig, teacher: SamConfig | None = None):
        return {"student": mobile_sam.abstract_variables(model)["params"]["image_encoder"],
                "teacher": abstract_params(teacher)}

    def logical_axes(self, model: MobileSamConfig, teacher: SamConfig | None = None):
        return {"student": mobile_sam.variable_logical_axes(model)["params"]["image_encoder"],
                "teacher": param_logical_axes(teacher)}

    def abstract_model_state(self, model: MobileSamConfig):
        return {"batch_stats": mobile_sam.abstract_variables(model)["batch_stats"]}

    def trainable(self, params):
        """The student's TinyViT, without its ImageNet head (norm_head, head: in the checkpoint, not on the
        embedding's path); never the teacher."""
        student = {k: jax.tree.map(lambda _, k=k: k not in ("head", "norm_head"), v)
                   for k, v in params["student"].items()}
        return {"student": student, "teacher": jax.tree.map(lambda _: False, params["teacher"])}

    def encoder_depth(self, model) -> int:
        return sum(model.encoder.depths)

    def data_config(self, model: MobileSamConfig) -> SamConfig:
        return model.sam

    def initial(self, cfg, model: MobileSamConfig):
        """Student from scratch (seeded); teacher from config.objective.teacher_path (a SAM .pth or samjax
        directory) or, without one, seeded (smoke runs)."""
        teacher = SamConfig.from_dict(cfg.objective.teacher.to_dict())
        student = jax.tree.map(np.asarray, mobile_sam.init_variables(model, jax.random.PRNGKey(cfg.seed)))
        if cfg.objective.get("teacher_path", ""):
            from samjax.training.init import load_init_params

            path_cfg = cfg.copy_and_resolve_references()
            path_cfg.init.path, path_cfg.init.kind = cfg.objective.teacher_path, "sam"
            t_params = load_init_params(path_cfg, teacher)
        else:
            t_params = jax.tree.map(np.asarray, init_params(teacher, jax.random.PRNGKey(cfg.seed + 1)))
        return ({"student": student["params"]["image_encoder"], "teacher": t_params},
                {"batch_stats": student["batch_stats"]})

    def export(self, model, params, model_state):
        teacher = params["teacher"]
        return model, {"params": {"image_encoder": params["student"], "prompt_encoder": teacher["prompt_encoder"],
                                  "mask_decoder": teacher["mask_decoder"]}, **model_state}

    def loss(self, sc, batch_sh):
        student, teacher = MobileSam(sc.model), Sam(self.teacher(sc.objective))
        cfg = sc.model.sam

        def loss_fn(params, model_state, batch, rng):
            x = T.normalize(batch["image"], batch["input_hw"], cfg.pixel_mean, cfg.pixel_std)
            target = jax.lax.stop_gradient(teacher.apply({"params": params["teacher"]}, x, method=Sam.embed_images))
            variables = {"params": {"image_encoder": params["student"]}, **model_state}
            emb, updates = student.apply(variables, x, True, method=MobileSam.embed_images, mutable=["batch_stats"])
            mse = jnp.mean(jnp.square(emb.astype(f32) - target.astype(f32)))
            return mse, ({"mse": mse}, {**model_state, **updates})

        return loss_fn


@dataclasses.dataclass(frozen=True)
class Sam2Objective(Objective):
    """params = SAM 2's tree (samjax.models.sam2); the modules off the image path are frozen."""

    KIND: ClassVar[str] = "sam2"
    # What an image's prompts read: Hiera + FPN, no_mem_embed (added to the image embedding), the SAM heads.
    IMAGE_PATH: ClassVar[tuple[str, ...]] = ("image_encoder", "no_mem_embed", "sam_prompt_encoder",
                                             "sam_mask_decoder")

    def abstract_params(self, model: Sam2Config):
        if not isinstance(model, Sam2Config):
            raise TypeError(f"the sam2 objective trains a Sam2Config model (config.model with \"family\": \"sam2\"), "
                            f"got {type(model).__name__}")
        return sam2_abstract_params(model)

    def logical_axes(self, model: Sam2Config):
        return sam2_logical_axes(model)

    def trainable(self, params):
        return {k: jax.tree.map(lambda _, k=k: k in self.IMAGE_PATH, v) for k, v in params.items()}

    def encoder_depth(self, model: Sam2Config) -> int:
        return model.depth

    def data_config(self, model: Sam2Config) -> SamConfig:
        return model.sam_config  # image_size and 4g low-res masks, as SAM's

    def initial(self, cfg, model: Sam2Config):
        """From config.init.path (an official SAM 2 / 2.1 .pt or a samjax SAM 2 directory) or, without one, seeded."""
        path = cfg.init.path
        if not path:
            return jax.tree.map(np.asarray, sam2_init_params(model, jax.random.PRNGKey(cfg.seed))), None
        if str(path).endswith((".pt", ".pth")):
            return jax.tree.map(np.asarray, sam2_weights.load_checkpoint(path, model)[0]), None
        loaded, params = store.load_model(path)
        want = jax.tree.map(lambda x: tuple(x.shape), sam2_abstract_params(model))
        if not isinstance(loaded, Sam2Config) or jax.tree.map(np.shape, params) != want:
            raise ValueError(f"config.init.path ({path}) does not hold the parameters of config.model (a SAM 2 of "
                             f"these fields); it holds a {store.family_name(loaded)} model")
        return jax.tree.map(np.asarray, params), None

    def export(self, model: Sam2Config, params, model_state):
        return model.replace(drop_path_rate=0.0, remat=False, dtype="float32"), params

    def loss(self, sc, batch_sh):
        cfg = sc.model
        module = Sam2(cfg)
        loss_kwargs = sc.loss.to_dict()
        freeze = sc.optim.freeze_image_encoder

        def loss_fn(params, model_state, batch, rng):
            k_drop, k_prompt = jax.random.split(rng)
            x = T.normalize(batch["image"], batch["input_hw"], cfg.pixel_mean, cfg.pixel_std)
            backbone = sam2_forward_image(params, cfg, x, train=True, rngs={"dropout": k_drop})
            emb, high_res = sam2_image_embeddings(params, cfg, backbone)  # (B, g, g, C), [(B, 4g, 4g, .), ...]
            if freeze:
                emb, high_res = jax.lax.stop_gradient((emb, high_res))
            b, m = batch["masks"].shape[:2]
            flat = lambda a: jax.lax.with_sharding_constraint(a.reshape(b * m, *a.shape[2:]), batch_sh)  # noqa: E731
            per_image = lambda a: a.reshape(b, m, *a.shape[1:])  # noqa: E731

            def decode(e, hr, coords, labels, prev):
                """One image's features (batch 1) for its M prompts -> every output (M, K, 4g, 4g), (M, K),
                object score logits (M, 1). SAM 2's prompt encoder always appends one not-a-point token: the
                simulation's pad after a lone point becomes IGNORE and one pad goes last (SAM2ImagePredictor's
                token set)."""
                labels = jnp.where(labels == NOT_A_POINT, IGNORE, labels)
                coords = jnp.concatenate([coords, jnp.zeros((coords.shape[0], 1, 2), coords.dtype)], axis=1)
                labels = jnp.concatenate([labels, jnp.full((labels.shape[0], 1), NOT_A_POINT, labels.dtype)], axis=1)
                logits, iou, _, score = module.apply({"params": params}, e[None], coords, labels, prev,
                                                     [h[None] for h in hr] or None, method=Sam2.decode_all)
                return logits, iou, score

            # Each image's features serve its M prompts as batch 1 (never copied per prompt): vmap over the images.
            def decode_first(coords, labels):
                out = jax.vmap(lambda e, hr, c, lab: decode(e, hr, c, lab, None))(
                    emb, high_res, per_image(coords), per_image(labels))
                return jax.tree.map(flat, out)

            def decode_next(coords, labels, prev):  # rounds 1..: the single-mask output
                logits, iou, score = jax.vmap(decode)(emb, high_res, per_image(coords), per_image(labels),
                                                      per_image(prev))
                return flat(logits[:, :, :1]), flat(iou[:, :, :1]), flat(score)

            loss, metrics = prompts.simulate(decode_first, decode_next, flat(batch["masks"]), flat(batch["boxes"]),
                                             flat(batch["mask_valid"]), k_prompt, cfg.image_size, sc.prompts,
                                             loss_kwargs)
            return loss, (metrics, model_state)

        return loss_fn


@dataclasses.dataclass(frozen=True)
class TextPromptObjective(Objective):
    """params = SAM's modules (text layers included) + {"clip": CLIP's image tower and projection, frozen}: SAM's
    paths stay where the optimizer's layer decay and frozen Fourier matrix look for them."""

    KIND: ClassVar[str] = "text_prompt"

    def abstract_params(self, model: SamConfig, clip=None):
        text_prompt.check_model(model, clip)
        return {**abstract_params(model), text_prompt.CLIP_KEY: text_prompt.abstract_clip(clip)}

    def logical_axes(self, model: SamConfig, clip=None):
        return {**param_logical_axes(model), text_prompt.CLIP_KEY: text_prompt.clip_axes(clip)}

    def trainable(self, params):
        return {k: jax.tree.map(lambda _, k=k: k != text_prompt.CLIP_KEY, v) for k, v in params.items()}

    def initial(self, cfg, model: SamConfig):
        """SAM as config.init says (scratch, a SAM .pth or samjax directory, MAE), its text layers freshly
        initialised unless the loaded model has them; CLIP from config.objective.clip_path or, without one, seeded
        (smoke runs: the prompts then mean nothing)."""
        opts = text_prompt.TextPromptOptions.from_objective(cfg.objective)
        text_prompt.check_model(model, opts.clip)
        if cfg.init.kind == "scratch":
            sam = initial_params(cfg, model)
        else:  # SAM's own checkpoint gets fresh text layers; a text model's (its directory) keeps its own
            sam = jax.tree.map(np.asarray, initial_params(cfg, model.replace(text_embed_dim=0)))
            if "text_projection" not in sam["prompt_encoder"]:
                fresh = init_text_params(model, jax.random.PRNGKey(cfg.seed + 1))
                sam["prompt_encoder"] = {**sam["prompt_encoder"], **jax.tree.map(np.asarray, fresh)}
            want = jax.tree.map(lambda x: tuple(x.shape), abstract_params(model))
            if jax.tree.map(np.shape, sam) != want:
                raise ValueError(f"config.init.path ({cfg.init.path}) does not hold parameters of config.model "
                                 f"(text_embed_dim {model.text_embed_dim})")
        if opts.clip_path:
            clip_cfg, clip = clip_weights.load_clip(opts.clip_path)
            diff = text_prompt.image_tower_differences(clip_cfg, opts.clip)
            if diff:
                raise ValueError(f"config.objective.clip_path {opts.clip_path} holds a CLIP whose image tower "
                                 f"differs from config.objective.clip's: {diff}")
        else:
            clip = clip_init_params(opts.clip, jax.random.PRNGKey(cfg.seed + 2))
        return {**sam, text_prompt.CLIP_KEY: jax.tree.map(np.asarray, text_prompt.clip_tower(clip))}, None

    def export(self, model, params, model_state):
        return super().export(model, text_prompt.sam_params(params), None)

    def loss(self, sc, batch_sh):
        return text_prompt.make_loss(sc, batch_sh)


OBJECTIVES = {"sam": Objective(), "hq_sam": HQObjective(), "distill": DistillObjective(), "sam2": Sam2Objective(),
              "text_prompt": TextPromptObjective()}


def get(kind: str) -> Objective:
    if kind not in OBJECTIVES:
        raise ValueError(f"config.objective.kind must be one of {KINDS}, got {kind!r}")
    return OBJECTIVES[kind]


def abstract_parts(sc) -> tuple[Any, Any, dict | None]:
    """(abstract params, their logical axes, abstract model_state or None) of a StepConfig's objective."""
    obj = get(sc.kind)
    if sc.kind == "distill":
        teacher = DistillObjective.teacher(sc.objective)
        return (obj.abstract_params(sc.model, teacher), obj.logical_axes(sc.model, teacher),
                obj.abstract_model_state(sc.model))
    if sc.kind == "text_prompt":
        clip = text_prompt.TextPromptOptions.from_objective(sc.objective).clip
        return obj.abstract_params(sc.model, clip), obj.logical_axes(sc.model, clip), None
    return obj.abstract_params(sc.model), obj.logical_axes(sc.model), obj.abstract_model_state(sc.model)


def with_frozen(tx: optax.GradientTransformation, trainable) -> optax.GradientTransformation:
    """`tx` whose updates of the leaves that are not `trainable` are zero. (optax.multi_transform would drop the
    frozen leaves' optimizer state too, but hands the inner transforms masked trees that samjax.training.optim's
    per-parameter multipliers do not take; the frozen leaves' Adam moments are kept and never used.)"""
    if trainable is None:
        return tx

    def update(updates, state, params=None):
        updates, state = tx.update(updates, state, params)
        return jax.tree.map(lambda u, t: u if t else jnp.zeros_like(u), updates, trainable), state

    return optax.GradientTransformation(tx.init, update)


def model_config(d: dict):
    """config.model's dict -> a SamConfig, or a family's config where it names one ("family": "hq_sam", ...)."""
    return store.config_from_dict(d)
