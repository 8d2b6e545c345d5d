"""Train SAM: `python -m samjax.train --experiment=NAME --workdir=DIR [--config.FIELD=VALUE ...]`.

NAME is a file in experiments/ (sa1b_vith, sa1b_vitl, sa1b_vitb, finetune, tiny_synthetic) or a path to a .py file
whose get_config() returns the ConfigDict (`--config=PATH` works too, as with ml_collections.config_flags, which
parses the `--config.FIELD=VALUE` overrides). Re-running the same command with the same workdir resumes from the
latest checkpoint, bit-identically. Everything is written under WORKDIR: config.json, checkpoints/, tensorboard/,
model/ (samjax.infer.load format), eval.json, and for synthetic experiments data/ and demo.png.

On TPU / GPU the mesh, the rematerialisation of encoder blocks and prompt rounds, and gradient accumulation are
chosen to fit the chips (samjax.training.fit: least recomputation that leaves 15% of memory free); fields given on
the command line are kept. `--aot=TOPOLOGY` compiles the exact step for a slice without it (libtpu on a CPU host,
JAX_PLATFORMS=cpu), runs nothing and reads no data: what it would choose, memory per chip, compile time and the cost
model's step time, as a summary and one JSON line (samjax.training.aot).

Flags:
  --experiment=NAME     an experiment name or a path to one (or --config=PATH)
  --workdir=DIR         where the run writes; re-running resumes
  --config.FIELD=VALUE  overrides, e.g. --config.optim.lr=1e-4 --config.mesh.fsdp=8 (see samjax.training.config)
  --aot=TOPOLOGY        dry run for a slice: v5p:4x4x4, v5e:16x16, v4:4x4x8, ... (exit 0 fits, 1 does not)
Exit status: 0 done (or preempted and saved), 1 the --aot slice does not fit, 2 bad usage or a TPU held by another
process, 3 too many non-finite steps in a row.
"""

from __future__ import annotations

import sys

from samjax import runtime
from samjax.training import aot, fit
from samjax.training import config as config_lib
from samjax.training.loop import NonFiniteError, train

__all__ = ["main", "train"]


NAMED = ("--experiment=", "--config=", "--workdir=", "--aot=")


def parse(argv: list[str]) -> tuple[dict, object]:
    """argv (without the program name) -> ({"--workdir": ..., "--aot": ...}, overridden config); ValueError /
    FileNotFoundError when wrong. Overrides of the fields samjax.training.fit chooses are recorded in
    config.fit.fixed, so the rule keeps them."""
    named = dict(a.split("=", 1) for a in argv if a.startswith(NAMED))
    overrides = [a for a in argv if a.startswith("--config.")]
    unknown = [a for a in argv if not a.startswith((*NAMED, "--config."))]
    experiment = named.get("--experiment", named.get("--config"))
    if unknown or not experiment or not named.get("--workdir"):
        raise ValueError("usage: python -m samjax.train --experiment=NAME --workdir=DIR [--config.FIELD=VALUE ...] "
                         "[--aot=TOPOLOGY]" + (f"; unknown arguments {unknown}" if unknown else ""))
    cfg = config_lib.apply_overrides(config_lib.load_experiment(experiment), overrides)
    given = {a[len("--config."):].split("=", 1)[0] for a in overrides}
    cfg.fit.fixed = tuple(sorted(set(cfg.fit.fixed) | (given & set(fit.FIT_FIELDS))))
    return named, cfg


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        named, cfg = parse(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if named.get("--aot"):
        return aot.main(cfg, named["--aot"])
    workdir = named["--workdir"]
    with runtime.accelerator_errors():  # a TPU held by another process: one line, exit code 2
        runtime.maybe_initialize_distributed()
        runtime.check_devices()
    try:
        s = train(cfg, workdir)
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    print(f"finished: {s['stopped']} at step {s['step']}; workdir {s['workdir']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
