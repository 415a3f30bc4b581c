"""Stage 4, LM-EM registration: map light-microscope pixels onto the electron image.

Works from the images alone: pixel sizes, when known, fix the scale; when they are
not, rotation, scale and shift are all estimated, and a registration that cannot be
verified is refused (:class:`~cryoopt.exceptions.RegistrationError`) rather than
returned wrong. Method (all image steps from :mod:`skimage`):

1. Both images are reduced to a common working grid (EM block-averaged to at most
   ``max_working_px``; LM rescaled by the known pixel-size ratio, or to the EM grid's
   size) and turned into contrast-sign-independent feature images (gradient magnitude
   of a Gaussian of at least 2 working pixels: finer scales carry noise, not
   structure), because LM and EM show the same structures with different, even
   inverted, contrast.
2. Coarse hypotheses, each a similarity transform:

   * Fourier-Mellin: rotation and scale from the log-polar transform of the Fourier
     magnitudes (Reddy & Chatterji 1996, IEEE TIP 5:1266;
     :func:`skimage.transform.warp_polar` +
     :func:`skimage.registration.phase_cross_correlation`), the 180 degree ambiguity
     resolved by the stronger translation peak (Guizar-Sicairos et al. 2008, Opt.
     Lett. 33:156). Needs fields that mostly overlap.
   * Point patterns: structure centroids in both images (the minority Otsu phase of
     each, or the caller's points, e.g. segmented mitochondria and LM label spots)
     matched by similarity-invariant triangles of nearest neighbours (the ratios of
     sorted side lengths; Groth 1986, AJ 91:1244, as in astronomical plate matching),
     each matched triangle giving a similarity (:class:`skimage.transform.SimilarityTransform`).
     Works when one field is a small part of the other and at any scale.

   The hypothesis that maps the most structure centroids onto each other (mutual
   nearest neighbours within ``match_radius_px``) wins.

   Fiducial beads on their own: where both images show a group of compact objects alike in
   contrast and area (:func:`_alike_objects`; beads are identical objects, one size and one
   material, among structures of every size and contrast), re-detected at their size
   (:func:`_bead_points`), the point patterns are searched among them alone where the
   structures (beads included) do not verify a transform. Among crowded structures (a
   nucleus's chromatin clumps, the LM's label puncta) a right transform through the beads
   had matched its 14 beads no better than chance matched the crowd (p = 1); among the
   beads alone, the same matches are far beyond chance. The groups are chosen from each
   image alone, so the chance test's null holds for them, and every transform tried so far
   is counted in it (the structures' search first, the beads' then with both counts: the
   chance of a wrong acceptance is at most ``max_p_value`` for each, below twice it in all).
3. Verification: at least ``min_matches`` matched structures, else the registration
   is refused. Without structure points, the Fourier-Mellin result must stand out of
   the feature correlations of shifted copies by ``min_peak_z`` sigmas.
4. Refinement: an affine (or similarity) transform fitted with RANSAC
   (:func:`skimage.measure.ransac`) then least squares on the matched centroids; a
   similarity replaces the affine where it predicts the held-out matches clearly better
   (leave-one-out, :data:`SIMILARITY_PREFERENCE`): an affine on four or five matches
   follows their noise. Then precision: the refined transform must put more structures
   onto each other within their localisation precision (:data:`VERIFY_RADIUS_PX`) than
   the parameters it fitted absorb, beyond chance as in step 3, or the registration is
   refused. Step 3 accepts matches at the wider match radius, so a transform a few pixels
   off (some of its few matches wrong or merged structures) passed it. On a section that
   may have compressed (``max_compression > 0``) an affine through a few matches is right at
   them and extrapolates a uniform compression beyond them, where a cut compresses unevenly:
   fewer matches within that precision than the simplest uneven compression (varying
   linearly across the cut) needs to be fitted and judged
   (:meth:`_CompressionFit.min_matches`, 10) are refused. With ``elastic=True`` the matches
   within that precision are also counted under the cut's model grown from the hypothesis's
   matches (:func:`_cut_model_matches`), every parameter it fitted taken as a match it
   absorbed in the chance test: an unevenly compressed section leaves any affine pixels off
   over much of the field, so a right transform was refused for the few structures an affine
   puts within a pixel or two there. A registration verified only so must then keep a
   non-rigid model (step 5), else it is refused.
5. Non-rigid (``elastic=True``), for sections that deformed between the two images
   (compression along the cut, drying). An affine already covers a uniform compression
   exactly (anisotropic scale and shear); what is left is compression that varies
   across the section. First from the structures: the matches are re-collected under the
   affine (a wide radius, then at localisation precision) and the affine refitted on all
   of them; matches the cut's model, fitted without them, misses by more than four
   times the median (two beads merged in one LM spot, a structure matched to its
   neighbour) are dropped, at most a fifth; then candidate models are fitted to the same
   matches and judged by their
   leave-one-out errors (closed form ``r_i / (1 - h_ii)`` for the linear ones):
   the cut's own model (a shift along the compression direction proportional to the
   distance along it, varying smoothly across it, as penalised cubic B-splines:
   :class:`_CompressionFit`), polynomials
   of order 2 and 3, and a smoothing thin-plate spline
   (:class:`scipy.interpolate.RBFInterpolator`). A model is kept only where it predicts
   held-out structures better than the affine by a tenth, which needs many matches
   (fiducials); the cut's model is preferred when within a tenth of the best, as it alone
   extrapolates beyond the matched structures as a compression does. Then from the
   images: TV-L1 optical flow (:func:`skimage.registration.optical_flow_tvl1`; Zach, Pock
   & Bischof 2007, DAGM) between the EM structure image and the LM warped by the model so
   far, smoothed by normalised convolution where there is structure to see, kept only
   where it brings the matched structures (which it never saw) closer by a tenth.

Target registration error: for a least-squares fit, each output coordinate is a
linear regression on ``[x, y, 1]``, so the expected squared TRE at a point ``r`` is
``2 sigma^2 h(r)`` with ``h(r) = r^T (X^T X)^-1 r`` and ``sigma^2 = RSS / (2N - p)``
(Fitzpatrick, West & Maurer 1998, IEEE TMI 17:694, for the rigid analogue); it is the
error of the fitted model where the model is right, and says nothing of a model that
cannot follow the deformation (an affine on a non-uniformly compressed section) or that
extrapolates away from the matched structures. :meth:`RegistrationResult.tre_at` adds to
the fitted model's own variance at the point (its design's leverage there, for every model
kept) the model's inadequacy measured by spatial cross-validation of the matches, which
grows with the distance from them (:class:`_TREEstimate`). ``tre_px`` is that estimate's
RMS over the EM field, for every model (:func:`target_registration_error` keeps the
least-squares figure alone).

Coordinates follow skimage: ``(x, y) = (column, row)``; ``transform`` maps LM pixel
coordinates to EM pixel coordinates.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from cryoopt.exceptions import EvaluationError, RegistrationError
from cryoopt.pipeline._validate import check_image, check_pixel_size
from cryoopt.pipeline.preprocess import block_mean

__all__ = [
    "RegistrationError",
    "RegistrationResult",
    "detect_compact_objects",
    "detect_structure_points",
    "match_point_patterns",
    "register_lm_em",
    "register_near_prior",
    "target_registration_error",
]

#: smallest Gaussian (working pixels) of the feature images
MIN_FEATURE_SIGMA_PX = 2.0
#: radius (EM px) within which the matches of a right transform fall: the precision of
#: structure centroids located in both images (a fraction of a pixel each, LM blur and
#: partial volumes included), so a second, more powerful count against chance
VERIFY_RADIUS_PX = 2.5
#: a similarity replaces a requested affine when its leave-one-out RMS error at the matched
#: structures is below this fraction of the affine's (clearly better, not a tie)
SIMILARITY_PREFERENCE = 0.8
#: neighbours whose distance gives the local density of EM structure points in the chance test
LOCAL_DENSITY_K = 5
#: objects alike (:func:`_alike_objects`) are within these factors of the group's typical object
#: in contrast and in area: identical beads vary by shot noise, partial pixels and the blur of a
#: neighbour (on simulated sections with 0.1 um TetraSpeck-like beads: within 2x in contrast and
#: 1.5x in area); structures vary by far more. A choice, not a published figure
ALIKE_FACTOR = (2.0, 1.5)
#: fewest objects alike that are searched as a group of their own: a similarity verified on
#: fewer would rest on a handful of points
MIN_ALIKE_OBJECTS = 8
#: width of the top-hat that finds beads, in bead diameters: wider than a bead and its blur,
#: narrower than the structures around it
BEAD_TOPHAT_DIAMETERS = 2.5
#: detection threshold of beads (robust sigmas of the top-hat), twice the structures' (5): beads
#: are the densest stain and the brightest point sources, and noise specks at the structures'
#: threshold would join their group
BEAD_Z = 10.0
#: roughness penalties of the cut's model (relative to its normal equations' scale), chosen
#: among these by leave-one-out error
CUT_ROUGHNESS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: the most cubic pieces across the cut the cut's model is tried with
CUT_MAX_PIECES = 6
#: least toroidal shift (EM px) of the EM field's content in the prior search's null: far
#: beyond the feature images' smoothing, so a shifted copy is no copy of the field
MIN_TOROIDAL_SHIFT_PX = 30.0
#: one-sigma uncertainty (nm, per axis) of where the stage puts the EM field relative to the
#: LM field after the section moves from the light to the electron microscope. An assumption,
#: not a published figure: relocation by stage coordinates across instruments is good to a
#: few micrometres (it finds the region, not the structure), which is why correlative
#: workflows add fiducials or landmarks for the last step (de Boer, Hoogenboom & Giepmans
#: 2015, Nat. Methods 12:503; Kukulski et al. 2011, J. Cell Biol. 192:111). 2 um here.
STAGE_RELOCATION_SIGMA_NM = 2000.0


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


def _mat(scale: float = 1.0, rot: float = 0.0, tx: float = 0.0, ty: float = 0.0) -> np.ndarray:
    c, s = math.cos(rot), math.sin(rot)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty], [0, 0, 1.0]])


def _features(img: np.ndarray, sigma: float) -> np.ndarray:
    z = (img - img.mean()) / (img.std() or 1.0)
    return ndi.gaussian_gradient_magnitude(z, max(sigma, MIN_FEATURE_SIGMA_PX))


def _pad(img: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, n))
    h, w = min(n, img.shape[0]), min(n, img.shape[1])
    out[:h, :w] = img[:h, :w]
    return out


def _rotation_scale(ref: np.ndarray, mov: np.ndarray) -> tuple[float, float]:
    """Rotation (rad) and scale taking ``mov`` onto ``ref`` from log-polar Fourier magnitudes."""
    from skimage.registration import phase_cross_correlation
    from skimage.transform import warp_polar

    n = max(*ref.shape, *mov.shape)

    def spectrum(img: np.ndarray) -> np.ndarray:
        # window each image over its own extent, so padding adds no edges
        win = np.outer(np.hanning(img.shape[0]), np.hanning(img.shape[1]))
        return np.fft.fftshift(np.abs(np.fft.fft2(_pad(img * win, n))))

    fr, fm = spectrum(ref), spectrum(mov)
    # high-pass emphasis (suppresses the DC peak that carries no rotation information)
    yy, xx = np.mgrid[:n, :n] - n / 2
    hp = np.hypot(yy, xx) / (n / 2)
    fr, fm = fr * hp, fm * hp
    radius = n // 2
    pr = warp_polar(fr, radius=radius, output_shape=(720, radius), scaling="log", order=1)
    pm = warp_polar(fm, radius=radius, output_shape=(720, radius), scaling="log", order=1)
    pr, pm = pr[:360], pm[:360]  # magnitude is centrosymmetric: half the circle suffices
    shift, _, _ = phase_cross_correlation(pr, pm, upsample_factor=20, normalization=None)
    angle = shift[0] * 180.0 / 360.0  # 360 rows span 180 degrees
    klog = radius / math.log(radius)
    scale = math.exp(-shift[1] / klog)
    return math.radians(angle), scale


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


def detect_structure_points(image: np.ndarray, *, sigma_px: float = 1.5, min_area_px: int = 9) -> np.ndarray:
    """Centroids (x, y) of compact structures: the minority Otsu phase of the smoothed image.

    The minority phase is used so the same structures are found whether they are
    bright (fluorescence) or dark (stained EM).
    """
    from skimage.filters import threshold_otsu
    from skimage.measure import label, regionprops

    img = check_image(image)
    sm = ndi.gaussian_filter(img, sigma_px)
    if np.ptp(sm) == 0:
        return np.zeros((0, 2))
    t = threshold_otsu(sm)
    fg = sm > t
    if fg.mean() > 0.5:
        fg = ~fg
    lab = label(fg)
    pts = [rp.centroid[::-1] for rp in regionprops(lab) if rp.area >= min_area_px]
    return np.array(pts, float).reshape(-1, 2)


def detect_compact_objects(
    image: np.ndarray,
    *,
    polarity: str,
    max_diameter_px: float | None = None,
    line_width_px: float | None = None,
    z: float = 5.0,
    min_area_px: int = 4,
    max_elongation: float = 8.0,
) -> np.ndarray:
    """Centroids (x, y) of compact objects brighter (``"bright"``) or darker (``"dark"``) than
    their surroundings: a white or black top-hat with a disc of ``max_diameter_px``
    (default: a sixteenth of the shorter side), above ``z`` robust sigmas of the top-hat,
    at least ``min_area_px`` and at most ``max_elongation`` long for its width (a neurite
    or a knife mark is no point feature). Lines up to ``line_width_px`` wide are closed
    over first (default 2 px for dark objects: EM membranes; 0 for bright ones).
    Fluorescent label is bright in LM, stained organelles and particles are dark in EM."""
    return _compact_objects(image, polarity=polarity, max_diameter_px=max_diameter_px, line_width_px=line_width_px,
                            z=z, min_area_px=min_area_px, max_elongation=max_elongation)[0]


def _compact_objects(
    image: np.ndarray,
    *,
    polarity: str,
    max_diameter_px: float | None = None,
    line_width_px: float | None = None,
    z: float = 5.0,
    min_area_px: int = 4,
    max_elongation: float = 8.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`detect_compact_objects` with each object's contrast (the peak of its top-hat above
    the top-hat's median, in robust sigmas) and area (px): what tells identical objects
    (fiducial beads) from the structures (:func:`_alike_objects`)."""
    from skimage.measure import label, regionprops
    from skimage.morphology import black_tophat, disk, white_tophat

    from cryoopt.pipeline._robust import median_sigma

    img = check_image(image)
    if polarity not in ("bright", "dark"):
        raise EvaluationError(f"polarity must be 'bright' or 'dark', got {polarity!r}")
    d = max_diameter_px if max_diameter_px is not None else min(img.shape) / 16.0
    r = max(1, int(round(d / 2.0)))
    fp = disk(r, decomposition="crosses") if r > 3 else disk(r)
    sm = ndi.gaussian_filter(img, 1.0)
    lw = (2.0 if polarity == "dark" else 0.0) if line_width_px is None else float(line_width_px)
    if lw >= 1:
        line = disk(max(1, int(round(lw))))
        sm = ndi.grey_closing(sm, footprint=line) if polarity == "dark" else ndi.grey_opening(sm, footprint=line)
    th = white_tophat(sm, fp) if polarity == "bright" else black_tophat(sm, fp)
    med, sig = median_sigma(th)
    fg = th > med + z * max(sig, 1e-12)
    pts, contrast, area = [], [], []
    for rp in regionprops(label(fg), intensity_image=th):
        if rp.area < min_area_px:
            continue
        if rp.axis_minor_length > 0 and rp.axis_major_length / rp.axis_minor_length > max_elongation:
            continue
        pts.append(rp.centroid_weighted[::-1])
        contrast.append((float(rp.intensity_max) - med) / max(sig, 1e-12))
        area.append(float(rp.area))
    return np.array(pts, float).reshape(-1, 2), np.array(contrast, float), np.array(area, float)


