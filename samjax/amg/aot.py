"""Will a model serve on a chip you do not have? Compile the Predictor's and the automatic mask generator's jitted
functions for it, ahead of time, and read their memory.

    JAX_PLATFORMS=cpu python -m samjax.amg --aot=v5e:1x1 --model-type vit_h      # Colab's free TPU: one v5e chip
    JAX_PLATFORMS=cpu python -m samjax.amg --aot=v5e:1x1 --checkpoint ckpt/sam_vit_h

What is compiled, on one chip of the topology: the image encoder (one image), the prompt decoder (`--prompts`
prompts of one point, multimask) and one crop of the automatic mask generator (`--points-per-side` squared points
in batches of `--points-per-batch`, the official defaults 32 and 64), in bfloat16. Only shapes are needed: a
checkpoint gives the config (no weights are read), or `--model-type` names a SAM size. Prints one line per function
and one JSON line; exit 0 when the largest fits the chip with 15% of its memory free, 1 when not. The figures are
XLA's (memory analysis) and the loop-counting cost model's (samjax.aot), not measurements.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import numpy as np
from jax.sharding import SingleDeviceSharding

from samjax import aot
from samjax.amg import geometry
from samjax.amg.generator import _crop_candidates, crop_inputs
from samjax.infer import predictor as predictor_lib
from samjax.infer.families import family_for
from samjax.models import SamConfig, attention
from samjax.weights import store

HEADROOM = 0.15


def _on(tree, sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), tree)


def dry_run(config, topology: str, prompts: int = 64, points_per_side: int = 32, points_per_batch: int = 64,
            image_hw: tuple[int, int] = (768, 1024), headroom: float = HEADROOM) -> dict:
    """{"topology", "device_kind", "hbm_bytes", "functions": {name: {"per_chip_bytes", "compile_seconds",
    "modelled_seconds"}}, "per_chip_bytes" (the largest), "fits"}."""
    device = aot.topology_devices(topology)[0]
    kind = device.device_kind
    one = SingleDeviceSharding(device)
    family = family_for(config)
    variables = _on(family.abstract_variables(), one)
    dvars = family.decoder_variables(variables)
    s = family.encoder_size
    images = jax.ShapeDtypeStruct((1, s, s, 3), np.uint8, sharding=one)
    hw = jax.ShapeDtypeStruct((1, 2), np.int32, sharding=one)
    out, functions = {"topology": topology, "device_kind": kind, "hbm_bytes": aot.by_kind(aot.HBM_BYTES, kind)}, {}

    def compile_(name, fn, *args, **statics):
        t = time.perf_counter()
        compiled = fn.lower(*args, **statics).compile()
        functions[name] = {"per_chip_bytes": aot.footprint(compiled),
                           "compile_seconds": round(time.perf_counter() - t, 1),
                           "modelled_seconds": aot.loop_cost(compiled, kind).seconds}
        print(f"{name}: {functions[name]['per_chip_bytes'] / 2**30:.2f} GiB, compiled in "
              f"{functions[name]['compile_seconds']:.0f} s, "
              f"modelled {1e3 * functions[name]['modelled_seconds']:.1f} ms",
              flush=True)

    with attention.for_platform(device.platform):
        compile_("encoder (1 image)", predictor_lib._encode, variables, images, hw, family=family)
        features = _on(jax.eval_shape(lambda v: predictor_lib._encode(v, images, hw, family=family), variables), one)
        pe = _on(jax.eval_shape(lambda d: predictor_lib.dense_pe(d, family=family), dvars), one)
        cache = _on(jax.eval_shape(lambda d, f, p: predictor_lib._image_cache(d, f, p, family=family), dvars,
                                   features, pe), one)
        coords = jax.ShapeDtypeStruct((prompts, 2, 2), np.float32, sharding=one)
        labels = jax.ShapeDtypeStruct((prompts, 2), np.int32, sharding=one)
        compile_(f"decoder ({prompts} point prompts, multimask)", predictor_lib._decode, dvars, features, coords,
                 labels, None, pe, cache, family=family, multimask_output=True, options=())
        grid = geometry.build_point_grid(points_per_side) * np.array([[image_hw[1], image_hw[0]]])
        input_size = tuple(int(v) for v in np.round(np.array(image_hw) * s / max(image_hw)))
        args = crop_inputs(family, grid, points_per_batch, input_size, image_hw, image_hw,
                           (0, 0, image_hw[1], image_hw[0]), (0.88, 0.95, 1.0, 0.7))
        compile_(f"automatic masks (one crop, {points_per_side}x{points_per_side} points)", _crop_candidates, dvars,
                 features, *_on(args, one), family=family, multimask_output=True, options=())
    largest = max(f["per_chip_bytes"] for f in functions.values())
    out.update(functions=functions, per_chip_bytes=largest,
               fits=out["hbm_bytes"] is None or largest <= (1 - headroom) * out["hbm_bytes"])
    return out


def main(a) -> int:
    """`python -m samjax.amg --aot=...` (its parsed arguments): summary lines and one JSON line."""
    try:
        config = (store.load_config(a.checkpoint) if a.checkpoint else SamConfig.from_name(a.model_type))
        config = config.replace(dtype="bfloat16") if isinstance(config, SamConfig) else config
        res = dry_run(config, a.aot, 64, a.points_per_side, a.points_per_batch)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    hbm = res["hbm_bytes"]
    print(f"{res['topology']} ({res['device_kind']}, {hbm / 2**30:.1f} GiB): the largest needs "
          f"{res['per_chip_bytes'] / 2**30:.2f} GiB per chip: {'fits' if res['fits'] else 'does NOT fit'} with "
          f"{HEADROOM:.0%} kept free", flush=True)
    print(json.dumps(res), flush=True)
    return 0 if res["fits"] else 1
