"""Fitting a training run to its slice: the mesh, rematerialisation and gradient accumulation, by one rule.

The rule (`choose`), for a run on N accelerator chips of M bytes of memory each:

1. Mesh: FSDP over every chip, (data, fsdp, tensor) = (1, N, 1): parameters, gradients and optimizer state are
   split N ways and the global batch is split over all N chips. The global batch must divide by N.
2. The ladder, least recomputation first (recomputed FLOPs from samjax.training.metrics' analytic counts):
      - nothing rematerialised, one microbatch;
      - the encoder blocks or the prompt rounds rematerialised, whichever recomputes less (the encoder costs one
        more encoder forward per image; the rounds one more decoder pass per mask and round: for ViT-H the rounds
        are cheaper, for ViT-B the encoder);
      - the other one;
      - both;
      - both, with gradient accumulation over 2, 4, ... microbatches, down to one image per chip (accumulation comes
        last: it repeats FSDP's parameter all-gathers for every microbatch).
   Each rung is compiled (the executable the run uses; with `--aot` for a slice described by its topology), as many
   at a time as the host has cores, and the first whose footprint per chip (XLA's memory analysis: arguments +
   outputs + temporaries - donated) leaves at least `config.fit.headroom` (15%) of M free is taken.
3. Fields fixed by the user (`--config.mesh.*`, `--config.model.encoder_remat`, `--config.prompts.remat_rounds`,
   `--config.train.grad_accum` on the command line, recorded in `config.fit.fixed`) keep their values; the rule
   chooses the rest.

Before anything compiles, `check` raises a clear error when the global batch does not divide over the chips, or
when even the least the run can need per chip (its sharded state plus one image's rematerialised activations:
`lower_bound_bytes`) does not fit; it names the smallest slice of that kind that would.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
from typing import Callable

import jax
import ml_collections

from samjax import aot
from samjax.models import SamConfig, abstract_params
from samjax.training import config as config_lib
from samjax.training import metrics

# The fields the rule sets; a user override of any of them is kept (config.fit.fixed).
FIT_FIELDS = ("mesh.data", "mesh.fsdp", "mesh.tensor", "model.encoder_remat", "prompts.remat_rounds",
              "train.grad_accum")


def device_memory(device) -> int | None:
    """Bytes of memory of one accelerator chip: its runtime's limit where it reports one, else HBM_BYTES by kind."""
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 - topology descriptions (ahead-of-time targets) have no runtime
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return aot.by_kind(aot.HBM_BYTES, device.device_kind)


@dataclasses.dataclass(frozen=True)
class Rung:
    """One step of the ladder: what is rematerialised and how many microbatches a step accumulates."""

    encoder_remat: bool
    remat_rounds: bool
    grad_accum: int

    def describe(self) -> str:
        remat = [n for n, on in (("encoder blocks", self.encoder_remat), ("prompt rounds", self.remat_rounds)) if on]
        what = "remat " + " + ".join(remat) if remat else "no remat"
        return what + (f", {self.grad_accum} microbatches" if self.grad_accum > 1 else "")


@dataclasses.dataclass
class Choice:
    """What `choose` settled on: the config to run, its mesh shape, the rung, its footprint, and why."""

    config: ml_collections.ConfigDict
    mesh: dict
    rung: Rung
    per_chip_bytes: int | None
    hbm_bytes: int | None
    compiled: object
    lines: list[str]


def fixed(cfg) -> set[str]:
    return set(cfg.get("fit", {}).get("fixed", ()))


