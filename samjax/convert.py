"""Convert an official checkpoint to a samjax model directory.

    python -m samjax.convert --checkpoint sam_vit_h_4b8939.pth --model vit_h --out ckpt/sam_vit_h
    python -m samjax.convert --checkpoint sam_hq_vit_l.pth --out ckpt/sam_hq_vit_l          # --model auto

`--model auto` (the default) recognises every official checkpoint of SAM (vit_b/l/h), HQ-SAM (sam_hq_vit_b/l/h,
sam_hq_vit_tiny), MobileSAM (mobile_sam), EfficientViT-SAM (efficientvit_sam_l0 ... xl1) and SAM 2 / 2.1
(sam2.1_hiera_t ... sam2_hiera_l) from its key set and shapes. The output directory holds `config.json` (naming the
family) and orbax checkpoints of the parameters (`params/`, and `batch_stats/` for BatchNorm encoders), which
`samjax.infer.load(DIR)` reads. In Python, `samjax.convert.from_torch(state_dict, SamConfig.vit_h())` converts a
state dict (torch tensors or numpy arrays with the official key names); `load_torch_checkpoint(path)` reads one.
The key tables live in `samjax.weights`.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np

from samjax import runtime
from samjax.weights import detect, store
from samjax.weights.keys import CheckpointMismatchError
from samjax.weights.pth import load_torch_checkpoint
from samjax.weights.sam import (
    check_state_dict,
    detect_model,
    from_torch,
    random_state_dict,
    to_torch,
    torch_shapes,
)

__all__ = ["from_torch", "to_torch", "load_torch_checkpoint", "detect_model", "check_state_dict", "torch_shapes",
           "random_state_dict", "CheckpointMismatchError", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samjax.convert", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True,
                        help="official checkpoint (e.g. sam_vit_h_4b8939.pth, sam_hq_vit_b.pth, mobile_sam.pt, "
                             "efficientvit_sam_l0.pt, sam2.1_hiera_tiny.pt)")
    presets = [n for names in detect.PRESETS.values() for n in names]
    parser.add_argument("--model", default="auto", choices=("auto", *presets), metavar="MODEL",
                        help="'auto' detects family and preset from the checkpoint; or one of " + ", ".join(presets))
    parser.add_argument("--out", required=True, help="output directory (orbax params + config.json)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="compute dtype recorded in the config (params stay float32)")
    args = parser.parse_args(argv)
    runtime.check_devices()
    try:
        config, tree = detect.convert(load_torch_checkpoint(args.checkpoint), args.model)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config = store.override(config, dtype=args.dtype)
    out = store.save_model(args.out, tree, config)
    n = sum(np.size(x) for x in jax.tree.leaves(tree))
    family = store.family_name(config)
    print(f"converted {args.checkpoint} ({family}, {n / 1e6:.1f}M values) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
