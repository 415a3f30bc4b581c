"""Preprocessing: normalisation, flat-field, charging/ice masks, the restoration hook."""

from __future__ import annotations

import numpy as np
import pytest

from cryoopt.exceptions import EvaluationError, RegistryError
from cryoopt.pipeline.preprocess import (
    IdentityRestorer,
    Restorer,
    correct_background,
    detect_charging,
    detect_ice,
    normalize_intensity,
    restorers,
)


def test_normalize_range_needs_data_range_for_floats():
    img = np.random.default_rng(0).uniform(0, 5, (32, 32))
    with pytest.raises(EvaluationError, match="data_range"):
        normalize_intensity(img, method="range")
    out = normalize_intensity(img, method="range", data_range=5.0)
    np.testing.assert_allclose(out, img / 5.0)
    u16 = (img * 1000).astype(np.uint16)
    np.testing.assert_allclose(normalize_intensity(u16, method="range"), u16 / 65535.0)
    p = normalize_intensity(img)
    assert p.min() == 0 and p.max() == 1
    with pytest.raises(EvaluationError, match="contrast"):
        normalize_intensity(np.ones((8, 8)))


def test_flat_field_recovers_object_under_known_shading():
    # I = D + O * (F - D)  =>  (I - D) / (F - D) * mean(F - D) = O * mean(F - D)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    dark = np.full((64, 64), 10.0)
    flat = dark + 100 * (1 + 0.5 * np.exp(-((xx - 20) ** 2 + (yy - 30) ** 2) / 400))
    obj = rng.uniform(0.5, 1.0, (64, 64))
    img = dark + obj * (flat - dark)
    out = correct_background(img, flat_field=flat, dark_field=dark)
    np.testing.assert_allclose(out, obj * (flat - dark).mean())
    with pytest.raises(EvaluationError, match="brighter"):
        correct_background(img, flat_field=dark, dark_field=dark)
    with pytest.raises(EvaluationError, match="differ in shape"):
        correct_background(img, flat_field=flat[:10])


def test_estimated_background_removes_smooth_shading():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    shading = 1 + 0.5 * xx / 255
    img = 100 * shading * (1 + 0.02 * rng.normal(size=(256, 256)))
    out = correct_background(img)
    left, right = out[:, 32:64].mean(), out[:, 192:224].mean()
    assert abs(left - right) / out.mean() < 0.03  # was 0.31 before correction
    sub = correct_background(img, mode="subtract")
    assert abs(sub[:, 32:64].mean() - sub[:, 192:224].mean()) < 3


def test_charging_and_ice_masks_recover_inserted_regions():
    rng = np.random.default_rng(0)
    img = 120 + 8 * rng.normal(size=(256, 256))
    yy, xx = np.mgrid[:256, :256]
    charge = (yy - 60) ** 2 + (xx - 60) ** 2 < 20**2
    ice = (yy - 180) ** 2 + (xx - 170) ** 2 < 15**2
    img[charge] = 250
    img[ice] = 10
    c, i = detect_charging(img), detect_ice(img)
    iou = lambda a, b: (a & b).sum() / (a | b).sum()  # noqa: E731
    assert iou(c, charge) > 0.8 and iou(i, ice) > 0.8
    assert not (c & ice).any() and not (i & charge).any()
    clean = 120 + 8 * rng.normal(size=(256, 256))
    assert detect_charging(clean).sum() == 0 and detect_ice(clean).sum() == 0


def test_restoration_hook_is_a_registered_protocol():
    assert isinstance(restorers.get("identity")(), Restorer)
    x = np.ones((4, 4))
    assert IdentityRestorer().restore(x) is x
    with pytest.raises(RegistryError, match="unknown restoration model 'no-such-model'; available: .*identity"):
        restorers.get("no-such-model")