def _points_and_features(image: np.ndarray, given: np.ndarray | None, polarity: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The structure points of :func:`_points` and, for detected compact objects, the log of
    each one's contrast and area (`N x 2`; None for points given or found otherwise)."""
    if given is not None or polarity == "auto":
        return _points(image, given, polarity), None
    pts, contrast, area = _compact_objects(image, polarity=polarity)
    return pts, np.column_stack([np.log(np.maximum(contrast, 1e-12)), np.log(area)]) if len(pts) else np.zeros((0, 2))


def _alike_objects(features: np.ndarray | None) -> np.ndarray | None:
    """Indices of the largest group of objects alike in contrast and area (each within the factors
    :data:`ALIKE_FACTOR` of the group's most typical object), or None when there is no such
    group of :data:`MIN_ALIKE_OBJECTS`. Fiducial beads are identical objects (one size, one
    material) among structures of every size and contrast: in LM they are the diffraction-limited
    spots of one brightness, in EM the discs of one size and the stain's highest density. The
    group is chosen from each image alone, so a transform matching it by chance is as unlikely
    as it is for any other subset of the points (the chance test's null holds)."""
    if features is None or len(features) < MIN_ALIKE_OBJECTS:
        return None
    f = np.asarray(features, float) / np.log(ALIKE_FACTOR)
    tree = cKDTree(f)
    counts = np.array([len(c) for c in tree.query_ball_point(f, r=1.0, p=np.inf)])
    members = np.array(sorted(tree.query_ball_point(f[int(np.argmax(counts))], r=1.0, p=np.inf)), int)
    return members if len(members) >= MIN_ALIKE_OBJECTS else None


def _bead_points(image: np.ndarray, polarity: str, features: np.ndarray | None) -> np.ndarray | None:
    """Centroids of the fiducial beads an image may show, or None: the group of compact objects
    alike in contrast and area (:func:`_alike_objects`), then the image searched again for objects
    at their size, a top-hat :data:`BEAD_TOPHAT_DIAMETERS` of their diameters wide (a bead by a
    large dark structure stands out of its own surroundings there, not of the structure's) and
    at :data:`BEAD_Z` (beads are the densest stain and the brightest point sources), and the
    group alike among those. Chosen from the image alone: the chance test's null holds."""
    group = _alike_objects(features)
    if group is None or features is None:
        return None
    diameter = 2.0 * math.sqrt(float(np.median(np.exp(features[group, 1]))) / math.pi)
    pts, contrast, area = _compact_objects(image, polarity=polarity, max_diameter_px=BEAD_TOPHAT_DIAMETERS * diameter, z=BEAD_Z)
    if not len(pts):
        return None
    again = _alike_objects(np.column_stack([np.log(np.maximum(contrast, 1e-12)), np.log(area)]))
    return None if again is None else pts[again]


def _points(image: np.ndarray, given: np.ndarray | None, polarity: str) -> np.ndarray:
    if given is not None:
        return np.asarray(given, float).reshape(-1, 2)
    if polarity == "auto":
        return detect_structure_points(image)
    return detect_compact_objects(image, polarity=polarity)


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


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    x, y = a[mask], b[mask]
    if x.size < 16 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def _peak_z(fe: np.ndarray, moved: np.ndarray, rng: np.random.Generator, n: int = 24) -> float:
    """How far the aligned feature correlation stands above that of randomly shifted copies (sigmas)."""
    valid = moved != 0
    peak = _ncc(fe, moved, valid)
    h, w = fe.shape
    null = []
    for _ in range(n):
        dy, dx = int(rng.integers(h // 8, h - h // 8)), int(rng.integers(w // 8, w - w // 8))
        m = np.roll(moved, (dy, dx), axis=(0, 1))
        null.append(_ncc(fe, m, m != 0))
    sd = float(np.std(null)) or 1e-6
    return (peak - float(np.mean(null))) / sd


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


def _structure_image(image: np.ndarray, polarity: str) -> np.ndarray:
    """What a structure looks like in both modalities: the top-hat response of the compact
    objects of ``polarity`` (``"auto"``: the image itself, for images of one kind of content)."""
    if polarity not in ("bright", "dark"):
        return image
    from skimage.morphology import black_tophat, disk, white_tophat

    r = max(1, int(round(min(image.shape) / 32.0)))
    fp = disk(r, decomposition="crosses") if r > 3 else disk(r)
    sm = ndi.gaussian_filter(image, 1.0)
    if polarity == "dark":
        sm = ndi.grey_closing(sm, footprint=disk(2))  # membranes are no structure to follow
    return white_tophat(sm, fp) if polarity == "bright" else black_tophat(sm, fp)


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


#: most triangle hypotheses per compression frame ranked for block matching on a section that
#: may have compressed (61 frames at ``max_compression=0.5``: the ranking's cost bound)
BLOCK_FRAME_HYPOTHESES = 400


def _frame_triangle_hypotheses(lp: np.ndarray, ep: np.ndarray, scales: tuple[float, float], max_compression: float,
                               seed: int) -> list[np.ndarray]:
    """Triangle hypotheses (more EM neighbours: an LM showing a labelled subset) in each frame
    of the compression search, mapped back to the compressed EM; one frame without compression."""
    frames = _compression_frames(max_compression)
    cap = 4000 if len(frames) == 1 else BLOCK_FRAME_HYPOTHESES
    out = []
    for frame in frames:
        ep_frame = ep @ frame[:2, :2].T + frame[:2, 2] if len(ep) else ep
        tri = triangle_hypotheses(lp, ep_frame, scale_range=scales, neighbours=(5, 10), max_hypotheses=cap, seed=seed)
        if len(tri):
            out.append(np.einsum("ij,hjk->hik", np.linalg.inv(frame), tri))
    return out


def _structure_fourier_mellin(lm_s: np.ndarray, em_s: np.ndarray, max_working_px: int = 512) -> np.ndarray:
    """A Fourier-Mellin hypothesis (LM -> EM, `3 x 3`; step 2 of the module docstring) between the
    structure images rather than the whole ones: an LM of label and an EM of every organelle share
    little of their whole images' texture, but the labelled structures are a subset of the EM's
    compact ones, and their gradient images correlate where the whole images' do not."""
    from skimage.registration import phase_cross_correlation
    from skimage.transform import rescale, warp

    f = max(1, math.ceil(max(em_s.shape) / max_working_px))
    em_w = block_mean(em_s, f)
    s_lm = max(em_w.shape) / max(lm_s.shape)
    lm_w = rescale(lm_s, s_lm, order=1, anti_aliasing=s_lm < 1) if abs(s_lm - 1) > 1e-6 else lm_s
    n = int(2 ** math.ceil(math.log2(max(*em_w.shape, *lm_w.shape))))
    fe_raw, fl_raw = _features(em_w, MIN_FEATURE_SIGMA_PX), _features(lm_w, MIN_FEATURE_SIGMA_PX)
    fe, fl = _pad(fe_raw, n), _pad(fl_raw, n)
    rot, sc = _rotation_scale(fe_raw, fl_raw)
    c = (n - 1) / 2.0
    best: tuple[float, np.ndarray] = (-math.inf, np.eye(3))
    for r in (rot, rot + math.pi):  # the 180 degree ambiguity: the stronger translation peak
        about = _mat(1, 0, c, c) @ _mat(sc, r) @ _mat(1, 0, -c, -c)
        moved = warp(fl, np.linalg.inv(about), output_shape=(n, n), order=1)
        shift, _, _ = phase_cross_correlation(fe, moved, upsample_factor=20, normalization=None)
        peak = float(np.sum(fe * ndi.shift(moved, shift, order=1)))
        if peak > best[0]:
            best = (peak, _mat(1, 0, shift[1], shift[0]) @ about)
    # LM px -> working px (skimage's rescale: output j at input (j + 0.5) / s - 0.5); working EM px -> EM px
    to_lm_w = _mat(1.0, 0.0, (s_lm - 1) / 2.0, (s_lm - 1) / 2.0) @ _mat(s_lm)
    from_em_w = _mat(1.0, 0.0, (f - 1) / 2.0, (f - 1) / 2.0) @ _mat(float(f))
    return from_em_w @ best[1] @ to_lm_w


def _register_by_cut_blocks(lm_s: np.ndarray, em_s: np.ndarray, chosen: list[np.ndarray], n_tried: int, max_p_value: float,
                            lm_blur_em_px: float, elastic: bool, seed: int) -> tuple[RegistrationResult | None, str]:
    """A section that may have compressed, from block matches under the cut's model
    (:func:`~cryoopt.pipeline.registration_blocks.verify_cut_by_blocks`); the matched blocks are
    the matches of the TRE estimate, as on the point path."""
    from cryoopt.pipeline.registration_blocks import verify_cut_by_blocks

    match, why = verify_cut_by_blocks(lm_s, em_s, chosen, n_tried=n_tried, radius=VERIFY_RADIUS_PX, max_p_value=max_p_value,
                                      lm_blur_em_px=lm_blur_em_px, cut_model=elastic, seed=seed)
    if match is None:
        return None, why
    m, cut = match.affine, match.model
    kind = "affine" if cut is None else cut.name  # type: ignore[attr-defined]
    pred = match.src @ m[:2, :2].T + m[:2, 2] if cut is None else cut(match.src)  # type: ignore[operator]
    fre = float(np.sqrt(np.mean(np.sum((pred - match.dst) ** 2, axis=1))))
    estimate = _tre_estimate(kind, match.src, match.dst, m, cut)
    if estimate is None:
        return None, why + "; too few agreeing blocks to estimate the registration's error"
    tre = _field_rms(estimate, em_s.shape)
    gy, gx = np.meshgrid(np.linspace(0, em_s.shape[0] - 1, 16), np.linspace(0, em_s.shape[1] - 1, 16), indexing="ij")
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    inv = np.linalg.inv(m)
    lm_xy = (grid if cut is None else grid + cut.displacement(grid)) @ inv[:2, :2].T + inv[:2, 2]  # type: ignore[attr-defined]
    seen = np.all((lm_xy >= 0) & (lm_xy <= np.array(lm_s.shape[::-1]) - 1), axis=1)
    tre_seen = float(np.sqrt(np.mean(estimate(grid[seen]) ** 2))) if seen.any() else math.inf
    if tre_seen > VERIFY_RADIUS_PX:
        # the blocks agree within the verification radius where they are; the map fitted to them
        # is not known to be within it where both images show the section (its cross-validated
        # error says so): half the label blocks of a compressed section peak on structure the LM
        # does not show, and a map through the rest may be pixels off away from them
        return None, (why + f"; the map through them is not placed within {VERIFY_RADIUS_PX:g} EM px where both fields "
                      f"overlap (its TRE estimate there, cross-validated on the blocks: {tre_seen:.1f} px)")
    disp = None
    if cut is not None:
        h, w = em_s.shape
        rows, cols = np.mgrid[0:h, 0:w]
        pix = np.column_stack([cols.ravel(), rows.ravel()]).astype(float)
        disp = cut.displacement(pix).T.reshape(2, h, w)  # type: ignore[attr-defined]
    return RegistrationResult(m, math.degrees(math.atan2(m[1, 0], m[0, 0])) % 360, math.sqrt(abs(np.linalg.det(m[:2, :2]))),
                              len(match.src), fre, tre, "affine" if cut is None else f"affine+{kind}", "blocks", disp,
                              estimate), why


def _register_by_blocks(lm: np.ndarray, em: np.ndarray, lp: np.ndarray, ep: np.ndarray, lm_polarity: str, em_polarity: str,
                        seeds: list[np.ndarray], n_hyp: int, scales: tuple[float, float], max_compression: float,
                        max_p_value: float, seed: int, elastic: bool = False) -> tuple[RegistrationResult | None, str]:
    """Register from the images where the structure points could not verify a transform: the
    coarse hypotheses, and every triangle hypothesis with more EM neighbours (an LM showing a
    labelled subset of the EM's structures), ranked by how well the LM's structure pixels land
    on the EM's, then block-matched and verified against chance
    (:func:`~cryoopt.pipeline.registration_blocks.verify_by_blocks`); every transform ranked
    counts in that test. On a section that may have compressed (``max_compression > 0``) the
    triangles are matched after undoing each compression of the point path's search too, and
    the blocks verify the cut's model (``elastic``; the affine alone otherwise) instead
    (:func:`~cryoopt.pipeline.registration_blocks.verify_cut_by_blocks`)."""
    from cryoopt.pipeline.registration_blocks import BLOCK_HYPOTHESES, structure_hypothesis_scores, verify_by_blocks

    if lm_polarity not in ("bright", "dark") or em_polarity not in ("bright", "dark"):
        return None, "no block matching without the polarity of the structures in both images"
    lm_s = _structure_image(lm, lm_polarity)
    em_s = _structure_image(em, em_polarity)
    mats = [np.asarray(m, float)[None] for m in seeds]
    mats += _frame_triangle_hypotheses(lp, ep, scales, max_compression, seed)
    allm = np.concatenate(mats) if mats else np.zeros((0, 3, 3))
    if not len(allm):
        return None, "no hypothesis to match blocks under"
    scale = np.sqrt(np.abs(np.linalg.det(allm[:, :2, :2])))
    allm = allm[(scale >= scales[0] * 0.7) & (scale <= scales[1])]
    if not len(allm):
        return None, "no hypothesis of a plausible scale to match blocks under"
    em_smooth = ndi.gaussian_filter(em_s, 3.0)
    if max_compression > 0 and len(allm) > BLOCK_FRAME_HYPOTHESES:
        # a compression search's many hypotheses: a coarse ranking on a fifth of the pixels first
        coarse = structure_hypothesis_scores(lm_s, em_smooth, allm, n_samples=600, seed=seed)
        allm = allm[np.argsort(-coarse)[:BLOCK_FRAME_HYPOTHESES]]
    score = structure_hypothesis_scores(lm_s, em_smooth, allm, seed=seed)
    order = np.argsort(-score)
    chosen: list[np.ndarray] = []
    for k in order:
        m = allm[k]
        # distinct hypotheses: a near-duplicate adds nothing
        if any(np.abs(m[:2, 2] - c[:2, 2]).max() < 8 and np.abs(m[:2, :2] - c[:2, :2]).max() < 0.05 for c in chosen):
            continue
        chosen.append(m)
        if len(chosen) >= BLOCK_HYPOTHESES:
            break
    s_em = float(np.sqrt(abs(np.linalg.det(chosen[0][:2, :2]))))
    n_tried = n_hyp + len(allm)
    if max_compression <= 0:
        # the structure images' own Fourier-Mellin hypothesis, tried whatever its rank (the ranking
        # favours hypotheses that crowd the LM's label onto dense EM structure)
        fm_s = _structure_fourier_mellin(lm_s, em_s)
        s_fm = math.sqrt(abs(np.linalg.det(fm_s[:2, :2])))
        n_tried += 1
        if scales[0] * 0.7 <= s_fm <= scales[1] and not any(
                np.abs(fm_s[:2, 2] - c[:2, 2]).max() < 8 and np.abs(fm_s[:2, :2] - c[:2, :2]).max() < 0.05 for c in chosen):
            chosen.append(fm_s)
    if max_compression > 0:
        return _register_by_cut_blocks(lm_s, em_s, chosen, n_tried, max_p_value, max(1.0, s_em), elastic, seed)
    match, why = verify_by_blocks(lm_s, em_s, chosen, n_tried=n_tried, radius=VERIFY_RADIUS_PX, max_p_value=max_p_value,
                                  min_blocks=6, lm_blur_em_px=max(1.0, s_em), affine=False, seed=seed)
    if match is None:
        return None, why
    m = match.matrix
    kind = "similarity"  # a section that did not compress (above)
    fre, tre = target_registration_error(match.src, match.dst, m, em.shape, n_params=4)
    # the matched blocks are the matches: the same estimate at any point as a point-verified registration's
    estimate = _tre_estimate(kind, match.src, match.dst, m, None)
    if estimate is not None:
        tre = _field_rms(estimate, em.shape)
    return RegistrationResult(m, math.degrees(math.atan2(m[1, 0], m[0, 0])) % 360, math.sqrt(abs(np.linalg.det(m[:2, :2]))),
                              len(match.src), fre, tre, kind, "blocks", None, estimate), why


def register_lm_em(
    lm_image: np.ndarray,
    em_image: np.ndarray,
    *,
    lm_pixel_size_nm: float | None = None,
    em_pixel_size_nm: float | None = None,
    lm_points: np.ndarray | None = None,
    em_points: np.ndarray | None = None,
    lm_polarity: str = "auto",
    em_polarity: str = "auto",
    model: str = "affine",
    elastic: bool = False,
    max_working_px: int = 512,
    match_radius_px: float | None = None,
    min_matches: int = 4,
    max_p_value: float = 1e-3,
    min_peak_z: float = 8.0,
    max_compression: float = 0.0,
    scale_range: tuple[float, float] = (0.05, 50.0),
    seed: int = 0,
) -> RegistrationResult:
    """Register a light image to an electron image of the same area.

    Args:
        lm_image, em_image: 2-D images, any real dtype, any (different) sizes.
        lm_pixel_size_nm, em_pixel_size_nm: pixel sizes; when both are given the
            scale is fixed to their ratio (+-20 %, for compression), otherwise it is
            estimated within ``scale_range`` (EM px per LM px).
        lm_points, em_points: `N x 2` structure centroids (x, y) in full-resolution
            pixels. Pass the structures both images show (e.g. segmented mitochondria
            and the LM label spots); by default they are detected.
        lm_polarity, em_polarity: how structures look when detected: ``"auto"`` (the
            minority Otsu phase, :func:`detect_structure_points`), ``"bright"`` or
            ``"dark"`` compact objects (:func:`detect_compact_objects`: fluorescent label
            is bright, stained organelles and beads are dark).
        model: ``"affine"`` (default), ``"similarity"`` or ``"coarse"`` (no refinement).
            With fewer than 6 matches an affine falls back to a similarity.
        elastic: add a smooth displacement field for sections that deformed between
            the images: a non-rigid model of the matched structures, then TV-L1 optical
            flow, each kept only where it measurably helps (see the module docstring).
        max_working_px: largest side of the working grid of the coarse steps.
        match_radius_px: largest EM-pixel distance for a centroid match (default: a
            quarter of the median nearest-neighbour spacing of the EM points, at least
            3 working pixels).
        min_matches: fewest matched structures that verify a registration.
        max_p_value: largest chance probability of that many matches (binomial, times
            the number of transforms tried) that verifies a registration.
        min_peak_z: without structure points, how far (in sigmas of shifted copies)
            the Fourier-Mellin feature correlation must stand out.
        max_compression: the EM section may be compressed along an unknown direction by
            up to this fraction relative to the LM (a block-face or pre-section LM image;
            cryo-sections compress 20-60 % along the cut): point patterns are also matched
            after undoing compressions of 0.1, 0.2, ... along directions 15 degrees apart.
            Such a section is registered only from 10 or more structures matched within
            localisation precision (what a compression varying across the cut needs).
        scale_range: scales considered when the pixel sizes are not both known.
        seed: RANSAC and sampling seed.

    Returns:
        :class:`RegistrationResult`.

    Raises:
        EvaluationError: bad images, pixel sizes or options.
        RegistrationError: no transform could be verified (too few structures in common),
            or the refined one does not put its matched structures onto each other within
            their localisation precision beyond chance: pass pixel sizes, more or better
            structure points (fiducial beads), or a larger field.
    """
    from skimage.registration import phase_cross_correlation
    from skimage.transform import AffineTransform, SimilarityTransform, rescale, warp

    lm = check_image(lm_image, name="lm_image", min_size=16)
    em = check_image(em_image, name="em_image", min_size=16)
    if model not in ("affine", "similarity", "coarse"):
        raise EvaluationError(f"model must be 'affine', 'similarity' or 'coarse', got {model!r}")
    lm_px = None if lm_pixel_size_nm is None else check_pixel_size(lm_pixel_size_nm, name="lm_pixel_size_nm")
    em_px = None if em_pixel_size_nm is None else check_pixel_size(em_pixel_size_nm, name="em_pixel_size_nm")
    if not (0 < scale_range[0] < scale_range[1]):
        raise EvaluationError(f"scale_range must be (low, high) with 0 < low < high, got {scale_range!r}")
    if np.ptp(lm) == 0 or np.ptp(em) == 0:
        raise EvaluationError("an image is constant; there is nothing to register")
    known_scale = None if lm_px is None or em_px is None else lm_px / em_px  # EM px per LM px
    rng = np.random.default_rng(seed)

    # 1. working grid: EM reduced by f_em; LM brought to the same pixel size (when known)
    f_em = max(1, math.ceil(max(em.shape) / max_working_px))
    # the image correlation's grid: with the scale known, an LM field much wider than the EM
    # field would be brought up to the EM's working pixel (a 128 px LM field at 10 EM px per LM
    # px: 1280 px, Fourier transforms of 2048^2); the EM is block-averaged further instead until
    # the LM fits max_working_px. The structure points refine the result on the full grids.
    f_corr = f_em if known_scale is None else max(f_em, math.ceil(max(lm.shape) * known_scale / max_working_px))
    em_w = block_mean(em, f_corr)
    s_lm = (known_scale / f_corr) if known_scale is not None else max(em_w.shape) / max(lm.shape)
    f_lm = max(1, int(1.0 / s_lm)) if s_lm < 1 else 1
    lm_b = block_mean(lm, f_lm)
    s_rest = s_lm * f_lm
    lm_w = rescale(lm_b, s_rest, order=1, anti_aliasing=s_rest < 1) if abs(s_rest - 1) > 1e-6 else lm_b
    n = int(2 ** math.ceil(math.log2(max(*em_w.shape, *lm_w.shape))))
    fe_raw, fl_raw = _features(em_w, MIN_FEATURE_SIGMA_PX), _features(lm_w, MIN_FEATURE_SIGMA_PX)
    fe, fl = _pad(fe_raw, n), _pad(fl_raw, n)
    # LM full px -> LM working px. A block mean puts working pixel i at full pixel
    # f*i + (f-1)/2; skimage's rescale by s puts output pixel j at input (j+0.5)/s - 0.5.
    to_lm_w = _mat(s_rest / f_lm) @ _mat(1.0, 0.0, -(f_lm - 1) / 2.0, -(f_lm - 1) / 2.0)
    if abs(s_rest - 1) > 1e-6:
        to_lm_w = _mat(1.0, 0.0, (s_rest - 1) / 2.0, (s_rest - 1) / 2.0) @ to_lm_w
    # EM working px -> EM full px: block centre
    from_em_w = _mat(1.0, 0.0, (f_corr - 1) / 2.0, (f_corr - 1) / 2.0) @ _mat(float(f_corr))

    # 2a. Fourier-Mellin: rotation (and scale) about the working-grid centre, then shift
    rot, sc = _rotation_scale(fe_raw, fl_raw)
    if known_scale is not None:
        sc = 1.0
    c = (n - 1) / 2.0
    best: tuple[float, float, np.ndarray, np.ndarray, np.ndarray] = (-math.inf, rot, np.eye(3), np.zeros(2), fl)
    for r in (rot, rot + math.pi):
        about = _mat(1, 0, c, c) @ _mat(sc, r) @ _mat(1, 0, -c, -c)
        moved = warp(fl, np.linalg.inv(about), output_shape=(n, n), order=1)
        shift, _, _ = phase_cross_correlation(fe, moved, upsample_factor=20, normalization=None)
        shifted = ndi.shift(moved, shift, order=1)
        peak = float(np.sum(fe * shifted))
        if peak > best[0]:
            best = (peak, r, about, shift, shifted)
    _, rot, about, shift, aligned = best
    fm_matrix = from_em_w @ _mat(1, 0, shift[1], shift[0]) @ about @ to_lm_w

    # 2b. structure points and the point-pattern hypothesis; where they cannot verify one, the
    # same search among the objects alike in size and contrast in each image (fiducial beads:
    # the largest group of identical objects both images show), every transform tried in
    # either search counted in the chance test
    lp_all, lm_feat = _points_and_features(lm, lm_points, lm_polarity)
    ep_all, em_feat = _points_and_features(em, em_points, em_polarity)
    point_sets = [(lp_all, ep_all)]
    bead_l, bead_e = _bead_points(lm, lm_polarity, lm_feat), _bead_points(em, em_polarity, em_feat)
    if bead_l is not None and bead_e is not None:
        # after the structures, not before: searched first, the beads alone registered more
        # compressed sections below a pixel but accepted two tissue-block sections 7 px off (on
        # development seeds), where the group of small beads at the detection threshold is
        # part noise and too few beads verify the cut's model
        point_sets.append((bead_l, bead_e))
    scales = (known_scale * 0.8, known_scale * 1.25) if known_scale is not None else scale_range
    tight = max(3.0 * f_em, 0.015 * max(em.shape))
    radius_given = match_radius_px
    hint = "" if known_scale is not None else "; pass lm_pixel_size_nm and em_pixel_size_nm to fix the scale"
    n_hyp = 1
    full_scored: list = []
    for set_index, (lp, ep) in enumerate(point_sets):
        last_set = set_index == len(point_sets) - 1
        tree = cKDTree(ep) if len(ep) else None
        match_radius_px = radius_given
        if match_radius_px is None:
            nn = tree.query(ep, k=2)[0][:, 1] if len(ep) >= 2 else np.array([math.inf])
            match_radius_px = max(3.0 * f_em, min(0.25 * float(np.median(nn)), 0.05 * max(em.shape)))

        def refine(name: str, m: np.ndarray, frame: np.ndarray) -> tuple[int, bool, str, np.ndarray, list[tuple[int, int]]]:
            """A hypothesis refined on its own matches (a similarity in its frame, an affine once
            there are enough), its matches then counted at localisation precision."""
            s_m = math.sqrt(abs(np.linalg.det(m[:2, :2])))
            if tree is None or not scales[0] * 0.7 <= s_m <= scales[1]:
                return (0, name == "points", name, m, [])
            pairs = _match(lp, ep, m, tree, match_radius_px)
            ep_frame = ep @ frame[:2, :2].T + frame[:2, 2]
            for radius in (match_radius_px, tight, tight):
                if len(pairs) < 3:
                    break
                if len(pairs) >= 8:
                    m = _fit(lp, ep, pairs, "affine")
                else:
                    m = np.linalg.inv(frame) @ _fit(lp, ep_frame, pairs, "similarity")
                pairs = _match(lp, ep, m, tree, radius)
            return (len(pairs), name == "points", name, m, pairs)

        scored = [refine("fourier-mellin", fm_matrix, np.eye(3))]
        fm_ok = (scored[0][0] >= max(min_matches, 8) and len(lp) >= 3 and len(ep) >= 3
                 and _chance_p_value(lp, ep, scored[0][3], em.shape, tight, scored[0][0] - 3, n_hyp, fitted=3) < max_p_value)
        if len(lp) >= 3 and len(ep) >= 3 and (not fm_ok or len(lp) >= 20):
            # the image correlation did not verify, or the points are dense enough that an affine
            # refined from a wrong correlation peak can gather matches by chance: search the
            # point patterns, and let the hypotheses compete
            for frame in _compression_frames(max_compression):
                # EM points as they were before the section compressed: a similarity there
                ep_frame = ep @ frame[:2, :2].T + frame[:2, 2]
                pm, n_pm, n_tried = match_point_patterns(lp, ep_frame, radius=match_radius_px, scale_range=scales, seed=seed)
                n_hyp += n_tried
                if n_pm:
                    scored.append(refine("points" if lp is lp_all else "beads", np.linalg.inv(frame) @ pm, frame))
        scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
        if lp is lp_all:
            full_scored = scored
        n_best, _, method, matrix, pairs = scored[0]
        wide_radius = match_radius_px
        match_radius_px = tight

        # 3. verification
        cut_pairs: list[tuple[int, int]] = []
        cut_absorbed = 0  # matches the cut's model's parameters absorb: the affine's 6 absorb 3, each 1-D coefficient 1
        if len(lp) < 3 or len(ep) < 3:
            break  # too few points to verify anything (the structures: beads are MIN_ALIKE_OBJECTS or more): the image correlation's test below
        # matched structures must beat chance: the best of n_hyp transforms, each mapping the
        # LM points that land in the EM field onto EM points scattered over it
        # the transform was fitted to the matches: the points its parameters absorb are no evidence
        free = 3
        p_value = _chance_p_value(lp, ep, matrix, em.shape, match_radius_px, n_best - free, n_hyp, fitted=free)
        # a right transform puts its matches within the centroids' localisation precision, far
        # inside the match radius: counted there too (a radius fixed in advance, no fitted
        # one), chance is far smaller; the better of the two tests, Bonferroni-corrected
        fine_radius = max(VERIFY_RADIUS_PX, float(f_em))
        tests = [p_value]
        if tree is not None and fine_radius < match_radius_px:
            n_fine = len(_match(lp, ep, matrix, tree, fine_radius))
            tests.append(_chance_p_value(lp, ep, matrix, em.shape, fine_radius, n_fine - free, n_hyp, fitted=free))
        if max_compression > 0 and elastic and tree is not None:
            # a section that compressed unevenly across the cut leaves any affine pixels off over
            # much of the field, so a right transform matches few structures at localisation
            # precision under it: counted under the cut's model grown from the matches too, every
            # parameter it fitted (affine and compression) taken as a match it absorbed
            cut_pairs, cut_par = _cut_model_matches(lp, ep, pairs, tree, (match_radius_px, match_radius_px, fine_radius, fine_radius))
            if cut_pairs:
                cut_absorbed = cut_par - 3
                tests.append(_chance_p_value(lp, ep, matrix, em.shape, fine_radius, len(cut_pairs) - cut_absorbed, n_hyp,
                                             fitted=cut_absorbed))
        p_value = len(tests) * min(tests)
        if n_best >= min_matches and p_value <= max_p_value:
            break
        if not last_set:
            continue
        # the points do not prove a transform (an LM that shows a labelled subset of the EM's
        # structures shares few points with it): the images may, where the label is
        by_blocks, why = _register_by_blocks(lm, em, lp_all, ep_all, lm_polarity, em_polarity,
                                             [fm_matrix] + [t[3] for t in full_scored], n_hyp, scales, max_compression,
                                             max_p_value, seed, elastic)
        if by_blocks is not None:
            return by_blocks
        raise RegistrationError(
            f"could not register LM to EM: LM {len(lp_all)} and EM {len(ep_all)} structure points, the best of {n_hyp} "
            f"transforms matched {n_best} (need {min_matches}, chance p = {min(p_value, 1.0):.2g} > {max_p_value:g}); "
            f"{why}{hint}, or pass lm_points/em_points of structures both images show"
        )
    if len(lp) < 3 or len(ep) < 3:
        z = _peak_z(fe, aligned, rng) if model == "coarse" else math.nan
        if not z >= min_peak_z:
            raise RegistrationError(
                f"could not register LM to EM: too few structure points to verify a transform (LM {len(lp)}, EM "
                f"{len(ep)}; need 3 in each){hint}, or pass lm_points/em_points"
                + (f"; the Fourier-Mellin feature correlation stands {z:.1f} sigma above shifted copies "
                   f"(need {min_peak_z:g})" if model == "coarse" else "; model='coarse' accepts an image-correlation-only result")
            )
    if model == "coarse" or len(pairs) < 3:
        m = matrix if len(pairs) >= min_matches else fm_matrix
        s_m = math.sqrt(abs(np.linalg.det(m[:2, :2])))
        return RegistrationResult(m, math.degrees(math.atan2(m[1, 0], m[0, 0])) % 360, s_m, 0, math.nan, math.nan,
                                  "coarse", method if m is matrix else "fourier-mellin")

    # 4. refinement from matched structure centroids
    fit_model = model if (model == "similarity" or len(pairs) >= 6) else "similarity"
    if fit_model == "similarity" and max_compression > 0 and len(pairs) >= 4:
        fit_model = "affine"  # a compressed section is no similarity of the LM
    min_n = 3 if fit_model == "affine" else 2
    src = lp[[p[0] for p in pairs]]
    dst = ep[[p[1] for p in pairs]]
    cls = AffineTransform if fit_model == "affine" else SimilarityTransform
    inliers = np.ones(len(src), bool)
    if len(src) > min_n + 2:
        from skimage.measure import ransac

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, found = ransac((src, dst), cls, min_samples=min_n, residual_threshold=max(1.0, 0.5 * f_em),
                              max_trials=200, rng=seed)
        if found is not None and found.sum() >= max(min_n, min_matches):
            inliers = found
    if fit_model == "affine" and inliers.sum() >= 4:
        # an affine on a handful of matches follows their localisation noise (4 matches leave
        # it 2 degrees of freedom) and extrapolates it over the field: kept only unless a
        # similarity predicts the held-out matches clearly better
        def loo_rms(kind: str) -> float:
            return float(np.sqrt(np.mean(_loo_point_errors(src[inliers], dst[inliers], kind) ** 2)))

        if loo_rms("similarity") < SIMILARITY_PREFERENCE * loo_rms("affine"):
            fit_model, cls = "similarity", SimilarityTransform
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf = cls.from_estimate(src[inliers], dst[inliers])
    if not tf:
        raise RegistrationError(f"could not fit a {fit_model} transform to the {len(src)} matched structures{hint}")
    fine = np.asarray(tf.params, float)
    needs_cut_model = False
    if len(lp) >= 3 and len(ep) >= 3 and tree is not None:
        # 5. precision: the refined transform must put structures onto each other within their
        # localisation precision, beyond the ones its parameters absorb, more often than the
        # best of n_hyp chance transforms would. A transform verified only at the wider match
        # radius (its matches a few pixels off, or some of them wrong) has not been verified
        # at the precision a TRE below a pixel needs
        fine_radius = max(VERIFY_RADIUS_PX, float(f_em))
        absorbed = 3 if fit_model == "affine" else 2
        n_fine = len(_match(lp, ep, fine, tree, fine_radius))
        need = _CompressionFit.min_matches()
        p_fine = _chance_p_value(lp, ep, fine, em.shape, fine_radius, n_fine - absorbed, n_hyp, fitted=absorbed)
        if cut_pairs:
            # the cut's model's matches at localisation precision (step 3) count as the affine's do
            p_cut = _chance_p_value(lp, ep, fine, em.shape, fine_radius, len(cut_pairs) - cut_absorbed, n_hyp,
                                    fitted=cut_absorbed)
            needs_cut_model = n_fine < need or p_fine > max_p_value
            n_fine, p_fine = max(n_fine, len(cut_pairs)), 2.0 * min(p_fine, p_cut)
        if max_compression > 0 and n_fine < need:
            # a section that may have compressed compresses unevenly across the cut: an affine
            # through a few matches is right at them and extrapolates a uniform compression
            # beyond them, pixels off where the compression varied, with a small TRE estimate
            # (its residuals say nothing about the field away from the matches). Only matches
            # enough to fit and judge the simplest varying compression tell the two apart
            raise RegistrationError(
                f"could not verify the registration of a section that may have compressed: {n_fine} structures "
                f"matched within {fine_radius:.1f} EM px, fewer than the {need} that tell a compression varying "
                "across the cut from a uniform one (an affine through fewer is right at its matches and may be "
                "pixels off away from them); add fiducial beads or pass more lm_points/em_points, or "
                "max_compression=0 where the section did not deform"
            )
        if p_fine > max_p_value:
            raise RegistrationError(
                f"could not register LM to EM to localisation precision: the {fit_model} fitted to {int(inliers.sum())} matched "
                f"structures puts {n_fine} within {fine_radius:.1f} EM px of each other (chance p = {min(p_fine, 1.0):.2g} > "
                f"{max_p_value:g} over {n_hyp} transforms tried){hint}, or pass lm_points/em_points of structures both images show"
            )
    fre, tre = target_registration_error(src[inliers], dst[inliers], fine, em.shape, n_params=6 if fit_model == "affine" else 4)
    rot_deg = math.degrees(math.atan2(fine[1, 0], fine[0, 0])) % 360
    scale = math.sqrt(abs(np.linalg.det(fine[:2, :2])))
    disp = None
    name = fit_model
    m_src, m_dst = src[inliers], dst[inliers]
    nonrigid = None
    if elastic and fit_model == "affine":
        nonrigid = _nonrigid_refinement(lp, ep, fine, (wide_radius, match_radius_px), em.shape, seed_pairs=cut_pairs)
        if nonrigid is None and needs_cut_model:
            raise RegistrationError(
                f"could not register LM to EM to localisation precision: only the cut's model put enough structures "
                f"({len(cut_pairs)}) within {fine_radius:.1f} EM px of each other, and fitted to them it did not predict "
                f"held-out ones better than the affine{hint}; add fiducial beads or pass more lm_points/em_points"
            )
    if nonrigid is None:
        # the TRE estimate of the model returned only (its cross-validation refits it per fold)
        estimate = _tre_estimate(fit_model, m_src, m_dst, fine, None)
        if estimate is not None:
            tre = _field_rms(estimate, em.shape)
        base = RegistrationResult(fine, rot_deg, scale, int(inliers.sum()), fre, tre, name, method, None, estimate)
    else:
        kind, fine, m_src, m_dst, fre_nr, tre_nr, disp, fitted = nonrigid
        rot_deg = math.degrees(math.atan2(fine[1, 0], fine[0, 0])) % 360
        scale = math.sqrt(abs(np.linalg.det(fine[:2, :2])))
        estimate = _tre_estimate(kind, m_src, m_dst, fine, fitted)
        if estimate is not None:
            tre_nr = _field_rms(estimate, em.shape)
        base = RegistrationResult(fine, rot_deg, scale, len(m_src), fre_nr, tre_nr, f"{name}+{kind}", method, disp,
                                  estimate)
    if elastic:
        # the flow runs between what both images show: their compact structures, when told
        # how they look; the whole images otherwise
        lm_s = _structure_image(lm, lm_polarity)
        em_s = _structure_image(em, em_polarity)
        flow = _elastic(lm_s, em_s, base, max(1.0, 0.5 * scale))  # half an LM pixel seen on the EM grid
        if base.displacement is not None:
            flow = base.displacement + flow
        before = float(np.sqrt(np.mean(np.sum((base.apply(m_src) - m_dst) ** 2, axis=1))))
        elastic_result = RegistrationResult(fine, rot_deg, scale, base.n_matches, base.fre_px, base.tre_px,
                                            base.model + "+elastic", method, flow, base.tre_estimate)
        after = float(np.sqrt(np.mean(np.sum((elastic_result.apply(m_src) - m_dst) ** 2, axis=1))))
        # the flow never saw the matched structures: they are held-out evidence. Kept only
        # where it brings them measurably closer (by a tenth)
        if after <= 0.9 * before:
            object.__setattr__(elastic_result, "fre_px", after)
            return elastic_result
        warnings.warn(f"the elastic step did not bring the matched structures closer (residual {before:.2f} -> {after:.2f} px); "
                      f"kept the {base.model} transform", RuntimeWarning, stacklevel=2)
    return base


def _autocorrelation(img: np.ndarray, lags: tuple[int, int]) -> np.ndarray:
    """Normalised autocorrelation of ``img`` (mean removed, biased estimator) at lags below ``lags``."""
    x = img - img.mean()
    shape = [2 * n for n in x.shape]
    f = np.fft.rfft2(x, shape)
    ac = np.fft.irfft2(f * np.conj(f), shape)
    if ac[0, 0] <= 0:
        return np.zeros((2 * lags[0] - 1, 2 * lags[1] - 1))
    ac = np.fft.fftshift(ac / ac[0, 0])
    cy, cx = shape[0] // 2, shape[1] // 2
    hy, hx = min(lags[0] - 1, x.shape[0] - 1), min(lags[1] - 1, x.shape[1] - 1)
    out = np.zeros((2 * lags[0] - 1, 2 * lags[1] - 1))
    out[lags[0] - 1 - hy:lags[0] + hy, lags[1] - 1 - hx:lags[1] + hx] = ac[cy - hy:cy + hy + 1, cx - hx:cx + hx + 1]
    return out


def register_near_prior(
    lm_image: np.ndarray,
    em_image: np.ndarray,
    prior: np.ndarray,
    *,
    search_radius_px: float,
    max_p_value: float = 1e-3,
    n_null_shifts: int = 199,
    max_working_px: int = 256,
) -> RegistrationResult:
    """Find the shift of a stage prior by image correlation within the stage's uncertainty,
    and return it only if its correlation peak beats chance.

    The prior (``3 x 3``, LM (x, y) px -> EM (x, y) px, e.g. from stage coordinates and pixel
    sizes) fixes rotation and scale; only its shift is searched, over the EM-pixel shifts
    within ``search_radius_px`` of it whose EM field lies inside the LM field. The normalised
    cross-correlation of the EM image with the LM image mapped by the prior
    (:func:`skimage.feature.match_template`) is computed at every searched shift. The peak
    is tested as a correlation between two spatially autocorrelated fields: Fisher's z of
    the peak over Bartlett's effective number of independent pixels (Clifford, Richardson &
    Hemon 1989, Biometrics 45:123), its one-sided normal tail probability multiplied by the
    number of local maxima in the searched region (the independent chances the peak had: a
    Bonferroni correction over the search). A small field inside a wide search always has a
    best shift; only one that beats chance so is returned. Bartlett's estimate assumes
    stationary fields, which a field-filling structure is not, so the peak must also beat
    chance as the images make it: the best match of the same search with the EM field's
    content moved round the field (``n_null_shifts`` toroidal shifts of at least
    :data:`MIN_TOROIDAL_SHIFT_PX`, which keep its structures and their spacing but not
    their place; Lotwick & Silverman 1982, J. R. Stat. Soc. B 44:406). An EM field holding
    one neurite matches itself moved along the neurite, and no correlation with it is
    evidence of where it lies.

    Args:
        lm_image, em_image: 2-D feature images (e.g. the LM label and the EM structures the
            label marks), any real dtype.
        prior: LM px -> EM px matrix.
        search_radius_px: how far (EM px) from the prior the shift may be: the stage's
            relocation uncertainty, e.g. 3 x :data:`STAGE_RELOCATION_SIGMA_NM` over the EM
            pixel size.
        max_p_value: largest chance probability (corrected for the search) of a peak that is
            accepted.
        n_null_shifts: toroidal shifts of the EM content searched as the images' own null;
            the peak must beat all of them (chance p <= 1 / (1 + n_null_shifts), 0.005 by default).
        max_working_px: largest side of the correlation grid (the EM is block-averaged).

    Returns:
        :class:`RegistrationResult` with ``model="coarse"``, ``method="prior-search"``, the
        prior's rotation and scale, and the found shift (to a working pixel).

    Raises:
        EvaluationError: bad images, prior or radius.
        RegistrationError: nothing to correlate, or the best peak does not beat chance: the
            caller should use the prior, unverified.
    """
    from scipy.stats import norm
    from skimage.feature import match_template, peak_local_max

    lm = check_image(lm_image, name="lm_image", min_size=4)
    em = check_image(em_image, name="em_image", min_size=4)
    m = np.asarray(prior, float)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)) or abs(np.linalg.det(m[:2, :2])) < 1e-12:
        raise EvaluationError("prior must be an invertible finite 3 x 3 LM -> EM matrix")
    if not (math.isfinite(search_radius_px) and search_radius_px >= 0):
        raise EvaluationError(f"search_radius_px must be a finite number >= 0, got {search_radius_px!r}")
    if np.ptp(em) == 0 or np.ptp(lm) == 0:
        raise RegistrationError("could not verify the prior: an image is constant, there is nothing to correlate")
    # correlation grid: EM block-averaged by g so the EM field plus the search fits max_working_px
    g = max(1, math.ceil((max(em.shape) + 2.0 * search_radius_px) / max_working_px))
    tmpl = block_mean(em, g)
    r_g = int(math.floor(search_radius_px / g))
    h, w = tmpl.shape
    # canvas pixel (row, col) is EM full px ((col - r_g) g + (g-1)/2, (row - r_g) g + (g-1)/2)
    rows, cols = np.mgrid[0:h + 2 * r_g, 0:w + 2 * r_g]
    xy = np.stack([(cols - r_g) * g + (g - 1) / 2.0, (rows - r_g) * g + (g - 1) / 2.0, np.ones(cols.shape)], axis=-1)
    lm_xy = xy @ np.linalg.inv(m).T
    coords = np.stack([lm_xy[..., 1], lm_xy[..., 0]])
    canvas = ndi.map_coordinates(lm.astype(float), coords, order=1, mode="constant", cval=0.0)
    inside = ((coords[0] >= -0.5) & (coords[0] <= lm.shape[0] - 0.5) & (coords[1] >= -0.5) & (coords[1] <= lm.shape[1] - 0.5))
    ncc = match_template(canvas, tmpl.astype(float))
    # searched shifts: within the radius, the whole EM field inside the LM field
    sat = np.pad(inside.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # summed-area table
    full = (sat[h:, w:] - sat[:-h, w:] - sat[h:, :-w] + sat[:-h, :-w]) == h * w
    dy, dx = np.mgrid[-r_g:r_g + 1, -r_g:r_g + 1]
    searched = full & (np.hypot(dy, dx) * g <= search_radius_px + 1e-9)
    if not searched.any() or np.ptp(tmpl) == 0:
        raise RegistrationError("could not verify the prior: no shift within the search radius keeps the EM field "
                                "inside the LM field, or the EM field is blank")
    peak_at = np.unravel_index(int(np.argmax(np.where(searched, ncc, -np.inf))), ncc.shape)
    peak = float(ncc[peak_at])
    # the correlation of two smooth fields has fewer independent pixels than pixels: Bartlett's
    # effective sample size n / sum_k rho_em(k) rho_lm(k) over the lags k (Clifford, Richardson
    # & Hemon 1989, Biometrics 45:123); a mask of one neurite is a couple of independent samples,
    # a field of scattered organelles many. Fisher's z of the peak against it, Bonferroni-corrected
    # over the local maxima of the searched correlation (the independent chances it had).
    rho = _autocorrelation(tmpl.astype(float), (h, w)) * _autocorrelation(canvas, (h, w))
    n_eff = float(np.clip(h * w / max(float(rho.sum()), 1.0), 1.0, h * w))
    n_peaks = max(1, len(peak_local_max(np.where(searched, ncc, -np.inf), min_distance=1, exclude_border=False,
                                        labels=searched.astype(int))))
    z = math.atanh(min(max(peak, -0.999999), 0.999999)) * math.sqrt(max(n_eff - 3.0, 0.0))
    p_value = min(1.0, n_peaks * float(norm.sf(z)))
    if not p_value <= max_p_value:
        raise RegistrationError(
            f"could not verify the prior: the best image correlation within {search_radius_px:.0f} EM px of it, "
            f"{peak:.2f} over {n_eff:.0f} effectively independent pixels ({z:.1f} sigma), has chance p = {p_value:.2g} "
            f"over {n_peaks} local maxima > {max_p_value:g}; use the prior unverified, or add fiducials")
    # and against chance as the images make it: the same search with the EM field's content
    # moved round the field (toroidal shifts keep its structures and their spacing, not their
    # place; Lotwick & Silverman 1982, JRSS B 44:406): the peak must beat every such best match
    # (on the field mirrored to twice its size, periodic without a seam: a rolled copy of the
    # field itself would cut its structures at straight edges no LM shows, a weaker null)
    rng = np.random.default_rng(0)
    tiled = np.pad(tmpl.astype(float), ((0, h), (0, w)), mode="symmetric")
    far = [(a, b) for a in range(2 * h) for b in range(2 * w)
           if min(a, 2 * h - a) * g >= MIN_TOROIDAL_SHIFT_PX or min(b, 2 * w - b) * g >= MIN_TOROIDAL_SHIFT_PX]
    if len(far) < n_null_shifts:
        raise RegistrationError(f"could not verify the prior: the EM field is too small for {n_null_shifts} shifted copies")
    for tried, k in enumerate(rng.permutation(len(far))[:n_null_shifts], start=1):
        null = match_template(canvas, np.roll(tiled, far[k], axis=(0, 1))[:h, :w])
        if float(np.max(np.where(searched, null, -np.inf))) >= peak:  # one is enough to refuse: stop there
            raise RegistrationError(
                f"could not verify the prior: the best image correlation within {search_radius_px:.0f} EM px of it, "
                f"{peak:.2f}, was matched by the search with the EM field's content moved round the field "
                f"(copy {tried} of {n_null_shifts}); use the prior unverified, or add fiducials")
    # sub-pixel peak: a parabola through the peak and its neighbours on each axis
    off = []
    for axis in (0, 1):
        lo, hi = list(peak_at), list(peak_at)
        lo[axis] -= 1
        hi[axis] += 1
        if lo[axis] < 0 or hi[axis] >= ncc.shape[axis]:
            off.append(0.0)
            continue
        a, b, c = float(ncc[tuple(lo)]), peak, float(ncc[tuple(hi)])
        den = a - 2 * b + c
        off.append(float(np.clip(0.5 * (a - c) / den, -0.5, 0.5)) if den < 0 else 0.0)
    shift_y = (peak_at[0] + off[0] - r_g) * g
    shift_x = (peak_at[1] + off[1] - r_g) * g
    # the EM shows what the prior puts at X at X - shift
    matrix = _mat(1.0, 0.0, -shift_x, -shift_y) @ m
    return RegistrationResult(matrix, math.degrees(math.atan2(matrix[1, 0], matrix[0, 0])) % 360,
                              math.sqrt(abs(np.linalg.det(matrix[:2, :2]))), 0, math.nan, math.nan, "coarse", "prior-search")
