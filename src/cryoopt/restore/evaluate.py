"""Image-quality metrics against ground truth and the classical baselines.

* PSNR and SSIM from :mod:`skimage.metrics` with the clean image's range as ``data_range``.
* FRC resolution from :func:`cryoopt.pipeline.metrics.fourier_ring_correlation`,
  computed between an image and the ground-truth clean image (two-image FRC, 1/7
  threshold, pixels): the finest period still correlated with the truth. Smaller
  is better; ``inf`` when nothing correlates.
* Baselines: non-local means (:func:`skimage.restoration.denoise_nl_means`, noise
  sigma from :func:`estimate_noise_sigma`), bilateral
  (:func:`skimage.restoration.denoise_bilateral`) and Richardson-Lucy deconvolution
  (:func:`skimage.restoration.richardson_lucy`) for the cross-microscope task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from cryoopt.restore._image import Normalization, as_image

__all__ = ["BASELINES", "bilateral", "estimate_noise_sigma", "image_quality", "nl_means", "richardson_lucy", "summarize"]


def image_quality(image: np.ndarray, clean: np.ndarray, *, frc: bool = True) -> dict[str, float]:
    """``{"psnr_db", "ssim", "frc_px"}`` of ``image`` against the ground truth ``clean`` (stacks: SSIM and FRC per plane, averaged)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from cryoopt.pipeline.metrics import fourier_ring_correlation

    img, ref = as_image(image, ndim=(2, 3)), as_image(clean, ndim=(2, 3))
    rng = float(ref.max() - ref.min()) or 1.0
    with np.errstate(divide="ignore"):  # identical images: PSNR = inf
        psnr = float(peak_signal_noise_ratio(ref, img, data_range=rng))
    out = {
        "psnr_db": psnr,
        "ssim": float(np.mean([structural_similarity(r, i, data_range=rng, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
                               for r, i in ([(ref, img)] if img.ndim == 2 else zip(ref, img))])),
    }
    if frc:
        planes = [(img, ref)] if img.ndim == 2 else list(zip(img, ref))
        vals = []
        for a, b in planes:
            try:
                vals.append(fourier_ring_correlation(a, b).resolution)
            except Exception:  # constant plane: no correlation measurable
                vals.append(np.inf)
        out["frc_px"] = float(np.mean(vals))
    return out


def estimate_noise_sigma(image: np.ndarray) -> float:
    r"""Gaussian noise sigma by Immerkaer (1996, CVIU 64:300): ``sqrt(pi/2) / (6 (W-2)(H-2)) sum |I * M|``.

    ``M = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]]`` cancels smooth structure; used
    because skimage's wavelet estimator needs PyWavelets, which is not a dependency.
    """
    from scipy.signal import convolve2d

    img = as_image(image, min_size=3).astype(np.float64)
    m = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], float)
    h, w = img.shape
    return float(np.sqrt(np.pi / 2) * np.abs(convolve2d(img, m, mode="valid")).sum() / (6.0 * (w - 2) * (h - 2)))


def _normalised(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def run(image: np.ndarray) -> np.ndarray:
        img = as_image(image)
        norm = Normalization.from_image(img)
        return norm.inverse(fn(np.clip(norm(img), -0.5, 1.5)))

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


@_normalised
def nl_means(image: np.ndarray) -> np.ndarray:
    """Non-local means, patch 5, distance 6, ``h = 0.8 sigma`` (skimage's recommended fast mode)."""
    from skimage.restoration import denoise_nl_means

    sigma = estimate_noise_sigma(image)
    return denoise_nl_means(image, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True)


@_normalised
def bilateral(image: np.ndarray) -> np.ndarray:
    """Bilateral filter, ``sigma_color = 2 sigma_noise``, ``sigma_spatial = 2`` px."""
    from skimage.restoration import denoise_bilateral

    sigma = estimate_noise_sigma(image)
    shift = float(image.min())
    return denoise_bilateral(image - shift, sigma_color=max(2.0 * sigma, 1e-3), sigma_spatial=2.0) + shift


def richardson_lucy(image: np.ndarray, *, sigma_px: float, num_iter: int = 20) -> np.ndarray:
    """Richardson-Lucy deconvolution with a Gaussian PSF of ``sigma_px`` (image or stack, per plane)."""
    from skimage.restoration import richardson_lucy as rl

    img = as_image(image, ndim=(2, 3))
    r = int(np.ceil(4 * sigma_px))
    ax = np.arange(-r, r + 1)
    psf = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma_px**2))
    psf /= psf.sum()
    planes = [img] if img.ndim == 2 else list(img)
    out = []
    for p in planes:
        lo = float(p.min())
        scale = float(p.max() - lo) or 1.0
        out.append(rl((p - lo) / scale + 1e-3, psf, num_iter=num_iter, clip=False) * scale + lo)
    return np.asarray(out[0] if img.ndim == 2 else np.stack(out), np.float32)


#: Classical denoisers compared with the artifact-correction network.
BASELINES: Mapping[str, Callable[[np.ndarray], np.ndarray]] = {"nl_means": nl_means, "bilateral": bilateral}


def summarize(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (``ddof=1``) of per-seed values."""
    a = np.asarray(values, float)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if a.size > 1 else 0.0, "n": int(a.size)}
