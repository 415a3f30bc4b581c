"""Step 5, non-rigid refinement: the model chosen among the cut's model, polynomials and a spline
by leave-one-out error on the matched structures, then the elastic step (TV-L1 optical flow
between the structure images).

Part of :mod:`cryoopt.pipeline.registration`, whose docstring describes the method step by step.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from cryoopt.pipeline.preprocess import block_mean
from cryoopt.pipeline.registration.cut_model import (
    SPLINE_SMOOTHING,
    _CompressionFit,
    _PolyFit,
    _SplineFit,
    _cut_models,
    _drop_outlier_matches,
    _spline_loo,
)
from cryoopt.pipeline.registration.hypotheses import VERIFY_RADIUS_PX, _fit, _match
from cryoopt.pipeline.registration.images import _ncc
from cryoopt.pipeline.registration.result import RegistrationResult


def _nonrigid_refinement(
    lp: np.ndarray, ep: np.ndarray, affine: np.ndarray, radii: tuple[float, float], em_shape: tuple[int, int],
    *, min_per_term: float = 2.0, min_spline: int = 16, fine_radius: float = VERIFY_RADIUS_PX,
    seed_pairs: list[tuple[int, int]] | None = None,
) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, float, float, np.ndarray, object] | None:
    """A polynomial (order 2 or 3) or a smoothing thin-plate spline on the matched structures,
    where it predicts held-out ones measurably better than the affine (see the module
    docstring). The spline re-matches within ``fine_radius`` EM px (localisation precision).

    Returns ``(name, affine, lm_matched, em_matched, fre, tre, displacement, model)``: the
    affine refitted on all matches, ``tre`` the model's
    leave-one-out RMS error at the matched structures, the displacement on the EM grid in
    the convention of :class:`RegistrationResult`, the fitted model (LM -> EM px); None when
    the affine stays (too few matches, or nothing predicts better)."""
    if len(lp) < 8 or len(ep) < 8:
        return None
    tree = cKDTree(ep)
    wide, tight = radii
    fits: dict[int, _PolyFit] = {}
    model = None

    def mapped(m) -> np.ndarray:
        return m(lp) if m is not None else lp @ affine[:2, :2].T + affine[:2, 2]

    def matches(m, radius: float) -> list[tuple[int, int]]:
        return _match(mapped(m), ep, np.eye(3), tree, radius)

    for order in (1, 2, 3):
        n_terms = (order + 1) * (order + 2) // 2
        fit = None
        # grow the matches under the current model (a wide radius first: the affine fitted
        # where the section compressed as it assumed errs most where it did not), refit
        for radius in (wide, tight, tight):
            pairs = matches(model if fit is None else fit, radius)
            if len(pairs) < min_per_term * n_terms + 2:
                break
            new = _PolyFit.fit(lp[[a for a, _ in pairs]], ep[[b for _, b in pairs]], order)
            if new is None:
                break
            fit = new
        if fit is None:
            break
        fits[order] = fit
        model = fit
    if 1 not in fits and seed_pairs:
        first = _PolyFit.fit(lp[[a for a, _ in seed_pairs]], ep[[b for _, b in seed_pairs]], 1)
        if first is not None:
            fits[1] = first
    if 1 not in fits:
        return None
    pairs = matches(fits[max(fits)], tight)
    if seed_pairs and len(seed_pairs) > len(pairs):
        pairs = list(seed_pairs)  # the cut's model's matches at localisation precision reach further
    src, dst = lp[[a for a, _ in pairs]], ep[[b for _, b in pairs]]
    spline_loo, spline_s = None, 0.0
    if len(src) >= min_spline:
        # a spline follows every match, wrong ones too: drop the matches its leave-one-out
        # error marks as wrong, re-match under it at localisation precision, again
        for _ in range(3):
            errs = {sm: _spline_loo(src, dst, sm) for sm in SPLINE_SMOOTHING}
            spline_s = min(errs, key=lambda sm: float(np.mean(np.minimum(errs[sm], 1e6) ** 2)))
            err = errs[spline_s]
            good = err <= max(1.5, 3.0 * float(np.median(err)))
            src, dst = src[good], dst[good]
            f = _SplineFit.fit(src, dst, spline_s) if len(src) >= min_spline else None
            if f is None:
                break
            pairs = _match(f(lp), ep, np.eye(3), tree, fine_radius)
            src, dst = lp[[a for a, _ in pairs]], ep[[b for _, b in pairs]]
        if len(src) >= min_spline:
            spline_loo = _spline_loo(src, dst, spline_s)
    # a bead next to another (one LM blob for two EM beads) or a structure matched to its
    # neighbour is a match a few pixels off, and a model through it bends the field around
    # it: the matches the cut's model, fitted without them, misses by far more than the rest
    # are dropped (at most a fifth of them), the models then judged on the rest
    src, dst, dropped = _drop_outlier_matches(src, dst)
    if dropped and spline_loo is not None:
        spline_loo = _spline_loo(src, dst, spline_s) if len(src) >= min_spline else None
    # every model judged on the same matches by its leave-one-out error
    loo: dict[str, float] = {}
    polys: dict[str, _PolyFit] = {}
    for order in fits:
        f = _PolyFit.fit(src, dst, order)
        if f is not None and len(src) >= min_per_term * f.cov.shape[0] + 2:
            polys[f"polynomial{order}"] = f
            loo[f"polynomial{order}"] = f.loo_rms
    if spline_loo is not None and np.all(np.isfinite(spline_loo)):
        loo["spline"] = float(np.sqrt(np.mean(spline_loo**2)))
    if "polynomial1" not in loo:
        return None
    # the affine part refitted on all the matches (the first was fitted where the section
    # compressed as a similarity or affine assumed): the trend beyond the matched structures
    affine = _fit(src, dst, [(i, i) for i in range(len(src))], "affine")
    comp: dict[str, _CompressionFit] = {}
    for pieces, degree, roughness in _cut_models():
        cf = _CompressionFit.fit(src, dst, affine, pieces, roughness, degree)
        if cf is not None and (cf.name not in comp or cf.loo_rms < comp[cf.name].loo_rms):
            comp[cf.name] = cf
            loo[cf.name] = cf.loo_rms
    best = min(loo, key=loo.__getitem__)
    if comp:
        # a cut's own model extrapolates as a compression does beyond the matched structures;
        # a free polynomial or spline does not: preferred unless clearly worse
        best_comp = min(comp, key=loo.__getitem__)
        if loo[best_comp] <= 1.1 * loo[best]:
            best = best_comp
    if best == "polynomial1" or loo[best] > 0.9 * loo["polynomial1"]:
        return None
    h, w = em_shape
    rows, cols = np.mgrid[0:h, 0:w]
    pix = np.column_stack([cols.ravel(), rows.ravel()]).astype(float)
    if best.startswith("compression"):
        fwd = comp[best]
        disp = fwd.displacement(pix).T.reshape(2, h, w)
        res = fwd(src) - dst
        return best, affine, src, dst, float(np.sqrt(np.mean(np.sum(res**2, axis=1)))), loo[best], disp, fwd
    if best == "spline":
        fwd, back = _SplineFit.fit(src, dst, spline_s), _SplineFit.fit(dst, src, spline_s)  # through the same matches
        if fwd is None or back is None:
            return None
    else:
        fwd = polys[best]
        # EM px -> LM px: the inverse polynomial, one order up, fitted densely to the forward one
        inv_aff = np.linalg.inv(affine)
        gy, gx = np.mgrid[-0.1 * h : 1.1 * h : 24j, -0.1 * w : 1.1 * w : 24j]
        grid_em = np.column_stack([gx.ravel(), gy.ravel()])
        grid_lm = grid_em @ inv_aff[:2, :2].T + inv_aff[:2, 2]
        for _ in range(4):  # LM points whose images are the grid, by the affine's Jacobian
            grid_lm = grid_lm + (grid_em - fwd(grid_lm)) @ inv_aff[:2, :2].T
        back = _PolyFit.fit(grid_em, grid_lm, min(fwd.order + 1, 4))
        if back is None:
            return None
    lm_of_em = np.concatenate([back(pix[k : k + 16384]) for k in range(0, len(pix), 16384)])
    # EM pixel p shows LM point affine^-1 (p + d(p)): d is what the model adds to the affine
    disp = (lm_of_em @ affine[:2, :2].T + affine[:2, 2] - pix).T.reshape(2, h, w)
    # outside the matched structures a spline or polynomial extrapolates wildly: there the
    # correction of the nearest point inside their convex hull is kept (constant extrapolation)
    from skimage.morphology import convex_hull_image

    marks = np.zeros((h, w), bool)
    ij = np.clip(np.round(dst[:, ::-1]).astype(int), 0, [h - 1, w - 1])
    marks[ij[:, 0], ij[:, 1]] = True
    hull = convex_hull_image(marks)
    if hull.any() and not hull.all():
        _, (ri, ci) = ndi.distance_transform_edt(~hull, return_indices=True)
        disp = disp[:, ri, ci]
    res = fwd(src) - dst
    fre = float(np.sqrt(np.mean(np.sum(res**2, axis=1))))
    return best, affine, src, dst, fre, loo[best], disp, fwd


def _elastic(lm: np.ndarray, em: np.ndarray, base: RegistrationResult, lm_sigma_em_px: float, *, max_px: int = 256) -> np.ndarray:
    """Displacement (x, y) on the EM grid, to add to ``base``'s, from TV-L1 flow between
    structure images (see module).

    The flow runs between the EM and the LM warped by ``base``, on the EM grid
    block-averaged to at most ``max_px`` a side (the deformation is smooth), and is
    smoothed by normalised convolution over an eighth of the field, weighted by where
    either image shows structure."""
    from skimage.registration import optical_flow_tvl1

    f = max(1, math.ceil(max(em.shape) / max_px))
    em_w = block_mean(em, f)
    lm_on_em = block_mean(base.warp(lm, em.shape, order=1), f)
    inside = block_mean(base.warp(np.ones(lm.shape, float), em.shape, order=0), f) > 0.5
    sigma = max(1.0, lm_sigma_em_px / f)

    def norm(x: np.ndarray) -> np.ndarray:
        x = ndi.gaussian_filter(x, sigma)
        lo, hi = np.percentile(x, (2.0, 99.8))
        return np.clip((x - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)

    fill = float(np.median(lm_on_em[inside])) if inside.any() else 0.0
    mov = norm(np.where(inside, lm_on_em, fill))
    # the EM's sign that looks like the LM (stain is dark in EM where label is bright in LM)
    sign = -1.0 if _ncc(em_w, mov, inside) < 0 else 1.0
    ref = norm(sign * em_w)
    v_row, v_col = optical_flow_tvl1(ref, mov, attachment=10.0, tightness=0.3, num_warp=5, num_iter=10)
    weight = ndi.gaussian_filter(ref + mov, sigma) * inside
    smooth_px = max(em_w.shape) / 8.0

    def smooth(v: np.ndarray) -> np.ndarray:
        num = ndi.gaussian_filter(v * weight, smooth_px)
        den = ndi.gaussian_filter(weight, smooth_px)
        return np.where(den > 1e-3 * max(float(den.max()), 1e-12), num / np.maximum(den, 1e-12), 0.0)

    disp_w = np.stack([smooth(v_col), smooth(v_row)]) * f  # working px -> EM px
    if f == 1:
        return disp_w
    from skimage.transform import resize

    return np.stack([resize(d, em.shape, order=1, mode="edge", anti_aliasing=False) for d in disp_w])
