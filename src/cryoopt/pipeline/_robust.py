"""Robust location and scale (median, MAD) of an image, from a regular subsample.

The pipeline takes medians of the same few images a dozen times per section; on
large images the sort dominates. The median of ``n`` pixels has a standard error
of about ``1.25 sigma / sqrt(n)``, so ``n = 16384`` pixels (0.01 sigma) is far
inside every threshold used here (3-6 robust sigmas). The subsample is a flat
stride through the raveled image with an odd step, so successive rows start at
different columns and a column-periodic pattern (knife marks) cannot alias.
"""

from __future__ import annotations

import numpy as np

#: pixels a median is taken over at most
MAX_SAMPLES = 16384
#: MAD -> standard deviation of a normal distribution
MAD_TO_SIGMA = 1.4826


def subsample(values: np.ndarray, max_samples: int = MAX_SAMPLES) -> np.ndarray:
    """At most ``max_samples`` values of ``values`` on a regular flat stride (all of them if fewer)."""
    flat = np.asarray(values).ravel()
    if flat.size <= max_samples:
        return flat
    step = -(-flat.size // max_samples)
    step += 1 - step % 2  # odd: rows of even width start on alternating columns
    return flat[::step]


def median_sigma(values: np.ndarray, max_samples: int = MAX_SAMPLES) -> tuple[float, float]:
    """Median and robust sigma (``1.4826 * MAD``) of ``values``; sigma may be 0 for flat data."""
    sample = subsample(values, max_samples)
    med = float(np.median(sample))
    return med, MAD_TO_SIGMA * float(np.median(np.abs(sample - med)))


def location_scale(values: np.ndarray, max_samples: int = MAX_SAMPLES) -> tuple[float, float]:
    """Median and a positive robust sigma: ``1.4826 * MAD``, else the standard deviation
    (more than half the values equal), else 1 (constant data)."""
    med, sigma = median_sigma(values, max_samples)
    if sigma <= 0:
        sigma = float(subsample(values, max_samples).std()) or 1.0
    return med, sigma
