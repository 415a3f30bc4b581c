"""Image evidence for an LM -> EM registration where structure points cannot verify one.

Where the LM shows a labelled subset of what the EM shows (labelled mitochondria among all
of them, chromatin clumps and pores besides), few detected points correspond and a wrong
transform matches as many of them as the right one. The images still agree where the label
is: block matching (Ourselin et al. 2000, Image Vis. Comput. 19:25) cuts the LM structure
image, warped onto the EM grid by a coarse hypothesis, into non-overlapping blocks that show
label, finds each block's displacement in the EM structure image by normalised
cross-correlation (:func:`skimage.feature.match_template`, sub-pixel by a parabola through
the peak), and fits an affine to the displacements with RANSAC (:func:`skimage.measure.ransac`).

Verification is a chance test on the blocks, as the point matches' is: under a wrong
hypothesis a block's correlation peak falls anywhere in its search window, so the blocks
that agree with the fitted transform within ``radius`` are ``Binomial(n - 3, p0)`` beyond the
three the affine absorbs, ``p0`` the larger of the window's fraction within ``radius`` and the
rate at which blocks matched against other blocks' windows (shuffled copies) land there;
multiplied by the transforms tried and by the triples RANSAC could have fitted
(a-contrario counting, Moisan & Stival 2004, Int. J. Comput. Vis. 57:201).

A section that may have compressed (:func:`verify_cut_by_blocks`) is matched in smaller blocks
under the point path's model of a cut (an affine plus a compression along the cut varying
across it), each fitted map absorbing as many blocks in the chance test as it has parameters;
a verified map is kept only where its TRE estimate, cross-validated on the blocks, stays within
the verification radius where both fields overlap (the caller's check).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

#: side (EM px) of a block, and the largest displacement (EM px) searched around it
BLOCK_PX = 40
SEARCH_PX = 24
#: LM structure above this many robust sigmas of its field marks a block with label in it
BLOCK_LABEL_Z = 6.0
#: hypotheses (best by image correlation at the LM's structure pixels) that are block-matched
BLOCK_HYPOTHESES = 6


@dataclass(frozen=True)
class BlockMatch:
    """A transform verified by block matching: matched block centres and the transform through them."""

    matrix: np.ndarray
    src: np.ndarray  # LM (x, y) of the blocks that agree with it
    dst: np.ndarray  # EM (x, y) they matched
    n_blocks: int
    p_value: float
    all_src: np.ndarray  # every matched block of the last round
    all_dst: np.ndarray
    p0: float  # a block's chance of agreeing with a wrong transform
    start: np.ndarray  # the hypothesis it grew from


def structure_hypothesis_scores(lm_s: np.ndarray, em_s: np.ndarray, mats: np.ndarray, *, n_samples: int = 3000,
                                seed: int = 0) -> np.ndarray:
    """Pearson correlation, per hypothesis (`H x 3 x 3`, LM -> EM), between the LM structure image
    and the (blurred) EM structure image at LM pixels mapped into the EM field: its brightest
    structure pixels and a random sample of the rest. ``-1`` where too few land in the field."""
    rng = np.random.default_rng(seed)
    flat = lm_s.ravel()
    top = np.argsort(flat)[-n_samples // 3:]
    rest = rng.choice(flat.size, size=min(flat.size, n_samples - len(top)), replace=False)
    idx = np.concatenate([top, rest])
    ys, xs = np.unravel_index(idx, lm_s.shape)
    lv = flat[idx].astype(float)
    pts = np.column_stack([xs, ys]).astype(float)
    h, w = em_s.shape
    out = np.full(len(mats), -1.0)
    for start in range(0, len(mats), 256):
        mm = mats[start:start + 256]
        q = np.einsum("hij,nj->hni", mm[:, :2, :2], pts) + mm[:, None, :2, 2]
        inside = (q[..., 0] >= 0) & (q[..., 0] <= w - 1) & (q[..., 1] >= 0) & (q[..., 1] <= h - 1)
        ev = ndi.map_coordinates(em_s, [q[..., 1].ravel(), q[..., 0].ravel()], order=1, mode="constant").reshape(q.shape[:2])
        for k in range(len(mm)):
            sel = inside[k]
            if sel.sum() < 100:
                continue
            a, b = lv[sel], ev[k, sel]
            if a.std() > 0 and b.std() > 0:
                out[start + k] = float(np.corrcoef(a, b)[0, 1])
    return out


def _peak(c: np.ndarray) -> tuple[float, float, float]:
    """Sub-pixel (row, col) of the maximum of a correlation map (parabola per axis) and its value."""
    r, k = np.unravel_index(int(np.argmax(c)), c.shape)

    def vertex(lo: float, mid: float, hi: float) -> float:
        den = lo - 2 * mid + hi
        return 0.0 if den >= 0 else float(np.clip(0.5 * (lo - hi) / den, -0.5, 0.5))

    dr = vertex(c[r - 1, k], c[r, k], c[r + 1, k]) if 0 < r < c.shape[0] - 1 else 0.0
    dk = vertex(c[r, k - 1], c[r, k], c[r, k + 1]) if 0 < k < c.shape[1] - 1 else 0.0
    return r + dr, k + dk, float(c[r, k])


def _blocks(lm_on_em: np.ndarray, inside: np.ndarray, label_level: float, block_px: int = BLOCK_PX) -> list[tuple[int, int]]:
    """Top-left corners of non-overlapping blocks wholly inside the LM field, with label in them,
    whose search windows lie inside the EM field."""
    h, w = lm_on_em.shape
    b, s = block_px, SEARCH_PX
    out = []
    for y in range(s, h - b - s + 1, b):
        for x in range(s, w - b - s + 1, b):
            if inside[y:y + b, x:x + b].all() and lm_on_em[y:y + b, x:x + b].max() > label_level:
                out.append((y, x))
    return out


def _match_blocks(lm_on_em: np.ndarray, em_s: np.ndarray, corners: list[tuple[int, int]],
                  windows: list[tuple[int, int]] | None = None, block_px: int = BLOCK_PX) -> np.ndarray:
    """Displacement (dx, dy, peak correlation) of each block in the EM window at ``windows``
    (default: its own corner)."""
    from skimage.feature import match_template

    b, s = block_px, SEARCH_PX
    out = np.zeros((len(corners), 3))
    for i, (y, x) in enumerate(corners):
        wy, wx = (y, x) if windows is None else windows[i]
        tpl = lm_on_em[y:y + b, x:x + b]
        win = em_s[wy - s:wy + b + s, wx - s:wx + b + s]
        if tpl.std() == 0 or win.std() == 0:
            out[i] = (np.nan, np.nan, -1.0)
            continue
        r, k, v = _peak(match_template(win, tpl))
        out[i] = (k - s, r - s, v)
    return out


def _null_rate(lm_on_em: np.ndarray, em_s: np.ndarray, corners: list[tuple[int, int]], radius: float,
               rng: np.random.Generator, rounds: int = 8, block_px: int = BLOCK_PX) -> float:
    """Fraction of blocks matched against other blocks' EM windows (shuffled copies: no true
    match) whose peak lands within ``radius`` of no displacement, with +1 smoothing: the chance
    that a block agrees with a transform that already puts it in place (the last round of
    :func:`verify_by_blocks`)."""
    if len(corners) < 2:
        return 1.0
    hits, total = 0, 0
    for _ in range(rounds):
        perm = rng.permutation(len(corners))
        if np.all(perm == np.arange(len(corners))):
            perm = np.roll(perm, 1)
        keep = perm != np.arange(len(corners))
        d = _match_blocks(lm_on_em, em_s, [c for c, k in zip(corners, keep) if k],
                          [corners[j] for j, k in zip(perm, keep) if k], block_px=block_px)
        d = d[np.isfinite(d[:, 0])]
        # where a block of a right transform lands (no displacement): do the peaks crowd there?
        hits += int(np.sum(np.hypot(d[:, 0], d[:, 1]) <= radius))
        total += len(d)
    return (hits + 1.0) / (total + 1.0)


def refine_by_correlation(lm_s: np.ndarray, em_b: np.ndarray, matrix: np.ndarray, *, affine: bool) -> tuple[np.ndarray, float]:
    """The transform near ``matrix`` (LM -> EM) that maximises the normalised cross-correlation of
    the LM structure image with the EM's over the LM field (Powell's method on the EM-pixel
    displacements of two or three control points: a similarity or an affine). Uses every pixel
    with structure, where a block follows only its own (an elongated structure slides along
    itself), so it is the finer of the two; the blocks verify, this refines."""
    from scipy.optimize import minimize
    from skimage.transform import AffineTransform, SimilarityTransform

    h, w = em_b.shape
    inv = np.linalg.inv(matrix)
    yy, xx = np.mgrid[0:h:2, 0:w:2]
    em_xy = np.column_stack([xx.ravel(), yy.ravel()]).astype(float)
    lm_xy = em_xy @ inv[:2, :2].T + inv[:2, 2]
    lh, lw = lm_s.shape
    margin = 4.0
    keep = (lm_xy[:, 0] >= margin) & (lm_xy[:, 0] <= lw - 1 - margin) & (lm_xy[:, 1] >= margin) & (lm_xy[:, 1] <= lh - 1 - margin)
    if keep.sum() < 500:
        return matrix, -1.0
    em_xy, lm_xy = em_xy[keep], lm_xy[keep]
    ev = em_b[em_xy[:, 1].astype(int), em_xy[:, 0].astype(int)]
    ev = (ev - ev.mean()) / (ev.std() or 1.0)
    ctrl_lm = lm_xy[[int(np.argmin(lm_xy[:, 0] + lm_xy[:, 1])), int(np.argmax(lm_xy[:, 0] - lm_xy[:, 1])),
                     int(np.argmax(lm_xy[:, 0] + lm_xy[:, 1]))]]
    if not affine:
        ctrl_lm = ctrl_lm[[0, 2]]
    ctrl_em = ctrl_lm @ matrix[:2, :2].T + matrix[:2, 2]
    cls = AffineTransform if affine else SimilarityTransform

    def transform(p: np.ndarray) -> np.ndarray | None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tf = cls.from_estimate(ctrl_em + p.reshape(-1, 2), ctrl_lm)  # EM -> LM
        return np.asarray(tf.params, float) if tf else None

    def cost(p: np.ndarray) -> float:
        t = transform(p)
        if t is None:
            return 1.0
        q = em_xy @ t[:2, :2].T + t[:2, 2]
        lv = ndi.map_coordinates(lm_s, [q[:, 1], q[:, 0]], order=1, mode="nearest")
        sd = lv.std()
        return 1.0 if sd == 0 else -float(np.mean((lv - lv.mean()) / sd * ev))

    res = minimize(cost, np.zeros(2 * len(ctrl_lm)), method="Powell", options={"xtol": 0.01, "ftol": 1e-6, "maxfev": 2000})
    t = transform(res.x)
    c0 = cost(np.zeros(2 * len(ctrl_lm)))
    return (matrix, -c0) if t is None or res.fun > c0 else (np.linalg.inv(t), -float(res.fun))


def _ncc_at(lm_s: np.ndarray, em_b: np.ndarray, matrix: np.ndarray) -> float:
    """Normalised cross-correlation of the LM structure image warped by ``matrix`` with the EM's, over the LM field."""
    from skimage.transform import AffineTransform, warp

    inv = AffineTransform(matrix=np.linalg.inv(matrix))
    moved = warp(lm_s, inv, output_shape=em_b.shape, order=1, cval=0.0)
    inside = warp(np.ones(lm_s.shape), inv, output_shape=em_b.shape, order=0, cval=0.0) > 0.5
    a, b = moved[inside], em_b[inside]
    return float(np.corrcoef(a, b)[0, 1]) if a.size > 16 and a.std() > 0 and b.std() > 0 else -1.0


