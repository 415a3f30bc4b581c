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
3. Verification: at least ``min_matches`` matched structures, else the registration
   is refused. Without structure points, the Fourier-Mellin result must stand out of
   the feature correlations of shifted copies by ``min_peak_z`` sigmas.
4. Refinement: an affine (or similarity) transform fitted with RANSAC
   (:func:`skimage.measure.ransac`) then least squares on the matched centroids.
5. Elastic (``elastic=True``), for sections that deformed between the two images
   (compression along the cut, drying): TV-L1 optical flow
   (:func:`skimage.registration.optical_flow_tvl1`; Zach, Pock & Bischof 2007,
   DAGM) between the EM structure image and the LM warped by the affine, smoothed by
   normalised convolution where there is structure to see.

Target registration error: for a least-squares fit, each output coordinate is a
linear regression on ``[x, y, 1]``, so the expected squared TRE at a point ``r`` is
``2 sigma^2 h(r)`` with ``h(r) = r^T (X^T X)^-1 r`` and ``sigma^2 = RSS / (2N - p)``
(Fitzpatrick, West & Maurer 1998, IEEE TMI 17:694, for the rigid analogue).
``tre_px`` is its RMS over the EM field.

Coordinates follow skimage: ``(x, y) = (column, row)``; ``transform`` maps LM pixel
coordinates to EM pixel coordinates.
"""

from __future__ import annotations

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
    "target_registration_error",
]

#: smallest Gaussian (working pixels) of the feature images
MIN_FEATURE_SIGMA_PX = 2.0


@dataclass(frozen=True)
class RegistrationResult:
    """An LM -> EM transform and its error estimates.

    Attributes:
        matrix: `3 x 3` homogeneous affine matrix, LM (x, y) px -> EM (x, y) px.
        rotation_deg, scale: of the transform's linear part (scale: EM px per LM px).
        n_matches: structure centroids used in the refinement (0: coarse only).
        fre_px: RMS residual of the matched centroids, EM px (NaN if no refinement).
        tre_px: expected RMS target registration error over the EM field, EM px
            (NaN when too few matches leave no residual degrees of freedom).
        model: ``"affine"``, ``"similarity"`` or ``"coarse"``; ``"+elastic"`` appended
            when a displacement field refines it.
        method: which coarse hypothesis won (``"fourier-mellin"``, ``"points"``).
        displacement: `2 x H x W` (x, y) displacement on the EM grid, EM px, or None:
            EM pixel ``p`` shows LM point ``matrix^-1 (p + displacement[:, p])``.
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
    if len(lp) < 3 or len(ep) < 3:
        return np.eye(3), 0, 0
    inv_l, tri_l = _triangles(lp, neighbours)
    inv_e, tri_e = _triangles(ep, neighbours)
    if not len(inv_l) or not len(inv_e):
        return np.eye(3), 0, 0
    # compare invariants in log space: a relative tolerance
    cands = cKDTree(np.log(inv_e)).query_ball_point(np.log(inv_l), r=tolerance)
    pairs = np.array([(i, j) for i, js in enumerate(cands) for j in js], int).reshape(-1, 2)
    if not len(pairs):
        return np.eye(3), 0, 0
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
    mats = mats[(scale >= scale_range[0]) & (scale <= scale_range[1])]
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
    pts = []
    for rp in regionprops(label(fg), intensity_image=th):
        if rp.area < min_area_px:
            continue
        if rp.axis_minor_length > 0 and rp.axis_major_length / rp.axis_minor_length > max_elongation:
            continue
        pts.append(rp.centroid_weighted[::-1])
    return np.array(pts, float).reshape(-1, 2)


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
    (uniform over the field) with ``p = 1 - exp(-rho pi r^2)``; matches are
    ``Binomial(n_inside - fitted, p)`` (``fitted`` points were used to build the transform);
    the best of ``n_hypotheses`` transforms multiplies the tail."""
    from scipy.stats import binom

    pred = lp @ m[:2, :2].T + m[:2, 2]
    h, w = em_shape
    inside = int(np.count_nonzero((pred[:, 0] >= -radius) & (pred[:, 0] < w + radius) & (pred[:, 1] >= -radius) & (pred[:, 1] < h + radius)))
    rho = len(ep) / float(h * w)
    p = 1.0 - math.exp(-rho * math.pi * radius**2)
    if n_matched <= 0:
        return 1.0
    return float(binom.sf(n_matched - 1, max(inside - fitted, n_matched), min(p, 1.0))) * max(n_hypotheses, 1)


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


def _elastic(lm: np.ndarray, em: np.ndarray, matrix: np.ndarray, lm_sigma_em_px: float, *, max_px: int = 256) -> np.ndarray:
    """Displacement (x, y) on the EM grid from TV-L1 flow between structure images (see module).

    The flow runs on the EM grid block-averaged to at most ``max_px`` a side (the
    deformation is smooth) and is smoothed by normalised convolution over an eighth of
    the field, weighted by where either image shows structure."""
    from skimage.registration import optical_flow_tvl1

    f = max(1, math.ceil(max(em.shape) / max_px))
    em_w = block_mean(em, f)
    to_w = _mat(1.0 / f) @ _mat(1.0, 0.0, -(f - 1) / 2.0, -(f - 1) / 2.0)  # EM full px -> working px
    base = RegistrationResult(to_w @ matrix, 0.0, 1.0, 0, math.nan, math.nan, "affine")
    lm_on_em = base.warp(lm, em_w.shape, order=1)
    inside = base.warp(np.ones(lm.shape, bool), em_w.shape, order=0)
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
        elastic: add a smooth displacement field (TV-L1 optical flow) for sections
            that deformed between the images.
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
        scale_range: scales considered when the pixel sizes are not both known.
        seed: RANSAC and sampling seed.

    Returns:
        :class:`RegistrationResult`.

    Raises:
        EvaluationError: bad images, pixel sizes or options.
        RegistrationError: no transform could be verified (too few structures in common):
            pass pixel sizes, more or better structure points, or a larger field.
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
    em_w = block_mean(em, f_em)
    s_lm = (known_scale / f_em) if known_scale is not None else max(em_w.shape) / max(lm.shape)
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
    from_em_w = _mat(1.0, 0.0, (f_em - 1) / 2.0, (f_em - 1) / 2.0) @ _mat(float(f_em))

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

    # 2b. structure points and the point-pattern hypothesis
    lp = _points(lm, lm_points, lm_polarity)
    ep = _points(em, em_points, em_polarity)
    tree = cKDTree(ep) if len(ep) else None
    if match_radius_px is None:
        nn = tree.query(ep, k=2)[0][:, 1] if len(ep) >= 2 else np.array([math.inf])
        match_radius_px = max(3.0 * f_em, min(0.25 * float(np.median(nn)), 0.05 * max(em.shape)))
    scales = (known_scale * 0.8, known_scale * 1.25) if known_scale is not None else scale_range
    tight = max(3.0 * f_em, 0.015 * max(em.shape))

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
    n_hyp = 1
    fm_ok = (scored[0][0] >= max(min_matches, 8) and len(lp) >= 3 and len(ep) >= 3
             and _chance_p_value(lp, ep, scored[0][3], em.shape, tight, scored[0][0] - 3, 1, fitted=3) < max_p_value)
    if len(lp) >= 3 and len(ep) >= 3 and not fm_ok:
        # the image correlation did not verify: search the point patterns
        for frame in _compression_frames(max_compression):
            # EM points as they were before the section compressed: a similarity there
            ep_frame = ep @ frame[:2, :2].T + frame[:2, 2]
            pm, n_pm, n_tried = match_point_patterns(lp, ep_frame, radius=match_radius_px, scale_range=scales, seed=seed)
            n_hyp += n_tried
            if n_pm:
                scored.append(refine("points", np.linalg.inv(frame) @ pm, frame))
    scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
    n_best, _, method, matrix, pairs = scored[0]
    match_radius_px = tight
    hint = "" if known_scale is not None else "; pass lm_pixel_size_nm and em_pixel_size_nm to fix the scale"

    # 3. verification
    if len(lp) >= 3 and len(ep) >= 3:
        # matched structures must beat chance: the best of n_hyp transforms, each mapping the
        # LM points that land in the EM field onto EM points scattered over it
        # the transform was fitted to the matches: the points its parameters absorb are no evidence
        free = 3
        p_value = _chance_p_value(lp, ep, matrix, em.shape, match_radius_px, n_best - free, n_hyp, fitted=free)
        if n_best < min_matches or p_value > max_p_value:
            raise RegistrationError(
                f"could not register LM to EM: LM {len(lp)} and EM {len(ep)} structure points, the best of {n_hyp} "
                f"transforms matched {n_best} (need {min_matches}, chance p = {min(p_value, 1.0):.2g} > {max_p_value:g}){hint}, "
                "or pass lm_points/em_points of structures both images show"
            )
    else:
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf = cls.from_estimate(src[inliers], dst[inliers])
    if not tf:
        raise RegistrationError(f"could not fit a {fit_model} transform to the {len(src)} matched structures{hint}")
    fine = np.asarray(tf.params, float)
    fre, tre = target_registration_error(src[inliers], dst[inliers], fine, em.shape, n_params=6 if fit_model == "affine" else 4)
    rot_deg = math.degrees(math.atan2(fine[1, 0], fine[0, 0])) % 360
    scale = math.sqrt(abs(np.linalg.det(fine[:2, :2])))
    disp = None
    name = fit_model
    if elastic:
        # the flow runs between what both images show: their compact structures, when told
        # how they look; the whole images otherwise
        lm_s = _structure_image(lm, lm_polarity)
        em_s = _structure_image(em, em_polarity)
        disp = _elastic(lm_s, em_s, fine, max(1.0, 0.5 * scale))  # half an LM pixel seen on the EM grid
        elastic_result = RegistrationResult(fine, rot_deg, scale, int(inliers.sum()), fre, tre, name + "+elastic", method, disp)
        res = elastic_result.apply(src[inliers]) - dst[inliers]
        fre_elastic = float(np.sqrt(np.mean(np.sum(res**2, axis=1))))
        if fre_elastic <= fre + 0.1:  # kept only where it does not move matched structures apart
            object.__setattr__(elastic_result, "fre_px", fre_elastic)
            return elastic_result
        warnings.warn(f"the elastic step moved the matched structures apart (residual {fre:.2f} -> {fre_elastic:.2f} px); "
                      "kept the affine transform", RuntimeWarning, stacklevel=2)
    return RegistrationResult(fine, rot_deg, scale, int(inliers.sum()), fre, tre, name, method, None)
