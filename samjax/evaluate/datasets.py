"""Readers for the evaluation suite's ground truth: COCO-format instances (COCO, LVIS, any of the paper's 23
datasets once converted), BSDS500 boundaries, and COCO-format detection results.

    ds = read_instances("lvis_v1_val.json", "coco/")         # kind "lvis" (detected), images resolved in the folder
    image = ds.load_image(ds.images[0]); masks, anns = ds.masks(ds.images[0])
    bsds = read_bsds("BSR/BSDS500", split="test")             # data/images/test/*.jpg + data/groundTruth/test/*.mat
    gts = load_boundaries(bsds.items[0])                      # [(H, W) bool] one per annotator

COCO instances: `images` (id, height, width, and file_name or LVIS's coco_url), `annotations` (id, image_id,
segmentation as polygons / uncompressed RLE / compressed RLE; iscrowd, area, category_id optional), `categories`.
LVIS v1 is the same format without file_name and iscrowd; its categories carry `frequency` (r / c / f). LVIS
images are found as FOLDER/<file name>, or FOLDER/<train2017|val2017>/<file name> (the split named in coco_url).

BSDS500: ROOT/data/images/<split>/*.jpg with ROOT/data/groundTruth/<split>/<name>.mat (the benchmark's cell of
structs with a Boundaries field, one per annotator); ROOT may also be the `data` folder itself. Ground truth as
PNG instead: groundTruth/<split>/<name>.png (one annotator) or <name>_<k>.png (annotator k), non-zero = boundary.

Every layout problem raises DatasetError (a ValueError) naming the file and what was expected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO


class DatasetError(ValueError):
    """Ground truth or results in a layout the evaluation cannot read; the message names the file and the problem."""


def _load_json(path: str | os.PathLike, what: str):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from e


def segmentation_to_rle(seg, h: int, w: int, where: str) -> dict:
    """Polygons / uncompressed RLE / compressed RLE -> compressed RLE {"size": [h, w], "counts": bytes}."""
    if isinstance(seg, list):
        if not seg or not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in seg):
            raise DatasetError(f"{where}: polygons must be lists of at least 3 (x, y) pairs")
        try:
            return mask_utils.merge(mask_utils.frPyObjects([[float(v) for v in p] for p in seg], h, w))
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{where}: polygon values must be numbers ({e})") from e
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if list(seg["size"]) != [h, w]:
            raise DatasetError(f"{where}: segmentation size {seg['size']} is not the image's [{h}, {w}]")
        if isinstance(seg["counts"], list):
            if sum(seg["counts"]) != h * w:
                raise DatasetError(f"{where}: uncompressed RLE counts sum to {sum(seg['counts'])}, not {h}x{w}")
            return mask_utils.frPyObjects(seg, h, w)
        if isinstance(seg["counts"], (str, bytes)):
            counts = seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"]
            return {"size": [h, w], "counts": counts}
    raise DatasetError(f"{where}: segmentation must be polygons or an RLE dict with 'size' and 'counts'")


@dataclasses.dataclass
class InstanceDataset:
    """A COCO-format instances file and its image folder (see module docstring)."""

    path: Path
    images_dir: Path
    name: str
    kind: str  # "coco" or "lvis"
    doc: dict  # the JSON, checked; annotations given iscrowd (0) and category_id (1) where missing
    images: list[dict]  # sorted by id
    anns_by_image: dict[int, list[dict]]

    @property
    def categories(self) -> list[dict]:
        return self.doc["categories"]

    def image_path(self, image: dict) -> Path:
        name = image.get("file_name") or image["coco_url"].rsplit("/", 1)[-1]
        tried = [self.images_dir / name]
        if "coco_url" in image:  # LVIS: COCO train2017 / val2017 images, possibly in their split folders
            tried.append(self.images_dir / image["coco_url"].rstrip("/").split("/")[-2] / name)
        for p in tried:
            if p.is_file():
                return p
        raise FileNotFoundError(f"image {image['id']} of {self.path.name}: none of {[str(p) for p in tried]} exists")

    def load_image(self, image: dict) -> np.ndarray:
        """(H, W, 3) uint8 RGB; DatasetError if it is not the size the annotations declare."""
        path = self.image_path(image)
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"))
        except OSError as e:
            raise DatasetError(f"{path}: does not decode as an image ({e})") from e
        if rgb.shape[:2] != (image["height"], image["width"]):
            raise DatasetError(f"{path}: image is {rgb.shape[0]}x{rgb.shape[1]} (HxW), {self.path.name} says "
                               f"{image['height']}x{image['width']}")
        return rgb

    def rle(self, ann: dict, image: dict) -> dict:
        return segmentation_to_rle(ann["segmentation"], image["height"], image["width"],
                                   f"{self.path.name}: annotation {ann['id']}")

    def masks(self, image: dict, include_crowd: bool = False) -> tuple[np.ndarray, list[dict]]:
        """The image's instance masks (K, H, W) bool and their annotations, crowd regions left out by default."""
        anns = [a for a in self.anns_by_image.get(image["id"], []) if include_crowd or not a.get("iscrowd", 0)]
        h, w = image["height"], image["width"]
        if not anns:
            return np.zeros((0, h, w), bool), []
        rles = [self.rle(a, image) for a in anns]
        return np.moveaxis(mask_utils.decode(rles), -1, 0).astype(bool), anns

    def coco(self, annotations: list[dict] | None = None) -> COCO:
        """A pycocotools COCO over this file's images and categories (and `annotations`, default all of them)."""
        doc = dict(self.doc, annotations=self.doc["annotations"] if annotations is None else annotations)
        return coco_from_dict(doc)


