"""Tokuyasu sectioning model: published windows and trends, knife and block drift, depth, inputs.

Published practice the model is checked against (see cryoopt.sim.sectioning):
- ultrathin Tokuyasu sections at about -120 C, thicker sections warmer, semithin sections
  (250-500 nm) at -80 to -100 C (Tokuyasu, J. Microsc. 143, 139 (1986); Slot & Geuze,
  Nat. Protoc. 2, 2480 (2007); Peters & Pierson, Methods Cell Biol. 88, 131 (2008));
- 110 nm frozen sections dry to 70 nm in methylcellulose (Griffiths, McDowall, Back &
  Dubochet, J. Ultrastruct. Res. 89, 65 (1984)).
"""

from __future__ import annotations

import numpy as np
import pytest

from cryoopt.exceptions import ParameterError
from cryoopt.sim.sectioning import (
    DRIED_THICKNESS_FRACTION,
    TOKUYASU_WINDOW,
    SectioningModel,
    SectioningSetpoints,
    optimal_cutting_temperature_c,
)


def cut_at(t: float, temp: float, v: float = 0.8) -> SectioningSetpoints:
    return SectioningSetpoints(section_thickness_nm=t, cutting_speed_mm_s=v, specimen_temp_c=temp, knife_temp_c=temp,
                               chamber_temp_c=temp)


GOOD = cut_at(70.0, optimal_cutting_temperature_c(70.0))


def _stats(sp: SectioningSetpoints, *, seed: int, n: int = 300, wear: float = 0.0, debris: float = 0.0) -> dict[str, float]:
    qs = []
    for i in range(n):  # a fresh block per cut: no drift, no carried cracks, constant edge
        model = SectioningModel(seed=seed * 100_003 + i, knife_wear=wear, wear_per_cut=0.0)
        model.debris = debris
        qs.append(model.cut(sp))
    return {k: float(np.mean([getattr(q, a) for q in qs])) for k, a in (
        ("fail", "ribbon_failed"), ("compression", "compression"), ("cracks", "crack_density_per_um"), ("chatter", "chatter"),
        ("marks", "knife_marks"), ("smear", "smear_nm"), ("abs_err", "thickness_error_nm"))}


def test_best_temperature_follows_published_practice() -> None:
    assert optimal_cutting_temperature_c(60) == pytest.approx(-120.0)
    assert -125.0 <= optimal_cutting_temperature_c(50) <= -115.0  # ultrathin: about -120 C
    assert -115.0 <= optimal_cutting_temperature_c(100) <= -105.0  # thicker: warmer
    for semithin in (300, 500):  # semithin sections at -80 to -100 C
        assert -100.0 <= optimal_cutting_temperature_c(semithin) <= -80.0
    lo, hi = TOKUYASU_WINDOW["specimen_temp_c"]
    assert (lo, hi) == (-125.0, -100.0)
    assert all(lo <= optimal_cutting_temperature_c(t) <= hi for t in (55, 70, 100, 150))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inside_the_window_ribbons_form_with_little_residual_compression(seed: int) -> None:
    s = _stats(GOOD, seed=seed)
    assert s["fail"] < 0.08
    assert s["compression"] < 0.1  # frozen sections recover their shape on thawing (Griffiths et al. 1984)


def test_imaged_thickness_is_the_methylcellulose_dried_thickness() -> None:
    q = SectioningModel(seed=0).cut(cut_at(110.0, optimal_cutting_temperature_c(110.0)))
    assert DRIED_THICKNESS_FRACTION == pytest.approx(70 / 110)
    assert q.imaged_thickness_nm == pytest.approx(q.thickness_nm * 70 / 110)


@pytest.mark.parametrize(
    "bad",
    [
        cut_at(70.0, -80.0),  # far too warm: the block is soft, sections smear and stick
        cut_at(1000.0, optimal_cutting_temperature_c(1000.0)),  # a micrometre: beyond semithin
        cut_at(70.0, optimal_cutting_temperature_c(70.0), v=20.0),  # far too fast
    ],
)
def test_outside_the_windows_ribbons_fail(bad: SectioningSetpoints) -> None:
    assert _stats(bad, seed=0, n=200)["fail"] > 0.6


def test_too_cold_cracks_and_chatters_too_warm_compresses_smears_and_fails() -> None:
    best = optimal_cutting_temperature_c(70.0)
    ok, cold, warm = _stats(GOOD, seed=3), _stats(cut_at(70, best - 10), seed=3), _stats(cut_at(70, best + 8), seed=3)
    assert cold["cracks"] > 3 * ok["cracks"] and cold["chatter"] > ok["chatter"]
    assert warm["compression"] > ok["compression"] + 0.05 and warm["smear"] > 10.0 > ok["smear"]
    assert warm["fail"] > 3 * ok["fail"]
    far_cold = _stats(cut_at(70, best - 16), seed=3)
    assert far_cold["fail"] > 3 * ok["fail"]


def test_thick_feeds_crack_more_at_the_same_temperature() -> None:
    thin, thick = _stats(cut_at(60, -115), seed=0), _stats(cut_at(140, -115), seed=0)
    assert thick["cracks"] > 3 * thin["cracks"]


