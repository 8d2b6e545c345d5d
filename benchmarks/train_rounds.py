"""The training step of an experiment with its prompt rounds scanned and unrolled, timed side by side.

    python -m benchmarks.train_rounds                          # tiny_synthetic, 30 interleaved steps each
    python -m benchmarks.train_rounds --experiment sa1b_vitb --steps 3 --config.data.batch_size=2

Both steps are compiled first (same config, the synthetic batch of benchmarks.device, same initial state);
then calls alternate between them so that machine noise hits both alike. Prints the median and minimum step time of each and the
ratio. `unroll_rounds` changes how XLA compiles the rounds, not the values (tests/test_prompts.py).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from benchmarks.device import synthetic_train_batch
from samjax import experiment, prompts, train, train_state


def build(name: str, overrides: list[str], unroll: bool):
    cfg = experiment.apply_overrides(experiment.load_experiment(name),
                                     overrides + [f"--config.prompts.unroll_rounds={unroll}"])
    model_cfg = experiment.model_config(cfg)
    mesh = train_state.make_mesh(cfg.mesh.to_dict())
    tx, step, _, shardings = train.compiled_step(cfg, model_cfg, mesh)
    with jax.set_mesh(mesh):
        state = train_state.init_state(train.initial_params(cfg, model_cfg), tx, cfg.seed, shardings)
    return cfg, model_cfg, mesh, step, state


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="tiny_synthetic")
    p.add_argument("--steps", type=int, default=30, help="timed calls of each step (after 3 warm-up calls)")
    a, overrides = p.parse_known_args(argv)
    runs = {}
    for unroll in (False, True):
        cfg, model_cfg, mesh, step, state = build(a.experiment, overrides, unroll)
        t = time.perf_counter()
        batch = train.to_global(synthetic_train_batch(cfg.data.batch_size, cfg.data.max_masks_per_image,
                                                      model_cfg.image_size, model_cfg.mask_input_size), mesh)
        nan = np.full((8,), -1, np.int32)
        with jax.set_mesh(mesh):
            for _ in range(3):
                state, out = step(state, batch, nan)
            jax.block_until_ready(out)
        runs["unrolled" if unroll else "scan"] = {"mesh": mesh, "step": step, "state": state, "batch": batch,
                                                  "nan": nan, "times": [], "first": time.perf_counter() - t}
    for _ in range(a.steps):
        for r in runs.values():
            with jax.set_mesh(r["mesh"]):
                t = time.perf_counter()
                r["state"], out = r["step"](r["state"], r["batch"], r["nan"])
                jax.block_until_ready(out)
                r["times"].append(time.perf_counter() - t)
    rounds = prompts.PromptConfig(**cfg.prompts.to_dict()).num_rounds
    print(f"{a.experiment}: batch {cfg.data.batch_size} images x {cfg.data.max_masks_per_image} masks, {rounds} "
          f"rounds, {jax.device_count()} {jax.devices()[0].platform} device(s), {a.steps} interleaved steps each")
    print("| rounds | median ms | min ms | images/s | compile + 3 warm-up s |\n|---|---|---|---|---|")
    med = {}
    for name, r in runs.items():
        ts = np.array(r["times"]) * 1e3
        med[name] = float(np.median(ts))
        print(f"| {name} | {med[name]:.1f} | {ts.min():.1f} | {cfg.data.batch_size / med[name] * 1e3:.1f} "
              f"| {r['first']:.1f} |")
    print(f"unrolled / scan (median): {med['unrolled'] / med['scan']:.2f}")


if __name__ == "__main__":
    main()
