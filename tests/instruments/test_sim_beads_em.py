"""The simulated microscope's EM shows fiducial beads, and only on phantoms that have them.

Beads are electron dense (gold): :func:`cryoopt.sim.datasets.with_em_beads` gives them the
stain density ``BEAD_DENSITY`` (1.0), so with no projection blur a bead core images at the
Beer-Lambert transmission ``exp(-1.2 x BEAD_DENSITY x t / 100 nm x contrast)`` of
:func:`cryoopt.sim.imaging.image_em`, and the labelling's extraction (stainable material
lost while thawed) leaves the gold as it is. On phantoms whose label marks sites in cells
(neurons, tissue blocks) the label is invisible in EM and every image stays as it was.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryoopt.instruments.simulated.sim_physics import SimImaging
from cryoopt.sim.datasets import BEAD_DENSITY

EM = {"modality": "EM", "image_size_px": 64, "exposure_ms": 100.0, "gain": 4.0}
SECTIONS = (
    {"section_index": 0, "actual_thickness_nm": 90.0, "depth_nm": 0.0},
    {"section_index": 1, "actual_thickness_nm": 110.0, "depth_nm": 90.0, "extraction": 0.2, "chatter": 0.1,
     "knife_marks": 2, "crack_density_per_um": 1.0, "smear_nm": 5.0, "compression": 0.2, "em_stain_contrast": 1.4},
)


def _series(**kwargs: object) -> list[np.ndarray]:
    phys = SimImaging(specimen_seed=3, **kwargs)
    return [phys.acquire(EM, np.random.default_rng(i), sample=s) for i, s in enumerate(SECTIONS)]


@pytest.mark.parametrize("preset", ["neurons", "tissue_block"])
def test_cell_phantoms_em_is_unchanged_by_beads(preset: str) -> None:
    assert not SimImaging(preset=preset).em_beads
    default, without = _series(preset=preset), _series(preset=preset, em_beads=False)
    for a, b in zip(default, without, strict=True):
        np.testing.assert_array_equal(a, b)
    # the comparison can fail: drawing the same phantom's labelled sites as beads changes the image
    forced = _series(preset=preset, em_beads=True)
    assert any(not np.array_equal(a, b) for a, b in zip(default, forced, strict=True))


def test_bead_cores_image_at_the_beer_lambert_transmission_of_gold() -> None:
    phys = SimImaging(preset="bead_calibration", specimen_seed=5, overlap_fraction=0.0)
    assert phys.em_beads
    dose = phys.em_dose_per_ms * EM["exposure_ms"]
    for contrast in (1.0, 2.0):
        sample = {"section_index": 0, "actual_thickness_nm": 100.0, "extraction": 0.3, "em_stain_contrast": contrast}
        img = phys.acquire(dict(EM, preview=True), np.random.default_rng(0), sample=sample).astype(float)
        t = phys.last_truth
        core, film = t.target_density >= 1.0 / 3.0, t.target_density == 0
        assert core.sum() > 50 and film.sum() > 50
        transmission = img[core].mean() / (EM["gain"] * dose)
        # extraction (0.3) would raise it to exp(-0.84 x contrast) if it took the gold
        assert transmission == pytest.approx(math.exp(-1.2 * BEAD_DENSITY * contrast), rel=0.03)
        film_expected = math.exp(-1.2 * float(t.density[film].mean()) * 0.7 * contrast)
        assert img[film].mean() / (EM["gain"] * dose) == pytest.approx(film_expected, rel=0.03)


def test_bead_calibration_without_beads_shows_only_the_film() -> None:
    img = SimImaging(preset="bead_calibration", specimen_seed=5, em_beads=False).acquire(
        EM, np.random.default_rng(0), sample={"section_index": 0}).astype(float)
    with_beads = SimImaging(preset="bead_calibration", specimen_seed=5).acquire(
        EM, np.random.default_rng(0), sample={"section_index": 0}).astype(float)
    assert img.min() > 0.5 * img.mean()  # no dark structure on a bare film
    assert with_beads.min() < 0.5 * with_beads.mean()
