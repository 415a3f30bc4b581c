"""The open-beam intensity reaches the section segmenter as an optical density with the raw zero kept."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryoopt.exceptions import EvaluationError
from cryoopt.pipeline import EvaluationContext, Pipeline
from cryoopt.pipeline.pipeline import stage_parse, stage_preprocess
from cryoopt.pipeline.segmentation import STRUCTURE_KINDS, Segmentation

DOSE, GAIN = 400.0, 5.0  # e/px and ADU/e: the open beam reads 2000 ADU
OPEN_BEAM = DOSE * GAIN
#: optical densities -ln(I / I0) of a 12 % gelatin matrix, cytoplasm and a mitochondrion
#: (stain densities 0.08 : 0.25 : 0.5 of a 100 nm section, I = I0 exp(-1.2 density))
MATRIX_OD, CYTOPLASM_OD, MITO_OD = 0.096, 0.30, 0.60
PX = 10.0  # nm: a 1.28 um field of 128 px, as the env's EM fields


def _section(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A small EM field: matrix on the left, a cell on the right with a mitochondrion, and a
    300 nm neurite crossing the matrix; returns the ADU image, the cells truth and the matrix truth."""
    n = 128
    rr, cc = np.mgrid[:n, :n]
    od = np.full((n, n), MATRIX_OD)
    cell = cc >= 64
    neurite = (np.abs(rr - 40) < 15) & ~cell
    od[cell | neurite] = CYTOPLASM_OD
    od[(rr - 90) ** 2 + (cc - 96) ** 2 < 15**2] = MITO_OD
    rng = np.random.default_rng(seed)
    image = GAIN * rng.poisson(DOSE * np.exp(-od)).astype(float)
    return image, cell | neurite, ~(cell | neurite)


class _Recorder:
    """A section segmenter that keeps what the pipeline gives it and finds nothing."""

    def segment_section(self, image, *, pixel_size_nm, reference_intensity=None, ignore=None):
        self.image, self.reference = np.asarray(image, float), reference_intensity
        empty = np.zeros(np.shape(image), np.int32)
        return Segmentation({k: empty for k in STRUCTURE_KINDS}, pixel_size_nm)


def _parse(image: np.ndarray, **context) -> object:
    ctx = EvaluationContext(lm_pixel_size_nm=4 * PX, em_pixel_size_nm=PX, **context)
    lm = np.random.default_rng(1).poisson(100.0, (32, 32)).astype(float)
    return Pipeline([("preprocess", stage_preprocess), ("parse", stage_parse)]).run(lm, image, context=ctx)


def test_segmenter_reads_the_matrix_and_cytoplasm_optical_densities():
    """The segmenter's image over its reference gives the raw -ln(I / I0) of every level; the
    percentile-normalised reference (the zero moved to the section's darkest pixels) read
    the matrix at about 3x its density."""
    image, cells, matrix = _section()
    rec = _Recorder()
    _parse(image, segmenter=rec, em_reference_intensity=OPEN_BEAM)
    od = -np.log(np.maximum(rec.image, 1e-12) / rec.reference)
    assert np.median(od[matrix]) == pytest.approx(MATRIX_OD, abs=0.01)
    assert np.median(od[cells & (od < 0.45)]) == pytest.approx(CYTOPLASM_OD, abs=0.02)


@pytest.mark.parametrize("reference", [0.2 * OPEN_BEAM, 10.0])  # a fifth of the beam: wrong gain; raw counts
def test_a_reference_darker_than_the_section_is_refused(reference):
    """The section's median reads exp(-0.2) of the open beam; 3x that is more than charging adds."""
    image, _, _ = _section()
    with pytest.raises(EvaluationError, match="em_reference_intensity"):
        _parse(image, em_reference_intensity=reference)


@pytest.mark.parametrize("reference", [0.0, -1.0, math.nan, math.inf, True, "2000"])
def test_a_reference_that_is_no_intensity_is_refused(reference):
    with pytest.raises(EvaluationError, match="em_reference_intensity must be a positive finite raw EM intensity"):
        EvaluationContext(lm_pixel_size_nm=40.0, em_pixel_size_nm=10.0, em_reference_intensity=reference)


def test_a_section_reading_somewhat_above_the_open_beam_is_accepted():
    """A charging beam brightens a transparent film above the open beam: no reason to refuse."""
    image, _, _ = _section()
    rec = _Recorder()
    _parse(image, segmenter=rec, em_reference_intensity=0.5 * OPEN_BEAM)
    assert rec.reference is not None