def verify_by_blocks(lm_s: np.ndarray, em_s: np.ndarray, hypotheses: list[np.ndarray], *, n_tried: int, radius: float,
                     max_p_value: float, min_blocks: int = 6, lm_blur_em_px: float = 2.0,
                     affine: bool = True, seed: int = 0) -> tuple[BlockMatch | None, str]:
    """Verify and refine the best of ``hypotheses`` (LM -> EM, `3 x 3`) by block matching (module
    docstring). ``n_tried``: transforms considered in all (the chance test's multiplicity).
    Returns the verified match, or ``None`` and why not."""
    from scipy.stats import binom
    from skimage.measure import ransac
    from skimage.transform import AffineTransform, warp

    rng = np.random.default_rng(seed)
    h, w = em_s.shape
    em_b = ndi.gaussian_filter(em_s, lm_blur_em_px)
    level_med = float(np.median(lm_s))
    level_sig = 1.4826 * float(np.median(np.abs(lm_s - level_med))) or float(lm_s.std()) or 1.0
    label_level = level_med + BLOCK_LABEL_Z * level_sig
    window_p = math.pi * radius**2 / float((2 * SEARCH_PX + 1) ** 2)
    best: tuple[float, BlockMatch | None, str] = (math.inf, None, "no hypothesis left label blocks inside both fields")
    for m in hypotheses:
        cur = np.asarray(m, float)
        inlier_src = inlier_dst = None
        p_value, n_blocks = 1.0, 0
        for round_ in range(3):  # match under the hypothesis, fit, match again under the fit
            inv = np.linalg.inv(cur)
            lm_on_em = warp(lm_s, AffineTransform(matrix=inv), output_shape=(h, w), order=1, cval=0.0)
            inside = warp(np.ones(lm_s.shape), AffineTransform(matrix=inv), output_shape=(h, w), order=0, cval=0.0) > 0.5
            corners = _blocks(lm_on_em, inside, label_level)
            n_blocks = len(corners)
            if n_blocks < max(min_blocks, 4):
                break
            d = _match_blocks(lm_on_em, em_b, corners)
            ok = np.isfinite(d[:, 0])
            centres = np.array([(x + (BLOCK_PX - 1) / 2.0, y + (BLOCK_PX - 1) / 2.0) for y, x in corners], float)[ok]
            src = centres @ inv[:2, :2].T + inv[:2, 2]
            dst = centres + d[ok, :2]
            if len(src) < 4:
                break
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tf, found = ransac((src, dst), AffineTransform, min_samples=3, residual_threshold=radius, max_trials=200, rng=seed)
            if tf is None or found is None or found.sum() < 4:
                break
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fitted = AffineTransform.from_estimate(src[found], dst[found])
            if not fitted:
                break
            cur = np.asarray(fitted.params, float)
            n_in = int(found.sum())
            n = len(src)
            triples = math.comb(n, 3)
            p0 = window_p
            p_value = float(binom.sf(n_in - 3 - 1, n - 3, min(p0, 1.0))) * triples * max(n_tried, 1)
            if round_ == 2 and p_value <= max_p_value:
                # the shuffled copies can only raise p0: measured where the window's share already passes
                p0 = max(window_p, _null_rate(lm_on_em, em_b, corners, radius, rng))
                p_value = float(binom.sf(n_in - 3 - 1, n - 3, min(p0, 1.0))) * triples * max(n_tried, 1)
            inlier_src, inlier_dst, last = src[found], dst[found], (src, dst, p0)
        if inlier_src is None:
            continue
        if p_value < best[0]:
            why = (f"block matching: {len(inlier_src)} of {n_blocks} label blocks agree within {radius:.1f} EM px "
                   f"(chance p = {min(p_value, 1.0):.2g})")
            best = (p_value, BlockMatch(cur, inlier_src, inlier_dst, n_blocks, p_value, *last, np.asarray(m, float)), why)
    p, match, why = best
    if match is None or p > max_p_value or len(match.src) < min_blocks:
        return None, why
    # refined from the blocks' fit and from the hypothesis they grew from (an affine through a
    # dozen noisy blocks may be pixels off at the field's edges): the better correlation, if the
    # blocks verify it too (the same chance test, every triple counted as if it had been fitted)
    n = len(match.all_src)
    refined: list[tuple[float, float, np.ndarray, np.ndarray]] = []
    for start in (match.matrix, match.start):
        fine, _ = refine_by_correlation(lm_s, em_b, start, affine=affine)
        err = np.hypot(*(match.all_src @ fine[:2, :2].T + fine[:2, 2] - match.all_dst).T)
        agree = err <= radius
        p_fine = float(binom.sf(int(agree.sum()) - 3 - 1, n - 3, min(match.p0, 1.0))) * math.comb(n, 3) * max(n_tried, 1)
        refined.append((_ncc_at(lm_s, em_b, fine), p_fine, fine, agree))
    ok = [r for r in refined if r[1] <= max_p_value and r[3].sum() >= min_blocks]
    if not ok:
        return match, why + "; the correlation's refinement left the blocks"
    _, p_fine, fine, agree = max(ok, key=lambda r: r[0])
    return BlockMatch(fine, match.all_src[agree], match.all_dst[agree], match.n_blocks, p_fine, match.all_src, match.all_dst,
                      match.p0, match.start), why


