"""Files of the annotation tool: the images it serves and the SA-1B JSON it writes.

Images: the plain files directly inside --images (jpg, jpeg, png, webp, bmp, tif, tiff; no sub-folders, no hidden
files) plus those uploaded through the page, which are stored in OUT/uploads/. An image's id is its file name; its
*stem* names its output files, so two images may not share a stem. Lookups go through the listing only: a name
that is not a listed file (a path, "..", a hidden file) is refused, never opened. Pixels are the file's own:
EXIF orientation is ignored, as SA-1B and samjax.data ignore it, and the page is sent pixels in that orientation.

Output, per image with any annotation, in OUT/ (what `python -m samjax.data.sa1b --input OUT` converts):

    OUT/<stem>.jpg    the image as JPEG (the original bytes when it is a JPEG, else re-encoded at quality 95)
    OUT/<stem>.json   SA-1B: {"image": {image_id, width, height, file_name}, "annotations": [{id, segmentation
                      (COCO RLE), bbox (XYWH), area, predicted_iou, point_coords, stability_score, crop_box,
                      + source ("person" | "model"), annotator, model, created, prompt, edited_from}], "samjax":
                      {version, source_image, done, prefilled, updated}}

Every change rewrites the JSON atomically (a temporary file in OUT, fsync, rename): a crash or a closed tab loses
at most the change being written. Each image has a version number, raised by every write; writers say which
version they saw (see `AnnotationStore.update`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
BROWSER_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp"}
# Names accepted for uploads: letters, digits, '.', '_', '-', ' ' (no separators, no leading dot).
UPLOAD_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_. -]{0,150}$")
MAX_PIXELS = 100_000_000  # larger images are refused (decompression bombs); SA-1B images are ~3.4 MP
EXIF_ORIENTATION = 0x0112
UPLOADS = "uploads"
CACHE = ".cache"


class BadName(ValueError):
    """An image name that is not a plain file name (HTTP 400)."""


class UnknownImage(KeyError):
    """A plain name that is not one of the listed images (HTTP 404)."""

    def __str__(self):
        return str(self.args[0])


class BadImage(ValueError):
    """A listed file that does not decode as an image, or one too large (HTTP 422)."""


class Conflict(RuntimeError):
    """A write that would lose someone else's change (HTTP 409)."""


def check_name(name: str) -> str:
    """`name` if it is a plain file name (no directory part, not hidden), else BadName saying why."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise BadName(f"image names are plain file names inside the images folder, got {name!r}")
    if name.startswith("."):
        raise BadName(f"hidden files are not served: {name!r}")
    return name


def image_id_of(stem: str) -> int:
    """SA-1B's integer image_id: N for 'sa_N', else a stable 48-bit hash of the stem."""
    m = re.fullmatch(r"sa_(\d{1,15})", stem)
    return int(m.group(1)) if m else int(hashlib.sha1(stem.encode()).hexdigest()[:12], 16)


def open_image(path: Path) -> Image.Image:
    """PIL's lazy open (the header only); BadImage if it is not an image or has more than MAX_PIXELS."""
    try:
        im = Image.open(path)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise BadImage(f"{path.name}: not an image PIL can read ({e})") from e
    w, h = im.size
    if w * h > MAX_PIXELS:
        im.close()
        raise BadImage(f"{path.name}: {w}x{h} pixels is more than the {MAX_PIXELS} this tool accepts")
    return im


def load_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB in the file's own orientation."""
    with open_image(path) as im:
        try:
            return np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as e:  # a truncated or corrupt file fails here, after its header
            raise BadImage(f"{path.name}: the image does not decode ({e})") from e


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # the rename itself reaches the disk
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - platforms without directory fsync
        pass


