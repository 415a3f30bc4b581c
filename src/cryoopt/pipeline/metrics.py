"""Image-quality metrics: CNR, SNR, Fourier ring correlation, sharpness, artifacts.

Arrays in, numbers out, in the style of :mod:`skimage.metrics`: images are
positional, every option is keyword-only, and bad input raises
:class:`~cryoopt.exceptions.EvaluationError` (see :mod:`._validate`).

Definitions (all written out in each function's docstring):

* CNR/SNR: Welvaert & Rosseel (2013), "On the definition of signal-to-noise ratio
  and contrast-to-noise ratio for fMRI data", PLoS ONE 8(11): e77089.
* FRC: Saxton & Baumeister (1982) J. Microsc. 127:127; thresholds from
  van Heel & Schatz (2005) J. Struct. Biol. 151:250 (1/7 and half-bit);
  single-image FRC by sub-sampling: Koho et al. (2019) Nat. Commun. 10:3103.
* Sharpness: 1 - blur effect, Crete-Roffet et al. (2007) Proc. SPIE 6492,
  via :func:`skimage.measure.blur_effect`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from cryoopt.exceptions import EvaluationError
from cryoopt.pipeline._robust import median_sigma
from cryoopt.pipeline._validate import check_image, check_mask, check_same_shape

__all__ = [
    "FRCResult",
    "SectionDefects",
    "artifact_fraction",
    "checkerboard_split",
    "contrast_to_noise_ratio",
    "local_contrast_to_noise_ratio",
    "fourier_ring_correlation",
    "frc_resolution",
    "halfbit_threshold",
    "section_defects",
    "sharpness",
    "signal_to_noise_ratio",
]

ONE_SEVENTH = 1.0 / 7.0


# -- CNR / SNR ------------------------------------------------------------------
def _region_stats(image: np.ndarray, signal_mask: object, background_mask: object) -> tuple[float, float, float, float, int, int]:
    img = check_image(image)
    sig = check_mask(signal_mask, img.shape, name="signal_mask", min_pixels=2)
    bg = check_mask(background_mask, img.shape, name="background_mask", min_pixels=2)
    if np.any(sig & bg):
        raise EvaluationError("signal_mask and background_mask overlap; pass disjoint regions")
    s, b = img[sig], img[bg]
    return float(s.mean()), float(b.mean()), float(s.std(ddof=1)), float(b.std(ddof=1)), s.size, b.size


def contrast_to_noise_ratio(
    image: np.ndarray,
    signal_mask: np.ndarray,
    background_mask: np.ndarray,
    *,
    noise: str = "background",
    return_uncertainty: bool = False,
) -> float | tuple[float, float]:
    r"""Contrast-to-noise ratio of a signal region against a background region.

    .. math::

        \mathrm{CNR} = \frac{|\mu_S - \mu_B|}{\sigma_N}

    with :math:`\sigma_N = \sigma_B` (``noise="background"``, the usual imaging
    definition) or :math:`\sigma_N = \sqrt{\sigma_S^2 + \sigma_B^2}`
    (``noise="combined"``); sample standard deviations (ddof=1). Reference:
    Welvaert & Rosseel (2013), PLoS ONE 8(11): e77089, Table 1.

    Args:
        image: 2-D image, any real dtype.
        signal_mask, background_mask: disjoint boolean masks, >= 2 pixels each.
        noise: ``"background"`` or ``"combined"``.
        return_uncertainty: also return the 1-sigma standard error from the delta
            method, assuming independent pixels:
            :math:`\mathrm{se}^2 = (\sigma_S^2/n_S + \sigma_B^2/n_B)/\sigma_N^2 + \mathrm{CNR}^2/(2(n_B-1))`.

    Returns:
        The CNR (dimensionless), or ``(cnr, se)``.

    Raises:
        EvaluationError: bad image/masks, or zero noise (constant regions), where
            the CNR is undefined.
    """
    mu_s, mu_b, sd_s, sd_b, n_s, n_b = _region_stats(image, signal_mask, background_mask)
    if noise == "background":
        sigma = sd_b
    elif noise == "combined":
        sigma = math.hypot(sd_s, sd_b)
    else:
        raise EvaluationError(f"noise must be 'background' or 'combined', got {noise!r}")
    if sigma <= 0:
        raise EvaluationError("the noise region is constant (sigma = 0), so the CNR is undefined; check the masks")
    cnr = abs(mu_s - mu_b) / sigma
    if not return_uncertainty:
        return cnr
    var = (sd_s**2 / n_s + sd_b**2 / n_b) / sigma**2 + cnr**2 / (2.0 * (n_b - 1))
    return cnr, math.sqrt(var)


def local_contrast_to_noise_ratio(
    image: np.ndarray,
    signal_mask: np.ndarray,
    *,
    exclude_mask: np.ndarray | None = None,
    width_px: float = 16.0,
    gap_px: float = 0.0,
    min_background_px: int = 8,
    return_uncertainty: bool = False,
) -> float | tuple[float, float]:
    r"""Contrast-to-noise ratio of a structure against its own surroundings.

    The background is the band of pixels around the structure: farther than ``gap_px``
    and at most ``gap_px + width_px`` from it (Euclidean distance), belonging to no
    structure or artifact in ``exclude_mask``. Then, as
    :func:`contrast_to_noise_ratio` (``noise="background"``),

    .. math:: \mathrm{CNR} = |\mu_S - \mu_B| / \sigma_B

    (Welvaert & Rosseel 2013). Unlike a field-wide background, the band exists wherever
    the structure has an edge in the field, so a field that lies mostly inside a cell
    still has a contrast; it measures the contrast where the structure meets what
    surrounds it, the contrast an observer uses to see it (an annulus background, as in
    the CNR of lesions in medical imaging).

    Args:
        image: 2-D image, any real dtype.
        signal_mask: the structure, >= 2 pixels.
        exclude_mask: pixels that may not count as background (other structures, artifacts).
        width_px, gap_px: the band, in pixels.
        min_background_px: fewest background pixels for a measurement.
        return_uncertainty: also return the delta-method standard error (as
            :func:`contrast_to_noise_ratio`).

    Returns:
        The CNR (dimensionless), or ``(cnr, se)``.

    Raises:
        EvaluationError: bad input, no structure, or no background around it (the
            structure fills the field or is surrounded only by excluded pixels): the
            section has no measurement; or a constant background.
    """
    img = check_image(image)
    sig = check_mask(signal_mask, img.shape, name="signal_mask", min_pixels=2)
    excl = np.zeros(img.shape, bool) if exclude_mask is None else check_mask(exclude_mask, img.shape, name="exclude_mask", min_pixels=0)
    if not (width_px > 0 and gap_px >= 0):
        raise EvaluationError(f"width_px must be > 0 and gap_px >= 0, got {width_px}, {gap_px}")
    dist = ndi.distance_transform_edt(~sig)
    band = (dist > gap_px) & (dist <= gap_px + width_px) & ~excl & ~sig
    if np.count_nonzero(band) < max(int(min_background_px), 2):
        raise EvaluationError(
            f"no background around the structure ({np.count_nonzero(band)} band pixels < {min_background_px}): "
            "the structure fills the field or is surrounded by excluded pixels; there is no measurement"
        )
    return contrast_to_noise_ratio(img, sig, band, return_uncertainty=return_uncertainty)


def signal_to_noise_ratio(
    image: np.ndarray,
    signal_mask: np.ndarray,
    background_mask: np.ndarray,
    *,
    subtract_background: bool = False,
) -> float:
    r"""Signal-to-noise ratio of a region, noise measured in a background region.

    .. math::

        \mathrm{SNR} = \frac{\mu_S}{\sigma_B}
        \quad\text{or, with ``subtract_background``,}\quad
        \frac{\mu_S - \mu_B}{\sigma_B}

    Reference: Welvaert & Rosseel (2013), PLoS ONE 8(11): e77089, Table 1.
    The plain form is only meaningful for images whose zero is "no signal"
    (e.g. dark-subtracted fluorescence); pass ``subtract_background=True`` otherwise.

    Raises:
        EvaluationError: bad input or a constant background (sigma = 0).
    """
    mu_s, mu_b, _, sd_b, _, _ = _region_stats(image, signal_mask, background_mask)
    if sd_b <= 0:
        raise EvaluationError("the background region is constant (sigma = 0), so the SNR is undefined")
    return ((mu_s - mu_b) if subtract_background else mu_s) / sd_b


# -- Fourier ring correlation ---------------------------------------------------
def halfbit_threshold(n_pixels: np.ndarray) -> np.ndarray:
    r"""Half-bit FRC threshold of van Heel & Schatz (2005), eq. (17).

    .. math:: T_{1/2}(n) = \frac{0.2071 + 1.9102/\sqrt{n}}{1.2071 + 0.9102/\sqrt{n}}

    with ``n`` the number of Fourier pixels in the ring.
    """
    inv = 1.0 / np.sqrt(np.maximum(np.asarray(n_pixels, dtype=float), 1.0))
    return (0.2071 + 1.9102 * inv) / (1.2071 + 0.9102 * inv)


@dataclass(frozen=True)
class FRCResult:
    """A Fourier ring correlation curve and its resolution estimates.

    Attributes:
        frequency: ring centre spatial frequency, cycles per ``unit`` (shape `n_rings`).
        frc: correlation per ring, in [-1, 1].
        n_pixels: Fourier pixels per ring (full plane).
        threshold_halfbit: van Heel & Schatz half-bit threshold per ring.
        resolution: 1/(frequency where FRC first drops below 1/7), in ``unit``.
        resolution_halfbit: same for the half-bit threshold.
        unit: ``"nm"`` when ``pixel_size_nm`` was given, else ``"px"``.

    A resolution of ``inf`` means the curve is below threshold from the first
    ring (no correlated signal); if it never drops below, the resolution is the
    Nyquist limit (two pixels) and ``nyquist_limited`` is True.
    """

    frequency: np.ndarray
    frc: np.ndarray
    n_pixels: np.ndarray
    threshold_halfbit: np.ndarray
    resolution: float
    resolution_halfbit: float
    unit: str
    nyquist_limited: bool


def checkerboard_split(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split an image into its four 2x2 sub-lattices ``(ee, oo, eo, oe)``.

    ``ee = image[0::2, 0::2]``, ``oo = image[1::2, 1::2]``, ``eo = image[0::2, 1::2]``,
    ``oe = image[1::2, 0::2]``, all cropped to a common even shape. With
    pixel-independent noise, ``(ee, oo)`` and ``(eo, oe)`` are two image pairs
    with independent noise (Koho et al. 2019, Nat. Commun. 10:3103).
    """
    img = check_image(image, min_size=8)
    h, w = (img.shape[0] // 2), (img.shape[1] // 2)
    return img[0 : 2 * h : 2, 0 : 2 * w : 2], img[1 : 2 * h : 2, 1 : 2 * w : 2], img[0 : 2 * h : 2, 1 : 2 * w : 2], img[1 : 2 * h : 2, 0 : 2 * w : 2]


def _ring_sums(
    a: np.ndarray, b: np.ndarray, *, window: str, shift: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-ring sums of Re(F_a F_b*), |F_a|^2, |F_b|^2 and pixel counts (full plane)."""
    h, w = a.shape
    a = a - a.mean()
    b = b - b.mean()
    if window == "hann":
        win = np.outer(np.hanning(h), np.hanning(w))
        a, b = a * win, b * win
    elif window != "none":
        raise EvaluationError(f"window must be 'hann' or 'none', got {window!r}")
    fa, fb = np.fft.rfft2(a), np.fft.rfft2(b)
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.rfftfreq(w)[None, :]
    if shift is not None:
        # b(x) = a(x + s)  =>  F_b = F_a exp(+2 pi i k.s); undo the sub-lattice offset.
        fb = fb * np.exp(-2j * np.pi * (ky * shift[0] + kx * shift[1]))
    n = min(h, w)
    radius = np.sqrt(ky**2 + kx**2) * n
    ring = np.rint(radius).astype(np.intp)
    n_rings = n // 2 + 1
    # rfft stores half the plane: columns other than 0 and w/2 stand for two pixels.
    weight = np.full(kx.shape, 2.0)
    weight[0, 0] = 1.0
    if w % 2 == 0:
        weight[0, -1] = 1.0
    weight = np.broadcast_to(weight, ring.shape)
    keep = ring < n_rings
    r = ring[keep]
    wt = weight[keep]
    cross = np.bincount(r, (fa * np.conj(fb)).real[keep] * wt, n_rings)
    pa = np.bincount(r, (np.abs(fa) ** 2)[keep] * wt, n_rings)
    pb = np.bincount(r, (np.abs(fb) ** 2)[keep] * wt, n_rings)
    count = np.bincount(r, wt, n_rings)
    return cross, pa, pb, count, n


def _first_crossing(freq: np.ndarray, curve: np.ndarray, threshold: np.ndarray) -> tuple[float, bool]:
    """Frequency where ``curve`` first falls below ``threshold`` (linear interpolation)."""
    diff = curve - threshold
    below = np.flatnonzero(diff[1:] < 0) + 1  # ring 0 is the mean, skip it
    if below.size == 0:
        return float(freq[-1]), True
    k = int(below[0])
    if k == 1:
        return 0.0, False
    d0, d1 = diff[k - 1], diff[k]
    t = d0 / (d0 - d1)
    return float(freq[k - 1] + t * (freq[k] - freq[k - 1])), False


def fourier_ring_correlation(
    image1: np.ndarray,
    image2: np.ndarray | None = None,
    *,
    pixel_size_nm: float | None = None,
    window: str = "hann",
) -> FRCResult:
    r"""Fourier ring correlation and resolution at the 1/7 and half-bit thresholds.

    .. math::

        \mathrm{FRC}(r) = \frac{\sum_{k \in r} \mathrm{Re}\,F_1(k) F_2^*(k)}
                              {\sqrt{\sum_{k \in r} |F_1(k)|^2 \sum_{k \in r} |F_2(k)|^2}}

    over rings ``r`` one Fourier pixel wide (Saxton & Baumeister 1982). Both images
    are mean-subtracted and, by default, Hann-windowed against edge leakage. The
    resolution is the inverse of the first frequency where the curve drops below
    the fixed 1/7 threshold or the half-bit threshold of van Heel & Schatz (2005).

    With ``image2=None`` the single-image method of Koho et al. (2019) is used:
    the image is split into its checkerboard sub-lattices (``ee``/``oo`` and
    ``eo``/``oe``), the known half-pixel offset of each pair is removed by the
    Fourier shift theorem, the two pair curves are averaged, and frequencies are
    rescaled to the original pixel. The split aliases frequencies above a quarter
    of the sampling rate; the estimate is meaningful for images sampled at or
    above Nyquist of their content (usual in microscopy) and noise that is
    independent between neighbouring pixels.

    Args:
        image1, image2: 2-D images of equal shape with independent noise
            realisations of the same object.
        pixel_size_nm: pixel size; resolutions are in nm when given, else pixels.
        window: ``"hann"`` (default) or ``"none"``.

    Returns:
        :class:`FRCResult`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> obj = rng.normal(size=(128, 128))
        >>> res = fourier_ring_correlation(obj + rng.normal(size=obj.shape), obj + rng.normal(size=obj.shape))
        >>> res.nyquist_limited
        True
    """
    if pixel_size_nm is not None and not (np.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise EvaluationError(f"pixel_size_nm must be positive, got {pixel_size_nm!r}")
    scale = 1.0 if pixel_size_nm is None else float(pixel_size_nm)
    if image2 is None:
        ee, oo, eo, oe = checkerboard_split(image1)
        c1, a1, b1, count, n = _ring_sums(ee, oo, window=window, shift=(0.5, 0.5))
        c2, a2, b2, _, _ = _ring_sums(eo, oe, window=window, shift=(0.5, -0.5))
        with np.errstate(invalid="ignore", divide="ignore"):
            frc = 0.5 * (c1 / np.sqrt(a1 * b1) + c2 / np.sqrt(a2 * b2))
        # sub-lattice pixel is 2 original pixels; counts are those of one pair
        freq = np.arange(frc.size) / n / (2.0 * scale)
    else:
        a = check_image(image1, name="image1", min_size=8)
        b = check_image(image2, name="image2", min_size=8)
        check_same_shape(a, b, names=("image1", "image2"))
        cross, pa, pb, count, n = _ring_sums(a, b, window=window, shift=None)
        with np.errstate(invalid="ignore", divide="ignore"):
            frc = cross / np.sqrt(pa * pb)
        freq = np.arange(frc.size) / n / scale
    if not np.isfinite(frc[1:]).all():
        raise EvaluationError("an image has no variation (constant after mean subtraction); FRC is undefined")
    frc[0] = 1.0
    thr_hb = halfbit_threshold(count)
    f7, nyq7 = _first_crossing(freq, frc, np.full_like(frc, ONE_SEVENTH))
    fhb, nyqhb = _first_crossing(freq, frc, thr_hb)
    return FRCResult(
        frequency=freq,
        frc=frc,
        n_pixels=count,
        threshold_halfbit=thr_hb,
        resolution=math.inf if f7 <= 0 else 1.0 / f7,
        resolution_halfbit=math.inf if fhb <= 0 else 1.0 / fhb,
        unit="px" if pixel_size_nm is None else "nm",
        nyquist_limited=nyq7,
    )


def frc_resolution(
    image1: np.ndarray,
    image2: np.ndarray | None = None,
    *,
    pixel_size_nm: float | None = None,
    threshold: str = "1/7",
) -> float:
    """Resolution (nm, or px without ``pixel_size_nm``) from :func:`fourier_ring_correlation`.

    ``threshold`` is ``"1/7"`` or ``"halfbit"``.
    """
    res = fourier_ring_correlation(image1, image2, pixel_size_nm=pixel_size_nm)
    if threshold == "1/7":
        return res.resolution
    if threshold == "halfbit":
        return res.resolution_halfbit
    raise EvaluationError(f"threshold must be '1/7' or 'halfbit', got {threshold!r}")


# -- sharpness ------------------------------------------------------------------
def sharpness(image: np.ndarray, *, crop_px: int | None = 128, h_size: int = 11) -> float:
    """Sharpness in [0, 1] as ``1 - blur_effect`` (1 = sharp, 0 = fully blurred).

    ``blur_effect`` is the no-reference perceptual blur metric of Crete-Roffet
    et al. (2007), "The blur effect: perception and estimation with a new
    no-reference perceptual blur metric", Proc. SPIE 6492, computed by
    :func:`skimage.measure.blur_effect`. It is invariant to affine intensity
    changes. For speed it is computed on the central ``crop_px`` square
    (``crop_px=None`` uses the whole image).

    Raises:
        EvaluationError: bad input or a constant image (blur undefined).
    """
    from skimage.measure import blur_effect

    img = check_image(image, min_size=max(4, h_size))
    if crop_px is not None:
        h, w = img.shape
        ch, cw = min(h, crop_px), min(w, crop_px)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        img = img[y0 : y0 + ch, x0 : x0 + cw]
    if np.ptp(img) == 0:
        raise EvaluationError("image is constant; sharpness is undefined")
    with np.errstate(invalid="ignore", divide="ignore"):
        b = float(blur_effect(img, h_size=h_size))
    if not np.isfinite(b):
        raise EvaluationError("blur effect is undefined for this image (no gradients along an axis)")
    return float(np.clip(1.0 - b, 0.0, 1.0))


# -- artifacts and section defects -----------------------------------------------
def artifact_fraction(*masks: np.ndarray, valid_mask: np.ndarray | None = None) -> float:
    """Fraction of the (valid) field covered by the union of artifact ``masks``.

    Args:
        masks: boolean masks of one shape (charging, ice, cracks, ...).
        valid_mask: pixels that count as field of view (default: all).

    Returns:
        ``|union(masks) & valid| / |valid|`` in [0, 1].
    """
    if not masks:
        raise EvaluationError("pass at least one artifact mask")
    shape = np.asarray(masks[0]).shape
    union = np.zeros(shape, dtype=bool)
    for i, m in enumerate(masks):
        union |= check_mask(m, shape, name=f"masks[{i}]", min_pixels=0)
    valid = np.ones(shape, bool) if valid_mask is None else check_mask(valid_mask, shape, name="valid_mask")
    return float(np.count_nonzero(union & valid) / np.count_nonzero(valid))


@dataclass(frozen=True)
class SectionDefects:
    """Section defect indices of an EM image (see :func:`section_defects`)."""

    knife_mark_index: float
    chatter_index: float
    chatter_period_px: float
    crack_mask: np.ndarray

    @property
    def crack_fraction(self) -> float:
        return float(self.crack_mask.mean())


def _profile_power(profile: np.ndarray, n_avg: int, pixel_var: float) -> tuple[np.ndarray, float]:
    """Detrended profile and the noise variance expected in it from pixel noise."""
    trend = ndi.uniform_filter1d(profile, size=max(3, profile.size // 8), mode="reflect")
    return profile - trend, pixel_var / n_avg


def section_defects(
    image: np.ndarray,
    *,
    cutting_axis: int = 0,
    crack_mask: np.ndarray | None = None,
    bright_z: float = 3.0,
    min_crack_elongation: float = 4.0,
) -> SectionDefects:
    """Knife marks, chatter and cracks of an ultrathin section from its EM image.

    * Knife marks are streaks *along* the cutting direction (``cutting_axis``: 0 if
      the knife travels along rows' index, i.e. vertically). Their index is the
      variance of the detrended profile averaged along the cut, minus the variance
      pixel noise alone would leave in it, over the image variance (0 = none).
    * Chatter is a periodic thickness modulation *across* the cut, seen as bands
      along the cutting axis; its index is the largest periodogram line of the
      detrended profile across bands over the image variance (noise-corrected),
      and its period the matching wavelength in pixels.
    * Cracks/holes transmit the beam and are brighter than any material, the
      embedding included: elongated connected regions whose 3x3 mean lies
      ``bright_z`` noise sigmas of that mean (``sigma_pixel / 3``) above the
      brightest material (the 90th percentile of the 3x3 mean: cracks cover less than
      a tenth of a usable section), with major/minor axis ratio >= ``min_crack_elongation``.
      Pass ``crack_mask`` to use a known mask instead (e.g. simulator ground truth).

    Indices are heuristics for ranking sections, not calibrated physical units.
    """
    from skimage.measure import label, regionprops

    img = check_image(image, min_size=16)
    if cutting_axis not in (0, 1):
        raise EvaluationError(f"cutting_axis must be 0 or 1, got {cutting_axis!r}")
    var = float(img.var())
    if var == 0:
        raise EvaluationError("image is constant; section defects are undefined")
    # pixel noise estimate: MAD of the diagonal pixel difference / sqrt(2)
    pixel_var = median_sigma(img[1:, 1:] - img[:-1, :-1])[1] ** 2 / 2.0
    along = img.mean(axis=cutting_axis)  # one value per streak position
    across = img.mean(axis=1 - cutting_axis)  # one value per band position
    hp, noise = _profile_power(along, img.shape[cutting_axis], pixel_var)
    knife = max(0.0, float(hp.var()) - noise) / var
    hp2, noise2 = _profile_power(across, img.shape[1 - cutting_axis], pixel_var)
    spec = np.abs(np.fft.rfft(hp2 * np.hanning(hp2.size))) ** 2
    spec[:2] = 0.0
    k = int(np.argmax(spec))
    # Parseval: the Hann main lobe (5 bins) of a sinusoid of amplitude A holds
    # N * sum(w^2) * A^2 / 4, i.e. its variance A^2 / 2; white noise of variance v
    # adds v * sum(w^2) per bin.
    lobe = float(spec[max(k - 2, 0) : k + 3].sum())
    n_prof = hp2.size
    line_var = 2.0 * lobe / (n_prof * np.sum(np.hanning(n_prof) ** 2))
    chatter = max(0.0, line_var - 10.0 * noise2 / n_prof) / var
    period = hp2.size / k if k > 0 and chatter > 0 else math.inf
    if crack_mask is None:
        smooth = ndi.uniform_filter(img, 3)
        material = float(np.percentile(smooth, 90))
        sigma = max(math.sqrt(pixel_var), 1e-12)
        # smoothed to find the regions, raw pixels to keep their edges tight
        bright = (smooth > material + bright_z * sigma / 3.0) & (img > material)
        lab = label(bright)
        cracks = np.zeros(img.shape, bool)
        for rp in regionprops(lab):
            if rp.area >= 10 and rp.axis_minor_length > 0 and rp.axis_major_length / rp.axis_minor_length >= min_crack_elongation:
                cracks[tuple(rp.coords.T)] = True
    else:
        cracks = check_mask(crack_mask, img.shape, name="crack_mask", min_pixels=0)
    return SectionDefects(knife_mark_index=knife, chatter_index=chatter, chatter_period_px=float(period), crack_mask=cracks)
