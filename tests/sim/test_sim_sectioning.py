"""Sectioning model: literature windows and trends, wear, determinism, inputs.

Windows and trends: Al-Amoudi, Studer & Dubochet, J. Struct. Biol. 150, 109 (2005);
Han, Zuber & Dubochet, J. Microsc. 230, 167 (2008).
"""

from __future__ import annotations

import numpy as np
import pytest

from cryoopt.exceptions import ParameterError
from cryoopt.sim.sectioning import SectioningModel, SectioningSetpoints

GOOD = SectioningSetpoints(section_thickness_nm=80, cutting_speed_mm_s=1.0)


def _stats(sp: SectioningSetpoints, *, seed: int, n: int = 400, wear: float = 0.0) -> dict[str, float]:
    model = SectioningModel(seed=seed, knife_wear=wear, wear_per_cut=0.0)
    qs = [model.cut(sp) for _ in range(n)]
    return {
        "fail": float(np.mean([q.ribbon_failed for q in qs])),
        "compression": float(np.mean([q.compression for q in qs])),
        "cracks": float(np.mean([q.crack_density_per_um for q in qs])),
        "chatter": float(np.mean([q.chatter for q in qs])),
        "marks": float(np.mean([q.knife_marks for q in qs])),
        "abs_err": float(np.mean([abs(q.thickness_error_nm) for q in qs])),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inside_window_ribbons_form_and_compression_is_in_published_range(seed: int) -> None:
    s = _stats(GOOD, seed=seed)
    assert s["fail"] < 0.1
    assert 0.2 <= s["compression"] <= 0.6  # 20-60 % (Al-Amoudi 2005)


@pytest.mark.parametrize(
    "bad",
    [
        SectioningSetpoints(section_thickness_nm=80, cutting_speed_mm_s=1.0, specimen_temp_c=-80, knife_temp_c=-80, chamber_temp_c=-80),
        SectioningSetpoints(section_thickness_nm=600, cutting_speed_mm_s=1.0),
        SectioningSetpoints(section_thickness_nm=80, cutting_speed_mm_s=20.0),
    ],
)
def test_outside_window_ribbons_fail(bad: SectioningSetpoints) -> None:
    assert _stats(bad, seed=0)["fail"] > 0.8


def test_crevasses_grow_with_thickness_and_compression_with_wear() -> None:
    thin = _stats(SectioningSetpoints(section_thickness_nm=60, cutting_speed_mm_s=1.0), seed=0)
    thick = _stats(SectioningSetpoints(section_thickness_nm=180, cutting_speed_mm_s=1.0), seed=0)
    assert thick["cracks"] > 3 * thin["cracks"]
    worn = _stats(GOOD, seed=0, wear=0.8)
    fresh = _stats(GOOD, seed=0)
    assert worn["compression"] > fresh["compression"] + 0.1
    assert worn["marks"] > fresh["marks"] and worn["abs_err"] > fresh["abs_err"]


def test_chatter_grows_with_speed() -> None:
    slow = _stats(SectioningSetpoints(section_thickness_nm=80, cutting_speed_mm_s=0.6), seed=0)
    fast = _stats(SectioningSetpoints(section_thickness_nm=80, cutting_speed_mm_s=8.0), seed=0)
    assert fast["chatter"] > 2 * slow["chatter"]


def test_wear_grows_with_every_cut() -> None:
    model = SectioningModel(seed=0)
    wears = [model.cut(GOOD).wear for _ in range(50)]
    assert np.all(np.diff(wears) > 0) and model.wear == wears[-1] and model.cuts == 50


def test_same_seed_same_sections_different_seed_differs() -> None:
    a = [SectioningModel(seed=3).cut(GOOD) for _ in range(1)] + [q for m in [SectioningModel(seed=3)] for q in (m.cut(GOOD), m.cut(GOOD))]
    b = [SectioningModel(seed=3).cut(GOOD) for _ in range(1)] + [q for m in [SectioningModel(seed=3)] for q in (m.cut(GOOD), m.cut(GOOD))]
    c = SectioningModel(rng=np.random.default_rng(4)).cut(GOOD)
    assert a == b
    assert c != a[0]


def test_bad_setpoints_raise_parameter_error() -> None:
    with pytest.raises(ParameterError, match="cutting_speed_mm_s"):
        SectioningSetpoints(section_thickness_nm=80, cutting_speed_mm_s=-1.0)
    with pytest.raises(ParameterError, match="knife_wear"):
        SectioningModel(seed=0, knife_wear=2.0)
