"""Similarity hypotheses from point patterns and their verification: similarity-invariant triangles
(Groth 1986), mutual-nearest-neighbour matching, compression frames, the transform fitted to
matches and its leave-one-out errors, and the chance test.

Part of :mod:`cryoopt.pipeline.registration`, whose docstring describes the method step by step.
"""

from __future__ import annotations

import math
import warnings
from itertools import combinations

import numpy as np
from scipy.spatial import cKDTree


#: radius (EM px) within which the matches of a right transform fall: the precision of
#: structure centroids located in both images (a fraction of a pixel each, LM blur and
#: partial volumes included), so a second, more powerful count against chance
VERIFY_RADIUS_PX = 2.5
#: neighbours whose distance gives the local density of EM structure points in the chance test
LOCAL_DENSITY_K = 5


def _mat(scale: float = 1.0, rot: float = 0.0, tx: float = 0.0, ty: float = 0.0) -> np.ndarray:
    c, s = math.cos(rot), math.sin(rot)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty], [0, 0, 1.0]])


def _match(lp: np.ndarray, ep: np.ndarray, matrix: np.ndarray, tree: cKDTree, radius: float) -> list[tuple[int, int]]:
    """Mutual nearest neighbours within ``radius`` between mapped LM and EM points."""
    if len(lp) == 0 or len(ep) == 0:
        return []
    pred = lp @ matrix[:2, :2].T + matrix[:2, 2]
    d, j = tree.query(pred, distance_upper_bound=radius)
    back = cKDTree(pred).query(ep)[1]
    return [(i, int(jj)) for i, (dd, jj) in enumerate(zip(d, j)) if np.isfinite(dd) and back[jj] == i]


