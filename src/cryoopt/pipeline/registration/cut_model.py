"""Models of a section compressed unevenly by the cut, fitted to matched structures: the cut's own
model (:class:`_CompressionFit`), polynomials, a smoothing thin-plate spline; outlier matches
dropped and matches re-collected under the cut's model.

Part of :mod:`cryoopt.pipeline.registration`, whose docstring describes the method step by step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from cryoopt.pipeline.registration.hypotheses import _fit, _match


#: roughness penalties of the cut's model (relative to its normal equations' scale), chosen
#: among these by leave-one-out error
CUT_ROUGHNESS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: the most cubic pieces across the cut the cut's model is tried with
CUT_MAX_PIECES = 6


def _poly_terms(xy: np.ndarray, order: int) -> np.ndarray:
    """Polynomial terms ``x^(j-i) y^i`` (j <= order), the order of
    :class:`skimage.transform.PolynomialTransform`'s coefficients."""
    x, y = xy[:, 0], xy[:, 1]
    return np.column_stack([x ** (j - i) * y**i for j in range(order + 1) for i in range(j + 1)])


@dataclass(frozen=True)
class _PolyFit:
    """A least-squares polynomial map (LM -> EM px), fitted in coordinates centred and scaled
    to about +-1 (the normal equations of a cubic in raw pixels are ill-conditioned)."""

    order: int
    centre: np.ndarray
    span: float
    coef: np.ndarray  # terms x 2
    cov: np.ndarray  # (X^T X)^-1
    loo_rms: float
    rss: float
    n: int

    @classmethod
    def fit(cls, src: np.ndarray, dst: np.ndarray, order: int) -> _PolyFit | None:
        centre = src.mean(axis=0)
        span = float(np.max(np.abs(src - centre))) or 1.0
        x = _poly_terms((src - centre) / span, order)
        if len(src) <= x.shape[1]:
            return None
        try:
            cov = np.linalg.inv(x.T @ x)
        except np.linalg.LinAlgError:
            return None
        coef = cov @ x.T @ dst
        res = dst - x @ coef
        h = np.einsum("ij,jk,ik->i", x, cov, x)
        if np.any(h > 1 - 1e-6):
            return None
        loo = res / (1.0 - h)[:, None]
        return cls(order, centre, span, coef, cov, float(np.sqrt(np.mean(np.sum(loo**2, axis=1)))),
                   float(np.sum(res**2)), len(src))

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        return _poly_terms((np.asarray(xy, float) - self.centre) / self.span, self.order) @ self.coef


@dataclass(frozen=True)
class _SplineFit:
    """A smoothing thin-plate spline (LM -> EM px, :class:`scipy.interpolate.RBFInterpolator`
    with an affine part) in centred, scaled coordinates; ``smoothing`` trades following
    every match for robustness to localisation noise."""

    interp: object
    centre: np.ndarray
    span: float
    smoothing: float = 0.0

    @classmethod
    def fit(cls, src: np.ndarray, dst: np.ndarray, smoothing: float) -> _SplineFit | None:
        from scipy.interpolate import RBFInterpolator

        centre = src.mean(axis=0)
        span = float(np.max(np.abs(src - centre))) or 1.0
        try:
            interp = RBFInterpolator((src - centre) / span, dst, kernel="thin_plate_spline", smoothing=smoothing, degree=1)
        except (np.linalg.LinAlgError, ValueError):
            return None
        return cls(interp, centre, span, smoothing)

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        return self.interp((np.asarray(xy, float) - self.centre) / self.span)  # type: ignore[operator]


def _spline_loo(src: np.ndarray, dst: np.ndarray, smoothing: float) -> np.ndarray:
    """Leave-one-out errors of a smoothing spline through the pairs (one refit per point)."""
    err = np.full(len(src), np.inf)
    keep = np.ones(len(src), bool)
    for i in range(len(src)):
        keep[i] = False
        f = _SplineFit.fit(src[keep], dst[keep], smoothing)
        keep[i] = True
        if f is not None:
            err[i] = float(np.linalg.norm(f(src[i : i + 1])[0] - dst[i]))
    return err


#: smoothing of the thin-plate spline, chosen among these by leave-one-out error
#: (normalised coordinates: 0 interpolates every match)
SPLINE_SMOOTHING = (0.0, 1e-4, 1e-3, 1e-2)