# -- sections that may have compressed: the cut's model fitted to the blocks -----------------------
#: blocks within this many times the verification radius of a fitted model are fitted again: a
#: section that compressed unevenly leaves the affine a few pixels off over much of the field
#: (20-40 % compression varying +-5 % across a 384 px field: ~5 px at its edges)
CUT_WIDE_FACTOR = 2.5
#: side (EM px) of a block on a section that may have compressed: the cut's model has more
#: parameters than an affine, and 40 px blocks leave 10-20 with label in a 384 px field, too few
#: to verify it; 24 px blocks give 25-40
CUT_BLOCK_PX = 24


@dataclass(frozen=True)
class CutBlockMatch:
    """A transform verified by block matching on a section that may have compressed: an affine,
    and the cut's model on top of it (``None``: the affine alone predicted held-out blocks as well).

    ``src``/``dst``: LM and EM (x, y) of the blocks that agree with it within the radius."""

    affine: np.ndarray
    model: object | None  # registration.cut_model._CompressionFit
    src: np.ndarray
    dst: np.ndarray
    n_blocks: int
    p_value: float
    p0: float


def _em_to_lm(affine: np.ndarray, model: object | None, em_xy: np.ndarray) -> np.ndarray:
    """LM (x, y) shown at EM (x, y) under an affine and, when given, the cut's model on top."""
    q = em_xy if model is None else em_xy + model.displacement(em_xy)  # type: ignore[attr-defined]
    inv = np.linalg.inv(affine)
    return q @ inv[:2, :2].T + inv[:2, 2]


