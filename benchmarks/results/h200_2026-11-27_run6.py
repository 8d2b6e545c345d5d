"""device run 6 (after run 5): ViT-H / ViT-B encoder b8 side by side in one process, all on the unpadded projection:
as is, q/k/v as three products (an experimental image_encoder.SPLIT_QKV, removed after this run: no gain), and the
windowed blocks through cudnn_bias or xla attention (global blocks stay cudnn); then the ViT-B training step.
Params made on the CPU once per model; compiles in parallel threads; timing interleaved."""
import json, os, statistics, sys, time, traceback
from concurrent.futures import ThreadPoolExecutor
import jax, jax.numpy as jnp, numpy as np
from benchmarks import device as D
from samjax import metrics
from samjax.models import Sam, image_encoder as IE, common as C

TINY = "--tiny" in sys.argv
OUT = os.environ.get("OUT", "/tmp")
T0 = time.perf_counter()
def el(): return f"[{time.perf_counter() - T0:6.1f}s]"
dev = jax.devices()[0]
peak = metrics.peak_flops_per_device(dev) or 1e30
print(el(), jax.__version__, dev.device_kind, flush=True)


def tanh_gelu(x):
    return jax.nn.gelu(x.astype(jnp.float32), approximate=True).astype(x.dtype)


from samjax.models import attention as A
ORIG = A.resolve
def windows(impl):
    def resolve(i, dtype, n, lb=0):
        return impl if (i == "auto" and n < 1024) else ORIG(i, dtype, n, lb)
    return resolve
def setup(split=False, win=None):
    IE.SPLIT_QKV = split
    A.resolve = windows(win) if win else ORIG
VARIANTS = [("unpadded", dict()), ("split qkv", dict(split=True)), ("windows cudnn_bias", dict(win="cudnn_bias")),
            ("windows xla", dict(win="xla"))]
cfgs = D.models(TINY)
built = {}
for model in ("vit_h", "vit_b"):
    cfg = cfgs[model].replace(dtype="bfloat16", attention="auto")
    params = jax.device_put(D.host_params(cfg))
    images = jnp.asarray(np.random.default_rng(0).standard_normal((8, cfg.image_size, cfg.image_size, 3)), cfg.jnp_dtype)
    for name, kw in VARIANTS:
        setup(**kw)
        try:
            fn = jax.jit(lambda p, x, c=cfg: Sam(c).apply({"params": p}, x, method=Sam.embed_images))
            built[(model, name)] = dict(lowered=fn.lower(params, images), args=(params, images), cfg=cfg, times=[])
            print(el(), "lowered", model, name, flush=True)
        except Exception as e:
            traceback.print_exc()
        finally:
            setup()


def comp(key):
    t = time.perf_counter()
    try:
        built[key]["compiled"] = built[key]["lowered"].compile()
    except Exception as e:
        built[key]["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    built[key]["compile_s"] = time.perf_counter() - t
    print(el(), "compiled", key, f"{built[key]['compile_s']:.1f} s", built[key].get("error", ""), flush=True)


with ThreadPoolExecutor(4) as ex:
    list(ex.map(comp, list(built)))
live = [k for k, v in built.items() if "compiled" in v]
outs = {}
for rep in range(3):
    for key in live:
        v = built[key]
        for i in range(2 + (2 if TINY else 10)):
            t = time.perf_counter()
            out = v["compiled"](*v["args"]); jax.block_until_ready(out)
            if i >= 2:
                v["times"].append(time.perf_counter() - t)
        outs[key] = np.asarray(out[:1, :8, :8].astype(jnp.float32))
    print(el(), "timing round", rep, flush=True)
for key in live:
    v = built[key]
    sec = statistics.median(v["times"])
    ref = outs[(key[0], "unpadded")]
    diff = float(np.abs(outs[key] - ref).max()) if key in outs else float("nan")
    D.row("encoder", f"{key[0]} bf16 b8 auto, {key[1]}", 8 / sec, "images/s",
          metrics.encoder_flops(v["cfg"]) * 8 / sec / peak,
          f"({sec * 1e3:.2f} ms, min {1e3 * min(v['times']):.2f}, n={len(v['times'])}, compile {v['compile_s']:.0f} s; "
          f"max |diff| vs unpadded {diff:.3g})")
for key in built:
    if "compiled" not in built[key]:
        D.row("encoder", f"{key}", "failed", "", note=built[key].get("error", ""))
built.clear()
print(el(), "train", flush=True)
try:
    D.bench_train(TINY, peak, 3 if TINY else 5, D.Budget(10 ** 6))
except Exception:
    traceback.print_exc()
with open(f"{OUT}/run6.json", "w") as f:
    json.dump({"device": dev.device_kind, "jax": jax.__version__, "rows": D.ROWS}, f, indent=1)
print(el(), "done", flush=True)
