"""OWL-ViT / OWLv2 detection (samjax.infer.detect): pre- and post-processing against transformers' image processors
and post_process_object_detection on random weights, per-label NMS against a plain greedy NMS, one compile per image
bucket and query bucket, and clear errors for bad input.

Pixels agree with HF's OwlViTImageProcessorPil / Owlv2ImageProcessorPil within 1e-5 (normalised units); scores
within 1e-5, labels exactly and boxes within 1e-4 px of HF's post-processing of HF's model outputs.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from scipy import ndimage

from samjax.infer import detect as D
from samjax.infer.ground import MAX_QUERIES
from samjax.weights import clip as wclip
from samjax.weights import owlvit as wowl
from samjax.weights.keys import CheckpointMismatchError
from tests.text import tiny

QUERIES = ["a cat", "a red car", "dog"]
# (H, W): wide below the model size (upscaling), tall above it, square, a downscale by ~4: OWLv2 bucket 128, one
# compile
SIZES = [(20, 27), (45, 31), (32, 32), (120, 90)]


def _images():
    return tiny.images(1, SIZES)


@pytest.fixture(scope="module", params=[1, 2], ids=["owlvit", "owlv2"])
def hf(request, tmp_path_factory):
    """(transformers model, its image processor, our OwlDetector loaded from save_owlvit's directory)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.owlv2.image_processing_pil_owlv2 import (
        Owlv2ImageProcessorPil,
    )
    from transformers.models.owlvit.image_processing_pil_owlvit import (
        OwlViTImageProcessorPil,
    )

    from tests.text.reference import randomize_

    version = request.param
    cfg_cls, model_cls, proc_cls = (
        (transformers.OwlViTConfig, transformers.OwlViTForObjectDetection, OwlViTImageProcessorPil) if version == 1
        else (transformers.Owlv2Config, transformers.Owlv2ForObjectDetection, Owlv2ImageProcessorPil))
    torch.manual_seed(0)
    model = model_cls(cfg_cls(**tiny.OWL_HF_KW)).eval()
    randomize_(model, seed=10 + version)
    config = tiny.owl_config(version)
    assert wowl.OwlViTConfig.from_hf_config(model.config.to_dict()) == config
    directory = wowl.save_owlvit(tmp_path_factory.mktemp("owl") / "ckpt", config, wowl.from_hf(model.state_dict(),
                                                                                                  config),
                                 tokenizer=tiny.tokenizer(16))
    return model, proc_cls(size={"height": 32, "width": 32}), D.OwlDetector.load(directory)


@pytest.mark.torch
def test_saved_directory_is_a_transformers_checkpoint(hf, tmp_path):
    model, _, detector = hf
    directory = wowl.save_owlvit(tmp_path, detector.config, detector.params)
    again = type(model).from_pretrained(directory)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[k].numpy(), v.numpy(), err_msg=k)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == detector.config.model_type