def _natural(s: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


class ImageStore:
    """The images served: the files of `images_dir` and of `uploads_dir` (written by `upload` only)."""

    def __init__(self, images_dir: str | os.PathLike, uploads_dir: str | os.PathLike):
        self.images_dir = Path(images_dir).resolve()
        self.uploads_dir = Path(uploads_dir).resolve()
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"--images {str(images_dir)!r} is not a folder")
        self._lock = threading.Lock()
        self._sizes: dict[Path, tuple[float, int, int]] = {}  # path -> (mtime, width, height)
        self.scan()

    def scan(self) -> dict[str, Path]:
        """id -> path of every image, in natural order; ValueError if two share a stem."""
        found: dict[str, Path] = {}
        for folder in (self.images_dir, self.uploads_dir):
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                if (entry.name.startswith(".") or not entry.is_file()
                        or not entry.name.lower().endswith(IMAGE_EXTS)):
                    continue
                if entry.name in found:
                    raise ValueError(f"{entry.name!r} is in both {self.images_dir} and {self.uploads_dir}")
                found[entry.name] = Path(entry.path)
        stems: dict[str, str] = {}
        for name in found:
            stem = Path(name).stem
            if stem in stems:
                raise ValueError(f"images {stems[stem]!r} and {name!r} would write the same {stem}.json; rename one")
            stems[stem] = name
        with self._lock:
            self._paths = dict(sorted(found.items(), key=lambda kv: _natural(kv[0])))
        return self._paths

    def ids(self) -> list[str]:
        return list(self._paths)

    def path(self, image_id: str) -> Path:
        check_name(image_id)
        path = self._paths.get(image_id)
        if path is None:
            path = self.scan().get(image_id)  # a file added since the last listing
        if path is None:
            raise UnknownImage(f"no image {image_id!r} in the images folder or the uploads")
        return path

    def size(self, image_id: str) -> tuple[int, int]:
        """(width, height), from the file header (cached by modification time)."""
        path = self.path(image_id)
        mtime = path.stat().st_mtime
        cached = self._sizes.get(path)
        if cached is None or cached[0] != mtime:
            with open_image(path) as im:
                cached = (mtime, *im.size)
            self._sizes[path] = cached
        return cached[1], cached[2]

    def next_id(self, image_id: str) -> str | None:
        ids = self.ids()
        i = ids.index(image_id) if image_id in ids else -1
        return ids[i + 1] if 0 <= i < len(ids) - 1 else None

    def browser_bytes(self, image_id: str) -> tuple[bytes, str]:
        """(bytes, media type) the page can draw, in the file's own orientation: the file itself where browsers
        decode it and it has no EXIF rotation, else a PNG of its pixels."""
        path = self.path(image_id)
        with open_image(path) as im:
            kind = BROWSER_FORMATS.get(im.format)
            rotated = im.getexif().get(EXIF_ORIENTATION, 1) != 1
            if kind and not rotated:
                return path.read_bytes(), kind
            buf = io.BytesIO()
            im.convert("RGB").save(buf, "PNG")
            return buf.getvalue(), "image/png"

    def jpeg_bytes(self, image_id: str) -> bytes:
        """The image as JPEG for OUT/<stem>.jpg: the original bytes when it is a JPEG, else quality 95."""
        path = self.path(image_id)
        with open_image(path) as im:
            if im.format == "JPEG" and im.mode in ("RGB", "L"):
                return path.read_bytes()
            buf = io.BytesIO()
            im.convert("RGB").save(buf, "JPEG", quality=95)
            return buf.getvalue()

    def upload(self, name: str, data: bytes) -> str:
        """Store an uploaded image as uploads/<name> (a new name only); returns its id."""
        if not UPLOAD_NAME.match(name or "") or ".." in name:
            raise BadName(f"upload names may use letters, digits, '_', '-', '.' and spaces, got {name!r}")
        if not name.lower().endswith(IMAGE_EXTS):
            raise BadName(f"{name!r}: expected one of {', '.join(IMAGE_EXTS)}")
        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise BadName(f"{name}: {w}x{h} pixels is more than the {MAX_PIXELS} this tool accepts")
                im.convert("RGB").load()
        except BadName:
            raise
        except Exception as e:  # PIL raises many kinds for broken files
            raise BadName(f"{name}: not an image PIL can decode ({e})") from e
        stem = Path(name).stem
        taken = {Path(i).stem for i in self.scan()}
        if stem in taken:
            raise Conflict(f"an image with the stem {stem!r} exists already; rename the upload")
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.uploads_dir / name, data)
        self.scan()
        return name


def empty_doc(image_id: str, width: int, height: int) -> dict[str, Any]:
    stem = Path(image_id).stem
    return {"image": {"image_id": image_id_of(stem), "width": width, "height": height, "file_name": f"{stem}.jpg"},
            "annotations": [],
            "samjax": {"version": 0, "source_image": image_id, "done": False, "prefilled": False, "updated": None}}


class AnnotationStore:
    """OUT/<stem>.json documents, one lock per image, atomic writes, version numbers."""

    def __init__(self, out_dir: str | os.PathLike, images: ImageStore):
        self.out_dir = Path(out_dir).resolve()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.images = images
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._summaries: dict[str, dict] = {}

    def _lock(self, stem: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(stem, threading.Lock())

    def json_path(self, image_id: str) -> Path:
        return self.out_dir / f"{Path(check_name(image_id)).stem}.json"

    def load(self, image_id: str) -> dict[str, Any]:
        """The image's document (an empty one, version 0, if nothing was written yet)."""
        path = self.json_path(image_id)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            w, h = self.images.size(image_id)
            return empty_doc(image_id, w, h)
        doc.setdefault("samjax", {}).setdefault("version", 0)
        return doc

    def summary(self, image_id: str) -> dict[str, Any]:
        """Progress of one image for the list: version, mask counts by source, done (cached per version)."""
        path = self.json_path(image_id)
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        cached = self._summaries.get(image_id)
        if cached is None or cached["_mtime"] != mtime:
            doc = self.load(image_id)
            anns = doc["annotations"]
            cached = {"_mtime": mtime, "version": doc["samjax"]["version"], "masks": len(anns),
                      "model_masks": sum(a.get("source") == "model" for a in anns),
                      "person_masks": sum(a.get("source") != "model" for a in anns),
                      "done": bool(doc["samjax"].get("done"))}
            self._summaries[image_id] = cached
        return {k: v for k, v in cached.items() if k != "_mtime"}

    def update(self, image_id: str, change: Callable[[dict], str | None]) -> tuple[dict, str | None]:
        """Apply `change(doc)` under the image's lock and write the result atomically with version + 1.

        `change` edits the document in place and returns a warning for the writer (or None); it raises Conflict
        to refuse. Returns (new document, warning)."""
        stem = Path(check_name(image_id)).stem
        with self._lock(stem):
            doc = self.load(image_id)
            warning = change(doc)
            meta = doc["samjax"]
            meta["version"] = int(meta.get("version", 0)) + 1
            meta["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            meta["source_image"] = image_id
            jpg = self.out_dir / f"{stem}.jpg"
            if not jpg.exists():  # the converter pairs <stem>.jpg with <stem>.json
                _atomic_write(jpg, self.images.jpeg_bytes(image_id))
            _atomic_write(self.json_path(image_id), json.dumps(doc, separators=(",", ":")).encode())
            return doc, warning
