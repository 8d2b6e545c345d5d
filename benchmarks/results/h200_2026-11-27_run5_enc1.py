"""One encoder timing in its own process (for XLA_FLAGS variants): python .gpu/enc1.py LABEL [vit_h|vit_b] [--tiny]"""
import os, sys, time
import jax
from benchmarks import device as D
from samjax import metrics
label, model = sys.argv[1], sys.argv[2]
tiny = "--tiny" in sys.argv
cfg = D.models(tiny)[model].replace(dtype="bfloat16", attention="auto")
fn, args = D.encoder_call(cfg, 8)
first, sec = D.timeit(lambda: fn(*args), 3 if tiny else 20, warmup=3)
peak = metrics.peak_flops_per_device(jax.devices()[0]) or 1e30
D.row("encoder", f"{model} bf16 b8 auto [{label}] XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}", 8 / sec, "images/s",
      metrics.encoder_flops(cfg) * 8 / sec / peak, f"({sec * 1e3:.2f} ms, first call {first:.1f} s)")
