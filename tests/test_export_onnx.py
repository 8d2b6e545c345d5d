"""The ONNX decoder (samjax.export_onnx) in onnxruntime against samjax's decode and the official SamOnnxModel.

One official tiny SAM with random weights everywhere (tests.official.randomize_) is converted through samjax's
converter; the official `SamOnnxModel` is exported from it with torch's exporter (as the official
scripts/export_onnx_model.py does) and our graph is built from the converted parameters. For points, a box,
points + box and a mask prompt: our graph == samjax's Predictor (all four outputs, low-res and full-size logits,
IoU) and == the official export, within 1e-4, also with the official `return_single_mask` and
`use_stability_score` options (together: the single mask chosen by stability score).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from samjax import transforms as T
from samjax.convert import from_torch
from samjax.infer import Predictor
from tests.annotate_helpers import CFG  # the annotation tool's tiny config: compiled decoders are shared
from tests.official import build_official, import_official, state_dict_numpy

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.torch

IMAGE_HW = (90, 130)  # non-square, not a multiple of anything: exercises the crop of the padding
ATOL = 1e-4


@pytest.fixture(scope="module")
def setup():
    sam = build_official(CFG, seed=3)
    params = from_torch(state_dict_numpy(sam), CFG)
    pred = Predictor(CFG, params)
    image = np.random.default_rng(0).integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8)
    pred.set_image(image)
    return sam, params, pred


def _session(model_bytes: bytes):
    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])


def _ours(params, **options):
    from samjax.export_onnx import build_model

    return _session(build_model(CFG, params, **options).SerializeToString())


_OFFICIAL: dict = {}  # options -> session: each official export costs a torch trace


def _official(sam, tmp_path, **options):
    key = tuple(sorted(options.items()))
    if key not in _OFFICIAL:
        _OFFICIAL[key] = _export_official(sam, tmp_path, **options)
    return _OFFICIAL[key]


def _export_official(sam, tmp_path, **options):
    torch, _ = import_official()
    from segment_anything.utils.onnx import SamOnnxModel

    model = SamOnnxModel(sam, return_single_mask=options.get("return_single_mask", False),
                         use_stability_score=options.get("use_stability_score", False))
    g = CFG.grid_size
    dummy = {"image_embeddings": torch.randn(1, CFG.prompt_embed_dim, g, g),
             "point_coords": torch.randint(0, CFG.image_size, (1, 5, 2)).float(),
             "point_labels": torch.randint(0, 4, (1, 5)).float(),
             "mask_input": torch.randn(1, 1, 4 * g, 4 * g), "has_mask_input": torch.tensor([1.0]),
             # torch's TorchScript exporter records SamOnnxModel's crop `int(prepadded_size)` as constants of this
             # dummy size: the official export is right only for images of its aspect ratio (1500x2250 in the
             # official script). Ours computes the crop in the graph (test_equals_samjax_decode, two sizes).
             "orig_im_size": torch.tensor([float(v) for v in IMAGE_HW])}
    path = tmp_path / f"official_{'_'.join(sorted(options)) or 'all'}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's tracer warnings about Python ints
        torch.onnx.export(model, tuple(dummy.values()), str(path), dynamo=False, opset_version=17,
                          do_constant_folding=True, input_names=list(dummy),
                          output_names=["masks", "iou_predictions", "low_res_masks"],
                          dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}})
    return _session(path.read_bytes())


def _prompts(pred):
    """name -> (Predictor.predict kwargs, ONNX feed) for the same prompt."""
    rng = np.random.default_rng(1)
    h, w = IMAGE_HW
    emb = pred.get_image_embedding().transpose(0, 3, 1, 2)
    g = CFG.grid_size
    prev = pred.predict(point_coords=np.array([[60.0, 40.0]]), point_labels=np.array([1]))[2]
    mask_logits = prev[0][None].astype(np.float32)  # (1, 4g, 4g)
    pts = np.stack([rng.uniform(0, w, 3), rng.uniform(0, h, 3)], 1)
    box = np.array([20.0, 10.0, 110.0, 80.0])

    def feed(coords, labels, mask=None):
        return {"image_embeddings": emb, "point_coords": coords[None].astype(np.float32),
                "point_labels": np.asarray(labels, np.float32)[None],
                "mask_input": (mask[None] if mask is not None else np.zeros((1, 1, 4 * g, 4 * g))).astype(np.float32),
                "has_mask_input": np.array([0.0 if mask is None else 1.0], np.float32),
                "orig_im_size": np.array(IMAGE_HW, np.float32)}

    def points(p, lab):  # points + the padding point, as SamPredictor and the official web demo send them
        return np.concatenate([T.apply_coords(p, IMAGE_HW, CFG.image_size), [[0.0, 0.0]]]), [*lab, -1]

    tbox = T.apply_boxes(box[None], IMAGE_HW, CFG.image_size).reshape(2, 2)
    return {
        "one_point": ({"point_coords": pts[:1], "point_labels": np.array([1])}, feed(*points(pts[:1], [1]))),
        "three_points": ({"point_coords": pts, "point_labels": np.array([1, 0, 1])},
                         feed(*points(pts, [1, 0, 1]))),
        "box": ({"box": box}, feed(tbox, [2, 3])),
        "points_and_box": ({"point_coords": pts[:2], "point_labels": np.array([1, 0]), "box": box},
                           feed(np.concatenate([T.apply_coords(pts[:2], IMAGE_HW, CFG.image_size), tbox]),
                                [1, 0, 2, 3])),
        "mask_input": ({"point_coords": pts[:1], "point_labels": np.array([1]), "mask_input": mask_logits},
                       feed(*points(pts[:1], [1]), mask=mask_logits)),
    }


def _close(a, b, what):
    err = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max()
    assert err <= ATOL, f"{what}: max |diff| {err:.3g} > {ATOL} (values up to {np.abs(b).max():.3g})"
    return err


def test_graph_inputs_outputs_match_the_official_export(setup, tmp_path):
    sam, params, _ = setup
    from samjax.export_onnx import INPUT_NAMES, OUTPUT_NAMES, build_model

    ours = build_model(CFG, params)
    assert [i.name for i in ours.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in ours.graph.output] == list(OUTPUT_NAMES)
    sess = _session(ours.SerializeToString())
    off = _official(sam, tmp_path)
    for a, b in zip(sess.get_inputs(), off.get_inputs()):
        assert (a.name, a.type) == (b.name, b.type)
        assert [d if isinstance(d, int) else "dyn" for d in a.shape] == \
               [d if isinstance(d, int) else "dyn" for d in b.shape], a.name
    assert [o.name for o in sess.get_outputs()] == [o.name for o in off.get_outputs()]
    assert ours.opset_import[0].version == 17
    with pytest.raises(ValueError, match="opset"):
        build_model(CFG, params, opset=16)


def test_equals_samjax_decode(setup):
    """All 1 + 3 outputs: output 0 is samjax's multimask_output=False, 1..3 its multimask outputs."""
    _, params, pred = setup
    sess = _ours(params)
    errs = []
    for name, (kwargs, feed) in _prompts(pred).items():
        masks, iou, low = sess.run(None, feed)
        assert masks.shape == (1, 4, *IMAGE_HW) and low.shape == (1, 4, 64, 64), name
        # multimask_output=False (output 0) compiles another decoder: checked where it is the one used (3 points)
        for sl, multi in ((slice(1, None), True), (slice(0, 1), False))[:2 if name == "three_points" else 1]:
            ref_m, ref_iou, ref_low = pred.predict(**kwargs, multimask_output=multi, return_logits=True)
            errs += [_close(low[0, sl], ref_low, f"{name} low_res_masks"), _close(iou[0, sl], ref_iou, f"{name} iou"),
                     _close(masks[0, sl], ref_m, f"{name} masks")]
            # thresholded at 0, the masks agree wherever the logit is not within the tolerance of 0
            sure = np.abs(ref_m) > ATOL
            assert np.array_equal((masks[0, sl] > 0)[sure], (ref_m > 0)[sure]), name
    print(f"max |ONNX - samjax| over every output: {max(errs):.2g}")


