"""The target registration error estimate of a fitted model: its own variance plus its inadequacy
measured by spatial cross-validation of the matches (:class:`_TREEstimate`).

Part of :mod:`cryoopt.pipeline.registration`, whose docstring describes the method step by step.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from cryoopt.pipeline.registration.cut_model import _CompressionFit, _PolyFit, _SplineFit, _poly_terms


#: most spatial blocks of matched structures held out in turn by the TRE estimate's
#: cross-validation (about four matches each)
TRE_CV_MAX_BLOCKS = 8
#: directions (evenly spread over 360 degrees) along which the TRE estimate's cross-validation
#: holds out the outer part of the matches, and which fraction of them it holds out
TRE_CV_DIRECTIONS = 8
TRE_CV_OUTER_FRACTION = 0.25
#: one-sided normal quantile of the upper bound on the growth of the error outside the matches
TRE_GROWTH_Z = 1.645


def _linear_refit(src: np.ndarray, dst: np.ndarray, kind: str) -> np.ndarray | None:
    """Least-squares affine or similarity on matched pairs, None where the points do not fix it."""
    from skimage.transform import AffineTransform, SimilarityTransform

    if len(src) < (3 if kind == "affine" else 2):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf = (AffineTransform if kind == "affine" else SimilarityTransform).from_estimate(src, dst)
    return np.asarray(tf.params, float) if tf else None


def _refit_map(kind: str, model: object, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, object] | None:
    """The registration's model refitted, with the same settings, to a subset of its matches:
    ``(affine, non-rigid model or None)``, or None where the subset cannot fix it."""
    affine = _linear_refit(src, dst, "similarity" if kind == "similarity" else "affine")
    if affine is None or model is None:
        return None if affine is None else (affine, None)
    if isinstance(model, _PolyFit):
        refit = _PolyFit.fit(src, dst, model.order)
    elif isinstance(model, _CompressionFit):
        # the same settings; where fewer matches cannot carry them, fewer pieces, then the
        # quadratic and linear variations: the extrapolation of the cut's model all the same
        tries = [(p, model.spline_degree, model.roughness) for p in range(model.pieces, 0, -1)] + [(1, 2, 0.0), (1, 1, 0.0)]
        refit = next((f for p, k, r in tries if (f := _CompressionFit.fit(src, dst, affine, p, r, k)) is not None), None)
    elif isinstance(model, _SplineFit):
        refit = _SplineFit.fit(src, dst, model.smoothing) if len(src) >= 4 else None
    else:
        raise ValueError(f"no TRE estimate for a {kind} model")
    return None if refit is None else (affine, refit)


def _cv_folds(dst: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """Which matches each fold of the TRE estimate's cross-validation holds out, and whether
    it is a direction's: the outer :data:`TRE_CV_OUTER_FRACTION` along each of
    :data:`TRE_CV_DIRECTIONS` directions (extrapolation outward), spatial k-means blocks
    (interpolation across a gap), each match alone."""
    from scipy.cluster.vq import kmeans2

    n = len(dst)
    folds = []
    c = dst - dst.mean(axis=0)
    for theta in np.arange(TRE_CV_DIRECTIONS) * (2.0 * math.pi / TRE_CV_DIRECTIONS):
        along = c @ np.array([math.cos(theta), math.sin(theta)])
        folds.append((along > np.quantile(along, 1.0 - TRE_CV_OUTER_FRACTION), True))
    k = int(np.clip(n // 4, 2, TRE_CV_MAX_BLOCKS))
    _, labels = kmeans2(dst, k, seed=0, minit="++")
    folds += [(labels == j, False) for j in range(k)]
    folds += [(np.arange(n) == i, False) for i in range(n)]
    return [(f, outward) for f, outward in folds if 0 < np.count_nonzero(f) < n]


@dataclass(frozen=True)
class _TREEstimate:
    """Expected target registration error (EM px) at any EM point, from the matched structures.

    Two parts, added in quadrature. ``sigma^2 L(r)``: the fitted model's own prediction
    variance at ``r``, ``L`` from its design as in :func:`target_registration_error` but at the
    point, not averaged (Fitzpatrick, West & Maurer 1998, IEEE TMI 17:694; it grows with the
    distance from the fiducial configuration, Fitzpatrick & West 2001, IEEE TMI 20:917; for
    the cut's penalised B-splines the sandwich ``x^T C X^T X C x``, for the thin-plate spline
    the squared weights of the linear smoother), ``sigma^2`` the residual variance per
    coordinate over the ``2N - tr(H)`` degrees of freedom left (for a model through every
    match, which leaves none, the affine's over ``2N - 6``: an upper bound). ``e(r)^2``: the model's
    inadequacy, which its residuals cannot show, by spatial cross-validation (Roberts et al.
    2017, Ecography 40:913: point-wise cross-validation measures interpolation, held-out
    blocks extrapolation): matches are held out (the outer quarter along each of 8
    directions, spatial k-means blocks, each match alone), predicted by the model refitted to
    the rest with the same settings, and their squared error beyond what noise explains
    (``sigma^2 (2 + L_out)``: their own localisation and the refitted model's variance there)
    related to where they lie. Inside the hull of the matches left in: ``a^2 + (a1 d_nn)^2``,
    ``d_nn`` the distance to the nearest (non-negative least squares). Outside it, at distance
    ``d`` from the hull, plus ``(alpha ((R + d)^2 - R^2))^2``, ``R`` the matches' RMS distance
    from their centroid per axis: the growth of a model that misses a quadratic term of the
    true map (more than one missing a linear term shows), ``alpha`` fitted per held-out
    direction and the worst direction taken (a model may fail on one side only), at its
    one-sided 95 % upper bound (a squared 2-D error scatters by its own mean), since it is
    carried beyond the largest distance the cross-validation saw."""

    em: np.ndarray  # matched EM points
    sigma2: float  # per-coordinate noise variance of a matched structure, EM px^2
    to_lm: np.ndarray  # EM px -> LM px (the model's affine part, inverted)
    centre: np.ndarray  # LM centring and scale of the linear design
    span: float
    order: int
    cov: np.ndarray  # (X^T X)^-1 of the polynomial design of ``order``
    factor: float  # 4/6 for a similarity (4 parameters, not the affine's 6)
    cut: _CompressionFit | None
    spline_weights: object | None  # RBFInterpolator of the identity: the smoother's weights
    a: float = 0.0
    a1: float = 0.0
    alpha: float = 0.0
    radius: float = 1.0
    cv_distance: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    cv_excess: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  # error beyond noise, EM px

    @classmethod
    def design(cls, kind: str, src: np.ndarray, dst: np.ndarray, affine: np.ndarray, model: object) -> _TREEstimate:
        """The leverage part alone (no noise level, no inadequacy yet)."""
        from scipy.interpolate import RBFInterpolator

        weights = None
        if isinstance(model, (_PolyFit, _SplineFit)):
            centre, span = model.centre, model.span
        else:
            centre = src.mean(axis=0)
            span = float(np.max(np.abs(src - centre))) or 1.0
        order = model.order if isinstance(model, _PolyFit) else 1
        x = _poly_terms((src - centre) / span, order)
        cov = model.cov if isinstance(model, _PolyFit) else np.linalg.inv(x.T @ x)
        if isinstance(model, _SplineFit):
            weights = RBFInterpolator((src - centre) / span, np.eye(len(src)), kernel="thin_plate_spline",
                                      smoothing=model.smoothing, degree=1)
        return cls(dst, math.nan, np.linalg.inv(affine), centre, span, order, cov,
                   4.0 / 6.0 if kind == "similarity" else 1.0, model if isinstance(model, _CompressionFit) else None,
                   weights)

    def leverage(self, em_xy: np.ndarray) -> np.ndarray:
        """``L`` at EM points: a prediction's expected squared error there (both coordinates)
        over a match's noise variance per coordinate: ``2 h`` for a model of both coordinates
        alike, ``2 h_affine + h_cut`` for the cut's model (its shift is along the cut alone)."""
        lm = em_xy @ self.to_lm[:2, :2].T + self.to_lm[:2, 2]
        z = (lm - self.centre) / self.span
        if self.spline_weights is not None:
            return 2.0 * np.sum(self.spline_weights(z) ** 2, axis=1)  # type: ignore[operator]
        t = _poly_terms(z, self.order)
        h = 2.0 * self.factor * np.einsum("ij,jk,ik->i", t, self.cov, t)
        if self.cut is not None:
            h = h + self.cut.leverage(em_xy)
        return h

    def inadequacy(self, d: np.ndarray, d_nn: np.ndarray) -> np.ndarray:
        """``e``, EM px, at distance ``d`` (EM px) outside the matched structures' hull and
        ``d_nn`` from the nearest of them."""
        g = (self.radius + np.asarray(d, float)) ** 2 - self.radius**2
        return np.sqrt(self.a**2 + (self.a1 * np.asarray(d_nn, float)) ** 2 + (self.alpha * g) ** 2)

    def __call__(self, em_xy: np.ndarray) -> np.ndarray:
        d, d_nn = _outside_distance(self.em, em_xy), cKDTree(self.em).query(em_xy)[0]
        return np.sqrt(self.sigma2 * self.leverage(em_xy) + self.inadequacy(d, d_nn) ** 2)

    @classmethod
    def build(cls, kind: str, src: np.ndarray, dst: np.ndarray, affine: np.ndarray, model: object = None,
              ) -> _TREEstimate | None:
        """From a registration's matches (LM ``src``, EM ``dst``), its affine part and its fitted
        non-rigid model (None for an affine or similarity alone). None with too few matches to
        leave a residual degree of freedom."""
        from scipy.optimize import nnls

        src, dst = np.asarray(src, float), np.asarray(dst, float)
        n = len(src)
        if n < 3:
            return None
        probe = cls.design(kind, src, dst, affine, model)
        pred = model(src) if model is not None else src @ affine[:2, :2].T + affine[:2, 2]  # type: ignore[operator]
        rss = float(np.sum((pred - dst) ** 2))
        dof = 2 * n - float(np.sum(probe.leverage(dst)))  # 2N - tr(H) over both coordinates
        if dof < 0.5 and model is not None:
            # a model that passes through its matches (a spline through each) shows no noise: the
            # affine's residuals on the same matches bound it from above (they hold the deformation
            # the model follows as well), rather than no estimate at all
            rss = float(np.sum((src @ affine[:2, :2].T + affine[:2, 2] - dst) ** 2))
            dof = 2 * n - 6.0
        if dof < 0.5:
            return None
        sigma2 = rss / dof
        radius = math.sqrt(float(np.mean(np.sum((dst - dst.mean(axis=0)) ** 2, axis=1))) / 2.0) or 1.0
        # per fold: distance outside the rest's hull, squared error beyond noise, distance to the nearest left in
        groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        outward: list[bool] = []
        for out, is_direction in _cv_folds(dst):
            refit = _refit_map(kind, model, src[~out], dst[~out])
            if refit is None:
                continue
            aff, mod = refit
            pred = mod(src[out]) if mod is not None else src[out] @ aff[:2, :2].T + aff[:2, 2]  # type: ignore[operator]
            e2 = np.sum((pred - dst[out]) ** 2, axis=1)
            try:
                l_out = cls.design(kind, src[~out], dst[~out], aff, mod).leverage(dst[out])
            except (np.linalg.LinAlgError, ValueError):
                continue
            if np.all(np.isfinite(e2)) and np.all(np.isfinite(l_out)):
                # beyond the noise (own localisation, refitted model's variance): mean 0 where the model is right
                groups.append((_outside_distance(dst[~out], dst[out]), e2 - sigma2 * (2.0 + l_out),
                               cKDTree(dst[~out]).query(dst[out])[0]))
                outward.append(is_direction)
        d = np.concatenate([g[0] for g in groups]) if groups else np.zeros(0)
        x2 = np.concatenate([g[1] for g in groups]) if groups else np.zeros(0)
        d_nn = np.concatenate([g[2] for g in groups]) if groups else np.zeros(0)
        inside = d <= 0.0
        a, a1 = 0.0, 0.0
        if inside.any():
            # inside the hull: interpolation across the gap to the nearest match, e^2 = a^2 + (a1 d_nn)^2
            (a2, a12), _ = nnls(np.column_stack([np.ones(inside.sum()), d_nn[inside] ** 2]), x2[inside])
            a, a1 = math.sqrt(a2), math.sqrt(a12)
        # growth outside: the worst direction held out (a model may fail on one side only)
        alphas = [0.0]
        for dg, xg, ng in [grp for grp, o in zip(groups, outward) if o] + [(d, x2, d_nn)]:
            g = ((radius + dg[dg > 0]) ** 2 - radius**2) ** 2
            if g.size:
                base = a * a + (a1 * ng[dg > 0]) ** 2
                alpha2 = float(np.sum((xg[dg > 0] - base) * g) / np.sum(g**2))
                # its one-sided upper bound: a squared 2-D error scatters by its own mean (chi-square, 2 dof)
                spread = base + sigma2 * 2.0 + max(alpha2, 0.0) * g
                alpha2 += TRE_GROWTH_Z * math.sqrt(float(np.sum(g**2 * spread**2))) / float(np.sum(g**2))
                alphas.append(math.sqrt(max(alpha2, 0.0)))
        alpha = max(alphas)
        x = np.sqrt(np.maximum(x2, 0.0))
        return dataclasses.replace(probe, sigma2=sigma2, a=a, a1=a1, alpha=alpha, radius=radius, cv_distance=d, cv_excess=x)


@dataclass(frozen=True)
class _RegriddedTRE:
    """A TRE estimate on another EM grid (:meth:`RegistrationResult.regridded`): a point is
    taken back to the grid the estimate was made on, and its error scaled to the new pixels."""

    inner: _TREEstimate | _RegriddedTRE
    em_grid: np.ndarray  # the estimate's EM (x, y) px -> the new grid's

    def __call__(self, em_xy: np.ndarray) -> np.ndarray:
        back = np.linalg.inv(self.em_grid)
        p = np.asarray(em_xy, float).reshape(-1, 2) @ back[:2, :2].T + back[:2, 2]
        return float(np.sqrt(abs(np.linalg.det(self.em_grid[:2, :2])))) * self.inner(p)


def _outside_distance(points: np.ndarray, query: np.ndarray) -> np.ndarray:
    """How far (EM px) each query point lies outside the convex hull of ``points``: the largest
    signed distance to the hull's edge lines (:class:`scipy.spatial.ConvexHull`'s facet
    equations; 0 inside, exact beside an edge, at most a factor ``cos`` of half the exterior
    angle short beyond a vertex). Points all on a line: the distance to the nearest."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        eq = ConvexHull(points).equations
    except (QhullError, ValueError):
        return cKDTree(points).query(query)[0]
    return np.maximum(np.max(query @ eq[:, :2].T + eq[:, 2], axis=1), 0.0)


def _tre_estimate(kind: str, src: np.ndarray, dst: np.ndarray, affine: np.ndarray, model: object) -> _TREEstimate | None:
    """:meth:`_TREEstimate.build`, None where the matches cannot support one (the
    registration itself stands either way)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # k-means may leave a block empty: it is skipped
            return _TREEstimate.build(kind, src, dst, affine, model)
    except (np.linalg.LinAlgError, ValueError):
        return None


def _field_rms(estimate: _TREEstimate, em_shape: tuple[int, int]) -> float:
    """RMS of the estimate over a 16 x 16 grid spanning the EM field."""
    gy, gx = np.meshgrid(np.linspace(0, em_shape[0] - 1, 16), np.linspace(0, em_shape[1] - 1, 16), indexing="ij")
    return float(np.sqrt(np.mean(estimate(np.column_stack([gx.ravel(), gy.ravel()])) ** 2)))