def coco_from_dict(doc: dict) -> COCO:
    """pycocotools.coco.COCO from an in-memory dict (its index messages silenced)."""
    api = COCO()
    api.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):
        api.createIndex()
    return api


def read_instances(path: str | os.PathLike, images_dir: str | os.PathLike, name: str | None = None
                   ) -> InstanceDataset:
    """Read and check a COCO-format instances JSON (COCO or LVIS; see module docstring)."""
    path, images_dir = Path(path), Path(images_dir)
    doc = _load_json(path, "annotations file")
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images folder {str(images_dir)!r} does not exist")
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not isinstance(
            doc.get("annotations"), list):
        raise DatasetError(f"{path}: expected a COCO-format instances file: a JSON object with 'images' and "
                           "'annotations' lists")
    cats = doc.get("categories")
    if not cats:  # masks without classes (points, proposals): one class for pycocotools
        cats = doc["categories"] = [{"id": 1, "name": "object"}]
    if not isinstance(cats, list) or not all(isinstance(c, dict) and isinstance(c.get("id"), Integral)
                                             for c in cats):
        raise DatasetError(f"{path}: 'categories' must be a list of objects with an integer 'id'")
    by_id: dict[int, dict] = {}
    for i, im in enumerate(doc["images"]):
        if not isinstance(im, dict):
            raise DatasetError(f"{path}: images[{i}] is not an object")
        for key in ("id", "height", "width"):
            if not isinstance(im.get(key), Integral):
                raise DatasetError(f"{path}: images[{i}] needs an integer '{key}'")
        if not isinstance(im.get("file_name"), str) and not isinstance(im.get("coco_url"), str):
            raise DatasetError(f"{path}: images[{i}] needs a 'file_name' (COCO) or 'coco_url' (LVIS)")
        by_id[im["id"]] = im
    cat_ids = {c["id"] for c in cats}
    by_image: dict[int, list[dict]] = {}
    for i, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict) or not isinstance(ann.get("id"), Integral) or not isinstance(
                ann.get("image_id"), Integral):
            raise DatasetError(f"{path}: annotations[{i}] needs integer 'id' and 'image_id'")
        if ann["image_id"] not in by_id:
            raise DatasetError(f"{path}: annotation {ann['id']} refers to image {ann['image_id']}, which is not in "
                               "'images'")
        if "segmentation" not in ann:
            raise DatasetError(f"{path}: annotation {ann['id']} has no 'segmentation' (polygons or RLE)")
        ann.setdefault("iscrowd", 0)
        ann.setdefault("category_id", min(cat_ids))
        if ann["category_id"] not in cat_ids:
            raise DatasetError(f"{path}: annotation {ann['id']} has category_id {ann['category_id']}, not in "
                               "'categories'")
        if not isinstance(ann.get("area"), Real):
            im = by_id[ann["image_id"]]
            ann["area"] = float(mask_utils.area(segmentation_to_rle(ann["segmentation"], im["height"], im["width"],
                                                                    f"{path.name}: annotation {ann['id']}")))
        by_image.setdefault(ann["image_id"], []).append(ann)
    lvis = any("frequency" in c for c in cats) or any("not_exhaustive_category_ids" in im for im in doc["images"])
    return InstanceDataset(path=path, images_dir=images_dir, name=name or path.stem, kind="lvis" if lvis else "coco",
                           doc=doc, images=sorted(doc["images"], key=lambda im: im["id"]), anns_by_image=by_image)


