"""samjax.evaluate.bsds (the BSDS500 boundary benchmark) and the edge NMS of samjax.evaluate.edges.

By construction: one-to-one matching within the tolerance, the counts, ODS / OIS / AP on hand-made curves; against
the original: the curve summaries of the MATLAB benchmark's own sample output, and (where pyEdgeEval, the Cython
port of the benchmark's C++ matching and edgesNms, is installed) the matching and the edge NMS themselves."""

from __future__ import annotations

import numpy as np
import pytest

from samjax.evaluate import bsds, edges


def _line(shape, row, c0, c1):
    m = np.zeros(shape, bool)
    m[row, c0:c1] = True
    return m


def test_matching_is_one_to_one_within_the_tolerance():
    shape = (100, 100)  # diagonal 141.4: 0.0075 -> 1.06 px, 0.02 -> 2.83 px
    gt = _line(shape, 50, 10, 90)
    m1, m2 = bsds.correspond_pixels(gt, gt)
    assert m1.sum() == m2.sum() == 80
    m1, m2 = bsds.correspond_pixels(_line(shape, 51, 10, 90), gt)  # 1 px off: within 1.06 px
    assert m1.sum() == m2.sum() == 80
    m1, m2 = bsds.correspond_pixels(_line(shape, 52, 10, 90), gt)  # 2 px off: outside ...
    assert m1.sum() == m2.sum() == 0
    m1, m2 = bsds.correspond_pixels(_line(shape, 52, 10, 90), gt, max_dist=0.02)  # ... unless the tolerance grows
    assert m1.sum() == 80
    double = _line(shape, 50, 10, 90) | _line(shape, 51, 10, 90)  # a two-pixel-thick prediction
    m1, m2 = bsds.correspond_pixels(double, gt)
    assert m2.sum() == 80 and m1.sum() == 80  # each ground-truth pixel takes one partner only
    assert (m1 & ~double).sum() == 0 and (m2 == gt).all()
    m1, m2 = bsds.correspond_pixels(np.zeros(shape, bool), gt)
    assert m1.sum() == m2.sum() == 0
    with pytest.raises(ValueError, match="one shape"):
        bsds.correspond_pixels(gt, gt[:50])


def test_counts_and_metrics_by_construction():
    shape = (100, 100)
    gt_a, gt_b = _line(shape, 30, 10, 90), _line(shape, 70, 10, 90)
    pb = np.zeros(shape)
    pb[30, 10:90] = 0.9  # finds annotator A's boundary strongly ...
    pb[70, 10:50] = 0.3  # ... and half of B's weakly
    th = np.array([0.25, 0.5, 0.75])
    counts = bsds.evaluate_image(pb, [gt_a, gt_b], th)
    # cntR sums over annotators: at 0.25, A's 80 + 40 of B's (A's pixels are not near B's line: B matches 40 only)
    np.testing.assert_array_equal(counts, [[80 + 40, 160, 120, 120], [80, 160, 80, 80], [80, 160, 80, 80]])
    m = bsds.summarize(counts[None], th)
    assert m["ods_precision"] == pytest.approx(1.0) and m["ods_recall"] == pytest.approx(0.75)
    assert m["ods"] == pytest.approx(2 * 0.75 / 1.75)
    assert m["ois"] == pytest.approx(m["ods"])
    # AP: precision 1 for recall in [0.5, 0.75] (zero outside the curve's range), on the 0:0.01:1 grid: 26 points
    assert m["ap"] == pytest.approx(0.26)
    assert m["r50"] == pytest.approx(0.75)  # precision never below 0.5: the lowest threshold's recall
    perfect = bsds.summarize(bsds.evaluate_image(gt_a.astype(float), [gt_a], th)[None], th)
    assert perfect["ods"] == pytest.approx(1.0) and perfect["ois"] == pytest.approx(1.0)


def test_ois_takes_each_images_best_threshold():
    th = np.array([0.3, 0.6])
    # image 1 is best at the low threshold, image 2 at the high one; columns cntR, sumR, cntP, sumP
    img1 = np.array([[90, 100, 90, 100], [10, 100, 10, 10]], float)
    img2 = np.array([[100, 100, 100, 400], [80, 100, 80, 80]], float)
    m = bsds.summarize(np.stack([img1, img2]), th)
    r, p = (90 + 80) / 200, (90 + 80) / 180
    assert m["ois"] == pytest.approx(2 * p * r / (p + r))
    assert m["ois"] > m["ods"]