def _lm_to_em(affine: np.ndarray, model: object | None, lm_xy: np.ndarray) -> np.ndarray:
    """EM (x, y) of LM (x, y) under an affine and, when given, the cut's model on top."""
    return model(lm_xy) if model is not None else lm_xy @ affine[:2, :2].T + affine[:2, 2]  # type: ignore[operator]


def _warp_onto_em(lm_s: np.ndarray, shape: tuple[int, int], affine: np.ndarray, model: object | None,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The LM structure image on the EM grid under the map, and where the LM field covers it."""
    from skimage.transform import warp

    h, w = shape
    rows, cols = np.mgrid[0:h, 0:w].astype(float)
    lm = _em_to_lm(affine, model, np.column_stack([cols.ravel(), rows.ravel()]))
    coords = np.stack([lm[:, 1].reshape(h, w), lm[:, 0].reshape(h, w)])
    lh, lw = lm_s.shape
    inside = ((coords[0] >= 0) & (coords[0] <= lh - 1) & (coords[1] >= 0) & (coords[1] <= lw - 1))
    return warp(lm_s, coords, order=1, cval=0.0), inside


def _block_pairs(lm_s: np.ndarray, em_b: np.ndarray, affine: np.ndarray, model: object | None, label_level: float,
                 ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]], np.ndarray]:
    """Blocks matched under the map: LM (x, y) of each block's centre, the EM (x, y) it matched,
    the blocks' corners, and the warped LM image (for the null rate)."""
    lm_on_em, inside = _warp_onto_em(lm_s, em_b.shape, affine, model)
    corners = _blocks(lm_on_em, inside, label_level, CUT_BLOCK_PX)
    if not corners:
        return np.zeros((0, 2)), np.zeros((0, 2)), corners, lm_on_em
    d = _match_blocks(lm_on_em, em_b, corners, block_px=CUT_BLOCK_PX)
    ok = np.isfinite(d[:, 0])
    centres = np.array([(x + (CUT_BLOCK_PX - 1) / 2.0, y + (CUT_BLOCK_PX - 1) / 2.0) for y, x in corners], float)[ok]
    return _em_to_lm(affine, model, centres), centres + d[ok, :2], corners, lm_on_em


def _cut_candidates(src: np.ndarray, dst: np.ndarray) -> list[tuple[np.ndarray, object | None, int]]:
    """The maps fitted to block matches: the affine, the cut's model of least leave-one-out error
    and its simplest variations (linear, quadratic across the cut), each with the matches its
    parameters absorb in the chance test (the affine's six: 3; each 1-D coefficient of the cut's
    model: 1, as the point path counts them)."""
    from cryoopt.pipeline.registration.cut_model import _best_compression_fit, _CompressionFit
    from cryoopt.pipeline.registration.hypotheses import _fit

    affine = _fit(src, dst, [(i, i) for i in range(len(src))], "affine")
    out: list[tuple[np.ndarray, object | None, int]] = [(affine, None, 3)]
    best = _best_compression_fit(src, dst)
    seen = set()
    for cf in [best] + [_CompressionFit.fit(src, dst, affine, 1, 0.0, k) for k in (1, 2)]:
        if cf is not None and (cf.pieces, cf.spline_degree, cf.roughness) not in seen:
            seen.add((cf.pieces, cf.spline_degree, cf.roughness))
            out.append((cf.affine, cf, 3 + cf.coef.size))
    return out


def verify_cut_by_blocks(lm_s: np.ndarray, em_s: np.ndarray, hypotheses: list[np.ndarray], *, n_tried: int, radius: float,
                         max_p_value: float, lm_blur_em_px: float = 2.0, cut_model: bool = True, seed: int = 0,
                         ) -> tuple[CutBlockMatch | None, str]:
    """Verify the best of ``hypotheses`` (LM -> EM, `3 x 3`, affine) on a section that may have
    compressed unevenly across the cut, by block matching under the cut's model.

    Per hypothesis: blocks matched under it, an affine fitted with RANSAC at a wide radius
    (:data:`CUT_WIDE_FACTOR`: an affine is pixels off where the compression varies), matched
    again under it; then the cut's model (:class:`~cryoopt.pipeline.registration.cut_model._CompressionFit`,
    the point path's, with its outlier rule) fitted to the blocks that agree, the blocks matched
    again under it (the LM warped by the non-rigid map) and it refitted to those within the wide
    radius; then every candidate map refitted, twice, to the blocks within ``radius`` (half the
    label blocks of a tissue section peak on structure the LM does not show: fitted at the wide
    radius they pull a map pixels off), and the blocks within ``radius`` counted. Verification is the
    chance test of :func:`verify_by_blocks`, each candidate map (the affine, the cut's model of
    least leave-one-out error, its linear and quadratic variations) absorbing as many blocks as
    it has parameters (:func:`_cut_candidates`), the best of them corrected for their number; a
    map is verified only with at least :meth:`_CompressionFit.min_matches` blocks agreeing (what
    tells an uneven compression from a uniform one). The map returned is the cut's model where it
    predicts held-out blocks (leave-one-out) better than the affine by a tenth, as on the point
    path, else the affine. ``cut_model=False``: the affine alone. Returns the match, or ``None``
    and why not."""
    from scipy.stats import binom
    from skimage.measure import ransac
    from skimage.transform import AffineTransform

    from cryoopt.pipeline.registration.cut_model import _CompressionFit, _drop_outlier_matches
    from cryoopt.pipeline.registration.hypotheses import _loo_point_errors

    rng = np.random.default_rng(seed)
    em_b = ndi.gaussian_filter(em_s, lm_blur_em_px)
    level_med = float(np.median(lm_s))
    level_sig = 1.4826 * float(np.median(np.abs(lm_s - level_med))) or float(lm_s.std()) or 1.0
    label_level = level_med + BLOCK_LABEL_Z * level_sig
    window_p = math.pi * radius**2 / float((2 * SEARCH_PX + 1) ** 2)
    wide = CUT_WIDE_FACTOR * radius
    need = _CompressionFit.min_matches()
    best: tuple[float, CutBlockMatch | None, str] = (math.inf, None, "no hypothesis left label blocks inside both fields")

    def p_of(n_agree: int, n: int, absorbed: int, p0: float) -> float:
        if n - absorbed <= 0 or n_agree <= absorbed:
            return 1.0
        return float(binom.sf(n_agree - absorbed - 1, n - absorbed, min(p0, 1.0))) * math.comb(n, 3) * max(n_tried, 1)

    for m in hypotheses:
        affine, model = np.asarray(m, float), None
        src = dst = np.zeros((0, 2))
        keep = np.zeros(0, bool)
        failed = ""
        for round_ in range(4):  # two rounds under an affine, two under the cut's model
            src, dst, corners, lm_on_em = _block_pairs(lm_s, em_b, affine, model, label_level)
            if len(src) < need:
                failed = f"{len(src)} label blocks inside both fields (need {need})"
                break
            if round_ == 0:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tf, found = ransac((src, dst), AffineTransform, min_samples=3, residual_threshold=wide, max_trials=200,
                                       rng=seed)
                if tf is None or found is None or found.sum() < need:
                    failed = (f"{0 if found is None else int(found.sum())} of {len(src)} label blocks agree with an affine "
                              f"within {wide:.1f} EM px (need {need})")
                    break
                keep = found
            else:
                keep = np.hypot(*(_lm_to_em(affine, model, src) - dst).T) <= wide
                if keep.sum() < need:
                    failed = f"{int(keep.sum())} of {len(src)} label blocks agree within {wide:.1f} EM px (need {need})"
                    break
            if round_ == 0 or not cut_model:
                affine, model = _cut_candidates(src[keep], dst[keep])[0][:2]
                continue
            s_in, d_in, _ = _drop_outlier_matches(src[keep], dst[keep])
            cands = _cut_candidates(s_in, d_in)
            with_cut = [c for c in cands if c[1] is not None]
            affine, model = (with_cut[0] if with_cut else cands[0])[:2]
        if failed:
            if best[1] is None and best[0] == math.inf:
                best = (math.inf, None, "block matching under the cut's model: " + failed)
            continue
        # the final count: every candidate refitted to the blocks within the verification radius
        # of the map so far, twice (half the label blocks peak on structure the LM does not show:
        # fitted at the wide radius they pull the map pixels off), its agreement at that radius;
        # the best corrected for the candidates tried
        n = len(src)
        keep = np.hypot(*(_lm_to_em(affine, model, src) - dst).T) <= radius
        cands, agree = [], []
        for _ in range(2):
            if keep.sum() < need:
                break
            cands = _cut_candidates(src[keep], dst[keep])[: None if cut_model else 1]
            agree = [np.hypot(*(_lm_to_em(a, mo, src) - dst).T) <= radius for a, mo, _ in cands]
            keep = agree[int(np.argmax([g.sum() for g in agree]))]
        if not cands:
            if best[1] is None and best[0] == math.inf:
                best = (math.inf, None, f"block matching under the cut's model: {int(keep.sum())} of {n} label blocks "
                                        f"agree within {radius:.1f} EM px (need {need})")
            continue
        p0 = window_p
        ps = [p_of(int(g.sum()), n, k, p0) for g, (_, _, k) in zip(agree, cands)]
        if min(ps) * len(cands) <= max_p_value:
            p0 = max(window_p, _null_rate(lm_on_em, em_b, corners, radius, rng, block_px=CUT_BLOCK_PX))
            ps = [p_of(int(g.sum()), n, k, p0) for g, (_, _, k) in zip(agree, cands)]
        p_value = min(ps) * len(cands)
        n_agree = max(int(g.sum()) for g in agree)
        if p_value >= best[0]:
            continue
        # the map returned: the cut's model where it predicts held-out blocks better by a tenth
        ok = agree[0]
        for g in agree[1:]:
            ok = ok | g
        s_ok, d_ok = src[ok], dst[ok]
        chosen = cands[0]
        if cut_model and len(s_ok) >= need:
            s_ok, d_ok, _ = _drop_outlier_matches(s_ok, d_ok)
            refit = _cut_candidates(s_ok, d_ok)
            loo_aff = float(np.sqrt(np.mean(np.minimum(_loo_point_errors(s_ok, d_ok, "affine"), 1e6) ** 2)))
            cut = [c for c in refit if c[1] is not None]
            if cut:
                c_best = min(cut, key=lambda c: c[1].loo_rms)  # type: ignore[union-attr]
                chosen = c_best if c_best[1].loo_rms <= 0.9 * loo_aff else refit[0]  # type: ignore[union-attr]
            else:
                chosen = refit[0]
        a, mo, _ = chosen
        final_ok = np.hypot(*(_lm_to_em(a, mo, src) - dst).T) <= radius
        why = (f"block matching under the cut's model: {n_agree} of {n} label blocks agree within {radius:.1f} EM px "
               f"(chance p = {min(p_value, 1.0):.2g} over {len(cands)} maps; need {need} agreeing)")
        if n_agree < need or final_ok.sum() < need:
            why += f"; fewer than the {need} blocks that tell an uneven compression from a uniform one"
            if best[1] is None and best[0] == math.inf:
                best = (math.inf, None, why)
            continue
        best = (p_value, CutBlockMatch(a, mo, src[final_ok], dst[final_ok], n, p_value, p0), why)
    p, match, why = best
    if match is None or p > max_p_value:
        return None, why
    return match, why