def mesh_shape(cfg, n_devices: int) -> dict:
    """(data, fsdp, tensor) for n_devices: FSDP over all of them, or the user's fixed sizes (-1: the rest)."""
    fix = fixed(cfg)
    sizes = {a: (int(cfg.mesh[a]) if f"mesh.{a}" in fix else None) for a in ("data", "fsdp", "tensor")}
    if all(v is None for v in sizes.values()):
        return {"data": 1, "fsdp": n_devices, "tensor": 1}
    sizes = {a: (v if v is not None else (1 if a != "fsdp" else -1)) for a, v in sizes.items()}
    if -1 in sizes.values():
        rest = math.prod(v for v in sizes.values() if v != -1)
        if n_devices % rest:
            raise ValueError(f"mesh {sizes} does not divide {n_devices} devices")
        sizes = {a: (n_devices // rest if v == -1 else v) for a, v in sizes.items()}
    if math.prod(sizes.values()) != n_devices:
        raise ValueError(f"mesh {sizes} needs {math.prod(sizes.values())} devices, the slice has {n_devices}")
    return sizes


def recompute_flops(cfg, rung: "Rung") -> float:
    """Forward FLOPs a rung recomputes in the backward pass, per step (samjax.training.metrics' counts)."""
    mc = config_lib.model_config(cfg)
    rounds = 1 + cfg.prompts.num_click_rounds + cfg.prompts.no_click_rounds
    images, masks = cfg.data.batch_size, cfg.data.max_masks_per_image
    enc = metrics.encoder_flops(mc) * images if rung.encoder_remat else 0.0
    dec = metrics.rounds_flops(mc, rounds, 2 + cfg.prompts.num_click_rounds, masks) * images if rung.remat_rounds else 0
    return enc + dec


def ladder(cfg, n_batch_shards: int) -> list[Rung]:
    """The rungs to try, in order, with the user's fixed fields held (see the module docstring)."""
    fix = fixed(cfg)
    per_chip = cfg.data.batch_size // n_batch_shards
    accums = [a for a in (2 ** k for k in range(0, 16)) if a <= per_chip and per_chip % a == 0]
    singles = sorted([Rung(True, False, 1), Rung(False, True, 1)], key=lambda r: recompute_flops(cfg, r))
    rungs = [Rung(False, False, 1), *singles, Rung(True, True, 1)]
    rungs += [Rung(True, True, a) for a in accums[1:]]
    held = {"encoder_remat": ("model.encoder_remat", bool(cfg.model.encoder_remat)),
            "remat_rounds": ("prompts.remat_rounds", bool(cfg.prompts.remat_rounds)),
            "grad_accum": ("train.grad_accum", int(cfg.train.grad_accum))}
    out = []
    for r in rungs:
        r = dataclasses.replace(r, **{k: v for k, (field, v) in held.items() if field in fix})
        if r not in out:
            out.append(r)
    return out


def with_rung(cfg, mesh: dict, rung: Rung) -> ml_collections.ConfigDict:
    """A copy of cfg running `rung` on `mesh`."""
    out = ml_collections.ConfigDict(cfg.to_dict())
    out.mesh.update(mesh)
    out.model.encoder_remat = rung.encoder_remat
    out.prompts.remat_rounds = rung.remat_rounds
    out.train.grad_accum = rung.grad_accum
    return out


def state_bytes(model_cfg: SamConfig, optim_kind: str, fsdp: int) -> float:
    """Training state per chip: float32 parameters, their gradients and two optimizer moments (Adam; Muon keeps
    one momentum for its matrices and Adam's two for the rest: counted as two), split over fsdp chips."""
    n = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_params(model_cfg)))
    del optim_kind
    return 4.0 * n * 4 / fsdp


def lower_bound_bytes(cfg, n_batch_shards: int, fsdp: int) -> float:
    """The least a step can need per chip: the sharded state, plus for one image (a microbatch cannot be smaller)
    with everything rematerialised the encoder blocks' saved inputs and the prompt rounds' saved mask prompts."""
    mc = config_lib.model_config(cfg)
    itemsize = 2 if mc.dtype in ("bfloat16", "float16") else 4
    tokens = mc.grid_size ** 2
    encoder = mc.encoder_depth * tokens * mc.encoder_embed_dim * itemsize
    rounds = 1 + cfg.prompts.num_click_rounds + cfg.prompts.no_click_rounds
    decoder = cfg.data.max_masks_per_image * rounds * mc.mask_input_size ** 2 * 4
    return state_bytes(mc, cfg.optim.kind, fsdp) + encoder + decoder


