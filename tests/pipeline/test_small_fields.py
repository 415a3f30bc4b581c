"""The estimate path in small EM fields (1.28 um at 10 nm pixels, the env's): mitochondria that cross
the field are found and their contrast measured; a field grainy wall to wall is no nucleus."""

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from cryoopt.pipeline import EvaluationContext
from cryoopt.pipeline.pipeline import SectionState, stage_metrics, stage_parse, stage_preprocess

CYTOPLASM, MITOCHONDRION = 0.6, 0.35
GRAIN_SD, NOISE_SD = 0.03, 0.01


def _field(with_mitochondria: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cytoplasm with a grain resolved at 10 nm pixels (Gaussian-filtered white noise of sd
    ``GRAIN_SD``: unit noise filtered at sigma s has sd 1 / (2 sqrt(pi) s)) plus white noise, and
    two mitochondria 350 nm wide, 200 nm apart, crossing the field."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((128, 128), bool)
    if with_mitochondria:
        truth[20:55] = True
        truth[75:110] = True
    img = np.where(truth, MITOCHONDRION, CYTOPLASM)
    s = 2.5
    grain = ndi.gaussian_filter(rng.standard_normal(img.shape), s, mode="wrap") * 2.0 * math.sqrt(math.pi) * s * GRAIN_SD
    return img + grain + NOISE_SD * rng.standard_normal(img.shape), truth


def _estimate(em: np.ndarray) -> SectionState:
    ctx = EvaluationContext(lm_pixel_size_nm=100.0, em_pixel_size_nm=10.0)  # target: mitochondria
    st = SectionState(np.random.default_rng(1).random((32, 32)), em, ctx)
    for stage in (stage_preprocess, stage_parse, stage_metrics):
        stage(st)
    return st


def test_mitochondria_crossing_a_small_field_are_measured_at_their_analytic_contrast():
    em, truth = _field(True)
    st = _estimate(em)
    mito = st.parsed.mask("mitochondria")
    assert np.count_nonzero(mito & truth) / np.count_nonzero(mito | truth) > 0.85
    # |mu_S - mu_B| / sigma_B of the construction (CNR is unchanged by the pipeline's linear normalisation)
    analytic = (CYTOPLASM - MITOCHONDRION) / math.hypot(GRAIN_SD, NOISE_SD)
    assert st.scores["em_cnr"].value == pytest.approx(analytic, rel=0.1)


def test_a_grainy_field_without_structures_is_no_nucleus_and_no_measurement():
    em, _ = _field(False)
    st = _estimate(em)
    assert not st.parsed.mask("nuclei").any()
    assert not st.parsed.mask("mitochondria").any()
    assert math.isnan(st.scores["em_cnr"].value)  # nothing to measure: "no measurement", never a number