@pytest.mark.parametrize("options", [{}, {"return_single_mask": True, "use_stability_score": True}],
                         ids=["all_outputs", "single_mask_by_stability"])
def test_equals_official_onnx_export(setup, tmp_path, options):
    sam, params, pred = setup
    ours, official = _ours(params, **options), _official(sam, tmp_path, **options)
    errs = []
    for name, (_, feed) in _prompts(pred).items():
        got, want = ours.run(None, feed), official.run(None, feed)
        for out, a, b in zip(("masks", "iou_predictions", "low_res_masks"), got, want):
            assert a.shape == b.shape, (name, out, a.shape, b.shape)
            errs.append(_close(a, b, f"{name} {out}"))
    print(f"{options}: max |ours - official| {max(errs):.2g}")


def test_cli_writes_a_model_that_runs(tmp_path, setup):
    from samjax.export_onnx import main
    from samjax.weights.store import save_model

    _, params, pred = setup
    ckpt = save_model(tmp_path / "ckpt", params, CFG)
    out = tmp_path / "onnx" / "decoder.onnx"
    assert main(["--checkpoint", str(ckpt), "--out", str(out), "--return-single-mask"]) == 0
    kwargs, feed = _prompts(pred)["one_point"]
    masks, _, _ = _session(out.read_bytes()).run(None, feed)
    assert masks.shape == (1, 1, *IMAGE_HW)
    ref_m, ref_iou, _ = pred.predict(**kwargs, return_logits=True)
    best = int(np.argmax(ref_iou))  # one point: the best multimask output
    _close(masks[0, 0], ref_m[best], "single mask")
    assert main(["--checkpoint", str(tmp_path / "missing"), "--out", str(out)]) == 2
