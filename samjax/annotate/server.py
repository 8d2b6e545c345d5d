"""Assembly and command line of the annotation tool (see samjax.annotate)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import sys
from pathlib import Path

from samjax.annotate.app import MAX_JSON_BYTES, MAX_UPLOAD_BYTES, create_app
from samjax.annotate.engine import Engine, model_fingerprint
from samjax.annotate.storage import CACHE, UPLOADS, AnnotationStore, ImageStore

ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def ort_web_dir(path: str | os.PathLike) -> Path:
    """onnxruntime-web's dist folder: `path` itself, or path/dist (the npm package), or
    path/node_modules/onnxruntime-web/dist (where `npm install onnxruntime-web` ran)."""
    base = Path(path).resolve()
    for cand in (base, base / "dist", base / "node_modules" / "onnxruntime-web" / "dist"):
        if all((cand / f).is_file() for f in ORT_FILES):
            return cand
    raise FileNotFoundError(f"--browser-decode {str(path)!r}: no onnxruntime-web build there (expected "
                            f"{', '.join(ORT_FILES)} in it or in its dist/; `npm install onnxruntime-web` makes "
                            "node_modules/onnxruntime-web/dist)")


def build_app(images: str | os.PathLike, out: str | os.PathLike, *, predictor=None, checkpoint=None,
              token: str | None = None, loopback_only: bool = True, prefill: dict | None = None,
              browser_decode: str | os.PathLike | None = None, max_upload: int = MAX_UPLOAD_BYTES,
              max_json: int = MAX_JSON_BYTES, prefetch_first: bool = True):
    """The ASGI app over `images` writing to `out`. Give a Predictor, or a checkpoint (directory or official .pth)
    to load one. prefill: AutomaticMaskGenerator options for stage 2 (None: off)."""
    from samjax import infer  # noqa: PLC0415

    images_dir, out_dir = Path(images).resolve(), Path(out).resolve()
    if out_dir == images_dir:
        raise ValueError("--out must not be the --images folder (the tool writes <name>.jpg and .json there)")
    image_store = ImageStore(images_dir, out_dir / UPLOADS)  # folder problems first, before the model loads
    if predictor is None:
        if checkpoint is None:
            raise ValueError("give a checkpoint (samjax directory or official .pth)")
        predictor = infer.load(checkpoint)
    store = AnnotationStore(out_dir, image_store)
    fingerprint = model_fingerprint(checkpoint, predictor)
    model_name = Path(checkpoint).name if checkpoint is not None else f"model-{fingerprint}"
    engine = Engine(predictor, image_store, out_dir, model_name, fingerprint, prefill=prefill)
    onnx_model, ort_dir = None, None
    if browser_decode is not None:
        from samjax.export_onnx import build_model  # noqa: PLC0415

        ort_dir = ort_web_dir(browser_decode)
        cached = out_dir / CACHE / f"decoder-{fingerprint}.onnx"
        if cached.is_file():
            onnx_model = cached.read_bytes()
        else:
            onnx_model = build_model(predictor.config, predictor.decoder_variables["params"],
                                     image_pe=predictor.image_pe).SerializeToString()
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(cached.name + f".tmp-{os.getpid()}")
            tmp.write_bytes(onnx_model)
            os.replace(tmp, cached)
    app = create_app(engine, store, token=token, loopback_only=loopback_only, prefill=prefill is not None,
                     browser_decode=ort_dir, onnx_model=onnx_model, max_json=max_json, max_upload=max_upload)
    ids = image_store.ids()
    if prefetch_first and ids:  # the first image's embedding (and the compiles) while the page loads
        engine.prefetch(ids[0])
    return app


def parse_args(argv=None) -> argparse.Namespace:
    from samjax.annotate import __doc__ as doc  # noqa: PLC0415

    p = argparse.ArgumentParser(prog="python -m samjax.annotate", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, help="folder of images to annotate (its files; not written to)")
    p.add_argument("--checkpoint", required=True, help="samjax checkpoint directory or an official SAM .pth")
    p.add_argument("--out", required=True, help="folder for <name>.json + <name>.jpg (SA-1B), uploads and caches")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=None,
                   help="require this token on every API call (a --host other than loopback makes one if not given)")
    p.add_argument("--prefill", action="store_true",
                   help="stage 2: the automatic mask generator's confident masks appear as accepted-but-editable")
    p.add_argument("--points-per-side", type=int, default=32, help="--prefill: AMG point grid (default %(default)s)")
    p.add_argument("--pred-iou-thresh", type=float, default=0.88, help="--prefill: AMG (default %(default)s)")
    p.add_argument("--stability-score-thresh", type=float, default=0.95, help="--prefill: AMG (default %(default)s)")
    p.add_argument("--browser-decode", metavar="ORT_WEB_DIR", default=None,
                   help="decode in the browser with onnxruntime-web from this folder (npm's onnxruntime-web "
                        "package or its dist/); the exported decoder is served to the page. Default: server decode")
    p.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / 2**20,
                   help="largest accepted upload (default %(default)s MiB)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    loopback = is_loopback(a.host)
    token = a.token
    if not loopback and not token:
        token = secrets.token_urlsafe(18)
    prefill = None
    if a.prefill:
        prefill = {"points_per_side": a.points_per_side, "pred_iou_thresh": a.pred_iou_thresh,
                   "stability_score_thresh": a.stability_score_thresh}
    from samjax import runtime  # noqa: PLC0415

    # compiled programs are kept in OUT/.cache/xla (unless $SAMJAX_COMPILATION_CACHE says otherwise): the tool
    # writes nothing outside --out
    runtime.enable_compilation_cache(os.environ.get(runtime.CACHE_ENV) or str(Path(a.out).resolve() / CACHE / "xla"))
    try:
        app = build_app(a.images, a.out, checkpoint=a.checkpoint, token=token, loopback_only=loopback,
                        prefill=prefill, browser_decode=a.browser_decode, max_upload=int(a.max_upload_mb * 2**20))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import uvicorn  # noqa: PLC0415

    shown = "<this machine's address>" if a.host in ("0.0.0.0", "::") else a.host
    url = f"http://{shown}:{a.port}/" + (f"?token={token}" if token else "")
    print(f"samjax annotate: {len(app.app.state.store.images.ids())} images from {a.images}, writing to {a.out}",
          flush=True)
    if token and not a.token:
        print(f"--host {a.host} is reachable from other machines: every request needs this token", flush=True)
    print(f"open {url}", flush=True)
    try:
        uvicorn.run(app, host=a.host, port=a.port, log_level="warning")
    finally:
        app.app.state.engine.close()
    return 0
