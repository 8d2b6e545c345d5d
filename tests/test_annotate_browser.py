"""The annotation page in a real browser: headless Debian Chromium driven by Playwright, the tool served by uvicorn
on loopback (in a thread of this process), a tiny random SAM, synthetic images.

Click an object -> the drawn mask is the server's decode of that click, pixel for pixel at display resolution
(1:1 zoom: the mask canvas, and the screen itself: a screenshot with the mask layer shown against one with it
hidden) -> Enter accepts -> the SA-1B JSON on disk holds it -> after a reload the overlay shows it again (decoded
from the COCO RLE in the page); after a wheel zoom and a middle-button pan a click still lands on the image point
under the cursor; right-click, Z and N do what the keys say. A screenshot is kept in the test's tmp folder.
With onnxruntime-web available (SAMJAX_ORT_WEB: its dist folder, as .ci/run installs it) the page decodes in the
browser and matches the server. Skipped, saying why, only where Chromium or Playwright is missing.
"""

from __future__ import annotations

import io
import json
import os

import httpx
import numpy as np
import pytest
from PIL import Image

from samjax.annotate import screenshots
from samjax.infer import Predictor
from tests.annotate_helpers import CFG, object_point, rle_to_mask, save_checkpoint, tiny_params, write_images

pytest.importorskip("fastapi")
if screenshots.find_chromium() is None:
    pytest.skip("no Chromium (apt-get install -y chromium gives /usr/bin/chromium; .ci/run installs it)",
                allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    return folder, write_images(folder, 3), Predictor(CFG, tiny_params())


def canvas_mask(page, selector: str) -> np.ndarray:
    """(H, W) bool: the pixels of a canvas whose alpha is not 0."""
    data = page.evaluate("""(sel) => {
        const c = document.querySelector(sel), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const a = new Array(c.width * c.height);
        for (let k = 0; k < a.length; k++) a[k] = d[4 * k + 3];
        return {w: c.width, h: c.height, a};
    }""", selector)
    return np.array(data["a"], np.uint8).reshape(data["h"], data["w"]) > 0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def image_on_screen(page, w: int, h: int) -> np.ndarray:
    """(H, W, 3) of what the screen shows over the image (zoom 1:1)."""
    box = page.locator("#image-layer").bounding_box()
    assert (box["width"], box["height"]) == (w, h), box  # display resolution == the image's
    png = page.screenshot(clip={"x": box["x"], "y": box["y"], "width": w, "height": h})
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_click_mask_accept_reload(setup, tmp_path):
    from samjax.annotate.server import build_app

    folder, images, predictor = setup
    name, _, masks = images[0]
    h, w = masks.shape[1:]
    out = tmp_path / "labels"
    app = build_app(folder, out, predictor=predictor)
    with screenshots.serve(app) as url, screenshots.launch(width=1000, height=700) as (_, page):
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}/?image={name}")
        screenshots.wait_ready(page)
        assert page.evaluate("document.body.dataset.decoder") == "server"
        x, y = object_point(masks)
        screenshots.click_image(page, x, y)
        screenshots.wait_decodes(page, 1)
        prompt = page.evaluate("samjaxState.prompt")
        assert prompt["labels"] == [1] and np.allclose(prompt["points"][0], [x, y], atol=0.5)
        server = httpx.post(f"{url}/api/images/{name}/decode",
                            json={"points": prompt["points"], "labels": [1], "multimask": True}, timeout=120).json()
        cand = page.evaluate("samjaxState.cand")
        assert cand == int(np.argmax(server["scores"]))  # the page shows the best-scored candidate
        want = rle_to_mask(server["masks"][cand]["counts"], h, w)
        assert want.any()
        page.keyboard.press("0")  # 1:1: one screen pixel per image pixel
        drawn = canvas_mask(page, "#live-layer")
        assert iou(drawn, want) == 1.0
        shown = image_on_screen(page, w, h)
        page.evaluate("document.querySelector('#live-layer').style.visibility = 'hidden'")
        bare = image_on_screen(page, w, h)
        page.evaluate("document.querySelector('#live-layer').style.visibility = 'visible'")
        on_screen = np.abs(shown - bare).sum(-1) > 0
        # every mask pixel is tinted on screen and nothing else is, except where a prompt point is drawn on top
        dot = np.zeros_like(want)
        dot[max(0, int(y) - 8):int(y) + 8, max(0, int(x) - 8):int(x) + 8] = True
        assert iou(on_screen & ~dot, want & ~dot) == 1.0
        page.keyboard.press("2")  # another candidate, then back
        assert iou(canvas_mask(page, "#live-layer"), rle_to_mask(server["masks"][1]["counts"], h, w)) == 1.0
        page.keyboard.press(str(cand + 1))

        page.fill("#annotator", "tester")
        page.locator("#annotator").dispatch_event("change")
        page.locator("#viewport").focus()  # keys typed into the name field are not shortcuts
        page.keyboard.press("Enter")
        page.wait_for_selector("body[data-version='1']")
        doc = json.loads((out / f"{name.rsplit('.', 1)[0]}.json").read_text())
        (ann,) = doc["annotations"]
        assert (ann["source"], ann["annotator"], ann["prompt"]["candidate"]) == ("person", "tester", cand)
        assert np.array_equal(rle_to_mask_coco(ann), want)
        assert not canvas_mask(page, "#live-layer").any()  # the prompt is cleared after an accept

        page.reload()
        screenshots.wait_ready(page)
        page.wait_for_selector("#masks li[data-source='person']")
        assert page.locator("#masks li").count() == 1
        assert iou(canvas_mask(page, "#overlay-layer"), want) == 1.0  # COCO RLE decoded in the page
        page.screenshot(path=str(tmp_path / "annotate_browser.png"))
        print(f"screenshot: {tmp_path / 'annotate_browser.png'}")

        # zoom (wheel) and pan (middle-button drag): a click still lands on the image point under the cursor
        view, vp = page.evaluate("samjaxState.view"), page.locator("#viewport").bounding_box()
        sx, sy = vp["x"] + view["tx"] + x * view["z"], vp["y"] + view["ty"] + y * view["z"]  # the object on screen
        page.mouse.move(sx, sy)
        page.mouse.wheel(0, -200)  # zooms about the cursor
        page.wait_for_function(f"samjaxState.view.z > {view['z'] * 1.3}")
        tx0 = page.evaluate("samjaxState.view.tx")
        page.mouse.down(button="middle")
        page.mouse.move(sx - 20, sy - 10, steps=3)
        page.mouse.up(button="middle")
        assert page.evaluate("samjaxState.view.tx") == pytest.approx(tx0 - 20)
        assert page.evaluate("samjaxState.prompt.points") == []  # panning adds no point
        screenshots.click_image(page, x, y)
        screenshots.wait_decodes(page, 1)
        assert np.allclose(page.evaluate("samjaxState.prompt.points")[0], [x, y], atol=0.5)
        page.keyboard.press("f")  # fit the image in the view again

        # keyboard: a background point (right click) adds to the prompt, Z undoes it, N opens the next image
        screenshots.click_image(page, 2, 2, button="right")
        screenshots.wait_decodes(page, 2)
        assert page.evaluate("samjaxState.prompt.labels") == [1, 0]
        page.keyboard.press("z")
        screenshots.wait_decodes(page, 3)
        assert page.evaluate("samjaxState.prompt.labels") == [1]
        page.keyboard.press("n")
        page.wait_for_function(f"samjaxState.current === {images[1][0]!r} && document.body.dataset.ready === '1'")
        assert not errors, errors
    app.app.state.engine.close()


