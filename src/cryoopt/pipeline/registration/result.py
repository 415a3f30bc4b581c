"""The registration's result: :class:`~cryoopt.pipeline.registration.RegistrationResult` (the LM ->
EM transform, its non-rigid part and error estimates) and the least-squares target registration
error.

Part of :mod:`cryoopt.pipeline.registration`, whose docstring describes the method step by step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from cryoopt.pipeline.registration.tre import _RegriddedTRE, _TREEstimate


@dataclass(frozen=True)
class RegistrationResult:
    """An LM -> EM transform and its error estimates.

    Attributes:
        matrix: `3 x 3` homogeneous affine matrix, LM (x, y) px -> EM (x, y) px.
        rotation_deg, scale: of the transform's linear part (scale: EM px per LM px).
        n_matches: structure centroids used in the refinement (0: coarse only).
        fre_px: RMS residual of the matched centroids, EM px (NaN if no refinement).
        tre_px: expected RMS target registration error over the EM field, EM px: the RMS
            of :meth:`tre_at` over the field, so it counts the model's inadequacy and its
            extrapolation away from the matched structures, not only its noise (NaN when too
            few matches leave no residual degrees of freedom).
        model: ``"affine"``, ``"similarity"`` or ``"coarse"``; ``"+compressionK"`` (the
            cut's model, K cubic pieces across the cut; ``"+compression-linear"`` or
            ``"-quadratic"`` for a compression varying so across it), ``"+polynomial2"``, ``"+polynomial3"``
            or ``"+spline"`` appended when a non-rigid model fitted to the matched
            structures refines it, ``"+elastic"`` when the TV-L1 flow does.
        method: which coarse hypothesis won (``"fourier-mellin"``, ``"points"``).
        displacement: `2 x H x W` (x, y) displacement on the EM grid, EM px, or None:
            EM pixel ``p`` shows LM point ``matrix^-1 (p + displacement[:, p])``.
        tre_estimate: what :meth:`tre_at` evaluates (None without matched structures).
    """

    matrix: np.ndarray
    rotation_deg: float
    scale: float
    n_matches: int
    fre_px: float
    tre_px: float
    model: str
    method: str = "fourier-mellin"
    displacement: np.ndarray | None = field(default=None, repr=False)
    tre_estimate: _TREEstimate | _RegriddedTRE | None = field(default=None, repr=False, compare=False)

    def tre_at(self, em_xy: np.ndarray) -> np.ndarray:
        """Expected target registration error (EM px) at each of `N x 2` EM (x, y) points: the
        fitted model's prediction error there plus its inadequacy, which grows with the distance
        from the matched structures (see the module docstring). NaN where the registration
        has no matched structures to estimate it from (coarse, prior)."""
        p = np.asarray(em_xy, float).reshape(-1, 2)
        if self.tre_estimate is None:
            return np.full(len(p), math.nan)
        return self.tre_estimate(p)

    def regridded(self, em_grid: np.ndarray, lm_grid: np.ndarray, displacement: np.ndarray | None = None) -> RegistrationResult:
        """The same registration between other pixel grids of the two images: ``em_grid`` and
        ``lm_grid`` (`3 x 3`) map this result's EM and LM (x, y) px to the new grids' (e.g. a
        block mean of ``f`` back to full resolution: scale ``f``, offset ``(f - 1) / 2``; each an
        isotropic scale and a shift). Errors in EM px scale with ``em_grid``; ``tre_at`` keeps
        working on the new grid. ``displacement``: the non-rigid part resampled onto the new EM
        grid, in its px (the caller resamples it; None drops it)."""
        s_em, s_lm = float(np.sqrt(abs(np.linalg.det(em_grid[:2, :2])))), float(np.sqrt(abs(np.linalg.det(lm_grid[:2, :2]))))
        estimate = None if self.tre_estimate is None else _RegriddedTRE(self.tre_estimate, np.asarray(em_grid, float))
        return RegistrationResult(em_grid @ self.matrix @ np.linalg.inv(lm_grid), self.rotation_deg, self.scale * s_em / s_lm,
                                  self.n_matches, self.fre_px * s_em, self.tre_px * s_em, self.model, self.method, displacement,
                                  estimate)  # type: ignore[arg-type]

    @property
    def transform(self):
        """The affine part as a :class:`skimage.transform.AffineTransform`."""
        from skimage.transform import AffineTransform

        return AffineTransform(matrix=self.matrix)

    def apply(self, lm_xy: np.ndarray) -> np.ndarray:
        """Map `N x 2` LM (x, y) coordinates to EM coordinates (elastic part included)."""
        p = np.asarray(lm_xy, float).reshape(-1, 2)
        q = p @ self.matrix[:2, :2].T + self.matrix[:2, 2]
        if self.displacement is None:
            return q
        out = q.copy()
        for _ in range(4):  # fixed point of p + u(p) = q
            out = q - self._displacement_at(out)
        return out

    def _displacement_at(self, em_xy: np.ndarray) -> np.ndarray:
        d = self.displacement
        assert d is not None  # noqa: S101 - caller checks
        coords = [em_xy[:, 1], em_xy[:, 0]]
        return np.column_stack([ndi.map_coordinates(d[k], coords, order=1, mode="nearest") for k in (0, 1)])

    def em_to_lm(self, em_xy: np.ndarray) -> np.ndarray:
        """Map `N x 2` EM (x, y) coordinates to LM coordinates."""
        p = np.asarray(em_xy, float).reshape(-1, 2)
        if self.displacement is not None:
            p = p + self._displacement_at(p)
        inv = np.linalg.inv(self.matrix)
        return p @ inv[:2, :2].T + inv[:2, 2]

    def warp(self, lm_image: np.ndarray, output_shape: tuple[int, int], *, order: int = 1) -> np.ndarray:
        """Resample an LM image (or mask, ``order=0``) onto the EM grid of ``output_shape``."""
        from skimage.transform import warp

        img = np.asarray(lm_image)
        rows, cols = np.mgrid[0 : output_shape[0], 0 : output_shape[1]].astype(float)
        lm = self.em_to_lm(np.column_stack([cols.ravel(), rows.ravel()]))
        coords = np.stack([lm[:, 1].reshape(output_shape), lm[:, 0].reshape(output_shape)])
        out = warp(img.astype(float), coords, order=order, preserve_range=True)
        return out > 0.5 if img.dtype == bool else out


def target_registration_error(
    lm_points: np.ndarray, em_points: np.ndarray, matrix: np.ndarray, em_shape: tuple[int, int], *, n_params: int = 6
) -> tuple[float, float]:
    """``(fre_px, tre_px)``: RMS fiducial residual and expected RMS TRE over the EM field.

    See the module docstring for the formula. Returns NaN TRE with too few points.
    """
    lm = np.asarray(lm_points, float)
    em = np.asarray(em_points, float)
    n = lm.shape[0]
    pred = lm @ matrix[:2, :2].T + matrix[:2, 2]
    rss = float(np.sum((pred - em) ** 2))
    fre = math.sqrt(rss / n) if n else math.nan
    dof = 2 * n - n_params
    if dof <= 0:
        return fre, math.nan
    sigma2 = rss / dof
    x = np.column_stack([lm, np.ones(n)])
    try:
        cov = np.linalg.inv(x.T @ x)
    except np.linalg.LinAlgError:
        return fre, math.nan
    gy, gx = np.meshgrid(np.linspace(0, em_shape[0] - 1, 16), np.linspace(0, em_shape[1] - 1, 16), indexing="ij")
    em_grid = np.column_stack([gx.ravel(), gy.ravel()])
    inv = np.linalg.inv(matrix)
    lm_grid = em_grid @ inv[:2, :2].T + inv[:2, 2]
    r = np.column_stack([lm_grid, np.ones(len(lm_grid))])
    h = np.einsum("ij,jk,ik->i", r, cov, r)
    if n_params == 4:  # a similarity has 4 free parameters, not 6: h of the affine is an upper bound
        h = h * (4.0 / 6.0)
    return fre, float(math.sqrt(2.0 * sigma2 * float(np.mean(h))))
