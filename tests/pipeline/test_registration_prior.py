"""Registration near a stage prior: image correlation is searched only where the stage can
have put the EM field, and accepted only when its peak beats chance over that search."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from cryoopt.exceptions import RegistrationError
from cryoopt.pipeline import EvaluationContext
from cryoopt.pipeline.parser import ParseResult
from cryoopt.pipeline.pipeline import SectionState, stage_register
from cryoopt.pipeline.registration import register_near_prior

SCALE = 10.0  # EM px per LM px: 100 nm LM, 10 nm EM pixels, as on the env's bench
N = 128
_OFF = (N - 1) / 2 - SCALE * (N - 1) / 2  # both fields share their centre (the simulator samples pixel centres)
CENTRED = np.array([[SCALE, 0.0, _OFF], [0.0, SCALE, _OFF], [0, 0, 1.0]])


def _label(seed: int, density: float = 0.05) -> np.ndarray:
    """An LM field of sparse, blurred label spots."""
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter((rng.random((N, N)) < density).astype(float), 1.5)


def _em_of(lm: np.ndarray, matrix: np.ndarray, seed: int) -> np.ndarray:
    """The EM field that shows ``lm`` through the LM -> EM ``matrix`` (plus a little noise)."""
    rows, cols = np.mgrid[0:N, 0:N]
    inv = np.linalg.inv(matrix)
    x = inv[0, 0] * cols + inv[0, 1] * rows + inv[0, 2]
    y = inv[1, 0] * cols + inv[1, 1] * rows + inv[1, 2]
    return ndi.map_coordinates(lm, [y, x], order=1) + 0.002 * np.random.default_rng(seed).standard_normal((N, N))


def _shifted(dx: float, dy: float) -> np.ndarray:
    m = CENTRED.copy()
    m[:2, 2] += (dx, dy)
    return m


def test_shift_within_the_stage_uncertainty_is_found_to_a_pixel():
    lm = _label(0)
    true = _shifted(-80.0, 40.0)
    res = register_near_prior(lm, _em_of(lm, true, 1), CENTRED, search_radius_px=600, n_null_shifts=49)
    assert res.method == "prior-search"
    centre = np.array([(N - 1) / 2, (N - 1) / 2, 1.0])
    lm_at = np.linalg.solve(true, centre)
    assert np.hypot(*((res.matrix @ lm_at)[:2] - centre[:2])) < 1.0


@pytest.mark.parametrize("seed", range(6))
def test_unrelated_fields_are_refused(seed):
    """An EM field that shows nothing of the LM: its best shift is chance, never accepted."""
    lm, other = _label(10 + seed), _label(100 + seed)
    with pytest.raises(RegistrationError, match="chance p"):
        register_near_prior(lm, _em_of(other, CENTRED, seed), CENTRED, search_radius_px=600)


def test_match_far_outside_the_stage_uncertainty_falls_back_to_the_prior():
    """The EM content sits 400 EM px (4 um) from the prior: a correlation searched over 6 um takes
    it, a stage good to 0.5 um (search radius 150 px) cannot have put the field there; nothing near
    the prior correlates, so the stage prior is used and flagged unverified."""
    lm = _label(2)
    far = _shifted(400.0, -50.0)
    em = _em_of(lm, far, 3)
    wide = register_near_prior(lm, em, CENTRED, search_radius_px=600, n_null_shifts=49)
    assert np.allclose(wide.matrix[:2, 2], far[:2, 2], atol=1.0)  # a search over 6 um takes the far match
    ctx = EvaluationContext(lm_pixel_size_nm=100.0, em_pixel_size_nm=10.0, stage_relocation_sigma_nm=50.0)
    st = SectionState(lm=lm, em=em, context=ctx, em_w=em, lm_w=lm, target_mask=em > 0.5 * em.max(),
                      parsed=ParseResult(labels={"targets": (lm > 0.5 * lm.max()).astype(int)}, graph=None))
    stage_register(st)
    assert st.scores["registration_verified"].value == 0.0
    assert st.registration.model == "prior"
    assert np.allclose(st.registration.matrix, CENTRED)


def test_stage_uncertainty_is_validated():
    with pytest.raises(Exception, match="stage_relocation_sigma_nm"):
        EvaluationContext(lm_pixel_size_nm=100.0, em_pixel_size_nm=10.0, stage_relocation_sigma_nm=-1.0)
