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


def _blocks(lm_on_em: np.ndarray, inside: np.ndarray, label_level: float) -> list[tuple[int, int]]:
    """Top-left corners of non-overlapping blocks wholly inside the LM field, with label in them,
    whose search windows lie inside the EM field."""
    h, w = lm_on_em.shape
    b, s = BLOCK_PX, SEARCH_PX
    out = []
    for y in range(s, h - b - s + 1, b):
        for x in range(s, w - b - s + 1, b):
            if inside[y:y + b, x:x + b].all() and lm_on_em[y:y + b, x:x + b].max() > label_level:
                out.append((y, x))
    return out


def _match_blocks(lm_on_em: np.ndarray, em_s: np.ndarray, corners: list[tuple[int, int]],
                  windows: list[tuple[int, int]] | None = None) -> np.ndarray:
    """Displacement (dx, dy, peak correlation) of each block in the EM window at ``windows``
    (default: its own corner)."""
    from skimage.feature import match_template

    b, s = BLOCK_PX, SEARCH_PX
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
               rng: np.random.Generator, rounds: int = 8) -> float:
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
                          [corners[j] for j, k in zip(perm, keep) if k])
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
