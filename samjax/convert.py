"""Convert an official checkpoint to a samjax model directory.

    python -m samjax.convert --checkpoint sam_vit_h_4b8939.pth --model vit_h --out ckpt/sam_vit_h

The output directory holds `config.json` and an orbax checkpoint of the parameters (`params/`), which
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
from samjax.models import SamConfig
from samjax.weights import store
from samjax.weights.keys import CheckpointMismatchError
from samjax.weights.pth import load_torch_checkpoint
from samjax.weights.sam import PRESETS, check_state_dict, detect_model, from_torch, random_state_dict, to_torch, torch_shapes

__all__ = ["from_torch", "to_torch", "load_torch_checkpoint", "detect_model", "check_state_dict", "torch_shapes",
           "random_state_dict", "CheckpointMismatchError", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samjax.convert", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="official SAM .pth (e.g. sam_vit_h_4b8939.pth)")
    parser.add_argument("--model", default="auto", choices=("auto", *PRESETS),
                        help="model size; 'auto' detects it from the checkpoint")
    parser.add_argument("--out", required=True, help="output directory (orbax params + config.json)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="compute dtype recorded in the config (params stay float32)")
    args = parser.parse_args(argv)
    runtime.check_devices()
    try:
        sd = load_torch_checkpoint(args.checkpoint)
        model = detect_model(sd) if args.model == "auto" else args.model
        if model is None:
            check_state_dict(sd, SamConfig.vit_b())  # raises with the full list of differences
        config = SamConfig.from_name(model, dtype=args.dtype)
        params = from_torch(sd, config)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = store.save_model(args.out, params, config)
    n = sum(np.size(x) for x in jax.tree.leaves(params))
    print(f"converted {args.checkpoint} ({model}, {n / 1e6:.1f}M parameters) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
