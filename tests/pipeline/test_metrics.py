"""Metrics against analytic values: CNR/SNR of synthetic regions, FRC of band-limited pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from cryoopt.exceptions import EvaluationError
from cryoopt.pipeline.metrics import (
    artifact_fraction,
    checkerboard_split,
    contrast_to_noise_ratio,
    fourier_ring_correlation,
    frc_resolution,
    halfbit_threshold,
    local_contrast_to_noise_ratio,
    section_defects,
    sharpness,
    signal_to_noise_ratio,
)

from ._synth import bandlimited_noise

SEEDS = [0, 1, 2]


def _two_regions(rng, mu_s=120.0, mu_b=100.0, sd=5.0, shape=(200, 200)):
    img = rng.normal(mu_b, sd, size=shape)
    sig = np.zeros(shape, bool)
    sig[50:150, 50:150] = True
    img[sig] = rng.normal(mu_s, sd, size=int(sig.sum()))
    bg = np.zeros(shape, bool)
    bg[:30, :] = True
    return img, sig, bg


@pytest.mark.parametrize("seed", SEEDS)
def test_cnr_of_known_means_and_noise(seed):
    # Analytic: CNR = |120 - 100| / 5 = 4 (Welvaert & Rosseel 2013, Table 1, background noise);
    # combined noise: 20 / sqrt(25 + 25) = 2.828.
    rng = np.random.default_rng(seed)
    img, sig, bg = _two_regions(rng)
    cnr, se = contrast_to_noise_ratio(img, sig, bg, return_uncertainty=True)
    assert cnr == pytest.approx(4.0, abs=3.5 * se)
    assert 0.02 < se < 0.1
    assert contrast_to_noise_ratio(img, sig, bg, noise="combined") == pytest.approx(20 / math.sqrt(50), rel=0.03)
    # SNR = mu_S / sigma_B = 24; background-subtracted = 4
    assert signal_to_noise_ratio(img, sig, bg) == pytest.approx(24.0, rel=0.03)
    assert signal_to_noise_ratio(img, sig, bg, subtract_background=True) == pytest.approx(4.0, rel=0.03)


def test_cnr_uncertainty_matches_spread_over_seeds():
    vals, ses = [], []
    for seed in range(30):
        img, sig, bg = _two_regions(np.random.default_rng(100 + seed))
        v, s = contrast_to_noise_ratio(img, sig, bg, return_uncertainty=True)
        vals.append(v)
        ses.append(s)
    assert np.std(vals, ddof=1) == pytest.approx(np.mean(ses), rel=0.35)


def test_cnr_is_invariant_to_affine_intensity_and_dtype():
    img, sig, bg = _two_regions(np.random.default_rng(0))
    ref = contrast_to_noise_ratio(img, sig, bg)
    assert contrast_to_noise_ratio(-3 * img + 7, sig, bg) == pytest.approx(ref)
    assert contrast_to_noise_ratio(np.clip(img, 0, 255).astype(np.uint8), sig, bg) == pytest.approx(ref, rel=0.05)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.full((50, 50), np.nan), "NaN"),
        (np.zeros((50, 50), complex), "dtype"),
        (np.zeros((3, 50, 50)), "2-D"),
        (np.zeros((0, 0)), "2-D|empty"),
    ],
)
def test_cnr_refuses_bad_images(bad, match):
    sig = np.zeros((50, 50), bool)
    sig[:10] = True
    with pytest.raises(EvaluationError, match=match):
        contrast_to_noise_ratio(bad, sig, ~sig)


def test_cnr_refuses_bad_masks_and_constant_background():
    img = np.random.default_rng(0).normal(size=(40, 40))
    sig = np.zeros((40, 40), bool)
    sig[:10] = True
    with pytest.raises(EvaluationError, match="shape"):
        contrast_to_noise_ratio(img, sig[:-1], ~sig[:-1])
    with pytest.raises(EvaluationError, match="overlap"):
        contrast_to_noise_ratio(img, sig, np.ones_like(sig))
    with pytest.raises(EvaluationError, match="selects 0"):
        contrast_to_noise_ratio(img, sig, np.zeros_like(sig))
    with pytest.raises(EvaluationError, match="boolean"):
        contrast_to_noise_ratio(img, sig.astype(float) * 0.5, ~sig)
    with pytest.raises(EvaluationError, match="constant"):
        contrast_to_noise_ratio(np.ones((40, 40)), sig, ~sig)


def test_halfbit_threshold_published_limits():
    # van Heel & Schatz (2005) eq. 17: T -> 0.2071/1.2071 = 0.1716 for large rings, 1 for n = 1.
    assert halfbit_threshold(np.array([1e12]))[0] == pytest.approx(0.2071 / 1.2071, rel=1e-4)
    assert halfbit_threshold(np.array([1.0]))[0] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cutoff", [0.1, 0.2, 0.3])
def test_frc_of_pair_recovers_known_band_limit(seed, cutoff):
    # Analytic: two noisy copies of an object band-limited to fc have FRC ~ SNR/(1+SNR) ~ 0.9
    # inside the band and ~0 outside, so both thresholds cross at fc. Tolerance: the Hann
    # window's main lobe (2 rings) plus half a ring of discretisation.
    n = 256
    rng = np.random.default_rng(seed)
    obj = bandlimited_noise(n, cutoff, rng)
    a = obj + 0.3 * rng.normal(size=obj.shape)
    b = obj + 0.3 * rng.normal(size=obj.shape)
    res = fourier_ring_correlation(a, b, pixel_size_nm=2.0)
    assert res.unit == "nm"
    assert abs(2.0 / res.resolution - cutoff) <= 3.5 / n
    assert abs(2.0 / res.resolution_halfbit - cutoff) <= 3.5 / n
    unwindowed = fourier_ring_correlation(a, b, window="none")  # periodic object: no leakage
    assert abs(1 / unwindowed.resolution - cutoff) <= 1.5 / n


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cutoff", [0.05, 0.1, 0.2])
def test_single_image_checkerboard_frc_recovers_band_limit(seed, cutoff):
    # Koho et al. 2019: the checkerboard split with the half-pixel shift removed gives the
    # same cutoff as two independent images, for content below a quarter of the sampling rate.
    n = 512
    rng = np.random.default_rng(seed)
    img = bandlimited_noise(n, cutoff, rng) + 0.3 * rng.normal(size=(n, n))
    res = fourier_ring_correlation(img)
    assert abs(1 / res.resolution - cutoff) <= 4.0 / n
    assert frc_resolution(img, pixel_size_nm=1.5) == pytest.approx(1.5 * res.resolution)


def test_frc_documented_edge_cases():
    rng = np.random.default_rng(0)
    white = rng.normal(size=(128, 128))
    # identical content to the last ring: Nyquist limited, resolution = 2 px
    res = fourier_ring_correlation(white + 0.01 * rng.normal(size=white.shape), white + 0.01 * rng.normal(size=white.shape))
    assert res.nyquist_limited and res.resolution == pytest.approx(2.0)
    # independent noise: no correlated signal at all. The half-bit threshold accounts for the
    # few pixels of the innermost rings; the fixed 1/7 threshold can be crossed there by chance
    # (van Heel & Schatz 2005, section 4), which is why both are reported.
    assert fourier_ring_correlation(rng.normal(size=(128, 128)), rng.normal(size=(128, 128))).resolution_halfbit == math.inf
    with pytest.raises(EvaluationError, match="constant"):
        fourier_ring_correlation(np.ones((64, 64)), white[:64, :64])
    with pytest.raises(EvaluationError, match="differ in shape"):
        fourier_ring_correlation(white, white[:100])
    with pytest.raises(EvaluationError, match="threshold"):
        frc_resolution(white, threshold="0.5")


def test_checkerboard_split_shapes():
    a = np.arange(11 * 9).reshape(11, 9).astype(float)
    ee, oo, eo, oe = checkerboard_split(a)
    assert ee.shape == oo.shape == eo.shape == oe.shape == (5, 4)
    assert ee[0, 0] == 0 and oo[0, 0] == a[1, 1]


def test_sharpness_decreases_with_blur_and_ignores_intensity_scale():
    rng = np.random.default_rng(0)
    img = bandlimited_noise(256, 0.3, rng)
    values = [sharpness(ndi.gaussian_filter(img, s)) for s in (0.0, 1.0, 2.0, 4.0)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert 0 <= values[-1] < values[0] <= 1
    assert sharpness(5 * img + 3) == pytest.approx(values[0], abs=1e-9)
    with pytest.raises(EvaluationError, match="constant"):
        sharpness(np.zeros((64, 64), np.uint8))


def test_artifact_fraction_is_union_over_valid_field():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:5] = True
    b[3:6] = True
    assert artifact_fraction(a, b) == pytest.approx(0.6)
    valid = np.zeros((10, 10), bool)
    valid[:, :5] = True
    assert artifact_fraction(a, b, valid_mask=valid) == pytest.approx(0.6)
    with pytest.raises(EvaluationError):
        artifact_fraction()


def test_section_defects_detects_streaks_chatter_and_cracks():
    rng = np.random.default_rng(0)
    n = 256
    base = 100 + 5 * rng.normal(size=(n, n))
    clean = section_defects(base)
    assert clean.knife_mark_index < 0.01 and clean.chatter_index < 0.01
    # knife marks: streaks along the cut (axis 0) = per-column offsets
    streaky = base + 4 * rng.normal(size=(1, n))
    assert section_defects(streaky).knife_mark_index > 0.2
    # chatter: bands across the cut with a 16 px period (amplitude 5 -> variance 12.5 of 37.5)
    yy = np.arange(n)[:, None]
    chat = base + 5 * np.sin(2 * np.pi * yy / 16)
    d = section_defects(chat)
    assert d.chatter_period_px == pytest.approx(16, rel=0.05)
    assert d.chatter_index == pytest.approx(12.5 / chat.var(), rel=0.3)
    cracked = base.copy()
    cracked[100:104, 20:200] = 250
    assert section_defects(cracked).crack_mask[101, 100]
    assert section_defects(cracked).crack_fraction == pytest.approx(4 * 180 / n**2, rel=0.3)


def test_local_cnr_measures_a_structure_against_its_surroundings():
    rng = np.random.default_rng(1)
    n = 128
    img = 100.0 + 2.0 * rng.normal(size=(n, n))
    cell = np.zeros((n, n), bool)
    cell[:, :100] = True  # the structure fills most of the field; a 28-px margin surrounds it
    img[cell] -= 10.0
    band_only = contrast_to_noise_ratio(img, cell, ~cell)
    local = local_contrast_to_noise_ratio(img, cell, width_px=20)
    assert local == pytest.approx(band_only, rel=0.1) and local == pytest.approx(5.0, rel=0.15)  # 10 / 2
    # a gap skips the blurred edge, exclusion keeps other structures out of the background
    other = np.zeros((n, n), bool)
    other[:, 110:] = True
    img2 = img.copy()
    img2[other] -= 30.0
    assert local_contrast_to_noise_ratio(img2, cell, exclude_mask=other, width_px=20) == pytest.approx(local, rel=0.2)
    assert local_contrast_to_noise_ratio(img2, cell, width_px=20) < 0.5 * local  # without exclusion it is not a background


def test_local_cnr_refuses_a_field_with_nothing_to_contrast_with():
    img = np.random.default_rng(0).normal(size=(64, 64))
    with pytest.raises(EvaluationError, match="no background"):
        local_contrast_to_noise_ratio(img, np.ones((64, 64), bool))
    with pytest.raises(EvaluationError):
        local_contrast_to_noise_ratio(img, np.zeros((64, 64), bool))


def test_cracks_are_found_above_the_brightest_material_not_above_the_median():
    rng = np.random.default_rng(2)
    n = 256
    img = np.full((n, n), 80.0)
    img[:, n // 2:] = 93.0  # a bright embedding over half the field, brighter than the median by 6 noise sigma
    img += 2.0 * rng.normal(size=(n, n))
    clean = section_defects(img)
    assert clean.crack_fraction == 0.0
    cracked = img.copy()
    cracked[100:107, 150:230] = 100.0 + 2.0 * rng.normal(size=(7, 80))  # a gap: no material, transmits fully
    d = section_defects(cracked)
    assert d.crack_mask[103, 190] and d.crack_fraction == pytest.approx(7 * 80 / n**2, rel=0.3)
