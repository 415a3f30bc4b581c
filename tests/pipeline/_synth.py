"""Synthetic images with known answers for the pipeline tests (no simulator needed)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def bandlimited_noise(n: int, cutoff: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise ideally low-passed to ``cutoff`` cycles/px (unit variance, periodic)."""
    f = np.fft.fft2(rng.normal(size=(n, n)))
    k = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    f[k > cutoff] = 0
    img = np.fft.ifft2(f).real
    return img / img.std()


def blob_scene(shape: tuple[int, int], n_blobs: int, rng: np.random.Generator, *, radius: tuple[float, float] = (4, 9)) -> tuple[np.ndarray, np.ndarray]:
    """Float image in [0, 1] with ``n_blobs`` smooth discs and their centres (row, col)."""
    img = np.zeros(shape)
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    centres = []
    margin = 3 * radius[1]
    while len(centres) < n_blobs:
        c = rng.uniform(margin, np.array(shape) - margin)
        if centres and np.min(np.hypot(*(np.array(centres) - c).T)) < 4 * radius[1]:
            continue
        centres.append(c)
        r = rng.uniform(*radius)
        img[(rr - c[0]) ** 2 + (cc - c[1]) ** 2 <= r * r] = rng.uniform(0.6, 1.0)
    return ndi.gaussian_filter(img, 1.0), np.array(centres)
