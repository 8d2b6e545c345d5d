"""The training step of an experiment with its prompt rounds scanned and unrolled, timed side by side.

    python -m benchmarks.train_rounds                          # tiny_synthetic, 30 interleaved steps each
    python -m benchmarks.train_rounds --experiment sa1b_vitb --steps 3 --config.data.batch_size=2

Both steps are compiled first (same config, same random batch, same initial state); then calls alternate
between them so that machine noise hits both alike. Prints the median and minimum step time of each and the
ratio. `unroll_rounds` changes how XLA compiles the rounds, not the values (tests/test_prompts.py).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from samjax import experiment, train, train_state


def build(name: str, overrides: list[str], unroll: bool):
    cfg = experiment.apply_overrides(experiment.load_experiment(name),
                                     overrides + [f"--config.prompts.unroll_rounds={unroll}"])
    model_cfg = experiment.model_config(cfg)
    mesh = train_state.make_mesh(cfg.mesh.to_dict())
    tx, step, _, shardings = train.compiled_step(cfg, model_cfg, mesh)
    with jax.set_mesh(mesh):
        state = train_state.init_state(train.initial_params(cfg, model_cfg), tx, cfg.seed, shardings)
    return cfg, model_cfg, mesh, step, state


def random_batch(cfg, model_cfg, seed: int = 0) -> dict:
    """Rectangles as masks (valid, with their boxes) on a noise image: shapes and dtypes of the pipeline's batch."""
    b, m, s, k = cfg.data.batch_size, cfg.data.max_masks_per_image, model_cfg.image_size, model_cfg.mask_input_size
    rng = np.random.default_rng(seed)
    masks, boxes = np.zeros((b, m, k, k), bool), np.zeros((b, m, 4), np.float32)
    for i in range(b):
        for j in range(m):
            y, x = rng.integers(0, k * 3 // 4, 2)
            masks[i, j, y:y + k // 4, x:x + k // 5] = True
            boxes[i, j] = np.array([x, y, x + k // 5, y + k // 4]) * (s / k)
    return {"image": rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8), "input_hw": np.full((b, 2), s, np.int32),
            "masks": masks, "mask_valid": np.ones((b, m), bool), "boxes": boxes}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="tiny_synthetic")
    p.add_argument("--steps", type=int, default=30, help="timed calls of each step (after 3 warm-up calls)")
    a, overrides = p.parse_known_args(argv)
    runs = {}
    for unroll in (False, True):
        cfg, model_cfg, mesh, step, state = build(a.experiment, overrides, unroll)
        t = time.perf_counter()
        batch = train.to_global(random_batch(cfg, model_cfg), mesh)
        nan = np.full((8,), -1, np.int32)
        with jax.set_mesh(mesh):
            for _ in range(3):
                state, out = step(state, batch, nan)
            jax.block_until_ready(out)
        runs["unrolled" if unroll else "scan"] = [mesh, step, state, batch, nan, [], time.perf_counter() - t]
    for _ in range(a.steps):
        for r in runs.values():
            mesh, step, state, batch, nan, times, _ = r
            with jax.set_mesh(mesh):
                t = time.perf_counter()
                r[2], out = step(state, batch, nan)
                jax.block_until_ready(out)
                times.append(time.perf_counter() - t)
    rounds = 1 + cfg.prompts.num_click_rounds + cfg.prompts.no_click_rounds
    print(f"{a.experiment}: batch {cfg.data.batch_size} images x {cfg.data.max_masks_per_image} masks, {rounds} "
          f"rounds, {jax.device_count()} {jax.devices()[0].platform} device(s), {a.steps} interleaved steps each")
    print("| rounds | median ms | min ms | images/s | compile + 3 warm-up s |\n|---|---|---|---|---|")
    med = {}
    for name, r in runs.items():
        ts = np.array(r[5]) * 1e3
        med[name] = float(np.median(ts))
        print(f"| {name} | {med[name]:.1f} | {ts.min():.1f} | {cfg.data.batch_size / med[name] * 1e3:.1f} | {r[6]:.1f} |")
    print(f"unrolled / scan (median): {med['unrolled'] / med['scan']:.2f}")


if __name__ == "__main__":
    main()