def test_curve_summaries_match_the_original_benchmark_output():
    """eval_bdry_thr.txt / eval_bdry.txt of the BSDS500 benchmark's sample (BSR/bench/data, test_2: 5 images, 5
    thresholds), as the MATLAB code wrote them: threshold, recall, precision per row; the ODS line and Area_PR."""
    thr = np.array([[0.166667, 0.60236, 0.848723], [0.333333, 0.443249, 0.926853], [0.5, 0.383339, 0.967137],
                    [0.666667, 0.380404, 0.986264], [0.833333, 0.274124, 0.996101]])
    t, r, p = thr.T
    ods_t, ods_r, ods_p, ods_f = bsds._max_f(t, r, p)
    assert (ods_t, ods_r, ods_p) == pytest.approx((0.166667, 0.60236, 0.848723))
    assert ods_f == pytest.approx(0.704628, abs=2e-6)
    assert bsds._area_pr(r, p) == pytest.approx(0.307627, abs=2e-6)
    np.testing.assert_allclose(bsds.thresholds(5), [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])


def _random_edges(rng, shape, n):
    m = np.zeros(shape, bool)
    for _ in range(n):  # random walks: curves of touching pixels, like thinned boundaries
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        for _ in range(60):
            m[y, x] = True
            y = int(np.clip(y + rng.integers(-1, 2), 0, shape[0] - 1))
            x = int(np.clip(x + rng.integers(-1, 2), 0, shape[1] - 1))
    return m


def test_matching_agrees_with_the_benchmarks_cpp():
    """pyEdgeEval wraps the benchmark's C++ (Goldberg's CSA on a graph with 6 random outlier edges per pixel); the
    assignment here is exact, so it matches at least as many pixels, and in practice about the same."""
    ref = pytest.importorskip("pyEdgeEval._lib", reason="pyEdgeEval (the benchmark's C++ matching) not installed")
    rng = np.random.default_rng(0)
    shape = (120, 160)
    for _ in range(4):
        a, b = _random_edges(rng, shape, 12), _random_edges(rng, shape, 12)
        b |= np.roll(a, 1, axis=0) & (rng.random(shape) < 0.5)  # some pixels near each other
        m1, m2 = bsds.correspond_pixels(a, b)
        r1, _r2, _, _ = ref.correspond_pixels(a.astype(float), b.astype(float), 0.0075)
        assert m1.sum() == m2.sum()
        assert (r1 > 0).sum() <= m1.sum() <= (r1 > 0).sum() * 1.01 + 2
        assert (m1 <= a).all() and (m2 <= b).all()


def test_edge_nms_is_the_toolbox_edgesnms():
    ref = pytest.importorskip("pyEdgeEval._lib", reason="pyEdgeEval (the toolbox's edgesNms) not installed")
    rng = np.random.default_rng(1)
    from scipy import ndimage

    e = ndimage.gaussian_filter(_random_edges(rng, (90, 130), 10).astype(float), 1.5)
    e /= e.max()
    o = edges.edge_orientation(e)
    np.testing.assert_allclose(edges.edge_nms(e, o), ref.nms(e, o, 1, 5, 1.01), atol=1e-12)


def test_edge_nms_thins_a_blurred_line():
    e = np.zeros((40, 60))
    # a horizontal ridge 5 px thick, slowly brightening to the right (exactly constant rows give the toolbox's
    # orientation formula sign(0) = 0, i.e. "along the edge", where nothing is suppressed)
    e[18:23, 10:50] = np.array([[0.3], [0.7], [1.0], [0.7], [0.3]]) * np.linspace(0.9, 1.0, 40)
    out = edges.edge_nms(e)
    assert (out[20, 12:48] > 0).all() and not out[[18, 19, 21, 22]].any()
    assert out[20, 0:5].max() == 0 or out[20, 10] < out[20, 30]  # faded towards the border
