"""The update step: one jax.jit over the (data, fsdp, tensor) mesh, with explicit in/out shardings and the state
donated.

One step: images (B, S, S, 3) uint8 -> normalise -> image encoder once per image -> for the B x M masks, the
11-round prompt simulation through the mask decoder (samjax.training.prompts) -> loss -> AdamW or Muon
(samjax.training.optim), gradient accumulation over microbatches when train.grad_accum > 1.

The rounds cost what their arithmetic costs: each image's embedding serves its masks as a batch of one (never
copied per mask); round 0, which has no mask prompt yet, projects the first layer's image side once per image
(`models.image_cache`); rounds 1.. make only the single-mask output their loss uses, and project the mask prompt's
dense embedding through its factors (`Sam.decode(factor_mask_prompt=True)`). The same loss and gradients as
decoding every output of every prompt from a copied embedding, up to float rounding (tests/test_step.py). A step
whose loss or gradient is not finite leaves the parameters and optimizer state as they were and counts itself in
the state.

`StepConfig` holds everything the compiled step depends on and is the only thing `make_train_step` reads, so the
cache of compiled steps (`compiled_step`), keyed on it and the mesh, cannot hand out a step built for other
settings.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from samjax import aot, parallel
from samjax import transforms as T
from samjax.models import Sam, SamConfig, attention, image_cache
from samjax.training import config as config_lib
from samjax.training import objectives, optim, prompts, state
from samjax.training.input import TRAIN_KEYS, batch_spec


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What shapes the compiled train step (hashable): the model, the prompt simulation, the loss, the optimizer,
    the batch (images x masks), gradient accumulation, the logical-axis rules, and the objective (`kind`: "sam",
    the paper's recipe below; "hq_sam", "distill", "sam2", "text_prompt": samjax.training.objectives, with their
    options in `objective`)."""

    model: SamConfig
    prompts: prompts.PromptConfig
    loss: ml_collections.FrozenConfigDict
    optim: ml_collections.FrozenConfigDict
    batch_size: int
    max_masks: int
    grad_accum: int
    rules: parallel.Rules
    kind: str = "sam"
    objective: ml_collections.FrozenConfigDict = ml_collections.FrozenConfigDict({})

    @classmethod
    def from_config(cls, cfg: ml_collections.ConfigDict) -> "StepConfig":
        return cls(model=config_lib.model_config(cfg), prompts=prompts.PromptConfig(**cfg.prompts.to_dict()),
                   loss=ml_collections.FrozenConfigDict(cfg.loss.to_dict()),
                   optim=ml_collections.FrozenConfigDict(cfg.optim.to_dict()),
                   batch_size=int(cfg.data.batch_size), max_masks=int(cfg.data.max_masks_per_image),
                   grad_accum=int(cfg.train.grad_accum), rules=config_lib.sharding_rules(cfg),
                   kind=cfg.objective.kind, objective=ml_collections.FrozenConfigDict(cfg.objective.to_dict()))


def compiled_step(cfg: ml_collections.ConfigDict | StepConfig, mesh):
    """(tx, jitted step, abstract state, shardings) for `cfg` on `mesh`, cached: repeated runs in one process (tests,
    resumes, stages at the same size) build and compile the step once."""
    sc = cfg if isinstance(cfg, StepConfig) else StepConfig.from_config(cfg)
    return _compiled_step(sc, mesh)


def compile_step(cfg: ml_collections.ConfigDict, mesh, platform: str | None = None):
    """The step for cfg on mesh compiled ahead of its first call: (executable, bytes per chip), or (None, bytes
    needed) when the compiler refuses it for lack of memory (TPU). platform: what `attention="auto"` resolves for
    (default: the mesh's devices'), so a TPU topology compiles as a TPU host would."""
    _, step, abstract, _ = compiled_step(cfg, mesh)
    platform = platform or mesh.devices.flat[0].platform
    with jax.set_mesh(mesh), attention.for_platform(platform):
        data_cfg = objectives.get(cfg.objective.kind).data_config(config_lib.model_config(cfg))
        lowered = step.lower(abstract, batch_spec(cfg, data_cfg, mesh))
        try:
            compiled = lowered.compile()
        except jax.errors.JaxRuntimeError as e:
            needed = aot.out_of_memory_bytes(str(e))
            if needed is None:
                raise
            return None, needed
    return compiled, aot.footprint(compiled)


@functools.lru_cache(maxsize=8)
def _compiled_step(sc: StepConfig, mesh):
    obj = objectives.get(sc.kind)
    params, axes, model_state = objectives.abstract_parts(sc)
    tx = objectives.with_frozen(optim.make_optimizer(sc.optim, params, obj.encoder_depth(sc.model)),
                                obj.trainable(params))
    abstract, shardings = state.abstract_state(sc.model, tx, mesh, sc.rules, params, axes, model_state)
    return tx, make_train_step(sc, tx, mesh, shardings), abstract, shardings


