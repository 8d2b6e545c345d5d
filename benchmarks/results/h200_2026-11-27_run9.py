"""device run 9: (a) ViT-H encoder b8 bf16 with erf GELU vs tanh GELU (bf16, the pattern XLA's GEMM rewriter can
fuse into a cuBLASLt bias+GELU epilogue), in-process, interleaved; run once per XLA_FLAGS setting (separate
processes). (b) role=dec: the decoder section only (run from two source trees by the driver)."""
import json, os, statistics, sys, time
import jax, jax.numpy as jnp, numpy as np
from benchmarks import device as D
from samjax import metrics
from samjax.models import Sam, image_encoder as IE

TINY = "--tiny" in sys.argv
T0 = time.perf_counter()
dev = jax.devices()[0]
peak = metrics.peak_flops_per_device(dev) or 1e30
print(f"[{time.perf_counter()-T0:5.1f}s] {jax.__version__} {dev.device_kind} XLA_FLAGS={os.environ.get('XLA_FLAGS','')}", flush=True)
ORIG = IE.gelu
def tanh_bf16(x):
    return jax.nn.gelu(x, approximate=True)
VARIANTS = [("erf", ORIG), ("tanh", tanh_bf16)]
model = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "vit_h"
cfg = D.models(TINY)[model].replace(dtype="bfloat16", attention="auto")
params = jax.device_put(D.host_params(cfg))
images = jnp.asarray(np.random.default_rng(0).standard_normal((8, cfg.image_size, cfg.image_size, 3)), cfg.jnp_dtype)
built = {}
for name, act in VARIANTS:
    IE.gelu = act
    fn = jax.jit(lambda p, x: Sam(cfg).apply({"params": p}, x, method=Sam.embed_images))
    t = time.perf_counter()
    built[name] = dict(c=fn.lower(params, images).compile(), times=[])
    print(f"[{time.perf_counter()-T0:5.1f}s] compiled {name} {time.perf_counter()-t:.1f} s", flush=True)
    IE.gelu = ORIG
outs = {}
for rep in range(3):
    for name, v in built.items():
        for i in range(2 + (2 if TINY else 10)):
            t = time.perf_counter()
            out = v["c"](params, images); jax.block_until_ready(out)
            if i >= 2:
                v["times"].append(time.perf_counter() - t)
        outs[name] = np.asarray(out[:1, :8, :8].astype(jnp.float32))
for name, v in built.items():
    sec = statistics.median(v["times"])
    D.row("encoder", f"{model} bf16 b8 gelu={name} flags={os.environ.get('XLA_FLAGS','-')}", 8 / sec, "images/s",
          metrics.encoder_flops(cfg) * 8 / sec / peak,
          f"({sec*1e3:.2f} ms, min {1e3*min(v['times']):.2f}; max|diff| vs erf {float(np.abs(outs[name]-outs['erf']).max()):.3g})")
