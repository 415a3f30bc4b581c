"""Small EM fields (1.28 um at 10 nm pixels, the env's) that the estimate path used to leave
unmeasured although their target is in them: fiducial beads on a film that saturates the
detector, and a neurite crossing a stained matrix (one stain level with a dark "organelle")."""

from __future__ import annotations

import math

import numpy as np

from cryoopt.pipeline import EvaluationContext
from cryoopt.pipeline.pipeline import SectionState, stage_metrics, stage_parse, stage_preprocess
from cryoopt.pipeline.segmentation import BeadSegmenter

FULL_SCALE = 65535.0  # a 16-bit detector
N, PX = 128, 10.0
#: stain densities of a 12 % gelatin matrix, cytoplasm and a mitochondrion; EM transmission of a
#: 100 nm section is exp(-1.2 density) (the optical densities 0.096, 0.30 and 0.66)
MATRIX, CYTOPLASM, MITOCHONDRION = 0.08, 0.25, 0.55


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a & b) / max(np.count_nonzero(a | b), 1))


def _film(open_beam_adu: float, gain: float, beads: np.ndarray | None, seed: int = 0) -> np.ndarray:
    """A film under the beam (transmission 1) with 200 nm beads (density 1: transmission exp(-1.2)),
    Poisson in electrons, clipped at the detector's full scale."""
    rng = np.random.default_rng(seed)
    t = np.ones((N, N)) if beads is None else np.exp(-1.2 * beads)
    return np.minimum(gain * rng.poisson(open_beam_adu / gain * t), FULL_SCALE)


def _beads() -> np.ndarray:
    rr, cc = np.mgrid[:N, :N]
    mask = np.zeros((N, N), bool)
    for cy, cx in ((30, 30), (90, 40), (64, 100)):  # radius 10 px = 100 nm
        mask |= (rr - cy) ** 2 + (cc - cx) ** 2 < 10**2
    return mask


def test_beads_on_a_film_that_saturates_the_detector_are_found() -> None:
    beads = _beads()
    # the open beam reads 1.3x full scale: the film is clipped flat, the beads (0.30 of it) are not
    img = _film(1.3 * FULL_SCALE, 40.0, beads.astype(float))
    assert np.mean(img >= FULL_SCALE) > 0.9
    lab = BeadSegmenter().segment(img)
    assert lab.max() == 3
    assert _iou(lab > 0, beads) > 0.7


def test_a_partly_saturated_film_without_beads_shows_none() -> None:
    for seed in range(3):  # the film at the full scale: about half its pixels clipped, the rest noise
        img = _film(FULL_SCALE, 40.0, None, seed)
        assert 0.3 < np.mean(img >= FULL_SCALE) < 0.7
        assert BeadSegmenter().segment(img).max() == 0


def _section(density: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float]:
    """A 100 nm section's EM image (ADU) at 400 e/px and 5 ADU/e, and its open-beam intensity."""
    dose, gain = 400.0, 5.0
    rng = np.random.default_rng(seed)
    return gain * rng.poisson(dose * np.exp(-1.2 * density)).astype(float), dose * gain


def _estimate(em: np.ndarray, open_beam: float, targets: tuple[str, ...]) -> SectionState:
    ctx = EvaluationContext(lm_pixel_size_nm=100.0, em_pixel_size_nm=PX, em_reference_intensity=open_beam,
                            target_structures=targets)
    st = SectionState(np.random.default_rng(1).random((32, 32)), em, ctx)
    for stage in (stage_preprocess, stage_parse, stage_metrics):
        stage(st)
    return st


def test_a_neurite_crossing_the_matrix_is_a_cell_and_its_contrast_is_measured() -> None:
    rr = np.mgrid[:N, :N][0]
    neurite = np.abs(rr - 60) < 35  # 700 nm wide: as wide as a mitochondrion, far narrower than the field
    em, open_beam = _section(np.where(neurite, CYTOPLASM, MATRIX))
    st = _estimate(em, open_beam, ("cells",))
    cells = st.parsed.mask("cells")
    assert _iou(cells, neurite) > 0.8
    assert not st.parsed.mask("mitochondria").any()
    assert math.isfinite(st.scores["em_cnr"].value) and st.scores["em_cnr"].value > 3.0


def test_a_mitochondrion_in_a_field_of_cytoplasm_stays_an_organelle() -> None:
    rr = np.mgrid[:N, :N][0]
    mito = np.abs(rr - 60) < 25  # 500 nm wide, 2.2x the cytoplasm's optical density
    em, open_beam = _section(np.where(mito, MITOCHONDRION, CYTOPLASM))
    st = _estimate(em, open_beam, ("mitochondria",))
    assert st.parsed.mask("cells").mean() > 0.95  # the field is inside a cell: no matrix in it
    assert _iou(st.parsed.mask("mitochondria"), mito) > 0.7


def test_a_bead_whose_film_is_clipped_flat_has_its_area_but_no_contrast() -> None:
    # the contrast needs the film's noise, which a clipped film does not show: undefined (a failed
    # measurement), while the target's area says the bead is there (not "nothing to measure")
    beads = _beads()
    img = _film(1.6 * FULL_SCALE, 40.0, beads.astype(float))
    ctx = EvaluationContext(lm_pixel_size_nm=100.0, em_pixel_size_nm=PX, target_structures=("beads",))
    st = SectionState(np.random.default_rng(1).random((32, 32)), img, ctx)
    for stage in (stage_preprocess, stage_parse, stage_metrics):
        stage(st)
    assert math.isnan(st.scores["em_cnr"].value)
    assert abs(st.scores["em_target_fraction"].value - beads.mean()) < 0.3 * beads.mean()