def read_detections(path: str | os.PathLike, dataset: InstanceDataset) -> dict[int, list[dict]]:
    """A COCO results file of boxes ([{image_id, category_id, bbox: [x, y, w, h], score}, ...]) by image id."""
    dets = _load_json(path, "detections file")
    if not isinstance(dets, list):
        raise DatasetError(f"{path}: expected a COCO results file: a JSON list of "
                           "{'image_id', 'category_id', 'bbox': [x, y, w, h], 'score'}")
    ids = {im["id"] for im in dataset.images}
    cat_ids = {c["id"] for c in dataset.categories}
    out: dict[int, list[dict]] = {}
    for i, d in enumerate(dets):
        ok = (isinstance(d, dict) and isinstance(d.get("image_id"), Integral)
              and isinstance(d.get("category_id"), Integral) and isinstance(d.get("score"), Real)
              and isinstance(d.get("bbox"), list) and len(d["bbox"]) == 4
              and all(isinstance(v, Real) for v in d["bbox"]))
        if not ok:
            raise DatasetError(f"{path}: detections[{i}] must have integer image_id and category_id, a numeric "
                               f"score and bbox [x, y, w, h]; got {d!r:.200}")
        if d["image_id"] not in ids:
            raise DatasetError(f"{path}: detections[{i}] is for image {d['image_id']}, which is not in "
                               f"{dataset.path.name}")
        if d["category_id"] not in cat_ids:
            raise DatasetError(f"{path}: detections[{i}] has category_id {d['category_id']}, not in "
                               f"{dataset.path.name}'s categories")
        out.setdefault(d["image_id"], []).append(d)
    return out


# ------------------------------------------------------------------------------------------------- BSDS500
@dataclasses.dataclass
class BSDSItem:
    name: str
    image: Path
    ground_truth: list[Path]  # one .mat (all annotators) or one .png per annotator


@dataclasses.dataclass
class BSDSDataset:
    root: Path
    split: str
    items: list[BSDSItem]


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_bsds(root: str | os.PathLike, split: str = "test") -> BSDSDataset:
    """The images of a BSDS500 split and their ground-truth files (see module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"BSDS folder {str(root)!r} does not exist")
    layout = ("expected the BSDS500 layout ROOT/data/images/<split>/*.jpg and ROOT/data/groundTruth/<split>/*.mat "
              "(ROOT may also be the data folder)")
    for base in (root / "data", root, root / "BSDS500" / "data"):
        if (base / "images" / split).is_dir() and (base / "groundTruth" / split).is_dir():
            break
    else:
        raise DatasetError(f"{root}: no images/{split} and groundTruth/{split} folders; {layout}")
    img_dir, gt_dir = base / "images" / split, base / "groundTruth" / split
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"{img_dir}: no .jpg or .png images; {layout}")
    items, missing = [], []
    for img in images:
        mat = gt_dir / f"{img.stem}.mat"
        pngs = [gt_dir / f"{img.stem}.png"] if (gt_dir / f"{img.stem}.png").is_file() else sorted(
            gt_dir.glob(f"{img.stem}_*.png"), key=lambda p: p.stem)
        if mat.is_file():
            items.append(BSDSItem(img.stem, img, [mat]))
        elif pngs:
            items.append(BSDSItem(img.stem, img, pngs))
        else:
            missing.append(img.stem)
    if missing:
        raise DatasetError(f"{gt_dir}: no ground truth for {len(missing)} image(s) ({', '.join(missing[:5])}"
                           f"{' ...' if len(missing) > 5 else ''}): expected NAME.mat, NAME.png or NAME_<k>.png")
    return BSDSDataset(root=root, split=split, items=items)


def load_boundaries(item: BSDSItem, shape: tuple[int, int] | None = None) -> list[np.ndarray]:
    """The annotators' boundary maps of one image: [(H, W) bool]; `shape` checks them against the image."""
    out = []
    for path in item.ground_truth:
        if path.suffix == ".mat":
            try:
                mat = scipy.io.loadmat(path)
            except (scipy.io.matlab.MatReadError, ValueError, OSError, TypeError) as e:
                raise DatasetError(f"{path}: not a MATLAB .mat file ({e})") from e
            cells = mat.get("groundTruth")
            bad = DatasetError(f"{path}: expected a BSDS groundTruth .mat: a 'groundTruth' cell array of structs "
                               "with a 'Boundaries' field (one per annotator)")
            if not isinstance(cells, np.ndarray) or cells.dtype != object or cells.size == 0:
                raise bad
            for cell in cells.ravel():
                if not isinstance(cell, np.ndarray) or cell.dtype.names is None or "Boundaries" not in cell.dtype.names:
                    raise bad
                out.append(np.asarray(cell["Boundaries"].ravel()[0]) > 0)
        else:
            try:
                with Image.open(path) as im:
                    out.append(np.asarray(im.convert("L")) > 0)
            except OSError as e:
                raise DatasetError(f"{path}: does not decode as an image ({e})") from e
    for b in out:
        if b.ndim != 2 or (shape is not None and b.shape != tuple(shape)):
            raise DatasetError(f"{item.ground_truth[0]}: boundaries of shape {b.shape}, the image is {shape}")
    return out


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        raise DatasetError(f"{path}: does not decode as an image ({e})") from e
