"""Tiny synthetic pairs for fast restoration tests (no simulator needed)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from cryoopt.restore import ImagePairs


def blobs(n: int, size: int = 32, *, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([ndi.gaussian_filter(rng.random((size, size)), 2.0) for _ in range(n)]).astype(np.float32)


def noisy_pairs(n: int = 6, size: int = 32, *, sigma: float = 0.05, seed: int = 0) -> ImagePairs:
    clean = blobs(n, size, seed=seed)
    clean = (clean - clean.min()) / np.ptp(clean)
    rng = np.random.default_rng(seed + 1)
    return ImagePairs(clean + sigma * rng.normal(size=clean.shape).astype(np.float32), clean)
