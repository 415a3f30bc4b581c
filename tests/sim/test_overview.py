"""Ribbon overviews: thin-film reflectance against Airy's closed forms; defects and truth labels."""

from __future__ import annotations

import numpy as np
import pytest

from cryoopt.sim.overview import N_SECTION, N_WATER, SECTION_LABELS, film_reflectance, render_ribbon


def test_bare_water_and_quarter_wave_reflectance_match_the_closed_forms():
    # Fresnel, normal incidence: R = ((n0 - n2) / (n0 + n2))^2 (Born & Wolf eq. 1.5.21)
    assert film_reflectance(0.0)[0] == pytest.approx(((1 - N_WATER) / (1 + N_WATER)) ** 2, rel=1e-12)
    # quarter-wave film n1 t = lambda / 4: R = ((n0 n2 - n1^2) / (n0 n2 + n1^2))^2 (Born & Wolf eq. 7.6.27)
    lam = 545.0
    r = film_reflectance(lam / (4 * N_SECTION), wavelengths_nm=[lam])[0]
    assert r == pytest.approx(((N_WATER - N_SECTION**2) / (N_WATER + N_SECTION**2)) ** 2, rel=1e-12)
    # half-wave film: as if absent
    assert film_reflectance(lam / (2 * N_SECTION), wavelengths_nm=[lam])[0] == pytest.approx(film_reflectance(0.0, wavelengths_nm=[lam])[0])


def test_interference_colours_run_through_the_published_sequence():
    """Peachey (1958): silver (60-90 nm, neutral and bright), gold (90-150, red over blue),
    purple (150-190, red and blue over green), blue (190-240, blue over red)."""
    silver, gold, purple, blue = (film_reflectance(t) for t in (75.0, 120.0, 170.0, 215.0))
    assert np.ptp(silver) / silver.mean() < 0.15
    assert gold[0] > gold[2]
    assert purple[1] < purple[0] and purple[1] < 1.2 * purple[2]
    assert blue[2] > blue[0]


def test_truth_labels_follow_the_drawn_defects():
    q = [{"thickness_nm": 90.0}, {"thickness_nm": 200.0}, {"thickness_nm": 90.0, "ribbon_ok": False},
         {"thickness_nm": 90.0, "crack_density_per_um": 10.0}]
    ov = render_ribbon(q, fold_probability=0.0, contamination_probability=0.0, rng=0)
    assert [s.label for s in ov.sections] == ["good", "too_thick", "cracked"]
    assert [s.index for s in ov.sections] == [0, 1, 3]  # the failed cut left a gap
    assert ov.image.shape[2] == 3 and np.all(np.isfinite(ov.image))
    folded = render_ribbon([{"thickness_nm": 90.0}] * 4, fold_probability=1.0, contamination_probability=0.0, rng=1)
    assert all(s.label == "folded" and 0.1 < s.fold_fraction < 0.5 for s in folded.sections)
    dirty = render_ribbon([{"thickness_nm": 90.0}] * 4, fold_probability=0.0, contamination_probability=1.0, rng=2)
    assert all(s.label == "contaminated" and s.contamination_fraction > 0.02 for s in dirty.sections)
    assert set(SECTION_LABELS) == {"folded", "cracked", "contaminated", "too_thick", "good"}


def test_compression_shortens_sections_along_the_ribbon():
    ov = render_ribbon([{"thickness_nm": 90.0, "compression": c} for c in (0.1, 0.5)], fold_probability=0.0,
                       contamination_probability=0.0, rng=3)
    lengths = [np.flatnonzero(s.mask.any(axis=0)).size for s in ov.sections]
    assert lengths[1] / lengths[0] == pytest.approx(0.5 / 0.9, rel=0.05)
