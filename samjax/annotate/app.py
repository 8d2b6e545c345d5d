"""The annotation tool's web app: a JSON API over `Engine` and the stores, and the static page.

API (all under /api; with a token every call must carry it: header `X-Token: T`, `Authorization: Bearer T`, or
`?token=T`):

    GET    /api/config                         model, sizes, options the page needs
    GET    /api/images                         [{id, width, height, version, masks, model_masks, person_masks, done}]
    POST   /api/images                         multipart `file`: upload an image (stored in OUT/uploads/)
    GET    /api/images/{id}/image              the image bytes the page draws
    GET    /api/images/{id}                    the SA-1B document (+ version, prefill state)
    POST   /api/images/{id}/embedding          compute (or find) the embedding; the next image's starts behind it
    GET    /api/images/{id}/embedding.bin      float32 (1, C, g, g) bytes for the in-browser decoder
    POST   /api/images/{id}/decode             {points, labels, box, multimask} -> masks (uncompressed RLE) + scores
    POST   /api/images/{id}/annotations        {base_version, points, labels, box, candidate, replaces, annotator}
    DELETE /api/images/{id}/annotations/{ann}  ?base_version=N
    DELETE /api/images/{id}/annotations        ?base_version=N (clear all: only at the current version)
    PUT    /api/images/{id}/done               {base_version, done}
    GET    /api/decoder.onnx                   the exported decoder (--browser-decode)

Several annotators: every write names the version it was based on. Adding a mask never loses anything: if the
image changed since (someone else wrote), the mask is added all the same and the answer carries a warning the
page shows. Deleting a mask someone already deleted or replaced, or clearing an image whose version is not the
one seen, is refused with 409 and the current document, so nobody's work is removed unseen.

Security: the server binds to 127.0.0.1 unless told otherwise, and then answers only requests addressed to a
loopback name (no DNS rebinding); requests from another site's page (an Origin header that is not this server)
are refused; request bodies are read at most up to their limit (413 beyond); image names are looked up in the
listing only; nothing is written outside --out.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations (Request, the body models,
# all made inside create_app) as objects.
import hmac
import json
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from samjax.amg import mask_io
from samjax.annotate.engine import Engine
from samjax.annotate.storage import AnnotationStore, BadImage, BadName, Conflict, ImageStore, UnknownImage

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_POINTS = 64
MAX_JSON_BYTES = 256 * 1024
MAX_UPLOAD_BYTES = 50 * 2**20
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


# ------------------------------------------------------------------------------------------- body limit
class BodyLimit:
    """ASGI wrapper: reads each request body up to its limit before the app sees it; 413 with a message beyond.
    Uploads (POST /api/images) may be `max_upload` bytes, everything else `max_json`."""

    def __init__(self, app, max_json: int = MAX_JSON_BYTES, max_upload: int = MAX_UPLOAD_BYTES):
        self.app, self.max_json, self.max_upload = app, max_json, max_upload

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope["method"] == "POST" and scope["path"].rstrip("/") == "/api/images"
        limit = self.max_upload if upload else self.max_json
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _too_large(send, declared.decode(errors="replace"), limit)
        chunks, total, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body = message.get("body", b"")
            total += len(body)
            if total > limit:
                return await _too_large(send, f"more than {limit}", limit)
            chunks.append(body)
            more = message.get("more_body", False)
        data, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _too_large(send, size: str, limit: int):
    body = json.dumps({"detail": f"request body of {size} bytes is over this server's limit of {limit} bytes"})
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body.encode()})


# ----------------------------------------------------------------------------------------------- the app
def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed RLE counts (column-major, starting with a run of zeros) the page decodes."""
    return mask_io.mask_to_rle(mask)["counts"]


