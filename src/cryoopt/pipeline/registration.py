"""Stage 4, LM-EM registration: map light-microscope pixels onto the electron image.

Method (all steps from :mod:`skimage`):

1. Both images are reduced to a common working grid (EM block-averaged to at most
   ``max_working_px``, LM rescaled by the known pixel-size ratio) and turned into
   contrast-sign-independent feature images (gradient magnitude of a Gaussian),
   because LM and EM show the same structures with different, even inverted,
   contrast.
2. Rotation (and scale, if the pixel sizes are not both known) from the log-polar
   transform of the Fourier magnitudes (Reddy & Chatterji 1996, IEEE TIP 5:1266;
   :func:`skimage.transform.warp_polar` + :func:`skimage.registration.phase_cross_correlation`);
   the 180 degree ambiguity of the Fourier magnitude is resolved by the stronger
   translation peak.
3. Translation by phase correlation with sub-pixel upsampling (Guizar-Sicairos
   et al. 2008, Opt. Lett. 33:156).
4. Refinement: centroids of segmented structures in both images are matched
   (mutual nearest neighbours under the coarse transform) and an affine transform
   is fitted with RANSAC (:func:`skimage.measure.ransac`) then least squares on the
   inliers. Structures are the minority Otsu phase of each smoothed image unless
   the caller passes its own points (e.g. parsed nuclei/mitochondria centroids).

Target registration error: for a least-squares affine fit, each output coordinate is
a linear regression on ``[x, y, 1]``, so the expected squared TRE at a point ``r`` is
``2 sigma^2 h(r)`` with ``h(r) = r^T (X^T X)^-1 r`` and
``sigma^2 = RSS / (2N - 6)`` (Fitzpatrick, West & Maurer 1998, IEEE TMI 17:694, for
the rigid analogue). ``tre_px`` is its RMS over the EM field.

Coordinates follow skimage: ``(x, y) = (column, row)``; ``transform`` maps LM pixel
coordinates to EM pixel coordinates.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from cryoopt.exceptions import EvaluationError
from cryoopt.pipeline._validate import check_image
from cryoopt.pipeline.preprocess import block_mean

__all__ = ["RegistrationResult", "detect_structure_points", "register_lm_em", "target_registration_error"]


@dataclass(frozen=True)
class RegistrationResult:
    """An LM -> EM transform and its error estimates.

    Attributes:
        matrix: `3 x 3` homogeneous affine matrix, LM (x, y) px -> EM (x, y) px.
        rotation_deg, scale: of the coarse similarity step.
        n_matches: structure centroids used in the refinement (0: coarse only).
        fre_px: RMS residual of the matched centroids, EM px (NaN if no refinement).
        tre_px: expected RMS target registration error over the EM field, EM px
            (NaN when fewer than 4 matches leave no residual degrees of freedom).
        model: ``"affine"``, ``"similarity"`` or ``"coarse"``.
    """

    matrix: np.ndarray
    rotation_deg: float
    scale: float
    n_matches: int
    fre_px: float
    tre_px: float
    model: str

    @property
    def transform(self):
        """The transform as a :class:`skimage.transform.AffineTransform`."""
        from skimage.transform import AffineTransform

        return AffineTransform(matrix=self.matrix)

    def apply(self, lm_xy: np.ndarray) -> np.ndarray:
        """Map `N x 2` LM (x, y) coordinates to EM coordinates."""
        p = np.asarray(lm_xy, float)
        return p @ self.matrix[:2, :2].T + self.matrix[:2, 2]

    def warp(self, lm_image: np.ndarray, output_shape: tuple[int, int], *, order: int = 1) -> np.ndarray:
        """Resample an LM image (or mask, ``order=0``) onto the EM grid of ``output_shape``."""
        from skimage.transform import warp

        img = np.asarray(lm_image)
        out = warp(img.astype(float), np.linalg.inv(self.matrix), output_shape=output_shape, order=order, preserve_range=True)
        return out > 0.5 if img.dtype == bool else out


def _mat(scale: float = 1.0, rot: float = 0.0, tx: float = 0.0, ty: float = 0.0) -> np.ndarray:
    c, s = math.cos(rot), math.sin(rot)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty], [0, 0, 1.0]])


def _features(img: np.ndarray, sigma: float) -> np.ndarray:
    z = (img - img.mean()) / (img.std() or 1.0)
    return ndi.gaussian_gradient_magnitude(z, sigma)


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
    pred = lp @ matrix[:2, :2].T + matrix[:2, 2]
    d, j = tree.query(pred, distance_upper_bound=radius)
    back = cKDTree(pred).query(ep)[1]
    return [(i, int(jj)) for i, (dd, jj) in enumerate(zip(d, j)) if np.isfinite(dd) and back[jj] == i]


def _vote(lp: np.ndarray, ep: np.ndarray, scale: float, radius: float, *, step_deg: float = 2.0) -> np.ndarray:
    """Similarity transform (known scale) maximising point agreement: for each rotation,
    the translation is the mode of all pairwise EM - R(LM) differences (Hough voting)."""
    best = (-1, np.eye(3))
    for deg in np.arange(0.0, 360.0, step_deg):
        m = _mat(scale, math.radians(deg))
        q = lp @ m[:2, :2].T
        diff = (ep[None, :, :] - q[:, None, :]).reshape(-1, 2)
        cells = np.floor(diff / radius).astype(np.int64)
        keys = cells[:, 0] * 2_000_003 + cells[:, 1]
        uniq, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
        k = int(np.argmax(counts))
        if counts[k] > best[0]:
            t = np.median(diff[inv == k], axis=0)
            m[:2, 2] = t
            best = (int(counts[k]), m)
    return best[1]


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
    # TRE in LM coordinates propagated to EM: the fit is done in EM units already
    return fre, float(math.sqrt(2.0 * sigma2 * float(np.mean(h))))


def register_lm_em(
    lm_image: np.ndarray,
    em_image: np.ndarray,
    *,
    lm_pixel_size_nm: float | None = None,
    em_pixel_size_nm: float | None = None,
    lm_points: np.ndarray | None = None,
    em_points: np.ndarray | None = None,
    model: str = "affine",
    max_working_px: int = 512,
    match_radius_px: float | None = None,
    seed: int = 0,
) -> RegistrationResult:
    """Register a light image to an electron image of the same area.

    Args:
        lm_image, em_image: 2-D images, any real dtype, any (different) sizes.
        lm_pixel_size_nm, em_pixel_size_nm: pixel sizes; when both are given the
            scale is fixed to their ratio, otherwise it is estimated.
        lm_points, em_points: `N x 2` structure centroids (x, y) in full-resolution
            pixels for the refinement (default: :func:`detect_structure_points`).
        model: ``"affine"`` (default), ``"similarity"`` or ``"coarse"`` (no refinement).
        max_working_px: largest side of the working grid of the coarse steps.
        match_radius_px: largest EM-pixel distance for a centroid match (default:
            a quarter of the median nearest-neighbour spacing of the EM points,
            at least 3 working pixels).
        seed: RANSAC seed.

    Returns:
        :class:`RegistrationResult`.

    Raises:
        EvaluationError: bad images or pixel sizes, or an unknown ``model``.
    """
    from skimage.registration import phase_cross_correlation
    from skimage.transform import AffineTransform, SimilarityTransform, rescale, warp

    lm = check_image(lm_image, name="lm_image", min_size=16)
    em = check_image(em_image, name="em_image", min_size=16)
    if model not in ("affine", "similarity", "coarse"):
        raise EvaluationError(f"model must be 'affine', 'similarity' or 'coarse', got {model!r}")
    for nm, v in (("lm_pixel_size_nm", lm_pixel_size_nm), ("em_pixel_size_nm", em_pixel_size_nm)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise EvaluationError(f"{nm} must be positive, got {v!r}")
    if np.ptp(lm) == 0 or np.ptp(em) == 0:
        raise EvaluationError("an image is constant; there is nothing to register")
    known_scale = None
    if lm_pixel_size_nm is not None and em_pixel_size_nm is not None:
        known_scale = lm_pixel_size_nm / em_pixel_size_nm  # EM px per LM px

    # 1. working grid: EM reduced by f_em; LM brought to the same pixel size (when known)
    f_em = max(1, math.ceil(max(em.shape) / max_working_px))
    em_w = block_mean(em, f_em)
    s_lm = (known_scale / f_em) if known_scale is not None else max(em_w.shape) / max(lm.shape) * 1.0
    f_lm = max(1, int(1.0 / s_lm)) if s_lm < 1 else 1
    lm_b = block_mean(lm, f_lm)
    s_rest = s_lm * f_lm
    lm_w = rescale(lm_b, s_rest, order=1, anti_aliasing=s_rest < 1) if abs(s_rest - 1) > 1e-6 else lm_b
    n = int(2 ** math.ceil(math.log2(max(*em_w.shape, *lm_w.shape))))
    fe_raw, fl_raw = _features(em_w, 1.0), _features(lm_w, 1.0)
    fe, fl = _pad(fe_raw, n), _pad(fl_raw, n)
    # LM full px -> LM working px. A block mean puts working pixel i at full pixel
    # f*i + (f-1)/2; skimage's rescale by s puts output pixel j at input (j+0.5)/s - 0.5.
    to_lm_w = _mat(s_rest / f_lm) @ _mat(1.0, 0.0, -(f_lm - 1) / 2.0, -(f_lm - 1) / 2.0)
    if abs(s_rest - 1) > 1e-6:
        to_lm_w = _mat(1.0, 0.0, (s_rest - 1) / 2.0, (s_rest - 1) / 2.0) @ to_lm_w
    # EM working px -> EM full px: block centre
    from_em_w = _mat(1.0, 0.0, (f_em - 1) / 2.0, (f_em - 1) / 2.0) @ _mat(float(f_em))

    # 2. rotation (and scale) about the working-grid centre
    rot, sc = _rotation_scale(fe_raw, fl_raw)
    if known_scale is not None:
        sc = 1.0
    c = (n - 1) / 2.0
    best: tuple[float, float, np.ndarray, np.ndarray] = (-math.inf, rot, np.eye(3), np.zeros(2))
    for r in (rot, rot + math.pi):
        about = _mat(1, 0, c, c) @ _mat(sc, r) @ _mat(1, 0, -c, -c)
        moved = warp(fl, np.linalg.inv(about), output_shape=(n, n), order=1)
        shift, _, _ = phase_cross_correlation(fe, moved, upsample_factor=20, normalization=None)
        # 3. translation; ``shift`` (rows, cols) moves ``moved`` onto ``fe``
        peak = float(np.sum(fe * ndi.shift(moved, shift, order=1)))
        if peak > best[0]:
            best = (peak, r, about, shift)
    _, rot, about, shift = best
    coarse_w = _mat(1, 0, shift[1], shift[0]) @ about
    matrix = from_em_w @ coarse_w @ to_lm_w
    if known_scale is None:
        sc = math.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    else:
        sc = known_scale

    if model == "coarse":
        return RegistrationResult(matrix, math.degrees(rot) % 360, sc, 0, math.nan, math.nan, "coarse")

    # 4. refinement from matched structure centroids
    lp = detect_structure_points(lm) if lm_points is None else np.asarray(lm_points, float).reshape(-1, 2)
    ep = detect_structure_points(em) if em_points is None else np.asarray(em_points, float).reshape(-1, 2)
    if len(lp) < 3 or len(ep) < 3:
        return RegistrationResult(matrix, math.degrees(rot) % 360, sc, 0, math.nan, math.nan, "coarse")
    tree = cKDTree(ep)
    if match_radius_px is None:
        nn = tree.query(ep, k=2)[0][:, 1]
        match_radius_px = max(3.0 * f_em, 0.25 * float(np.median(nn)))
    pairs = _match(lp, ep, matrix, tree, match_radius_px)
    if len(pairs) < max(6, 0.3 * min(len(lp), len(ep))) and known_scale is not None:
        # the image-based coarse step failed (e.g. sparse, dissimilar content):
        # fall back to point-pattern voting over rotations at the known scale
        voted = _vote(lp, ep, known_scale, match_radius_px)
        vpairs = _match(lp, ep, voted, tree, match_radius_px)
        if len(vpairs) > len(pairs):
            matrix, pairs = voted, vpairs
            rot = math.atan2(voted[1, 0], voted[0, 0])
    min_n = 3 if model == "affine" else 2
    if len(pairs) < min_n:
        return RegistrationResult(matrix, math.degrees(rot) % 360, sc, 0, math.nan, math.nan, "coarse")
    src = lp[[p[0] for p in pairs]]
    dst = ep[[p[1] for p in pairs]]
    cls = AffineTransform if model == "affine" else SimilarityTransform
    inliers = np.ones(len(src), bool)
    if len(src) > min_n + 2:
        from skimage.measure import ransac

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, found = ransac((src, dst), cls, min_samples=min_n, residual_threshold=max(1.0, 0.5 * f_em), max_trials=200, rng=seed)
        if found is not None and found.sum() >= min_n:
            inliers = found
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf = cls()
        ok = tf.estimate(src[inliers], dst[inliers])
    if not ok:
        return RegistrationResult(matrix, math.degrees(rot) % 360, sc, 0, math.nan, math.nan, "coarse")
    fine = np.asarray(tf.params, float)
    fre, tre = target_registration_error(src[inliers], dst[inliers], fine, em.shape, n_params=6 if model == "affine" else 4)
    return RegistrationResult(fine, math.degrees(rot) % 360, sc, int(inliers.sum()), fre, tre, model)
