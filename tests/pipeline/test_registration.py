"""LM-EM registration under known random similarity/affine transforms, different contrast."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.transform import warp

from cryoopt.exceptions import EvaluationError
from cryoopt.pipeline.registration import register_lm_em, target_registration_error

from ._synth import blob_scene

N = 384


def _pair(seed: int, *, affine: bool, lm_scale: float = 2.0):
    """EM scene, and an LM view of it under a known LM->EM transform M (coarser pixels,
    blur, inverted non-linear contrast, different noise)."""
    rng = np.random.default_rng(seed)
    scene, _ = blob_scene((N, N), 24, rng)
    rot = rng.uniform(-math.pi, math.pi)
    m = np.array([[math.cos(rot), -math.sin(rot), 0], [math.sin(rot), math.cos(rot), 0], [0, 0, 1.0]])
    m[:2, :2] *= lm_scale
    if affine:
        shear = np.eye(3)
        shear[0, 1] = rng.uniform(-0.05, 0.05)
        shear[1, 1] = rng.uniform(0.95, 1.05)
        m = m @ shear
    nl = int(N / lm_scale)
    c = np.full(2, (nl - 1) / 2)
    m[:2, 2] = np.full(2, (N - 1) / 2) + rng.uniform(-15, 15, 2) - m[:2, :2] @ c
    lm = ndi.gaussian_filter(warp(scene, m, output_shape=(nl, nl), order=1), 1.0)
    lm = 1000 * (1 - lm) ** 1.5 + rng.normal(0, 20, lm.shape)
    em = (200 * scene + 50 + rng.normal(0, 5, scene.shape)).clip(0, 255).astype(np.uint8)
    return lm, em, m, nl


def _rms_error(result, m, nl):
    gy, gx = np.mgrid[0:nl:8, 0:nl:8]
    p = np.column_stack([gx.ravel(), gy.ravel()]).astype(float)
    true = p @ m[:2, :2].T + m[:2, 2]
    inside = ((true >= 0) & (true < N)).all(axis=1)
    return float(np.sqrt(np.mean(np.sum((true - result.apply(p))[inside] ** 2, axis=1))))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("affine", [False, True])
def test_subpixel_registration_under_known_random_transform(seed, affine):
    lm, em, m, nl = _pair(seed, affine=affine)
    r = register_lm_em(lm, em, lm_pixel_size_nm=20.0, em_pixel_size_nm=10.0)
    err = _rms_error(r, m, nl)
    assert r.model == "affine" and r.n_matches >= 10
    assert err < 0.5  # sub-pixel (EM pixels) over the whole overlap
    # the reported TRE is an honest estimate of the true error (same order of magnitude)
    assert 0.2 * err < r.tre_px < 5 * err + 0.05


@pytest.mark.parametrize("seed", [0, 1])
def test_scale_is_estimated_when_pixel_sizes_are_unknown(seed):
    lm, em, m, nl = _pair(seed + 10, affine=False)
    r = register_lm_em(lm, em)
    assert _rms_error(r, m, nl) < 0.5
    coarse = register_lm_em(lm, em, lm_pixel_size_nm=20.0, em_pixel_size_nm=10.0, model="coarse")
    assert coarse.model == "coarse" and math.isnan(coarse.tre_px)
    assert _rms_error(coarse, m, nl) < 3.0  # phase correlation alone: within a few pixels
    assert abs((coarse.rotation_deg - math.degrees(math.atan2(m[1, 0], m[0, 0]))) % 360) < 2 or abs(
        (coarse.rotation_deg - math.degrees(math.atan2(m[1, 0], m[0, 0]))) % 360 - 360
    ) < 2


def test_warp_puts_lm_on_em_grid():
    lm, em, m, nl = _pair(0, affine=False)
    r = register_lm_em(lm, em, lm_pixel_size_nm=20.0, em_pixel_size_nm=10.0)
    warped = r.warp(lm, em.shape)
    valid = r.warp(np.ones(lm.shape, bool), em.shape)
    corr = np.corrcoef(warped[valid], em[valid].astype(float))[0, 1]
    assert corr < -0.8  # inverted contrast, same structures


def test_tre_formula_on_exact_points():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (20, 2))
    mat = np.array([[1.1, 0.1, 3], [-0.05, 0.9, -2], [0, 0, 1]])
    dst = src @ mat[:2, :2].T + mat[:2, 2]
    fre, tre = target_registration_error(src, dst, mat, (100, 100))
    assert fre == pytest.approx(0, abs=1e-12) and tre == pytest.approx(0, abs=1e-12)
    assert math.isnan(target_registration_error(src[:3], dst[:3], mat, (100, 100))[1])


def test_bad_inputs():
    lm, em, _, _ = _pair(0, affine=False)
    with pytest.raises(EvaluationError, match="constant"):
        register_lm_em(np.ones_like(lm), em)
    with pytest.raises(EvaluationError, match="NaN"):
        register_lm_em(np.full_like(lm, np.nan), em)
    with pytest.raises(EvaluationError, match="positive"):
        register_lm_em(lm, em, lm_pixel_size_nm=-1, em_pixel_size_nm=1)
    with pytest.raises(EvaluationError, match="model"):
        register_lm_em(lm, em, model="elastic")