def check(cfg, n_devices: int, hbm: int | None, kind: str = "") -> dict:
    """The mesh shape for n_devices, after the checks that need no compile (see the module docstring)."""
    mesh = mesh_shape(cfg, n_devices)
    shards = mesh["data"] * mesh["fsdp"]
    batch = int(cfg.data.batch_size)
    if batch % shards:
        ok = [n for n in (2 ** k for k in range(12)) if batch % n == 0 and n >= 8]
        raise ValueError(f"the global batch of {batch} images does not divide over {shards} batch shards "
                         f"(mesh {mesh}); use a slice whose chip count divides it (e.g. {ok[-3:]}) or set "
                         f"--config.data.batch_size to a multiple of {shards}")
    if hbm is not None:
        need = lower_bound_bytes(cfg, shards, mesh["fsdp"])
        if need > (1 - cfg.fit.headroom) * hbm:
            smallest = next((n for n in (2 ** k for k in range(1, 16)) if batch % n == 0
                             and lower_bound_bytes(cfg, n, n) <= (1 - cfg.fit.headroom) * hbm), None)
            where = (f"the smallest {kind or 'slice'} it fits is {smallest} chips" if smallest else
                     "no slice of this chip fits it")
            raise ValueError(f"this run needs at least {need / 2**30:.1f} GiB per chip even with every layer "
                             f"rematerialised (training state split over {mesh['fsdp']} chips + one image's "
                             f"activations); a chip has {hbm / 2**30:.1f} GiB with {cfg.fit.headroom:.0%} kept "
                             f"free: {where}")
    return mesh


def choose(cfg, devices: list, compile_rung: Callable[[ml_collections.ConfigDict, dict], tuple[object, int]],
           hbm: int | None = None, log: Callable[[str], None] | None = None, workers: int | None = None) -> Choice:
    """Walks the ladder for `devices` (real ones, or an ahead-of-time topology's): compile_rung(cfg, mesh) ->
    (compiled executable, bytes per chip), or (None, bytes asked for) when the compiler refused it for memory.
    Returns the first rung that fits with the headroom, or raises ValueError when none does. hbm: bytes per chip
    (default: `device_memory(devices[0])`). log: called with each line as it is known (progress). workers: rungs
    compiled at once (default: this host's cores); a rung after the chosen one may still be compiling when this
    returns, and its result is dropped."""
    hbm = hbm if hbm is not None else device_memory(devices[0])
    kind = devices[0].device_kind
    mesh = check(cfg, len(devices), hbm, kind)
    limit = None if hbm is None else (1 - cfg.fit.headroom) * hbm
    lines = []

    def say(line):
        lines.append(line)
        if log is not None:
            log(line)

    say(f"fit: {len(devices)} x {kind}, {hbm / 2**30:.1f} GiB each" if hbm else
        f"fit: {len(devices)} x {kind}, memory unknown (the first rung is taken)")
    say(f"fit: mesh data={mesh['data']} fsdp={mesh['fsdp']} tensor={mesh['tensor']}"
        + (" (fixed)" if any(f.startswith("mesh.") for f in fixed(cfg)) else " (FSDP over every chip)"))
    rungs = ladder(cfg, mesh["data"] * mesh["fsdp"])
    if limit is None:
        rungs = rungs[:1]
    workers = max(1, min(len(rungs), workers or os.cpu_count() or 1))
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    tried = []
    try:
        runs = [(r, with_rung(cfg, mesh, r)) for r in rungs]
        futures = [pool.submit(compile_rung, run_cfg, mesh) for _, run_cfg in runs[:workers]]
        for i, (rung, run_cfg) in enumerate(runs):
            compiled, used = futures[i].result()
            if i + workers < len(runs):  # keep `workers` compiles going
                futures.append(pool.submit(compile_rung, runs[i + workers][1], mesh))
            fits = compiled is not None and (limit is None or used <= limit)
            say(f"fit: {rung.describe()}: {used / 2**30:.1f} GiB per chip"
                + ("" if limit is None else f" ({'fits' if fits else 'over'} {limit / 2**30:.1f} GiB)"))
            tried.append((rung, used))
            if fits:
                return Choice(run_cfg, mesh, rung, used, hbm, compiled, lines)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    raise ValueError("no rung of the ladder fits: " + "; ".join(f"{r.describe()} {u / 2**30:.1f} GiB" for r, u in tried)
                     + f" per chip against {limit / 2**30:.1f} GiB usable; use a larger slice or a smaller batch")