@pytest.mark.torch
def test_pixels_match_hf_processor(hf):
    _, proc, detector = hf
    cfg = detector.config.clip
    mean, std = np.asarray(cfg.pixel_mean), np.asarray(cfg.pixel_std)
    for image in _images():
        ref = proc(images=image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
        array, square = detector._prepare(image)
        if detector.config.version == 1:
            assert array.shape == (32, 32, 3) and array.dtype == np.uint8
            ours = array / 255.0
        else:
            assert square == D.square_bucket(max(image.shape[:2])) and array.shape == (square, square, 3)
            tiles = detector._tiles([image.shape[:2]], square, 1)
            ours = np.asarray(jax.jit(D._owlv2_pixels, static_argnums=3)(array[None], tiles,
                                                                          np.array([image.shape[:2]]), 32))[0]
        np.testing.assert_allclose((ours - mean) / std, ref, atol=1e-5, rtol=0, err_msg=str(image.shape))


def test_owlv2_resize_matrix_is_scipy():
    """One axis of HF's OWLv2 resize (scipy gaussian_filter + zoom, mirror, grid mode) applied to the identity."""
    for side, out in [(100, 32), (37, 32), (32, 32), (20, 32), (1, 32), (2000, 960)]:
        eye = np.eye(side)
        sigma = max(0.0, (side / out - 1) / 2)
        smooth = ndimage.gaussian_filter(eye, (sigma, 0), mode="mirror") if sigma else eye
        ref = ndimage.zoom(smooth, (out / side, 1), order=1, mode="mirror", grid_mode=True)
        np.testing.assert_allclose(D.owlv2_resize_matrix(side, out), ref, atol=1e-12, err_msg=f"{side}->{out}")
    assert [D.square_bucket(s) for s in (1, 128, 129, 192, 193, 1000, 1025)] == [128, 128, 192, 192, 256, 1024,
                                                                                 1536]


@pytest.mark.torch
def test_detections_match_hf_post_processing(hf):
    import torch

    model, proc, detector = hf
    images = _images()
    ids = torch.as_tensor(tiny.tokenizer(16)(QUERIES).astype(np.int64))
    p = detector.config.num_patches
    ours = detector.detect(images, QUERIES, threshold=0.0, top_k=p)
    threshold = float(np.median(np.concatenate([d.scores for d in ours])))
    ours_thresholded = detector.detect(images, ", ".join(QUERIES), threshold=threshold, top_k=1000)
    for image, dets, kept in zip(images, ours, ours_thresholded):
        with torch.no_grad():
            out = model(input_ids=ids, pixel_values=proc(images=image, return_tensors="pt")["pixel_values"],
                        attention_mask=(ids > 0).long())
        ref = proc.post_process_object_detection(out, threshold=0.0, target_sizes=[image.shape[:2]])[0]
        order = torch.argsort(-ref["scores"], stable=True)
        scores, labels = ref["scores"][order].numpy(), ref["labels"][order].numpy()
        h, w = image.shape[:2]
        boxes = np.clip(ref["boxes"][order].numpy(), 0, [w, h, w, h])  # ours are clipped to the image
        assert len(dets) == p and dets.queries == tuple(QUERIES)
        np.testing.assert_allclose(dets.scores, scores, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(dets.labels, labels)
        np.testing.assert_allclose(dets.boxes, boxes, atol=1e-4, rtol=0)
        assert dets.names == [QUERIES[i] for i in labels]
        np.testing.assert_allclose(kept.scores, scores[scores > threshold], atol=1e-5, rtol=0)
    assert 0 < sum(map(len, ours_thresholded)) < sum(map(len, ours))


def _greedy_nms(boxes, labels, thresh):
    keep = []
    for i in range(len(boxes)):
        ok = True
        for j in keep:
            if labels[i] != labels[j]:
                continue
            lt, rb = np.maximum(boxes[i, :2], boxes[j, :2]), np.minimum(boxes[i, 2:], boxes[j, 2:])
            inter = np.prod(np.clip(rb - lt, 0, None))
            areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in (boxes[i], boxes[j])]
            if inter / max(sum(areas) - inter, 1e-9) > thresh:
                ok = False
                break
        if ok:
            keep.append(i)
    return np.array(keep, int)


def test_nms_is_greedy_per_label_and_compiles_per_bucket():
    """Per-label NMS equals a plain greedy NMS; the detection compiles once per (image bucket, image batch, query
    bucket, top_k), the text embedding once per query bucket; thresholds are data. (top_k 15 and query buckets 8
    and 16 are used by no other test, so the counts hold whatever ran before.)"""
    detector = tiny.owl_detector(2)
    small = tiny.images(2, [(60, 80), (70, 50)])  # OWLv2 bucket 128
    large = tiny.images(3, [(300, 200)])  # bucket 384
    five = [f"object {i}" for i in range(5)]  # query bucket 8
    before = D._detect._cache_size(), D._embed_queries._cache_size()
    everything = detector.detect(small, five, threshold=0.0, top_k=15)
    suppressed = 0
    for thresh in (0.05, 0.3):
        nmsed = detector.detect(small, five, threshold=0.0, top_k=15, nms_thresh=thresh)
        for all_, kept in zip(everything, nmsed):
            idx = _greedy_nms(all_.boxes, all_.labels, thresh)
            np.testing.assert_array_equal(kept.boxes, all_.boxes[idx])
            np.testing.assert_array_equal(kept.labels, all_.labels[idx])
            suppressed += len(all_) - len(kept)
    assert suppressed > 0
    detector.detect(small[1:], five[:3] + ["x", "y", "z"], threshold=0.2, top_k=15)  # batch 1: new
    detector.detect(small[:1], ["x"] * 7, threshold=0.1, top_k=15)  # same buckets, other queries: cached
    detector.detect(large, five * 2, top_k=15)  # a new image bucket, query bucket 16
    detector.detect(large, five * 3, top_k=15)  # cached
    assert D._detect._cache_size() - before[0] == 3  # (128, 2 images, 8 queries), (128, 1, 8), (384, 1, 16)
    assert D._embed_queries._cache_size() - before[1] == 2  # query buckets 8 and 16


def test_bad_input_errors(tmp_path):
    detector = tiny.owl_detector(1)
    image = tiny.images(4, [(30, 40)])[0]
    for text in ("", " , ,", []):
        with pytest.raises(ValueError, match="holds no query"):
            detector.detect([image], text)
    with pytest.raises(ValueError, match=f"{MAX_QUERIES + 1} queries, more than the limit of {MAX_QUERIES}"):
        detector.detect([image], [f"thing {i}" for i in range(MAX_QUERIES + 1)])
    with pytest.raises(TypeError, match="comma-separated queries or a list of strings"):
        detector.detect([image], [1, 2])
    with pytest.raises(ValueError, match="grayscale"):
        detector.detect([image[..., 0]], "a cat")
    with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
        detector.detect([image], "a cat", top_k=0)
    with pytest.raises(ValueError, match="nms_thresh must be in"):
        detector.detect([image], "a cat", nms_thresh=0.0)
    # a CLIP checkpoint is no detector: the converter's error
    wclip.save_clip(tmp_path / "clip", tiny.CLIP_CONFIG, tiny.clip_params())
    (tmp_path / "clip" / "config.json").write_text(json.dumps(tiny.CLIP_CONFIG.to_hf_config()))
    with pytest.raises(ValueError, match="not an OWL-ViT / OWLv2 config: model_type is 'clip'"):
        D.OwlDetector.load(tmp_path / "clip")
    # an OWL config over weights of something else: the converter lists the keys
    owl = wowl.save_owlvit(tmp_path / "owl", detector.config, detector.params)
    wclip.save_clip(tmp_path / "other", tiny.CLIP_CONFIG, tiny.clip_params())
    (owl / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointMismatchError, match="not an OWL-ViT / OWLv2 checkpoint"):
        D.OwlDetector.load(owl)
    bare = wowl.save_owlvit(tmp_path / "bare", detector.config, detector.params)  # no tokenizer files
    with pytest.raises(FileNotFoundError, match="needs its tokenizer files"):
        D.OwlDetector.load(bare)
    small_vocab = tiny.owl_config(1).replace(clip=tiny.owl_config(1).clip.replace(vocab_size=99))
    with pytest.raises(ValueError, match="not this model's tokenizer"):
        D.OwlDetector(small_vocab, {}, tiny.tokenizer(16))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        D.OwlDetector.load(tmp_path / "nowhere")


def test_a_data_mesh_gives_the_same_detections():
    """Image batches placed on a ("data",) mesh over this process's devices (one CPU device here: the sharded
    code path, not a real split; the batch is padded to a multiple of the devices as Predictor.encode_images does)
    detect the same boxes."""
    from samjax.parallel import data_mesh

    plain = tiny.owl_detector(1)
    meshed = D.OwlDetector(plain.config, tiny.owl_params(1), plain.tokenizer, mesh=data_mesh())
    images = _images()  # 4 images, as the parity test: the unsharded compile is shared with it
    for a, b in zip(plain.detect(images, QUERIES, top_k=16), meshed.detect(images, QUERIES, top_k=16)):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-5)
        np.testing.assert_array_equal(a.labels, b.labels)
