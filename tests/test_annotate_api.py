"""The annotation tool's HTTP API, in process (FastAPI's TestClient), on a tiny random SAM and synthetic images.

Decoding through the API gives exactly `Predictor.predict`'s masks and scores; an accept writes an SA-1B JSON that
pycocotools decodes and `samjax.data.sa1b` converts; embeddings are computed once and found again on disk; several
annotators lose nothing; bad requests get a 4xx with a message.
"""

from __future__ import annotations

import concurrent.futures
import io
import json

import numpy as np
import pytest
from PIL import Image

from samjax.infer import Predictor
from tests.annotate_helpers import CFG, client, object_point, rle_to_mask, tiny_params, write_images

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def predictor():
    return Predictor(CFG, tiny_params())


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    return folder, write_images(folder, 3)


def make(images, out, predictor, **kwargs):
    from samjax.annotate.server import build_app

    return build_app(images[0], out, predictor=predictor, prefetch_first=False, **kwargs)


@pytest.fixture
def app(images, tmp_path, predictor):
    app = make(images, tmp_path / "out", predictor)
    yield app
    app.app.state.engine.close()


def drain(app):
    """Wait for the background thread's queued work (prefetch, prefill)."""
    app.app.state.engine.submit(lambda: None).result(timeout=120)


def test_list_upload_and_image_bytes(app, images, tmp_path):
    c = client(app)
    listed = c.get("/api/images").json()
    assert [im["id"] for im in listed] == [name for name, _, _ in images[1]]
    assert all((im["width"], im["height"], im["masks"], im["version"]) == (128, 96, 0, 0) for im in listed)
    png = io.BytesIO()
    Image.fromarray(np.full((40, 50, 3), 200, np.uint8)).save(png, "PNG")
    r = c.post("/api/images", files={"file": ("new shot.png", png.getvalue(), "image/png")})
    assert r.status_code == 201 and r.json()["width"] == 50
    assert (tmp_path / "out" / "uploads" / "new shot.png").is_file()
    assert "new shot.png" in [im["id"] for im in c.get("/api/images").json()]
    r = c.get("/api/images/new%20shot.png/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content == png.getvalue()
    bad = {"../evil.png": 400, ".hidden.png": 400, "notes.txt": 400, "img_0.png": 409}
    for name, code in bad.items():
        r = c.post("/api/images", files={"file": (name, png.getvalue(), "image/png")})
        assert r.status_code == code and r.json()["detail"], (name, r.text)
    r = c.post("/api/images", files={"file": ("broken.png", b"not an image", "image/png")})
    assert r.status_code == 400 and "decode" in r.json()["detail"]
    assert not (images[0] / "new shot.png").exists()  # uploads never go to the images folder


def test_embedding_once_on_disk_and_next_ahead(images, tmp_path, predictor):
    app = make(images, tmp_path / "out", predictor)
    c, eng = client(app), app.app.state.engine
    first, second = images[1][0][0], images[1][1][0]
    r = c.post(f"/api/images/{first}/embedding").json()
    assert r == {"id": first, "ready_before": False, "input_size": [48, 64], "original_size": [96, 128], "next": second}
    drain(app)  # the next image's embedding was computed behind it
    assert eng.stats["encoded"] == 2
    assert c.post(f"/api/images/{second}/embedding").json()["ready_before"] is True  # and the third's starts
    drain(app)
    assert eng.stats == {"encoded": 3, "from_disk": 0, "from_memory": 1}
    assert len(list((tmp_path / "out" / ".cache" / "embeddings").rglob("*.npz"))) == 3
    eng.close()
    again = make(images, tmp_path / "out", predictor)  # a restart finds them on disk
    client(again).post(f"/api/images/{first}/embedding")
    drain(again)  # and the next one's
    assert again.app.state.engine.stats == {"encoded": 0, "from_disk": 2, "from_memory": 0}
    again.app.state.engine.close()


def test_decode_equals_predictor_predict(app, images, predictor):
    c = client(app)
    name, image, masks = images[1][1]
    ref = Predictor(CFG, tiny_params())
    ref.set_image(image)
    pt = object_point(masks)
    prompts = [{"points": [pt], "labels": [1]},
               {"box": [10.0, 8.0, 100.0, 70.0]},
               {"points": [pt, [5.0, 90.0]], "labels": [1, 0], "box": [10.0, 8.0, 100.0, 70.0], "multimask": False}]
    for p in prompts:
        r = c.post(f"/api/images/{name}/decode", json=p)
        assert r.status_code == 200, r.text
        got = r.json()
        want_m, want_s, _ = ref.predict(point_coords=np.array(p["points"]) if "points" in p else None,
                                        point_labels=np.array(p["labels"]) if "labels" in p else None,
                                        box=np.array(p["box"]) if "box" in p else None,
                                        multimask_output=p.get("multimask", True))
        assert got["size"] == [96, 128] and len(got["masks"]) == len(want_m)
        for m, want, s, ws in zip(got["masks"], want_m, got["scores"], want_s):
            assert np.array_equal(rle_to_mask(m["counts"], 96, 128), want), p  # exactly the same pixels
            assert np.float32(s) == ws and m["area"] == want.sum()


def test_accept_writes_sa1b_json_that_pycocotools_and_the_converter_read(app, images, tmp_path):
    from pycocotools import mask as mask_utils

    from samjax.data.sa1b import convert
    from samjax.data.sa1b_format import parse_sample

    c = client(app)
    out = tmp_path / "out"
    for k, (name, _, masks) in enumerate(images[1][:2]):
        pt = object_point(masks)
        dec = c.post(f"/api/images/{name}/decode", json={"points": [pt], "labels": [1]}).json()
        best = int(np.argmax(dec["scores"]))
        r = c.post(f"/api/images/{name}/annotations", json={"base_version": 0, "points": [pt], "labels": [1],
                                                            "candidate": best, "annotator": "ann"})
        assert r.status_code == 200 and r.json()["version"] == 1 and "warning" not in r.json()
        r = c.post(f"/api/images/{name}/annotations", json={"base_version": 1, "box": [4, 4, 60, 50], "candidate": 0})
        assert r.status_code == 200, r.text
        stem = name.rsplit(".", 1)[0]
        doc = json.loads((out / f"{stem}.json").read_text())
        assert doc["image"] == {"image_id": doc["image"]["image_id"], "width": 128, "height": 96,
                                "file_name": f"{stem}.jpg"}
        a, b = doc["annotations"]
        assert (a["id"], b["id"], a["source"], a["annotator"], b["annotator"]) == (1, 2, "person", "ann", "anonymous")
        mask = mask_utils.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
        assert np.array_equal(mask.astype(bool), rle_to_mask(dec["masks"][best]["counts"], 96, 128))
        assert a["area"] == mask.sum() and a["predicted_iou"] == pytest.approx(dec["scores"][best])
        ys, xs = np.nonzero(mask)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        assert a["point_coords"] == [pt] and a["crop_box"] == [0, 0, 128, 96] and 0 <= a["stability_score"] <= 1
        assert a["prompt"] == {"points": [pt], "labels": [1], "box": None, "candidate": best, "multimask": True}
        assert len(b["point_coords"]) == 1  # a box alone: the mask's innermost pixel stands for SA-1B's point
        parse_sample((out / f"{stem}.jpg").read_bytes(), (out / f"{stem}.json").read_bytes(), stem)
        if k == 1:  # a JPEG source is copied byte for byte
            assert (out / f"{stem}.jpg").read_bytes() == (images[0] / name).read_bytes()
    summary = convert([str(out)], str(tmp_path / "tfrecord"), num_shards=1, workers=1, progress=False)
    assert (summary["images"], summary["masks"], summary["skipped"]) == (2, 4, 0), summary["problems"]
    listed = {im["id"]: im for im in c.get("/api/images").json()}
    assert (listed[images[1][0][0]]["masks"], listed[images[1][0][0]]["person_masks"]) == (2, 2)
    assert not list(images[0].glob("*.json"))  # nothing written beside the images


def test_several_annotators_lose_nothing(app, images):
    c = client(app)
    name, _, masks = images[1][2]
    pt = object_point(masks)
    accept = {"points": [pt], "labels": [1], "candidate": 0}
    c.post(f"/api/images/{name}/annotations", json={**accept, "base_version": 0, "annotator": "A"})
    b = c.post(f"/api/images/{name}/annotations", json={**accept, "base_version": 0, "annotator": "B"}).json()
    assert b["version"] == 2 and "someone else" in b["warning"]  # B saw version 0: added anyway, warned
    assert [x["annotator"] for x in b["doc"]["annotations"]] == ["A", "B"]
    r = c.delete(f"/api/images/{name}/annotations/1", params={"base_version": 1})  # stale, but the mask is there
    assert r.status_code == 200 and "warning" in r.json() and r.json()["version"] == 3
    r = c.delete(f"/api/images/{name}/annotations/1", params={"base_version": 1})  # someone deleted it already
    assert r.status_code == 409 and "not there" in r.json()["detail"] and r.json()["version"] == 3
    r = c.post(f"/api/images/{name}/annotations", json={**accept, "base_version": 3, "replaces": 1})
    assert r.status_code == 409 and "not saved" in r.json()["detail"]
    r = c.delete(f"/api/images/{name}/annotations", params={"base_version": 2})  # clear all, unseen changes
    assert r.status_code == 409 and r.json()["doc"]["annotations"]
    r = c.post(f"/api/images/{name}/annotations", json={**accept, "base_version": 3, "replaces": 2})  # an edit
    edited = r.json()["doc"]["annotations"]
    assert [x["id"] for x in edited] == [3] and edited[0]["edited_from"]["annotator"] == "B"

    def one(i):
        return client(app).post(f"/api/images/{name}/annotations",
                                json={**accept, "base_version": 4, "annotator": f"t{i}"}).json()["version"]

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        versions = sorted(pool.map(one, range(6)))
    assert versions == list(range(5, 11))  # one write at a time, each its own version
    doc = c.get(f"/api/images/{name}").json()
    assert doc["version"] == 10 and len(doc["doc"]["annotations"]) == 7
    assert len({x["id"] for x in doc["doc"]["annotations"]}) == 7
    r = c.delete(f"/api/images/{name}/annotations", params={"base_version": 10})
    assert r.status_code == 200 and r.json()["doc"]["annotations"] == []
    r = c.put(f"/api/images/{name}/done", json={"base_version": 11, "done": True})
    assert r.json()["doc"]["samjax"]["done"] is True
    assert {im["id"]: im["done"] for im in c.get("/api/images").json()}[name] is True


def test_bad_requests_get_4xx_with_a_message(images, tmp_path, predictor):
    app = make(images, tmp_path / "out", predictor, max_json=4096, max_upload=20_000)
    c = client(app)
    name = images[1][0][0]
    ok = {"points": [[10.0, 10.0]], "labels": [1]}
    cases = [
        ("get", "/api/images/nope.png/image", None, 404, "no image"),
        ("get", "/api/images/..%2F..%2Fetc%2Fpasswd/image", None, 400, "plain file names"),
        ("get", "/api/images/%2Fetc%2Fpasswd", None, 400, "plain file names"),
        ("get", "/api/images/.hidden.png/image", None, 400, "hidden"),
        ("post", "/api/images/..%2Fimg_0.png/decode", ok, 400, "plain file names"),
        ("post", f"/api/images/{name}/decode", {"points": [[1.0]], "labels": [1]}, 422, "points"),
        ("post", f"/api/images/{name}/decode", {"points": [[1.0, 2.0]], "labels": [1, 0]}, 422, "one label per point"),
        ("post", f"/api/images/{name}/decode", {"points": [[1.0, 2.0]], "labels": [7]}, 422, "labels are 1"),
        ("post", f"/api/images/{name}/decode", {"points": [], "labels": []}, 422, "at least one point"),
        ("post", f"/api/images/{name}/decode", {"points": [["x", 2]], "labels": [1]}, 422, "points"),
        ("post", f"/api/images/{name}/decode", {"points": [[500.0, 2.0]], "labels": [1]}, 400, "outside"),
        ("post", f"/api/images/{name}/decode", {"box": [50.0, 5.0, 10.0, 40.0]}, 400, "x0 <= x1"),
        ("post", f"/api/images/{name}/decode", {**ok, "extra": 1}, 422, "extra"),
        ("post", f"/api/images/{name}/decode", {"points": [[1.0, 1.0]] * 65, "labels": [1] * 65}, 422, "64"),
        ("post", f"/api/images/{name}/decode", {"points": [[1.0, 1.0]] * 500, "labels": [1] * 500}, 413, "limit"),
        ("post", f"/api/images/{name}/annotations", ok, 422, "base_version"),
        ("post", f"/api/images/{name}/annotations", {**ok, "base_version": 0, "candidate": 5}, 400, "candidate"),
        ("delete", f"/api/images/{name}/annotations/3", None, 422, "base_version"),
        ("get", "/api/nothing", None, 404, "no API endpoint"),
    ]
    for method, url, body, code, text in cases:
        r = getattr(c, method)(url, **({"json": body} if body is not None else {}))
        assert r.status_code == code, (url, body, r.status_code, r.text)
        assert text in json.dumps(r.json()["detail"]), (url, r.json())
    r = c.post(f"/api/images/{name}/decode", content=b'{"points": [[NaN, 1]], "labels": [1]}',
               headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = c.post("/api/images", files={"file": ("big.png", b"0" * 30_000, "image/png")})
    assert r.status_code == 413 and "limit of 20000 bytes" in r.json()["detail"]
    r = c.post(f"/api/images/{name}/decode", content=iter([b"[" + b" " * 3000, b" " * 3000 + b"]"]),
               headers={"content-type": "application/json"})  # chunked, no Content-Length: counted as it comes
    assert r.status_code == 413 and "limit of 4096 bytes" in r.json()["detail"]
    r = client(app).get("/api/images", headers={"host": "evil.example:8000"})  # DNS rebinding
    assert r.status_code == 400 and "loopback" in r.json()["detail"]
    r = c.post(f"/api/images/{name}/decode", json=ok, headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.json()["detail"]
    assert not (tmp_path / "out" / f"{name.rsplit('.', 1)[0]}.json").exists()
    app.app.state.engine.close()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    app = make((broken, None), tmp_path / "out2", predictor)
    c = client(app)
    (entry,) = c.get("/api/images").json()
    assert entry["id"] == "bad.png" and "not an image" in entry["error"]  # listed, not hidden
    r = c.post("/api/images/bad.png/embedding")
    assert r.status_code == 422 and "bad.png" in r.json()["detail"]
    app.app.state.engine.close()


def test_token_required_when_set(images, tmp_path, predictor):
    from samjax.annotate.server import build_app

    app = build_app(images[0], tmp_path / "out", predictor=predictor, token="s3cret", loopback_only=False,
                    prefetch_first=False)
    c = client(app)
    r = c.get("/api/images")
    assert r.status_code == 401 and "token" in r.json()["detail"]
    assert c.get("/api/images", headers={"x-token": "wrong"}).status_code == 403
    assert c.get("/api/images", headers={"x-token": "s3cret"}).status_code == 200
    assert c.get("/api/images", headers={"authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/api/images?token=s3cret").status_code == 200
    assert client(app).get("/api/config?token=s3cret", headers={"host": "10.1.2.3:8000"}).status_code == 200
    assert c.get("/").status_code == 200 and "samjax annotate" in c.get("/").text  # the page holds no data
    app.app.state.engine.close()


def test_cli_security_defaults_and_errors(images, tmp_path, capsys):
    from samjax.annotate.server import is_loopback, main, parse_args

    a = parse_args(["--images", "i", "--checkpoint", "c", "--out", "o"])
    assert (a.host, a.port, a.token, a.prefill, a.browser_decode) == ("127.0.0.1", 8000, None, False, None)
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.com")
    assert main(["--images", str(tmp_path / "missing"), "--checkpoint", str(tmp_path), "--out",
                 str(tmp_path / "o")]) == 2
    assert main(["--images", str(images[0]), "--checkpoint", str(tmp_path / "none"), "--out", str(images[0])]) == 2
    err = capsys.readouterr().err
    assert "is not a folder" in err and "must not be the --images folder" in err


def test_prefill_adds_editable_model_masks(images, tmp_path, predictor):
    app = make(images, tmp_path / "out", predictor,
               prefill={"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0})
    c = client(app)
    name, _, masks = images[1][0]
    assert c.get(f"/api/images/{name}").json()["prefill"] == "pending"
    c.post(f"/api/images/{name}/embedding")
    drain(app)
    r = c.get(f"/api/images/{name}").json()
    anns = r["doc"]["annotations"]
    assert r["prefill"] == "done" and anns and all(a["source"] == "model" and a["annotator"] is None for a in anns)
    assert all(len(a["point_coords"]) == 1 and a["segmentation"]["size"] == [96, 128] for a in anns)
    next_name = images[1][1][0]  # the next image was prefilled ahead
    assert c.get(f"/api/images/{next_name}").json()["prefill"] == "done"
    pt = object_point(masks)
    r = c.post(f"/api/images/{name}/annotations", json={"base_version": r["version"], "points": [pt], "labels": [1],
                                                        "candidate": 1, "replaces": anns[0]["id"], "annotator": "P"})
    new = r.json()["doc"]["annotations"]
    assert len(new) == len(anns) and new[-1]["source"] == "person"
    assert new[-1]["edited_from"] == {"id": anns[0]["id"], "source": "model", "annotator": None}
    listed = {im["id"]: im for im in c.get("/api/images").json()}[name]
    assert (listed["model_masks"], listed["person_masks"]) == (len(anns) - 1, 1)
    app.app.state.engine.close()


def test_predictor_set_embedding_checks_what_it_is_given(predictor, images):
    """Predictor.set_embedding (what the server decodes from) refuses an embedding of another model or size."""
    image = images[1][0][1]
    feats, input_sizes, original_sizes = predictor.encode_images([image])
    g, c = CFG.grid_size, CFG.prompt_embed_dim
    with pytest.raises(ValueError, match=rf"\(1, {g}, {g}, {c}\)"):
        predictor.set_embedding(np.zeros((1, g, g, c + 1), np.float32), input_sizes[0], original_sizes[0])
    with pytest.raises(ValueError, match="not the resized size"):
        predictor.set_embedding(feats, (64, 64), original_sizes[0])
    predictor.set_embedding(np.asarray(feats), input_sizes[0], original_sizes[0])
    assert predictor.original_size == (96, 128) and predictor.input_size == (48, 64)
    assert np.array_equal(predictor.get_image_embedding(), np.asarray(feats))