def test_a_dirty_or_worn_edge_chatters_and_marks_and_slowing_down_helps() -> None:
    clean, dirty = _stats(GOOD, seed=0), _stats(GOOD, seed=0, debris=0.3)
    assert dirty["chatter"] > 3 * clean["chatter"] and dirty["marks"] > clean["marks"] + 1
    assert dirty["compression"] > clean["compression"]
    slow = _stats(cut_at(70, optimal_cutting_temperature_c(70), v=0.4), seed=0, debris=0.3)
    assert slow["chatter"] < 0.6 * dirty["chatter"]
    worn = _stats(GOOD, seed=0, wear=0.6)
    assert worn["marks"] > clean["marks"] and abs(worn["abs_err"]) > abs(clean["abs_err"])


def test_too_slow_a_dry_knife_loses_sections() -> None:
    assert _stats(cut_at(70, optimal_cutting_temperature_c(70), v=0.15), seed=0)["fail"] > 2 * _stats(GOOD, seed=0)["fail"]


def test_wear_and_debris_grow_with_every_cut_and_a_fresh_edge_resets_them() -> None:
    model = SectioningModel(seed=0, debris_per_cut=0.02)
    qs = [model.cut(GOOD) for _ in range(30)]
    assert np.all(np.diff([q.wear for q in qs]) > 0) and np.all(np.diff([q.edge_debris for q in qs]) > 0)
    assert 0.3 < qs[-1].edge_debris < 1.0 and model.cuts == 30
    assert np.mean([q.chatter for q in qs[-10:]]) > 2 * np.mean([q.chatter for q in qs[:5]])
    model.fresh_edge()
    assert model.edge == 0.0


def test_temperature_drift_is_measured_and_a_corrected_setpoint_cancels_it() -> None:
    drifting = SectioningModel(seed=0, temperature_drift_c_per_cut=1.5)
    temps = [drifting.cut(GOOD).specimen_temp_c for _ in range(8)]
    steps = np.diff(temps)
    assert np.all(steps > 0.5) and np.mean(steps) == pytest.approx(1.5, rel=0.3)  # the readback shows the drift
    # a setpoint lowered by the offset cuts at the best temperature again
    offset = drifting.temperature_offset_c
    corrected = cut_at(70, GOOD.specimen_temp_c - offset)
    assert drifting.temperature_error_c(corrected) == pytest.approx(0.0, abs=1e-9)
    assert drifting.failure_probability(corrected) == pytest.approx(SectioningModel(seed=1).failure_probability(GOOD), rel=1e-3)
    assert drifting.failure_probability(GOOD) > 2 * drifting.failure_probability(corrected)
    cooling = SectioningModel(seed=0, temperature_drift_c_per_cut=-1.5)
    assert np.all(np.diff([cooling.cut(GOOD).specimen_temp_c for _ in range(5)]) < 0)


def test_cracks_carry_over_into_the_next_sections() -> None:
    cold = cut_at(70, optimal_cutting_temperature_c(70) - 4)
    model = SectioningModel(seed=5)
    carried = np.array([model.cut(cold).crack_carried for _ in range(400)])
    p_carried = float(carried.mean())
    p_after_carried = float(carried[1:][carried[:-1]].mean())
    # a crack runs on: carried cracks come in runs, more often after a carried one than overall
    assert 0.05 < p_carried < 0.95 and p_after_carried > p_carried + 0.1
    warm = SectioningModel(seed=5)
    assert np.mean([warm.cut(GOOD).crack_carried for _ in range(400)]) < p_carried  # few cracks to carry at the best temperature


def test_depth_is_the_running_sum_of_the_feeds_failed_cuts_included() -> None:
    model = SectioningModel(seed=0)
    feeds = [70.0, 90.0, 50.0, 120.0, 70.0]
    tops = [model.cut(cut_at(t, optimal_cutting_temperature_c(t) + (40 if i == 2 else 0))).depth_nm for i, t in enumerate(feeds)]
    assert tops == pytest.approx(np.concatenate([[0.0], np.cumsum(feeds)[:-1]]).tolist())
    assert model.depth_nm == pytest.approx(sum(feeds))


def test_same_seed_same_sections_different_seed_differs() -> None:
    a = [SectioningModel(seed=3).cut(GOOD) for _ in range(2)]
    b = [SectioningModel(seed=3).cut(GOOD) for _ in range(2)]
    assert a == b
    assert SectioningModel(rng=np.random.default_rng(4)).cut(GOOD) != a[0]


def test_bad_setpoints_raise_parameter_error() -> None:
    with pytest.raises(ParameterError, match="cutting_speed_mm_s"):
        SectioningSetpoints(section_thickness_nm=80, cutting_speed_mm_s=-1.0)
    with pytest.raises(ParameterError, match="knife_wear"):
        SectioningModel(seed=0, knife_wear=2.0)
    with pytest.raises(ParameterError, match="temperature_drift_c_per_cut"):
        SectioningModel(seed=0, temperature_drift_c_per_cut=50.0)
