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


#: Pixel sizes of :func:`clem_pair` at ``n = 512`` (EM), nm: nuclei 2.9 um, mitochondria 0.4-0.6 um across.
CLEM_EM_PX, CLEM_LM_PX = 40.0, 160.0


def clem_pair(seed: int, *, n: int = 512, lm_scale: float = 4.0, label_on_target: bool = True):
    """A synthetic CLEM pair with known answers.

    EM (uint16, :data:`CLEM_EM_PX` nm px at ``n = 512``): a strip of bright resin along
    the left edge, the rest cytoplasm, 3 darker nuclei, ~40 small dark mitochondria in
    the cytoplasm, noise. LM (float, ``lm_scale`` times coarser): fluorescent label on
    the mitochondria (``label_on_target``) or on random off-target spots, seen under a
    known rotation/shift with blur and noise. Returns ``(lm, em, M, mito_mask)`` with
    ``M`` the LM->EM (x, y) matrix.
    """
    from skimage.transform import warp

    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[:n, :n]
    dens = np.where(cc > 0.08 * n, 0.25, 0.0)  # cytoplasm, resin at the left edge
    nuclei = np.zeros((n, n), bool)
    for _ in range(3):
        c = rng.uniform(0.2 * n, 0.8 * n, 2)
        nuclei |= (rr - c[0]) ** 2 + (cc - c[1]) ** 2 <= (0.07 * n) ** 2
    # nuclei as EM shows them: denser than cytoplasm, with granular chromatin (~2 px grains)
    grain = ndi.gaussian_filter(np.random.default_rng(seed + 1000).standard_normal((n, n)), 2.0)
    dens[nuclei] = 0.6 + 0.1 * (grain / grain.std())[nuclei]
    mito = np.zeros((n, n), bool)
    spots = np.zeros((n, n))
    placed = 0
    while placed < 40:
        c = rng.uniform(20, n - 20, 2)
        r = rng.uniform(5, 8)
        disk = (rr - c[0]) ** 2 + (cc - c[1]) ** 2 <= r * r
        if (dens[disk] != 0.25).any() or (nuclei & disk).any() or (ndi.binary_dilation(mito, iterations=6) & disk).any():
            continue
        mito |= disk
        placed += 1
        if label_on_target:
            spots[disk] = 1.0
    if not label_on_target:
        free = np.argwhere(~ndi.binary_dilation(mito | (dens > 0.3), iterations=10) & (cc > 0.1 * n))
        for c in free[rng.choice(len(free), 40, replace=False)]:
            spots[(rr - c[0]) ** 2 + (cc - c[1]) ** 2 <= 36] = 1.0
    dens[mito] = 0.5
    em = 30000 * (1 - ndi.gaussian_filter(dens, 1.0)) + rng.normal(0, 1200, (n, n))
    em = em.clip(0, 65535).astype(np.uint16)
    rot = rng.uniform(-np.pi, np.pi)
    m = np.array([[np.cos(rot), -np.sin(rot), 0], [np.sin(rot), np.cos(rot), 0], [0, 0, 1.0]])
    m[:2, :2] *= lm_scale
    nl = int(n / lm_scale) + 16
    m[:2, 2] = np.full(2, (n - 1) / 2) + rng.uniform(-10, 10, 2) - m[:2, :2] @ np.full(2, (nl - 1) / 2)
    lm = warp(ndi.gaussian_filter(spots, 2.0), m, output_shape=(nl, nl), order=1)
    lm = 100 + 2000 * ndi.gaussian_filter(lm, 0.7) + rng.normal(0, 20, lm.shape)
    return lm, em, m, mito
