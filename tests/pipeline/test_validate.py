"""Bad input to the pipeline gets a typed error naming the parameter, or a correct result.

Regression tests for an adversarial pass over the pipeline: wrong-shape, all-NaN and
zero-size masks, numpy pixel sizes, and intensities at the edge of float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryoopt.exceptions import CryoOptError, EvaluationError
from cryoopt.pipeline import EvaluationContext, evaluate_section
from cryoopt.pipeline import metrics as M
from cryoopt.pipeline._validate import check_field_mask, check_image, check_pixel_size, power_of_two_exponent

from ._synth import CLEM_EM_PX, CLEM_LM_PX, clem_pair


@pytest.fixture(scope="module")
def pair():
    lm, em, _, _ = clem_pair(0, n=256)
    return lm, em


def _ctx(**kw):
    return EvaluationContext(lm_pixel_size_nm=CLEM_LM_PX, em_pixel_size_nm=CLEM_EM_PX, **kw)


@pytest.mark.parametrize("value", [np.float32(40.0), np.float64(40.0), np.int64(40), np.uint16(40), 40, 40.0])
def test_numpy_pixel_sizes_are_accepted_as_floats(value):
    ctx = EvaluationContext(lm_pixel_size_nm=value, em_pixel_size_nm=np.float32(10.0))
    assert type(ctx.lm_pixel_size_nm) is float and ctx.lm_pixel_size_nm == 40.0
    assert type(ctx.em_pixel_size_nm) is float


@pytest.mark.parametrize("value", [True, np.bool_(True), "40", None, 0, -1.0, math.nan, math.inf, np.float32("nan")])
def test_bad_pixel_sizes_name_the_parameter(value):
    with pytest.raises(EvaluationError, match="em_pixel_size_nm"):
        EvaluationContext(lm_pixel_size_nm=40.0, em_pixel_size_nm=value)


@pytest.mark.parametrize("name", ["charging_mask", "ice_mask", "label_target_mask"])
def test_wrong_shape_context_masks_are_refused_by_name(pair, name):
    lm, em = pair
    with pytest.raises(EvaluationError, match=f"context.{name} has shape \\(10, 10\\)"):
        evaluate_section(lm, em, context=_ctx(**{name: np.zeros((10, 10), bool)}))


@pytest.mark.parametrize("name", ["charging_mask", "ice_mask", "label_target_mask"])
def test_zero_size_context_masks_are_refused_at_construction(name):
    with pytest.raises(EvaluationError, match=f"context.{name} is empty"):
        _ctx(**{name: np.zeros((0, 0), bool)})


def test_all_nan_masks_are_refused_not_read_as_empty(pair):
    lm, em = pair
    with pytest.raises(EvaluationError, match=r"context.ice_mask has \d+ NaN value\(s\) \(all of it\)"):
        evaluate_section(lm, em, context=_ctx(ice_mask=np.full(em.shape, np.nan)))
    with pytest.raises(EvaluationError, match=r"structure_masks\['mitochondria'\] has \d+ NaN"):
        evaluate_section(lm, em, context=_ctx(structure_masks={"mitochondria": np.full(em.shape, np.nan)}))


def test_previous_sections_are_checked_against_the_working_grid(pair):
    lm, em = pair
    with pytest.raises(EvaluationError, match=r"previous_sections\[0\]\[0\] is empty"):
        evaluate_section(lm, em, context=_ctx(previous_sections=[(np.zeros((0, 0), bool), np.zeros((0, 0), bool))]))
    with pytest.raises(EvaluationError, match=r"previous_sections\[0\]\[1\] has shape"):
        evaluate_section(lm, em, context=_ctx(previous_sections=[(np.zeros(em.shape, bool), np.zeros((3, 3), bool))]))


def test_zero_size_masks_raise_a_typed_error_not_zero_division():
    with pytest.raises(EvaluationError, match="empty"):
        M.artifact_fraction(np.zeros((0, 0), bool))
    with pytest.raises(EvaluationError, match="valid_mask is empty"):
        M.artifact_fraction(np.zeros((4, 4), bool), valid_mask=np.zeros((0, 0), bool))


def test_field_mask_accepts_fractions_and_refuses_out_of_range():
    assert check_field_mask(np.full((4, 4), 0.7), (4, 4)).max() == pytest.approx(0.7)
    with pytest.raises(EvaluationError, match="m has values in"):
        check_field_mask(np.full((4, 4), 2.0), (4, 4), name="m")
    with pytest.raises(EvaluationError, match="dtype"):
        check_field_mask(np.full((4, 4), "a"), (4, 4))


@pytest.fixture(scope="module")
def pair_scores(pair):
    """The pair's scores at 1x, read (never changed) by every scale below."""
    lm, em = pair
    return evaluate_section(lm, em, context=_ctx()).floats()


@pytest.mark.parametrize("exponent", [-1040, -600, 600, 1000])
def test_pipeline_scores_are_invariant_to_extreme_intensity_scales(pair, pair_scores, exponent):
    """Every pipeline score is scale-invariant, so images at 2^+-1000 score exactly as at 1x."""
    lm, em = pair
    ref = pair_scores
    out = evaluate_section(np.ldexp(lm.astype(float), exponent), np.ldexp(em.astype(float), exponent), context=_ctx()).floats()
    for k in ("em_snr", "em_cnr", "lm_snr", "lm_cnr", "em_frc_resolution_nm", "logic"):
        assert math.isfinite(out[k]) and out[k] > 0, k
        assert out[k] == pytest.approx(ref[k], rel=1e-6), k


@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_metrics_refuse_intensities_that_overflow_their_variance(scale):
    img = np.random.default_rng(0).uniform(1, 2, (16, 16)) * scale
    sig = np.zeros((16, 16), bool)
    sig[:8] = True
    with pytest.raises(EvaluationError, match=r"ldexp\(image, -?\d+\)") as err:
        M.signal_to_noise_ratio(img, sig, ~sig)
    assert isinstance(err.value, CryoOptError) and isinstance(err.value, ValueError)
    k = int(str(err.value).split("ldexp(image, ")[1].split(")")[0])
    # following the advice gives the scale-free answer
    ref = M.signal_to_noise_ratio(img / scale, sig, ~sig)
    assert M.signal_to_noise_ratio(np.ldexp(img, k), sig, ~sig) == pytest.approx(ref, rel=1e-9)


def test_power_of_two_exponent_brings_peaks_to_unit_range():
    for peak in (1e-310, 3.0, 1e300):
        k = power_of_two_exponent(peak)
        assert 0.5 <= float(np.ldexp(peak, k)) < 1.0
    assert check_pixel_size(np.float32(2.5)) == 2.5
    with pytest.raises(EvaluationError, match="NaN/inf"):
        check_image(np.array([[1.0, np.inf], [0.0, 1.0]]))
