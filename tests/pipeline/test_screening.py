"""Screening a ribbon overview: sections found, thickness from interference colour,
defects classified against the simulator's truth, EM queue, context vector."""

from __future__ import annotations

import numpy as np
import pytest

from cryoopt.exceptions import EvaluationError
from cryoopt.pipeline.screening import (
    CONTEXT_FEATURES,
    ScreeningThresholds,
    em_time_saved,
    screen_ribbon,
    screening_context,
)
from cryoopt.sim.overview import render_ribbon


def _ribbon(thicknesses, **kw):
    q = [{"thickness_nm": t, "compression": 0.3} for t in thicknesses]
    kw.setdefault("fold_probability", 0.0)
    kw.setdefault("contamination_probability", 0.0)
    return render_ribbon(q, **kw)


@pytest.mark.parametrize("seed", [0, 1])
def test_thickness_is_read_from_the_interference_colour(seed):
    ts = [55.0, 75.0, 95.0, 120.0, 140.0, 180.0, 230.0]
    ov = _ribbon(ts, rng=seed)
    res = screen_ribbon(ov.image, pixel_size_nm=ov.pixel_size_nm)
    assert len(res.sections) == len(ts)
    np.testing.assert_allclose([s.thickness_nm for s in res.sections], ts, atol=10.0)
    assert res.labels == ["good"] * 5 + ["too_thick"] * 2


@pytest.mark.parametrize("defect, kwargs", [
    ("folded", {"fold_probability": 1.0}),
    ("contaminated", {"contamination_probability": 1.0}),
])
def test_every_section_with_a_defect_is_classified_as_such(defect, kwargs):
    ov = _ribbon([90.0] * 6, rng=3, **kwargs)
    res = screen_ribbon(ov.image, pixel_size_nm=ov.pixel_size_nm)
    assert [s.label for s in ov.sections] == [defect] * 6
    assert res.labels == [defect] * 6 and res.targets == []


def test_cracks_and_failed_cuts():
    q = [{"thickness_nm": 90.0, "crack_density_per_um": 0.0}] * 3
    q = q + [{"thickness_nm": 90.0, "crack_density_per_um": 5.0}] + [{"thickness_nm": 90.0, "ribbon_ok": False}] + q
    ov = render_ribbon(q, fold_probability=0.0, contamination_probability=0.0, rng=4)
    res = screen_ribbon(ov.image, pixel_size_nm=ov.pixel_size_nm)
    assert [s.label for s in ov.sections] == ["good"] * 3 + ["cracked"] + ["good"] * 3
    assert res.labels == [s.label for s in ov.sections]
    assert res.gaps == 1


def test_random_ribbons_good_precision_and_recall_against_truth():
    from cryoopt.sim.overview import cut_ribbon

    rng = np.random.default_rng(5)
    tp = fp = fn = 0
    for _ in range(6):
        q = cut_ribbon({"section_thickness_nm": float(rng.uniform(70, 170)), "cutting_speed_mm_s": 1.0}, 10,
                       rng=int(rng.integers(1 << 30)))
        ov = render_ribbon(q, rng=int(rng.integers(1 << 30)), fold_probability=0.15, contamination_probability=0.15)
        res = screen_ribbon(ov.image, pixel_size_nm=ov.pixel_size_nm)
        for truth in ov.sections:  # the screened section that covers most of it
            got = max(res.sections, key=lambda s: np.count_nonzero(s.mask & truth.mask))
            tp += truth.good and got.label == "good"
            fp += (not truth.good) and got.label == "good"
            fn += truth.good and got.label != "good"
    assert tp / (tp + fp) >= 0.8 and tp / (tp + fn) >= 0.8


def test_queue_ranks_good_sections_by_closeness_to_the_target_thickness():
    ov = _ribbon([130.0, 100.0, 70.0, 115.0], rng=6)
    res = screen_ribbon(ov.image, pixel_size_nm=ov.pixel_size_nm, target_thickness_nm=100.0)
    assert res.targets[0] == 1 and res.targets[-1] in (0, 2)
    assert [res.sections[i].rank for i in res.targets] == list(range(len(res.targets)))


def test_context_vector_and_em_time():
    ov = _ribbon([90.0, 95.0, 200.0, 85.0], rng=7)
    res = screen_ribbon(ov.image, pixel_size_nm=ov.pixel_size_nm, target_thickness_nm=90.0)
    v = screening_context(res, face_length_um=80.0)
    assert v.shape == (len(CONTEXT_FEATURES),) and np.all(np.isfinite(v))
    ctx = dict(zip(CONTEXT_FEATURES, v))
    assert ctx["good_fraction"] == 0.75 and ctx["too_thick_fraction"] == 0.25
    assert ctx["compression"] == pytest.approx(0.3, abs=0.05)
    t = em_time_saved(np.array([1, 1, 0, 1], bool), np.array([1, 1, 0, 0], bool), em_minutes_per_section=10, overview_minutes=2)
    assert t == pytest.approx({"minutes_without": 40.0, "minutes_with": 32.0, "fraction_saved": 0.2, "bad_minutes_without": 20.0,
                               "bad_minutes_with": 10.0, "good_missed": 0.0})


def test_bad_overviews_are_refused():
    with pytest.raises(EvaluationError, match="H x W x 3"):
        screen_ribbon(np.zeros((50, 50)), pixel_size_nm=1000.0)
    with pytest.raises(EvaluationError, match="no section found"):
        screen_ribbon(np.full((50, 80, 3), 0.02) + np.random.default_rng(0).normal(0, 1e-4, (50, 80, 3)), pixel_size_nm=1000.0)
    with pytest.raises(EvaluationError, match="pixel_size_nm"):
        screen_ribbon(np.ones((50, 50, 3)), pixel_size_nm=-1)
    assert ScreeningThresholds().too_thick_nm == 150.0