def create_app(engine: Engine, store: AnnotationStore, *, token: str | None = None, loopback_only: bool = True,
               prefill: bool = False, browser_decode: Path | None = None, onnx_model: bytes | None = None,
               max_json: int = MAX_JSON_BYTES, max_upload: int = MAX_UPLOAD_BYTES):
    """The ASGI app (FastAPI inside `BodyLimit`). browser_decode: a folder with onnxruntime-web's dist files,
    served at /ort/, with `onnx_model` (bytes of `export_onnx.build_model`) served at /api/decoder.onnx."""
    from fastapi import Depends, FastAPI, File, HTTPException, Request, UploadFile  # noqa: PLC0415
    from fastapi.exceptions import RequestValidationError  # noqa: PLC0415
    from fastapi.responses import FileResponse, JSONResponse, Response  # noqa: PLC0415
    from fastapi.staticfiles import StaticFiles  # noqa: PLC0415
    from pydantic import BaseModel, ConfigDict, Field, model_validator  # noqa: PLC0415

    images: ImageStore = store.images
    cfg = engine.predictor.config
    app = FastAPI(title="samjax annotate", docs_url=None, redoc_url=None, openapi_url=None)
    prefill_jobs: dict[str, Any] = {}

    # ---------------------------------------------------------------- errors -> 4xx with a message
    @app.exception_handler(BadName)
    async def _bad_name(request, e):
        return JSONResponse({"detail": str(e)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e):  # without the offending input, which may not even be JSON (NaN)
        errors = [{"loc": [str(x) for x in err.get("loc", ())], "msg": str(err.get("msg")), "type": err.get("type")}
                  for err in e.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(BadImage)
    async def _bad_image(request, e):
        return JSONResponse({"detail": str(e)}, status_code=422)

    @app.exception_handler(UnknownImage)
    async def _unknown(request, e):
        return JSONResponse({"detail": str(e)}, status_code=404)

    @app.exception_handler(Conflict)
    async def _conflict(request, e):
        return JSONResponse({"detail": str(e.args[0]), **(e.args[1] if len(e.args) > 1 else {})}, status_code=409)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = _hostname(request.headers.get("host") or "")
        if loopback_only and host not in LOOPBACK_HOSTS:
            return JSONResponse({"detail": f"this server answers loopback addresses only, not Host {host!r}"},
                                status_code=400)
        origin = request.headers.get("origin")
        if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
            return JSONResponse({"detail": f"cross-site request from {origin!r} refused"}, status_code=403)
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    def check_token(request: Request):
        if token is None:
            return
        given = request.headers.get("x-token") or request.query_params.get("token")
        auth = request.headers.get("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not given:
            raise HTTPException(401, "this server needs its token: open the URL it printed at start (...?token=...)"
                                     " or send the X-Token header")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(403, "wrong token")

    api = [Depends(check_token)]

    # ---------------------------------------------------------------- request bodies
    class Prompt(BaseModel):
        model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
        points: list[tuple[float, float]] = Field(default_factory=list, max_length=MAX_POINTS)
        labels: list[int] = Field(default_factory=list, max_length=MAX_POINTS)
        box: tuple[float, float, float, float] | None = None
        multimask: bool = True

        @model_validator(mode="after")
        def _consistent(self):
            if len(self.points) != len(self.labels):
                raise ValueError(f"{len(self.points)} points but {len(self.labels)} labels: one label per point")
            if any(v not in (0, 1) for v in self.labels):
                raise ValueError("labels are 1 (foreground) or 0 (background)")
            if not self.points and self.box is None:
                raise ValueError("give at least one point or a box")
            return self

    class Accept(Prompt):
        base_version: int = Field(ge=0)
        candidate: int = Field(0, ge=0, le=8)
        replaces: int | None = None
        annotator: str = Field("anonymous", max_length=80)

    class Done(BaseModel):
        model_config = ConfigDict(extra="forbid")
        base_version: int = Field(ge=0)
        done: bool

    # ---------------------------------------------------------------- helpers
    def doc_response(image_id: str, doc: dict, warning: str | None = None) -> dict:
        out = {"id": image_id, "version": doc["samjax"]["version"], "doc": doc,
               "prefill": prefill_state(image_id, doc)}
        if warning:
            out["warning"] = warning
        return out

    def prefill_state(image_id: str, doc: dict) -> str:
        if not prefill:
            return "off"
        if doc["samjax"].get("prefilled"):
            return "done"
        job = prefill_jobs.get(image_id)
        if job is not None and job.done() and job.exception() is not None:
            return f"failed: {job.exception()}"
        return "pending"

    def run_prefill(image_id: str) -> None:
        """Stage 2: the automatic masks of the image, added once as accepted-but-editable model masks."""
        if store.load(image_id)["samjax"].get("prefilled"):
            return
        records = engine.model_records(image_id)

        def change(doc):
            if doc["samjax"].get("prefilled"):
                return
            for rec in records:
                doc["annotations"].append({"id": new_id(doc), **rec, "created": _now()})
            doc["samjax"]["prefilled"] = True
            return

        store.update(image_id, change)

    def start_prefill(image_id: str | None) -> None:
        if not prefill or image_id is None:
            return
        job = prefill_jobs.get(image_id)
        if job is None or (job.done() and job.exception() is not None):
            prefill_jobs[image_id] = engine.submit(run_prefill, image_id)

    def bad_prompt(e: Exception):
        raise HTTPException(400, str(e))

    # ---------------------------------------------------------------- routes
    @app.get("/api/config", dependencies=api)
    def config():
        return {"model": engine.model_name, "image_size": cfg.image_size, "grid_size": cfg.grid_size,
                "embed_dim": cfg.prompt_embed_dim, "mask_threshold": cfg.mask_threshold, "prefill": prefill,
                "browser_decode": browser_decode is not None, "max_points": MAX_POINTS, "max_upload": max_upload,
                "token_required": token is not None}

    @app.get("/api/images", dependencies=api)
    def list_images():
        out = []
        for image_id in images.scan():
            try:
                w, h = images.size(image_id)
            except BadImage as e:  # listed, so it can be seen and fixed, but not opened
                out.append({"id": image_id, "width": None, "height": None, "error": str(e), "version": 0,
                            "masks": 0, "model_masks": 0, "person_masks": 0, "done": False})
                continue
            out.append({"id": image_id, "width": w, "height": h, **store.summary(image_id)})
        return out

    @app.post("/api/images", dependencies=api, status_code=201)
    async def upload(file: Annotated[UploadFile, File()]):
        data = await file.read()
        image_id = images.upload(file.filename or "", data)
        w, h = images.size(image_id)
        return {"id": image_id, "width": w, "height": h, **store.summary(image_id)}

    @app.get("/api/images/{image_id:path}/image", dependencies=api)
    def image_bytes(image_id: str):
        data, kind = images.browser_bytes(image_id)
        return Response(data, media_type=kind)

    @app.post("/api/images/{image_id:path}/embedding", dependencies=api)
    def embedding(image_id: str):
        images.path(image_id)
        start_prefill(image_id)
        emb, ready = engine.embedding(image_id)
        nxt = images.next_id(image_id)
        engine.prefetch(nxt)
        start_prefill(nxt)
        return {"id": image_id, "ready_before": ready, "input_size": emb.input_size,
                "original_size": emb.original_size, "next": nxt}

    @app.get("/api/images/{image_id:path}/embedding.bin", dependencies=api)
    def embedding_bin(image_id: str):
        emb, _ = engine.embedding(image_id)
        data = np.ascontiguousarray(emb.features.transpose(0, 3, 1, 2), np.float32).tobytes()  # NCHW
        return Response(data, media_type="application/octet-stream",
                        headers={"X-Shape": ",".join(map(str, (1, cfg.prompt_embed_dim, cfg.grid_size,
                                                               cfg.grid_size))),
                                 "X-Input-Size": ",".join(map(str, emb.input_size))})

    @app.post("/api/images/{image_id:path}/decode", dependencies=api)
    def decode(image_id: str, prompt: Prompt):
        images.path(image_id)
        try:
            masks, scores, _ = engine.decode(image_id, prompt.points, prompt.labels, prompt.box, prompt.multimask)
        except ValueError as e:
            bad_prompt(e)
        h, w = masks.shape[-2:]
        return {"size": [int(h), int(w)], "scores": [float(s) for s in scores],
                "masks": [{"counts": rle_counts(m), "area": int(m.sum())} for m in masks]}

    @app.post("/api/images/{image_id:path}/annotations", dependencies=api)
    def accept(image_id: str, body: Accept):
        images.path(image_id)
        try:
            rec = engine.person_record(image_id, body.points, body.labels, body.box, body.candidate, body.multimask,
                                       body.annotator)
        except ValueError as e:
            bad_prompt(e)

        def change(doc):
            anns, seen = doc["annotations"], body.base_version
            warning = None
            if body.replaces is not None:
                old = next((a for a in anns if a["id"] == body.replaces), None)
                if old is None:
                    raise Conflict(f"mask {body.replaces} was deleted or replaced by someone else (the image is at "
                                   f"version {doc['samjax']['version']}); your mask was not saved, accept it again "
                                   "as a new one", {"doc": doc, "version": doc["samjax"]["version"]})
                rec["edited_from"] = {"id": old["id"], "source": old.get("source"), "annotator": old.get("annotator")}
                anns.remove(old)
            if seen != doc["samjax"]["version"]:
                warning = (f"this image changed since you loaded it (version {seen} -> {doc['samjax']['version']}, "
                           "someone else is annotating it): your mask was added, theirs kept; the view is refreshed")
            rec["id"] = new_id(doc)
            rec["created"] = _now()
            anns.append(rec)
            return warning

        doc, warning = store.update(image_id, change)
        return doc_response(image_id, doc, warning)

    @app.delete("/api/images/{image_id:path}/annotations/{ann_id}", dependencies=api)
    def delete(image_id: str, ann_id: int, base_version: int):
        images.path(image_id)

        def change(doc):
            anns = doc["annotations"]
            old = next((a for a in anns if a["id"] == ann_id), None)
            if old is None:
                raise Conflict(f"mask {ann_id} is not there any more (deleted or replaced by someone else; the image "
                               f"is at version {doc['samjax']['version']})",
                               {"doc": doc, "version": doc["samjax"]["version"]})
            anns.remove(old)
            if base_version != doc["samjax"]["version"]:
                return (f"this image changed since you loaded it (version {base_version} -> "
                        f"{doc['samjax']['version']}); mask {ann_id} was deleted, the others kept")
            return None

        doc, warning = store.update(image_id, change)
        return doc_response(image_id, doc, warning)

    @app.delete("/api/images/{image_id:path}/annotations", dependencies=api)
    def clear(image_id: str, base_version: int):
        images.path(image_id)

        def change(doc):
            if base_version != doc["samjax"]["version"]:
                raise Conflict(f"not cleared: the image changed since you loaded it (version {base_version} -> "
                               f"{doc['samjax']['version']}); look at the new masks first",
                               {"doc": doc, "version": doc["samjax"]["version"]})
            doc["annotations"] = []

        doc, warning = store.update(image_id, change)
        return doc_response(image_id, doc, warning)

    @app.put("/api/images/{image_id:path}/done", dependencies=api)
    def mark_done(image_id: str, body: Done):
        images.path(image_id)

        def change(doc):
            doc["samjax"]["done"] = body.done

        doc, warning = store.update(image_id, change)
        return doc_response(image_id, doc, warning)

    @app.get("/api/images/{image_id:path}", dependencies=api)
    def get_image_doc(image_id: str):
        images.path(image_id)
        return doc_response(image_id, store.load(image_id))

    @app.get("/api/decoder.onnx", dependencies=api)
    def decoder_onnx():
        if onnx_model is None:
            raise HTTPException(404, "the server was started without --browser-decode")
        return Response(onnx_model, media_type="application/octet-stream")

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"], dependencies=api)
    def unknown_api(rest: str):
        raise HTTPException(404, f"no API endpoint /api/{rest}")

    @app.get("/")
    def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if browser_decode is not None:
        app.mount("/ort", StaticFiles(directory=browser_decode), name="ort")
    app.state.engine, app.state.store = engine, store
    app.state.prefill_jobs = prefill_jobs
    return BodyLimit(app, max_json=max_json, max_upload=max_upload)


def new_id(doc: dict) -> int:
    """A mask id never used before in this image (ids of deleted masks are not reused: an undo names one)."""
    meta = doc["samjax"]
    i = max([int(meta.get("next_id", 1))] + [a["id"] + 1 for a in doc["annotations"]])
    meta["next_id"] = i + 1
    return i


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _hostname(host: str) -> str:
    """The name part of a Host header: 'a:8000' -> 'a', '[::1]:8000' -> '[::1]'."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host
