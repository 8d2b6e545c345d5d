"""device run 5: ViT-H / ViT-B encoder b8, side by side in one process: windowed blocks partitioned before the qkv
projection (official order) vs q/k/v and proj on the unpadded grid (PROJECT_UNPADDED, exact), and that plus the
tanh GELU; then bf16 agreement, decoder rows. Params made on the CPU once per model; compiles in parallel threads;
timing interleaved."""
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


VARIANTS = [("partition first", False, C.gelu), ("project unpadded", True, C.gelu),
            ("unpadded + tanh gelu", True, tanh_gelu)]
cfgs = D.models(TINY)
built = {}
for model in ("vit_h", "vit_b"):
    cfg = cfgs[model].replace(dtype="bfloat16", attention="auto")
    params = jax.device_put(D.host_params(cfg))
    images = jnp.asarray(np.random.default_rng(0).standard_normal((8, cfg.image_size, cfg.image_size, 3)), cfg.jnp_dtype)
    for name, unpadded, act in VARIANTS:
        IE.PROJECT_UNPADDED, IE.gelu = unpadded, act
        try:
            fn = jax.jit(lambda p, x, c=cfg: Sam(c).apply({"params": p}, x, method=Sam.embed_images))
            built[(model, name)] = dict(lowered=fn.lower(params, images), args=(params, images), cfg=cfg, times=[])
            print(el(), "lowered", model, name, flush=True)
        except Exception as e:
            traceback.print_exc()
        finally:
            IE.PROJECT_UNPADDED, IE.gelu = True, C.gelu


def comp(key):
    t = time.perf_counter()
    try:
        built[key]["compiled"] = built[key]["lowered"].compile()
    except Exception as e:
        built[key]["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    built[key]["compile_s"] = time.perf_counter() - t
    print(el(), "compiled", key, f"{built[key]['compile_s']:.1f} s", built[key].get("error", ""), flush=True)


with ThreadPoolExecutor(3) as ex:
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
    ref = outs[(key[0], "partition first")]
    diff = float(np.abs(outs[key] - ref).max()) if key in outs else float("nan")
    D.row("encoder", f"{key[0]} bf16 b8 auto, {key[1]}", 8 / sec, "images/s",
          metrics.encoder_flops(v["cfg"]) * 8 / sec / peak,
          f"({sec * 1e3:.2f} ms, min {1e3 * min(v['times']):.2f}, n={len(v['times'])}, compile {v['compile_s']:.0f} s; "
          f"max |diff| vs partition first {diff:.3g})")
for key in built:
    if "compiled" not in built[key]:
        D.row("encoder", f"{key}", "failed", "", note=built[key].get("error", ""))
built.clear()
print(el(), "agreement", flush=True)
budget = D.Budget(10 ** 6)
try:
    D.bench_agreement(cfgs["vit_b"], budget)
    cfg = cfgs["vit_b"]
    params = jax.device_put(D.host_params(cfg, seed=1))
    rng = np.random.default_rng(2)
    image = jnp.asarray(rng.standard_normal((1, cfg.image_size, cfg.image_size, 3)), jnp.float32)
    coords = jnp.asarray(rng.uniform(0, cfg.image_size, (16, 1, 2)), jnp.float32)
    labels = jnp.ones((16, 1), jnp.int32)
    def run(enc, dec):
        def fn(p, x, xy, lab):
            emb = Sam(cfg.replace(dtype=enc)).apply({"params": p}, x, method=Sam.embed_images)
            emb = jnp.broadcast_to(emb.astype(jnp.float32), (xy.shape[0],) + emb.shape[1:])
            return Sam(cfg.replace(dtype=dec)).apply({"params": p}, emb, xy, lab, None, None, True, method=Sam.decode)
        return np.asarray(jax.jit(fn)(params, image, coords, labels)[0], np.float32) > 0
    ref = run("float32", "float32")
    IE.gelu = tanh_gelu
    got = run("bfloat16", "bfloat16")
    inter, union = (ref & got).sum((-1, -2)), (ref | got).sum((-1, -2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    D.row("bf16", "mask IoU, bf16 encoder with tanh GELU + bf16 decoder vs float32 exact GELU: mean", float(iou.mean()),
          "IoU", note=f"(min {iou.min():.4f})")
except Exception:
    traceback.print_exc()
finally:
    IE.gelu = C.gelu
print(el(), "decoder", flush=True)
try:
    D.bench_decoder(cfgs["vit_b"], 3 if TINY else 10, peak, budget)
except Exception:
    traceback.print_exc()
with open(f"{OUT}/run5.json", "w") as f:
    json.dump({"device": dev.device_kind, "jax": jax.__version__, "rows": D.ROWS}, f, indent=1)
print(el(), "done", flush=True)
