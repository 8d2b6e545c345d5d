"""The BSDS500 boundary benchmark (Arbeláez et al. 2011, `BSR/bench`) in numpy/scipy: ODS, OIS, AP and R50.

    counts = evaluate_image(pb, gts, thresholds(99))   # pb (H, W) in [0, 1]; gts [(H, W) bool], one per annotator
    metrics = summarize(np.stack([counts, ...]), thresholds(99))   # {"ods", "ois", "ap", "r50", ...}

What the MATLAB benchmark does, step for step (evaluation_bdry_image.m, collect_eval_bdry.m):
- thresholds: nthresh values linspace(1/(n+1), 1 - 1/(n+1), n); at each, the boundary map pb >= t is thinned to one
  pixel width (`bwmorph(.., 'thin', inf)`: skimage's `thin` implements the same Guo-Hall / Lam-Lee-Suen algorithm).
- matching (correspondPixels): each annotator's boundary map is matched to the thinned prediction one to one,
  pixels at most maxDist x the image diagonal apart (0.0075 by default), as a minimum-cost bipartite assignment
  where an unmatched pixel costs `outlier_cost` x maxDist (100 x: so first as many pixels as possible are matched,
  then the total distance is least). The original solves it with Goldberg's CSA on a sparse graph with random
  outlier edges; here scipy's LAPJVsp (`min_weight_full_bipartite_matching`) solves the same assignment exactly on
  an equivalent graph (every pixel may be an outlier; outlier-outlier edges mirror the real ones so a perfect
  matching always exists). Costs are integers as in the original (distance x 100, rounded).
- counts per threshold: recall counts every annotator's pixels (cntR = matched, sumR = all, summed over
  annotators); precision counts the prediction's pixels matched to any annotator (cntP) of all (sumP).
- ODS: the best F of the dataset-wide precision/recall curve, searched on straight lines between neighbouring
  thresholds (maxF); OIS: counts summed at each image's own best threshold; AP: area under the dataset curve,
  precision interpolated linearly in recall on 0:0.01:1 and zero outside the recall range (interp1 semantics,
  the last of equal recalls kept as MATLAB's `unique` of 2011 did). R50 (not in the MATLAB code, reported by the
  SAM paper): recall where the dataset curve's precision crosses 0.5, linear between thresholds.

Checked against the original's output on its own sample (BSR/bench/data, 5 images, 5 thresholds) and against the
C++ matching of the benchmark (pyEdgeEval's Cython port) in tests/evaluate/test_bsds.py.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree
from skimage.morphology import thin

MAX_DIST = 0.0075  # fraction of the image diagonal: the benchmark's default tolerance
OUTLIER_COST = 100.0  # x maxDist, the benchmark's default
MULTIPLIER = 100  # float distances -> integer costs, as the original's CSA needs


def thresholds(n: int = 99) -> np.ndarray:
    """The benchmark's n thresholds: linspace(1/(n+1), 1 - 1/(n+1), n)."""
    if n < 1:
        raise ValueError(f"the number of thresholds must be >= 1, got {n}")
    return np.linspace(1 / (n + 1), 1 - 1 / (n + 1), n)


def correspond_pixels(bmap1: np.ndarray, bmap2: np.ndarray, max_dist: float = MAX_DIST,
                      outlier_cost: float = OUTLIER_COST) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of two (H, W) boundary maps within max_dist x the diagonal (BSDS correspondPixels).

    Returns (match1, match2): (H, W) bool, the pixels of each map that found a partner in the other.
    """
    bmap1, bmap2 = np.asarray(bmap1) > 0, np.asarray(bmap2) > 0
    if bmap1.shape != bmap2.shape or bmap1.ndim != 2:
        raise ValueError(f"boundary maps must be two (H, W) arrays of one shape, got {bmap1.shape} and {bmap2.shape}")
    if max_dist <= 0 or outlier_cost <= 1:
        raise ValueError(f"max_dist must be > 0 and outlier_cost > 1, got {max_dist}, {outlier_cost}")
    match1, match2 = np.zeros(bmap1.shape, bool), np.zeros(bmap2.shape, bool)
    radius = max_dist * float(np.hypot(*bmap1.shape))
    p1, p2 = np.argwhere(bmap1), np.argwhere(bmap2)
    if not len(p1) or not len(p2):
        return match1, match2
    pairs = cKDTree(p1).sparse_distance_matrix(cKDTree(p2), radius, output_type="ndarray")
    if not len(pairs):
        return match1, match2
    # Only pixels with a partner within reach take part (the original's "matchable" nodes).
    u1, i = np.unique(pairs["i"], return_inverse=True)
    u2, j = np.unique(pairs["j"], return_inverse=True)
    n1, n2, m = len(u1), len(u2), len(pairs)
    real = np.rint(pairs["v"] * MULTIPLIER).astype(np.int64)
    outlier = int(np.ceil(outlier_cost * radius * MULTIPLIER))
    # Rows: map-1 pixels, then map-2 outlier slots; columns: map-2 pixels, then map-1 outlier slots. Every perfect
    # matching has n1 + n2 edges, so adding 1 to every cost (scipy drops zero entries) changes no argmin.
    rows = np.concatenate([i, np.arange(n1), n1 + np.arange(n2), n1 + j])
    cols = np.concatenate([j, n2 + np.arange(n1), np.arange(n2), n2 + i])
    cost = np.concatenate([real, np.full(n1, outlier), np.full(n2, outlier), np.zeros(m, np.int64)]) + 1
    graph = coo_matrix((cost.astype(np.float64), (rows, cols)), shape=(n1 + n2, n1 + n2)).tocsr()
    r, c = min_weight_full_bipartite_matching(graph)
    real_pairs = (r < n1) & (c < n2)
    match1[tuple(p1[u1[r[real_pairs]]].T)] = True
    match2[tuple(p2[u2[c[real_pairs]]].T)] = True
    return match1, match2


def evaluate_image(pb: np.ndarray, gts: list[np.ndarray], thresh: np.ndarray, max_dist: float = MAX_DIST,
                   thin_pb: bool = True) -> np.ndarray:
    """Counts for one image at each threshold: (T, 4) float64 columns cntR, sumR, cntP, sumP (see module docstring).

    pb: (H, W) boundary strength in [0, 1]; gts: the annotators' (H, W) boundary maps (bool)."""
    pb = np.asarray(pb, np.float64)
    if pb.ndim != 2:
        raise ValueError(f"pb must be an (H, W) boundary map, got shape {pb.shape}")
    gts = [np.asarray(g) > 0 for g in gts]
    for g in gts:
        if g.shape != pb.shape:
            raise ValueError(f"ground-truth boundaries {g.shape} do not match the prediction {pb.shape}")
    out = np.zeros((len(thresh), 4))
    prev = None
    for k, t in enumerate(thresh):
        bmap = pb >= t
        if thin_pb:
            bmap = thin(bmap)
        if prev is not None and np.array_equal(bmap, prev[0]):
            out[k] = prev[1]  # same map as the previous threshold: same counts
            continue
        acc = np.zeros(pb.shape, bool)
        cnt_r = sum_r = 0
        for g in gts:
            m1, m2 = correspond_pixels(bmap, g, max_dist)
            acc |= m1
            cnt_r += int(m2.sum())
            sum_r += int(g.sum())
        out[k] = (cnt_r, sum_r, int(acc.sum()), int(bmap.sum()))
        prev = (bmap, out[k])
    return out


