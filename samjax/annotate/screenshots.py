"""The README's pictures of the annotation tool, taken in headless Chromium driven by Playwright.

    python -m samjax.annotate.screenshots --checkpoint workdir/tiny_synthetic/model --out docs/

Serves the tool on loopback (in a thread, --prefill on) over a few synthetic images (samjax.data.synthetic, made in a
temporary folder unless --images is given) and saves two pictures of the page:

- OUT/annotate.png, stage 1: a person's mask from a foreground and a background click, accepted, and the live mask
  of a click on another object with its three candidates (the image's automatic masks removed first);
- OUT/annotate_prefill.png, stage 2: the next image with its automatic masks shown as the model's, one selected.

Needs playwright (the [dev] extra) and a Chromium: Debian's `apt-get install chromium` gives /usr/bin/chromium
(`playwright install` is not used: it downloads its own browser).

`serve` and `launch` are shared with tests/test_annotate_browser.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

# Flags for a headless Chromium on a machine without a network: no sandbox (root in a container), no GPU, and no
# background connections (each would fail, many at a time, on a closed network).
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage")
DEFAULT_CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(app, port: int | None = None):
    """Run the ASGI app with uvicorn on 127.0.0.1 in a thread; yields its base URL; stops it after."""
    import uvicorn  # noqa: PLC0415

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="samjax-annotate-uvicorn", daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def find_chromium(path: str | None = None) -> str | None:
    for cand in (path, os.environ.get("SAMJAX_CHROMIUM"), DEFAULT_CHROMIUM, shutil.which("chromium"),
                 shutil.which("chromium-browser")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


@contextlib.contextmanager
def launch(chromium: str | None = None, width: int = 1280, height: int = 800):
    """A Playwright page in headless Chromium (the executable given or found; a fresh temporary profile);
    yields (browser, page)."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - optional (the [dev] extra)

    exe = find_chromium(chromium)
    if exe is None:
        raise FileNotFoundError("no Chromium found (apt-get install chromium gives /usr/bin/chromium; or set "
                                "SAMJAX_CHROMIUM)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
            yield browser, page
        finally:
            browser.close()


def wait_ready(page, timeout_ms: int = 120_000) -> None:
    """Wait until the page has the current image and its embedding."""
    page.wait_for_selector("body[data-ready='1']", timeout=timeout_ms)


def click_image(page, x: float, y: float, button: str = "left") -> None:
    """Click image pixel coordinates (x, y) at the page's current zoom and pan."""
    view = page.evaluate("samjaxState.view")
    box = page.locator("#viewport").bounding_box()
    page.mouse.click(box["x"] + view["tx"] + x * view["z"], box["y"] + view["ty"] + y * view["z"], button=button)


def wait_decodes(page, n: int, timeout_ms: int = 60_000) -> None:
    page.wait_for_selector(f"#live-layer[data-decodes='{n}']", state="attached", timeout=timeout_ms)


def make_images(folder: Path, n: int = 3, size: tuple[int, int] = (360, 480), seed: int = 3) -> list[np.ndarray]:
    """n synthetic images (samjax.data.synthetic) as folder/sa_<i>.jpg; returns each one's object masks (K, H, W)."""
    from samjax.data import rle
    from samjax.data.synthetic import make_sample

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(1, n + 1):
        jpeg, doc = make_sample(seed, i, *size, num_objects=5, min_object_frac=0.25)
        (folder / f"sa_{i}.jpg").write_bytes(jpeg)
        out.append(np.stack([rle.decode(a["segmentation"]["counts"], *size) for a in doc["annotations"]]))
    return out


def inside(masks: np.ndarray | None, rank: int, w: int, h: int, fallback: tuple[float, float]) -> tuple[float, float]:
    """(x, y) deep inside the rank-th largest object (or `fallback` x (w, h) when the objects are unknown)."""
    if masks is None or len(masks) <= rank:
        return fallback[0] * w, fallback[1] * h
    from scipy import ndimage

    m = masks[np.argsort(-masks.reshape(len(masks), -1).sum(1))[rank]]
    dist = ndimage.distance_transform_edt(m)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return x + 0.5, y + 0.5


def take(checkpoint: str, out: Path, images: Path | None = None, chromium: str | None = None,
         points_per_side: int = 16, pred_iou_thresh: float = 0.4, stability_score_thresh: float = 0.9) -> list[Path]:
    """The two screenshots (see the module docstring); returns their paths."""
    import httpx

    from samjax.annotate.server import build_app

    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="samjax-screenshots-"))
    try:
        masks = None
        if images is None:
            images = work / "images"
            masks = make_images(images)[0]
        app = build_app(images, work / "labels", checkpoint=checkpoint,
                        prefill={"points_per_side": points_per_side, "pred_iou_thresh": pred_iou_thresh,
                                 "stability_score_thresh": stability_score_thresh})
        store, engine = app.app.state.store, app.app.state.engine
        first, second = store.images.ids()[:2]
        w, h = store.images.size(first)
        a, b = inside(masks, 0, w, h, (0.3, 0.45)), inside(masks, 1, w, h, (0.65, 0.5))
        background = (0.02 * w, 0.03 * h)
        for pts in ([a], [a, background]):  # compile the decoder for both prompt sizes before the pictures
            engine.decode(first, pts, [1] + [0] * (len(pts) - 1), None)
        with serve(app) as url, launch(chromium, 1280, 720) as (_, page):
            # stage 1 on the first image: its automatic masks (made when it is first opened) are cleared first
            httpx.post(f"{url}/api/images/{first}/embedding", timeout=600)
            app.app.state.prefill_jobs[first].result(timeout=600)
            version = httpx.get(f"{url}/api/images/{first}", timeout=60).json()["version"]
            httpx.delete(f"{url}/api/images/{first}/annotations", params={"base_version": version}, timeout=60)
            page.goto(f"{url}/?image={first}")
            wait_ready(page)
            page.fill("#annotator", "ana")
            page.locator("#annotator").dispatch_event("change")
            click_image(page, *a)
            wait_decodes(page, 1)
            click_image(page, *background, button="right")
            wait_decodes(page, 2)
            page.keyboard.press("Enter")
            page.wait_for_function("samjaxState.candidates === null")
            click_image(page, *b)
            wait_decodes(page, 3)
            shots = [out / "annotate.png", out / "annotate_prefill.png"]
            page.screenshot(path=str(shots[0]))
            page.keyboard.press("Escape")
            page.keyboard.press("n")
            page.wait_for_function(f"samjaxState.current === {second!r} && document.body.dataset.ready === '1'",
                                   timeout=120_000)
            page.wait_for_function("samjaxState.prefill !== 'pending'", timeout=300_000)
            first_model = page.locator("#masks li[data-source='model']").first
            if first_model.count():
                first_model.click()
            page.screenshot(path=str(shots[1]))
        engine.close()
        return shots
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="samjax checkpoint directory or official .pth")
    p.add_argument("--out", required=True, help="folder for annotate.png and annotate_prefill.png")
    p.add_argument("--images", default=None, help="images to show (default: synthetic ones in a temporary folder)")
    p.add_argument("--chromium", default=None, help=f"Chromium executable (default {DEFAULT_CHROMIUM})")
    p.add_argument("--points-per-side", type=int, default=16, help="--prefill's point grid (default %(default)s)")
    p.add_argument("--pred-iou-thresh", type=float, default=0.4,
                   help="--prefill's threshold (default %(default)s: a small model's IoU estimates are low)")
    p.add_argument("--stability-score-thresh", type=float, default=0.9, help="--prefill's (default %(default)s)")
    a = p.parse_args(argv)
    try:
        shots = take(a.checkpoint, Path(a.out), Path(a.images) if a.images else None, a.chromium,
                     a.points_per_side, a.pred_iou_thresh, a.stability_score_thresh)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(map(str, shots)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
