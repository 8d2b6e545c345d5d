"""device run 4: the ViT-B train step (current code) with full remat of the rounds vs remat keeping the matrix
products; params made on the CPU (the GPU init compile took minutes in run 3); compiles in parallel threads."""
import json, os, statistics, sys, time, traceback
from concurrent.futures import ThreadPoolExecutor
import jax, jax.numpy as jnp, numpy as np
from benchmarks import device as D
from samjax import metrics, train, train_state
from samjax.models import init_params

TINY = "--tiny" in sys.argv
OUT = os.environ.get("OUT", "/tmp")
T0 = time.perf_counter()
def el(): return f"[{time.perf_counter() - T0:6.1f}s]"
dev = jax.devices()[0]
peak = metrics.peak_flops_per_device(dev) or 1e30
print(el(), jax.__version__, dev.device_kind, flush=True)
images = 1 if TINY else 2
variants = [("full remat", "nothing_saveable"), ("remat keeps dots", "dots_with_no_batch_dims_saveable")]
built, params = {}, None
for name, policy in variants:
    try:
        cfg, mc = D.vitb_train_config(TINY, images)
        cfg.prompts.remat_policy = policy
        mesh = train_state.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
        tx, step, abstract, shardings = train.compiled_step(cfg, mc, mesh)
        if params is None:
            with jax.default_device(jax.devices("cpu")[0]):
                params = jax.tree.map(np.asarray, init_params(mc, jax.random.PRNGKey(0)))
            print(el(), "params on cpu", flush=True)
        state = train_state.init_state(params, tx, 0, shardings)
        batch = D.synthetic_train_batch(images, cfg.data.max_masks_per_image, mc.image_size, mc.mask_input_size)
        args = (train.to_global(batch, mesh), jnp.asarray([-1], jnp.int32))
        built[name] = dict(lowered=step.lower(state, *args), state=state, args=args, cfg=cfg, mc=mc, times=[])
        print(el(), "lowered", name, flush=True)
    except Exception as e:
        traceback.print_exc(); D.row("train", name, "failed", "", note=f"{type(e).__name__}: {str(e)[:200]}")
def comp(name):
    t = time.perf_counter()
    try:
        built[name]["compiled"] = built[name]["lowered"].compile()
    except Exception as e:
        built[name]["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    built[name]["compile_s"] = time.perf_counter() - t
    print(el(), "compiled", name, f"{built[name]['compile_s']:.1f} s", built[name].get("error", ""), flush=True)
with ThreadPoolExecutor(len(built)) as ex:
    list(ex.map(comp, list(built)))
for name, v in built.items():
    if "compiled" in v:
        ma = v["compiled"].memory_analysis()
        print(name, f"temp {ma.temp_size_in_bytes / 2**30:.2f} GiB, args {ma.argument_size_in_bytes / 2**30:.2f} GiB", flush=True)
live = [n for n, v in built.items() if "compiled" in v]
for rep in range(1 if TINY else 3):
    for name in list(live):
        v = built[name]
        try:
            for i in range(3):
                t = time.perf_counter()
                v["state"], out = v["compiled"](v["state"], *v["args"]); jax.block_until_ready(out)
                if rep > 0 or i > 0:
                    v["times"].append(time.perf_counter() - t)
            v["loss"] = float(out["loss"])
        except Exception as e:
            v["error"] = f"{type(e).__name__}: {str(e)[:300]}"; live.remove(name); traceback.print_exc()
    print(el(), "timing round", rep, flush=True)
for name, v in built.items():
    if v.get("times"):
        sec = statistics.median(v["times"])
        flops, rounds = D.train_step_flops(v["cfg"], v["mc"])
        D.row("train", f"vit_b step ({name}): {images} images x {v['cfg'].data.max_masks_per_image} masks x {rounds} rounds",
              images / sec, "images/s", flops / sec / peak,
              f"({sec * 1e3:.1f} ms/step, min {1e3 * min(v['times']):.1f}, n={len(v['times'])}, compile {v['compile_s']:.0f} s "
              f"in parallel, loss {v['loss']:.4f})")
    else:
        D.row("train", name, "failed", "", note=v.get("error", ""))
with open(f"{OUT}/run4.json", "w") as f:
    json.dump({"device": dev.device_kind, "jax": jax.__version__, "rows": D.ROWS}, f, indent=1)
print(el(), "done")
