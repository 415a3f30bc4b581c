"""Image-level steps shared by the coarse hypotheses and the checks: contrast-sign-independent
feature images, Fourier-Mellin rotation and scale, normalised cross-correlation and its z-score
against shifted copies, and the structure (top-hat) image.

Part of :mod:`cryoopt.pipeline.registration`, whose docstring describes the method step by step.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi


#: smallest Gaussian (working pixels) of the feature images
MIN_FEATURE_SIGMA_PX = 2.0


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
