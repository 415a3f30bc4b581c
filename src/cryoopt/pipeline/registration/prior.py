"""Registration near a stage prior (:func:`~cryoopt.pipeline.registration.register_near_prior`):
the EM field searched within the stage's relocation uncertainty around where the prior puts it.

Part of :mod:`cryoopt.pipeline.registration`, whose docstring describes the method step by step.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from cryoopt.exceptions import EvaluationError, RegistrationError
from cryoopt.pipeline._validate import check_image
from cryoopt.pipeline.preprocess import block_mean
from cryoopt.pipeline.registration.hypotheses import _mat
from cryoopt.pipeline.registration.result import RegistrationResult


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
