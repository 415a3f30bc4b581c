"""The block path's own hypotheses: Fourier-Mellin between the structure images."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import ellipse
from skimage.transform import AffineTransform, warp


def test_structure_fourier_mellin_recovers_a_similarity_from_a_labelled_subset():
    """An LM showing every other rod of the EM (blurred, scale 2, rotated 0.5 rad, shifted): the
    Fourier-Mellin hypothesis between the structure images is within a few pixels over the LM
    field, close enough for the blocks' +-24 px search to take it from there."""
    from cryoopt.pipeline.registration.block_path import _structure_fourier_mellin

    rng = np.random.default_rng(5)
    truth = np.array([[2.0 * math.cos(0.5), -2.0 * math.sin(0.5), 0.0], [2.0 * math.sin(0.5), 2.0 * math.cos(0.5), 0.0],
                      [0, 0, 1.0]])
    truth[:2, 2] = np.array([160.0, 150.0]) - truth[:2, :2] @ np.array([63.5, 63.5])  # LM centre near EM centre
    em_s, labelled = np.zeros((320, 320)), np.zeros((320, 320))
    for k in range(120):
        c, theta = rng.uniform(10, 310, 2), rng.uniform(0, math.pi)
        rr, cc = ellipse(c[1], c[0], 3.0, 10.0, shape=em_s.shape, rotation=theta)
        em_s[rr, cc] = 1.0
        if k % 2 == 0:
            labelled[rr, cc] = 1.0
    lm_s = warp(ndi.gaussian_filter(labelled, 2.0), AffineTransform(matrix=truth), output_shape=(128, 128), order=1)
    em_s = em_s + 0.05 * rng.standard_normal(em_s.shape)
    lm_s = lm_s + 0.02 * rng.standard_normal(lm_s.shape)
    m = _structure_fourier_mellin(lm_s, em_s)
    g = np.stack(np.meshgrid(np.arange(0, 128, 16.0), np.arange(0, 128, 16.0)), -1).reshape(-1, 2)
    err = g @ (m[:2, :2] - truth[:2, :2]).T + (m[:2, 2] - truth[:2, 2])
    assert float(np.sqrt(np.mean(np.sum(err**2, axis=1)))) < 5.0