def _fmeasure(r, p):
    return 2 * p * r / (p + r + ((p + r) == 0))


def _rp(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cnt_r, sum_r, cnt_p, sum_p = np.moveaxis(np.asarray(counts, np.float64), -1, 0)
    return cnt_r / (sum_r + (sum_r == 0)), cnt_p / (sum_p + (sum_p == 0))


def _max_f(thresh, r, p) -> tuple[float, float, float, float]:
    """(t, r, p, f) of the best F on the curve, linear between neighbouring thresholds (the original's maxF)."""
    best = (thresh[0], r[0], p[0], _fmeasure(r[0], p[0]))
    d = np.linspace(0, 1, 100)
    for k in range(1, len(thresh)):
        tt = thresh[k] * d + thresh[k - 1] * (1 - d)
        rr = r[k] * d + r[k - 1] * (1 - d)
        pp = p[k] * d + p[k - 1] * (1 - d)
        ff = _fmeasure(rr, pp)
        i = int(np.argmax(ff))
        if ff[i] > best[3]:
            best = (tt[i], rr[i], pp[i], ff[i])
    return tuple(float(x) for x in best)


def _area_pr(r, p) -> float:
    """The original's Area_PR: precision interpolated at recall 0:0.01:1, zero outside the curve's recall range."""
    order = np.argsort(r, kind="stable")
    ru, first_of_rev = np.unique(r[order][::-1], return_index=True)  # last occurrence of each recall, as MATLAB
    pu = p[order][::-1][first_of_rev]
    if len(ru) < 2:
        return 0.0
    ri = np.linspace(0, 1, 101)
    pi = np.interp(ri, ru, pu)
    pi[(ri < ru[0]) | (ri > ru[-1])] = 0.0
    return float(pi.sum() * 0.01)


def _recall_at_precision(r, p, target: float = 0.5) -> float:
    """Recall where precision crosses `target` along the curve (thresholds ascending: recall falls, precision
    rises), linear between neighbouring thresholds; the lowest threshold's recall if precision is above it there."""
    if p[0] >= target:
        return float(r[0])
    for k in range(1, len(p)):
        if p[k] >= target:
            w = (target - p[k - 1]) / (p[k] - p[k - 1])
            return float(r[k - 1] + w * (r[k] - r[k - 1]))
    return 0.0


def summarize(counts: np.ndarray, thresh: np.ndarray) -> dict:
    """Dataset metrics from per-image counts (N, T, 4) (`evaluate_image`) at thresholds (T,)."""
    counts = np.asarray(counts, np.float64)
    if counts.ndim != 3 or counts.shape[1:] != (len(thresh), 4):
        raise ValueError(f"counts must be (images, {len(thresh)} thresholds, 4), got {counts.shape}")
    thresh = np.asarray(thresh, np.float64)
    total = counts.sum(0)
    r, p = _rp(total)
    ods_t, ods_r, ods_p, ods_f = _max_f(thresh, r, p)
    best = np.zeros(4)
    for img in counts:  # OIS: each image at its own best threshold (first of equal Fs), counts summed
        ri, pi = _rp(img)
        best += img[int(np.argmax(_fmeasure(ri, pi)))]
    ois_r, ois_p = _rp(best)
    return {"ods": ods_f, "ods_threshold": ods_t, "ods_recall": ods_r, "ods_precision": ods_p,
            "ois": float(_fmeasure(ois_r, ois_p)), "ois_recall": float(ois_r), "ois_precision": float(ois_p),
            "ap": _area_pr(r, p), "r50": _recall_at_precision(r, p), "num_images": len(counts),
            "curve": {"threshold": thresh.tolist(), "recall": r.tolist(), "precision": p.tolist()}}