@dataclass(frozen=True)
class _CompressionFit:
    """An affine plus a compression that varies across the section: the physics of a cut.

    A section compresses along the cutting direction ``v`` by a fraction that varies
    smoothly with the position ``s`` across the cut (Al-Amoudi et al. 2005, J. Struct. Biol.
    150:109); what an affine leaves is then a shift along ``v`` proportional to the distance
    ``t`` along it: ``em = q + v (t g(s) + h(s))`` with ``q`` the affine's image and ``g``,
    ``h`` smooth functions of ``s`` (``h`` absorbs where the compression is centred). ``v`` is
    the affine's direction of least scale (its compression). ``g`` and ``h`` are cubic
    B-splines of ``pieces`` equal pieces over the range of ``s`` the matches span, with a
    second-difference roughness penalty (P-splines, Eilers & Marx 1996, Stat. Sci. 11:89):
    a local basis, so a ripple across the section is followed without the swings a global
    polynomial series makes at the ends of the range. Linear in the coefficients: penalised
    least squares, leave-one-out errors from the hat matrix (what
    :class:`skimage.transform.PolynomialTransform` and scipy's splines do not give). It
    extrapolates along ``v`` as a compression does, and holds ``g`` and ``h`` at their end
    values beyond the range of ``s`` the matches span."""

    affine: np.ndarray
    q0: np.ndarray
    u: np.ndarray
    v: np.ndarray
    s_range: tuple[float, float]
    pieces: int
    coef: np.ndarray
    loo_rms: float
    loo: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  # per match, EM px
    spline_degree: int = 3
    roughness: float = 0.0
    cov: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)  # (X^T X + P)^-1
    xtx: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)  # X^T X

    @staticmethod
    def frame(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        uu, _, _ = np.linalg.svd(affine[:2, :2])
        return uu[:, 0], uu[:, 1]  # along the cut's width, along the cut (least scale)

    def _st(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = q - self.q0
        lo, hi = self.s_range
        return np.clip((2.0 * (d @ self.u) - lo - hi) / max(hi - lo, 1e-9), -1.0, 1.0), d @ self.v

    def _basis(self, s_n: np.ndarray) -> np.ndarray:
        from scipy.interpolate import BSpline

        k = self.spline_degree
        knots = np.concatenate([np.full(k, -1.0), np.linspace(-1.0, 1.0, self.pieces + 1), np.full(k, 1.0)])
        return BSpline.design_matrix(np.clip(s_n, -1.0, 1.0), knots, k).toarray()

    def _terms(self, s_n: np.ndarray, t: np.ndarray) -> np.ndarray:
        b = self._basis(s_n)
        return np.column_stack([b * t[:, None], b])

    @classmethod
    def fit(cls, src: np.ndarray, dst: np.ndarray, affine: np.ndarray, pieces: int, roughness: float = 0.0,
            spline_degree: int = 3) -> _CompressionFit | None:
        q = src @ affine[:2, :2].T + affine[:2, 2]
        u, v = cls.frame(affine)
        q0 = dst.mean(axis=0)
        s_m = (q - q0) @ u
        probe = cls(affine, q0, u, v, (float(s_m.min()), float(s_m.max())), pieces, np.zeros(0), math.nan,
                    spline_degree=spline_degree)
        x = probe._terms(*probe._st(q))
        if len(src) < cls.min_matches(pieces, spline_degree):
            return None
        y = (dst - q) @ v
        nb = x.shape[1] // 2
        d2 = np.diff(np.eye(nb), 2, axis=0) if nb > 2 else np.zeros((0, nb))
        penalty = np.kron(np.eye(2), d2.T @ d2)  # on g and on h alike
        xtx = x.T @ x
        try:
            cov = np.linalg.inv(xtx + roughness * np.trace(xtx) / (2 * nb) * penalty)
        except np.linalg.LinAlgError:
            return None
        coef = cov @ x.T @ y
        h = np.einsum("ij,jk,ik->i", x, cov, x)
        if np.any(h > 1 - 1e-6):
            return None
        # across the cut the affine alone predicts: its residual counts in the error too
        across = (dst - q) @ u
        loo = np.hypot((y - x @ coef) / (1.0 - h), across)
        return cls(affine, q0, u, v, probe.s_range, pieces, coef, float(np.sqrt(np.mean(loo**2))), loo, spline_degree,
                   roughness, cov, xtx)

    def leverage(self, em_xy: np.ndarray) -> np.ndarray:
        """Variance of the fitted shift along the cut at ``em_xy`` over the matches' noise
        variance: ``x^T C X^T X C x`` with ``C = (X^T X + P)^-1`` (penalised least squares;
        the affine image taken as the EM point, as the shift is small)."""
        x = self._terms(*self._st(np.asarray(em_xy, float).reshape(-1, 2)))
        a = x @ self.cov
        return np.einsum("ij,jk,ik->i", a, self.xtx, a)

    @staticmethod
    def min_matches(pieces: int = 1, spline_degree: int = 1) -> int:
        """Fewest matches the model is fitted to: two per coefficient (``g`` and ``h`` have
        ``pieces + degree`` each), plus two left over to judge it by. The default, a compression
        varying linearly across the cut, is the simplest variation there is: 10 matches."""
        return 2 * 2 * (pieces + spline_degree) + 2

    @property
    def name(self) -> str:
        return {1: "compression-linear", 2: "compression-quadratic"}.get(self.spline_degree, f"compression{self.pieces}")

    def __call__(self, lm_xy: np.ndarray) -> np.ndarray:
        q = np.asarray(lm_xy, float) @ self.affine[:2, :2].T + self.affine[:2, 2]
        return q + np.outer(self._terms(*self._st(q)) @ self.coef, self.v)

    def displacement(self, em_xy: np.ndarray) -> np.ndarray:
        """``q - em`` for the affine image ``q`` that maps to ``em`` (closed form: ``s`` is
        unchanged along ``v``, and ``t`` enters linearly)."""
        s_n, t_e = self._st(em_xy)
        b = self._basis(s_n)
        k = b.shape[1]
        g, hh = b @ self.coef[:k], b @ self.coef[k:]
        t_q = (t_e - hh) / np.where(np.abs(1.0 + g) > 1e-3, 1.0 + g, 1e-3)
        return np.outer(t_q - t_e, self.v)


def _best_compression_fit(src: np.ndarray, dst: np.ndarray) -> _CompressionFit | None:
    """The cut's model (refitted affine, pieces, roughness) with the least leave-one-out error."""
    affine = _fit(src, dst, [(i, i) for i in range(len(src))], "affine")
    best = None
    for pieces, degree, roughness in _cut_models():
        cf = _CompressionFit.fit(src, dst, affine, pieces, roughness, degree)
        if cf is not None and (best is None or cf.loo_rms < best.loo_rms):
            best = cf
    return best


def _cut_models() -> list[tuple[int, int, float]]:
    """``(pieces, spline degree, roughness)`` of the cut's models that compete: a compression
    varying linearly, then quadratically across the cut (few parameters: what 6-10 matched
    structures support), then cubic B-splines of 1 to :data:`CUT_MAX_PIECES` pieces at each
    roughness of :data:`CUT_ROUGHNESS`."""
    return [(1, 1, 0.0), (1, 2, 0.0)] + [(k, 3, r) for k in range(1, CUT_MAX_PIECES + 1) for r in CUT_ROUGHNESS]


def _drop_outlier_matches(src: np.ndarray, dst: np.ndarray, *, max_fraction: float = 0.2, min_px: float = 1.5,
                          k: float = 4.0) -> tuple[np.ndarray, np.ndarray, int]:
    """Matches whose leave-one-out error under the cut's model exceeds ``k`` times the median
    (and ``min_px``) removed, the worst first, refitting after each round, at most
    ``max_fraction`` of them in all. For Rayleigh-distributed errors (isotropic Gaussian
    localisation) 4 medians is 4.7 sigma: about one good match in 60 000 is dropped.
    Returns ``(src, dst, number dropped)``."""
    n0 = len(src)
    budget = int(max_fraction * n0)
    for _ in range(4):
        cf = _best_compression_fit(src, dst)
        if cf is None or budget <= 0:
            break
        bad = cf.loo > max(min_px, k * float(np.median(cf.loo)))
        if not bad.any():
            break
        if bad.sum() > budget:
            bad = cf.loo >= np.sort(cf.loo)[-budget]
        src, dst = src[~bad], dst[~bad]
        budget -= int(bad.sum())
    return src, dst, n0 - len(src)


def _cut_model_matches(lp: np.ndarray, ep: np.ndarray, pairs: list[tuple[int, int]], tree: cKDTree,
                       radii: tuple[float, ...]) -> tuple[list[tuple[int, int]], int]:
    """Matches within the last of ``radii`` under the cut's model grown from a hypothesis's
    matches: the model fitted to them, all LM points mapped, re-matched at each radius in turn,
    refitted. A section that compressed unevenly leaves an affine pixels off over much of the
    field, so its matches at localisation precision undercount a right transform; the cut's
    model follows the compression there. Returns ``(pairs, parameters fitted)`` (the affine's
    six plus the model's coefficients), ``([], 0)`` with too few matches to fit it."""
    need = _CompressionFit.min_matches()
    cur, n_par = list(pairs), 0
    for radius in radii:
        if len(cur) < need:
            return [], 0
        src, dst = lp[[a for a, _ in cur]], ep[[b for _, b in cur]]
        cf = _best_compression_fit(src, dst)
        if cf is None:
            return [], 0
        n_par = 6 + cf.coef.size
        cur = _match(cf(lp), ep, np.eye(3), tree, radius)
    return cur, n_par
