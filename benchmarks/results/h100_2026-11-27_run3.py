"""device run 3 (H100): the current code's table, and A/Bs in one process: nn.Conv vs PatchConv (patch embedding,
mask downscaling) and the rounds' remat policy. --tiny: any machine."""
import json, os, statistics, sys, time, traceback
from concurrent.futures import ThreadPoolExecutor
import jax, jax.numpy as jnp, numpy as np, flax.linen as nn
from benchmarks import device as D
from samjax import metrics, train
from samjax.models import common, image_encoder, prompt_encoder, attention as A

TINY = "--tiny" in sys.argv
OUT = os.environ.get("OUT", "/tmp")
T0 = time.perf_counter()
def el(): return f"[{time.perf_counter() - T0:6.1f}s]"
dev = jax.devices()[0]
peak = metrics.peak_flops_per_device(dev) or 1e30
print(el(), jax.__version__, dev.device_kind, peak, flush=True)
cfgs = D.models(TINY)
budget = D.Budget(1e9)
new_conv = common.conv
def old_conv(features, kernel, *, stride=1, padding=0, axes, name=None, dtype, use_bias=True):
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((padding, padding), (padding, padding)),
                   use_bias=use_bias, dtype=dtype, param_dtype=common.f32, name=name,
                   kernel_init=common.partitioned(nn.initializers.lecun_normal(), ("conv_h", "conv_w", *axes)),
                   bias_init=common.partitioned(nn.initializers.zeros_init(), axes[1:]))
def use(fn):
    image_encoder.conv = prompt_encoder.conv = fn
    jax.clear_caches(); train._STEP_CACHE.clear()
def save():
    with open(f"{OUT}/run3.json", "w") as f:
        json.dump({"device": dev.device_kind, "jax": jax.__version__, "rows": D.ROWS}, f, indent=1)

if not TINY:
    n = 8192
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16); b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
    f = jax.jit(lambda a, b: a @ b); f(a, b).block_until_ready()
    t = time.perf_counter()
    for _ in range(20): c = f(a, b)
    c.block_until_ready(); print(el(), f"matmul {n}^3 bf16: {2*n**3/((time.perf_counter() - t) / 20)/1e12:.0f} TFLOP/s", flush=True)
    del a, b, c

# 1. encoders (PatchConv), then ViT-B b8 with nn.Conv as the A/B
it = 3 if TINY else 10
D.bench_encoder("vit_h", cfgs["vit_h"], 8, "auto", it, peak, budget)
D.bench_encoder("vit_b", cfgs["vit_b"], 8, "auto", it, peak, budget)
use(old_conv); D.bench_encoder("vit_b(nn.Conv patch embed)", cfgs["vit_b"], 8, "auto", it, peak, budget); use(new_conv)
D.bench_encoder("vit_h", cfgs["vit_h"], 1, "auto", it, peak, budget)
D.bench_encoder("vit_b", cfgs["vit_b"], 1, "auto", it, peak, budget)
save()

# 2. train step variants: lowered one by one, compiled concurrently, timed interleaved
images = 1 if TINY else 2
variants = [("patch", new_conv, "nothing_saveable"), ("nn.Conv", old_conv, "nothing_saveable"),
            ("patch, remat keeps dots", new_conv, "dots_with_no_batch_dims_saveable")]
built = {}
for name, conv, policy in variants:
    use(conv)
    try:
        cfg, mc = D.vitb_train_config(TINY, images)
        cfg.prompts.remat_policy = policy
        from samjax import train_state
        mesh = train_state.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
        tx, step, abstract, shardings = train.compiled_step(cfg, mc, mesh)
        from samjax.models import init_params
        state = train_state.init_state(init_params(mc, jax.random.PRNGKey(0)), tx, 0, shardings)
        batch = D.synthetic_train_batch(images, cfg.data.max_masks_per_image, mc.image_size, mc.mask_input_size)
        args = (train.to_global(batch, mesh), jnp.asarray([-1], jnp.int32))
        built[name] = dict(lowered=step.lower(state, *args), state=state, args=args, cfg=cfg, mc=mc, times=[])
        print(el(), "lowered", name, flush=True)
    except Exception as e:
        traceback.print_exc(); D.row("train", name, "failed", "", note=f"{type(e).__name__}: {str(e)[:200]}")
use(new_conv)
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
        try:
            ma = v["compiled"].memory_analysis()
            print(name, "temp GiB", ma.temp_size_in_bytes / 2**30, "args GiB", ma.argument_size_in_bytes / 2**30, flush=True)
        except Exception as e:
            print(name, "memory_analysis:", e)
live = [n for n, v in built.items() if "compiled" in v]
for rep in range(3 if not TINY else 1):
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
del built
save()

# 3. decoder (Predictor path, bf16), 64 and 256 prompts
c = cfgs["vit_b"].replace(dtype="bfloat16")
for p in (64, 256):
    fn, args = D.decoder_call(c, p)
    first, sec = D.timeit(lambda: fn(*args), it)
    D.row("decoder", f"bfloat16 {p} prompts/call", p / sec, "prompts/s",
          metrics.decoder_flops(c, 2, mask_prompt=False) * p / sec / peak, f"(first call {first:.1f} s)")
save()
# 4. bf16 vs float32 masks
D.bench_agreement(cfgs["vit_b"], budget)
save()
print("\n| section | measurement | value | unit | MFU | note |\n|---|---|---|---|---|---|")
for r in D.ROWS:
    v = f"{r['value']:.4g}" if isinstance(r["value"], float) else r["value"]
    m = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else ""
    print(f"| {r['section']} | {r['what']} | {v} | {r['unit']} | {m} | {r['note']} |")
print(el(), "done")