def _triangles(pts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Triangles of each point with its ``k`` nearest neighbours: invariants and ordered vertices.

    Invariants are ``(L2/L1, L1/L0)`` of the sorted side lengths ``L0 <= L1 <= L2`` (unchanged
    by rotation, scale, shift); vertices are ordered by the length of the opposite side, so
    matched triangles give matched vertices."""
    n = len(pts)
    k_eff = min(k, n - 1)
    _, nn = cKDTree(pts).query(pts, k_eff + 1)
    tris = {tuple(sorted(c)) for row in np.atleast_2d(nn) for c in combinations(row, 3)}
    t = np.array(sorted(tris), int).reshape(-1, 3)
    p = pts[t]
    opp = np.stack([np.linalg.norm(p[:, 1] - p[:, 2], axis=1), np.linalg.norm(p[:, 2] - p[:, 0], axis=1),
                    np.linalg.norm(p[:, 0] - p[:, 1], axis=1)], axis=1)
    order = np.argsort(opp, axis=1)
    sides = np.take_along_axis(opp, order, axis=1)
    ok = sides[:, 0] > 1e-9
    inv = np.column_stack([sides[ok, 2] / sides[ok, 1], sides[ok, 1] / sides[ok, 0]])
    return inv, np.take_along_axis(t, order, axis=1)[ok]


def _similarities(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity per hypothesis, `H x 3 x 3`, from `H x K x 2` point pairs.

    In complex form ``w = a z + b`` (``a`` = scale and rotation): ``a`` is the regression of
    the centred ``w`` on the centred ``z`` (the closed form of Umeyama 1991, IEEE TPAMI 13:376,
    without reflection), evaluated for all hypotheses at once."""
    z = src[..., 0] + 1j * src[..., 1]
    w = dst[..., 0] + 1j * dst[..., 1]
    zc, wc = z - z.mean(axis=1, keepdims=True), w - w.mean(axis=1, keepdims=True)
    den = np.sum(np.abs(zc) ** 2, axis=1)
    a = np.sum(wc * np.conj(zc), axis=1) / np.where(den > 0, den, np.inf)
    b = w.mean(axis=1) - a * z.mean(axis=1)
    m = np.zeros((len(a), 3, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = a.real, -a.imag, b.real
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = a.imag, a.real, b.imag
    m[:, 2, 2] = 1.0
    return m


def triangle_hypotheses(
    lm_points: np.ndarray,
    em_points: np.ndarray,
    *,
    scale_range: tuple[float, float] = (1e-2, 1e2),
    neighbours: tuple[int, int] = (5, 5),
    tolerance: float = 0.03,
    max_hypotheses: int = 4000,
    seed: int = 0,
) -> np.ndarray:
    """Every similarity (LM -> EM, `H x 3 x 3`) that maps a triangle of LM points onto an EM
    triangle of the same shape (invariants within ``tolerance``, same orientation, scale in
    ``scale_range``); triangles of each point with its nearest ``neighbours`` (LM, EM): more EM
    neighbours find the triangles of an LM that shows a subset of the EM's structures."""
    lp = np.asarray(lm_points, float).reshape(-1, 2)
    ep = np.asarray(em_points, float).reshape(-1, 2)
    if len(lp) < 3 or len(ep) < 3:
        return np.zeros((0, 3, 3))
    inv_l, tri_l = _triangles(lp, neighbours[0])
    inv_e, tri_e = _triangles(ep, neighbours[1])
    if not len(inv_l) or not len(inv_e):
        return np.zeros((0, 3, 3))
    # compare invariants in log space: a relative tolerance
    cands = cKDTree(np.log(inv_e)).query_ball_point(np.log(inv_l), r=tolerance)
    pairs = np.array([(i, j) for i, js in enumerate(cands) for j in js], int).reshape(-1, 2)
    if not len(pairs):
        return np.zeros((0, 3, 3))
    if len(pairs) > max_hypotheses:
        pairs = pairs[np.random.default_rng(seed).choice(len(pairs), max_hypotheses, replace=False)]
    src, dst = lp[tri_l[pairs[:, 0]]], ep[tri_e[pairs[:, 1]]]

    # a reflection matches the invariants but is no similarity
    def orient(t: np.ndarray) -> np.ndarray:
        u, v = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
        return np.sign(u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0])

    keep = orient(src) == orient(dst)
    mats = _similarities(src[keep], dst[keep])
    scale = np.sqrt(np.abs(mats[:, 0, 0] ** 2 + mats[:, 1, 0] ** 2))
    return mats[(scale >= scale_range[0]) & (scale <= scale_range[1])]


def match_point_patterns(
    lm_points: np.ndarray,
    em_points: np.ndarray,
    *,
    radius: float,
    scale_range: tuple[float, float] = (1e-2, 1e2),
    neighbours: int = 5,
    tolerance: float = 0.03,
    max_hypotheses: int = 4000,
    seed: int = 0,
) -> tuple[np.ndarray, int, int]:
    """Similarity transform (LM -> EM, `3 x 3`) that maps the most LM points onto EM points.

    Hypotheses come from similarity-invariant triangles (see the module docstring); each
    is scored by how many mapped LM points land within ``radius`` EM px of an EM point
    (ties: the smaller mean squared distance). Returns ``(matrix, n_matches, n_hypotheses)``
    with ``n_matches`` the mutual nearest-neighbour matches of the best (0 when none was
    found) and ``n_hypotheses`` the number of transforms tried (for a significance test).
    """
    lp = np.asarray(lm_points, float).reshape(-1, 2)
    ep = np.asarray(em_points, float).reshape(-1, 2)
    mats = triangle_hypotheses(lp, ep, scale_range=scale_range, neighbours=(neighbours, neighbours), tolerance=tolerance,
                               max_hypotheses=max_hypotheses, seed=seed)
    if not len(mats):
        return np.eye(3), 0, 0
    tree = cKDTree(ep)
    best_n, best_err, best_m = 0, math.inf, np.eye(3)
    for chunk in range(0, len(mats), 512):
        mm = mats[chunk:chunk + 512]
        pred = np.einsum("hij,nj->hni", mm[:, :2, :2], lp) + mm[:, None, :2, 2]
        d, _ = tree.query(pred.reshape(-1, 2), distance_upper_bound=radius)
        d = d.reshape(len(mm), len(lp))
        hit = np.isfinite(d)
        counts = hit.sum(axis=1)
        err = (np.where(hit, d, 0.0) ** 2).sum(axis=1) / np.maximum(counts, 1)
        order = np.lexsort((err, -counts))
        k = int(order[0])
        if counts[k] > best_n or (counts[k] == best_n and err[k] < best_err):
            best_n, best_err, best_m = int(counts[k]), float(err[k]), mm[k]
    if best_n < 3:
        return np.eye(3), 0, len(mats)
    return best_m, len(_match(lp, ep, best_m, tree, radius)), len(mats)


def _compression_frames(max_compression: float) -> list[np.ndarray]:
    """EM-pixel maps that undo a compression by ``c`` along direction ``theta`` (identity first)."""
    frames = [np.eye(3)]
    if max_compression <= 0:
        return frames
    for c in np.arange(0.1, min(max_compression, 0.8) + 1e-9, 0.1):
        for theta in np.radians(np.arange(0.0, 180.0, 15.0)):
            r = _mat(1.0, theta)
            stretch = np.diag([1.0, 1.0 / (1.0 - c), 1.0])
            frames.append(r @ stretch @ np.linalg.inv(r))
    return frames


def _loo_point_errors(src: np.ndarray, dst: np.ndarray, model: str) -> np.ndarray:
    """Leave-one-out error (EM px) of each matched pair under a least-squares affine or similarity.

    Both are linear in their parameters (``[x, y, 1]`` per coordinate for the affine;
    ``u = a x - b y + tx, v = b x + a y + ty`` for the similarity), so deleting point ``i``
    (its two rows) changes its residual ``e_i`` to ``(I - H_ii)^-1 e_i`` with ``H_ii`` the
    `2 x 2` block of the hat matrix (Cook & Weisberg 1982, *Residuals and Influence in
    Regression*, ch. 3, for a block of rows). skimage's estimators return the fit but not
    the hat matrix, hence this. ``inf`` where a point alone pins a parameter down."""
    n = len(src)
    centre = src.mean(axis=0)
    span = float(np.max(np.abs(src - centre))) or 1.0
    x, y = ((src - centre) / span).T
    one, zero = np.ones(n), np.zeros(n)
    if model == "affine":
        rows_u = np.column_stack([x, y, one, zero, zero, zero])
        rows_v = np.column_stack([zero, zero, zero, x, y, one])
    else:
        rows_u = np.column_stack([x, -y, one, zero])
        rows_v = np.column_stack([y, x, zero, one])
    design = np.empty((2 * n, rows_u.shape[1]))
    design[0::2], design[1::2] = rows_u, rows_v
    if 2 * n <= design.shape[1]:
        return np.full(n, np.inf)
    try:
        cov = np.linalg.inv(design.T @ design)
    except np.linalg.LinAlgError:
        return np.full(n, np.inf)
    target = np.asarray(dst, float).ravel()
    res = (target - design @ (cov @ design.T @ target)).reshape(n, 2)
    err = np.full(n, np.inf)
    for i in range(n):
        block = design[2 * i : 2 * i + 2]
        ih = np.eye(2) - block @ cov @ block.T
        if abs(np.linalg.det(ih)) > 1e-9:
            err[i] = float(np.linalg.norm(np.linalg.solve(ih, res[i])))
    return err


def _fit(lp: np.ndarray, ep: np.ndarray, pairs: list[tuple[int, int]], model: str) -> np.ndarray:
    """Least-squares affine or similarity (LM -> EM) on matched point pairs."""
    from skimage.transform import AffineTransform, SimilarityTransform

    src = lp[[a for a, _ in pairs]]
    dst = ep[[b for _, b in pairs]]
    cls = AffineTransform if model == "affine" else SimilarityTransform
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf = cls.from_estimate(src, dst)
    return np.asarray(tf.params, float) if tf else np.eye(3)


def _chance_p_value(lp: np.ndarray, ep: np.ndarray, m: np.ndarray, em_shape: tuple[int, int], radius: float,
                    n_matched: int, n_hypotheses: int, *, fitted: int = 0) -> float:
    """Probability that chance alone matches ``n_matched`` points, Bonferroni-corrected.

    Each LM point mapped into the EM field lands within ``radius`` of one of the EM points
    with ``p_i = 1 - exp(-rho_i pi r^2)``, ``rho_i`` the EM points' density around where it
    lands: the larger of the field's mean and the local density from the distance to the
    ``LOCAL_DENSITY_K``-th nearest EM point (``(k - 1) / (pi d_k^2)``). EM structure points are
    not uniform: a nucleus's chromatin clumps and pores crowd one part of the field, and a
    transform that maps the LM points into such a crowd matches many by chance, which a
    field-mean density does not expect. Matches are then ``Binomial(n_inside - fitted,
    mean p_i)``, which bounds the tail of the Poisson-binomial above its mean (Hoeffding 1956,
    Ann. Math. Stat. 27:713); ``fitted`` points were used to build the transform; the best of
    ``n_hypotheses`` transforms multiplies the tail."""
    from scipy.stats import binom

    pred = lp @ m[:2, :2].T + m[:2, 2]
    h, w = em_shape
    ok = (pred[:, 0] >= -radius) & (pred[:, 0] < w + radius) & (pred[:, 1] >= -radius) & (pred[:, 1] < h + radius)
    inside = int(np.count_nonzero(ok))
    if n_matched <= 0:
        return 1.0
    rho = np.full(max(inside, 1), len(ep) / float(h * w))
    if inside and len(ep) > LOCAL_DENSITY_K:
        d_k = cKDTree(ep).query(pred[ok], k=LOCAL_DENSITY_K)[0][:, -1]
        rho = np.maximum(rho, (LOCAL_DENSITY_K - 1) / (math.pi * np.maximum(d_k, 1e-9) ** 2))
    p = float(np.mean(1.0 - np.exp(-rho * math.pi * radius**2)))
    return float(binom.sf(n_matched - 1, max(inside - fitted, n_matched), min(p, 1.0))) * max(n_hypotheses, 1)