def rle_to_mask_coco(ann) -> np.ndarray:
    from pycocotools import mask as mask_utils

    seg = ann["segmentation"]
    return mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)


def test_browser_decode_with_onnxruntime_web(setup, tmp_path):
    from samjax.annotate.server import build_app

    ort_dir = os.environ.get("SAMJAX_ORT_WEB")
    if not ort_dir:
        pytest.skip("SAMJAX_ORT_WEB is not set (the folder of npm's onnxruntime-web; .ci/run installs it)")
    folder, images, predictor = setup
    name, _, masks = images[1]
    h, w = masks.shape[1:]
    app = build_app(folder, tmp_path / "labels", predictor=predictor, browser_decode=ort_dir)
    with screenshots.serve(app) as url, screenshots.launch(width=1000, height=700) as (_, page):
        page.goto(f"{url}/?image={name}")
        screenshots.wait_ready(page)
        assert page.evaluate("document.body.dataset.decoder") == "browser"
        x, y = object_point(masks)
        screenshots.click_image(page, x, y)
        screenshots.wait_decodes(page, 1)
        prompt = page.evaluate("samjaxState.prompt")
        server = httpx.post(f"{url}/api/images/{name}/decode",
                            json={"points": prompt["points"], "labels": [1]}, timeout=120).json()
        scores = page.evaluate("samjaxState.candidates.scores")
        assert np.allclose(scores, server["scores"], atol=1e-4)
        for i in range(3):
            page.keyboard.press(str(i + 1))
            agree = iou(canvas_mask(page, "#live-layer"), rle_to_mask(server["masks"][i]["counts"], h, w))
            print(f"candidate {i + 1}: browser vs server mask IoU {agree:.5f}")
            assert agree >= 0.999  # logits within 1e-4: only pixels at the threshold may differ
    app.app.state.engine.close()


def test_screenshots_command(setup, tmp_path):
    """`python -m samjax.annotate.screenshots` (the README's pictures) on a tiny random checkpoint (the images and
    automatic-mask settings of the other tests: their compiled code serves)."""
    ckpt = save_checkpoint(tmp_path / "ckpt")
    assert screenshots.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "docs"), "--images", str(setup[0]),
                             "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]) == 0
    for shot in ("annotate.png", "annotate_prefill.png"):
        with Image.open(tmp_path / "docs" / shot) as im:
            assert im.size == (1280, 720)