def make_loss_fn(sc: StepConfig, mesh):
    """loss_fn(params, batch, rng) -> (scalar loss, metrics) of one (micro)batch: the encoder, the prompt rounds."""
    model_cfg = sc.model
    model = Sam(model_cfg)
    loss_kwargs = sc.loss.to_dict()
    freeze = sc.optim.freeze_image_encoder
    batch_sh = NamedSharding(mesh, P(parallel.BATCH_AXES))
    every_output = tuple(range(model_cfg.num_mask_tokens))

    def loss_fn(params, batch, rng):
        k_drop, k_prompt = jax.random.split(rng)
        images = T.normalize(batch["image"], batch["input_hw"], model_cfg.pixel_mean, model_cfg.pixel_std)
        emb = model.apply({"params": params}, images, True, rngs={"dropout": k_drop}, method=Sam.embed_images)
        if freeze:
            emb = jax.lax.stop_gradient(emb)
        b, m = batch["masks"].shape[:2]
        image_pe = model.apply({"params": params}, method=Sam.get_dense_pe)  # (1, g, g, C): parameters only
        flat = lambda x: jax.lax.with_sharding_constraint(x.reshape(b * m, *x.shape[2:]), batch_sh)  # noqa: E731
        per_image = lambda x: x.reshape(b, m, *x.shape[1:])  # noqa: E731

        # Each image's embedding serves its M prompts as batch 1 (never copied per prompt): vmap over the images.
        def decode_first(coords, labels):  # round 0: no mask prompt; the first layer's image side once per image
            def one(e, c, lab):
                cache = image_cache(params, model_cfg, e[None], image_pe)
                return model.apply({"params": params}, e[None], c, lab, image_pe=image_pe, image_cache=cache,
                                   outputs=every_output, method=Sam.decode)
            out = jax.vmap(one)(emb, per_image(coords), per_image(labels))
            return jax.tree.map(flat, out)

        def decode_next(coords, labels, prev):  # rounds 1..: the single-mask output, the mask prompt factored
            def one(e, c, lab, pm):
                return model.apply({"params": params}, e[None], c, lab, pm, image_pe=image_pe, outputs=(0,),
                                   factor_mask_prompt=True, method=Sam.decode)
            out = jax.vmap(one)(emb, per_image(coords), per_image(labels), per_image(prev))
            return jax.tree.map(flat, out)

        return prompts.simulate(decode_first, decode_next, flat(batch["masks"]), flat(batch["boxes"]),
                                flat(batch["mask_valid"]), k_prompt, model_cfg.image_size, sc.prompts, loss_kwargs)

    return loss_fn


def make_train_step(sc: StepConfig, tx: optax.GradientTransformation, mesh, shardings):
    """jit(state, batch) -> (state, metrics); batch: the global batch of `TRAIN_KEYS` (samjax.training.input)."""
    lr_fn = optim.schedule(sc.optim.lr, sc.optim.warmup_steps, tuple(sc.optim.decay_steps), sc.optim.decay_factor)
    accum = sc.grad_accum
    batch_sh = NamedSharding(mesh, P(parallel.BATCH_AXES))
    objective_loss = objectives.get(sc.kind).loss(sc, batch_sh) if sc.kind != "sam" else None
    sam_loss = make_loss_fn(sc, mesh) if objective_loss is None else None

    def gradients(model_state):
        """value_and_grad of the loss; another objective's loss also reads (and returns, in its aux) the collections
        it updates (model_state: BatchNorm statistics)."""
        if objective_loss is None:
            return jax.value_and_grad(sam_loss, has_aux=True)
        return jax.value_and_grad(lambda p, b, r: objective_loss(p, model_state, b, r), has_aux=True)

    def step_fn(state, batch):
        model_state_in = state.get("model_state")
        grad_fn = gradients(model_state_in)
        rng = jax.random.fold_in(state["rng"], state["step"])
        params = state["params"]
        if accum == 1:
            (loss, aux), grads = grad_fn(params, batch, rng)
        else:  # microbatch i = rows i, i + accum, ... (keeps each device's rows local)
            micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1), batch)
            shapes = jax.eval_shape(lambda: grad_fn(params, jax.tree.map(lambda x: x[0], micro), rng))

            def body(acc, xs):
                i, mb = xs
                (mb_loss, mb_aux), g = grad_fn(params, mb, jax.random.fold_in(rng, i))
                return jax.tree.map(jnp.add, acc, ((mb_loss, mb_aux), g)), None

            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            ((loss, aux), grads), _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro))
            loss, aux, grads = jax.tree.map(lambda x: x / accum, (loss, aux, grads))
        if sc.kind != "sam":
            aux, model_state = aux
        gnorm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(gnorm)
        updates, new_opt = tx.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        new_state = {
            "step": state["step"] + 1, "params": keep(new_params, params),
            "opt_state": keep(new_opt, state["opt_state"]),
            "rng": state["rng"], "nonfinite": state["nonfinite"] + (~finite).astype(jnp.int32),
            "streak": jnp.where(finite, 0, state["streak"] + 1).astype(jnp.int32),
        }
        if model_state_in is not None:
            new_state["model_state"] = keep(model_state, model_state_in)
        out = dict(aux, loss=loss, grad_norm=gnorm, lr=lr_fn(state["step"]), finite=finite,
                   streak=new_state["streak"] + 0, nonfinite=new_state["nonfinite"] + 0)
        return new_state, out

    def traced(state, batch):
        with nn.logical_axis_rules(sc.rules):
            return step_fn(state, batch)

    batch_shardings = {k: batch_sh for k in TRAIN_KEYS}
    return jax.jit(traced, in_shardings=(shardings, batch_shardings), out_shardings=(shardings, None),
                   donate_argnums=(0,))
