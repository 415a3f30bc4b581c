"""The one recommended protocol: replicates pooled, GP posterior when there is one, constraints, targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from campaign_helpers import make_config

from cryoopt.campaign import Campaign, Journal
from cryoopt.campaign.journal import TrialRecord
from cryoopt.campaign.recommendation import recommend, units


def _trial(i: int, params: dict[str, Any], **values: float) -> TrialRecord:
    return TrialRecord(i, params, "sobol", "completed", dict(values), None, None, 0.0, 1.0, 2.0, 1.0, 1, False)


A, B, C = {"x": 0.9, "y": 1}, {"x": 0.5, "y": 5}, {"x": 0.3, "y": 4}


def test_replicates_are_pooled_so_a_lucky_single_run_does_not_win() -> None:
    cfg = make_config()
    trials = [_trial(0, A, objective=0.9), _trial(1, C, objective=0.60), _trial(2, A, objective=0.1),
              _trial(3, C, objective=0.62), _trial(4, B, objective=0.55)]
    rec = recommend(cfg, trials, fit=False)
    assert rec is not None and rec.basis == "observed"
    assert rec.params == C and rec.trial_ids == (1, 3) and rec.n_replicates == 2  # not trial 0, the best single run
    assert rec.expected["objective"] == pytest.approx(0.61)
    lo, hi = rec.interval["objective"]  # t interval of two runs: 0.61 +- 12.706 * 0.01414 / sqrt(2)
    assert lo == pytest.approx(0.61 - 12.706 * 0.01 , abs=1e-3) and hi == pytest.approx(0.61 + 12.706 * 0.01, abs=1e-3)
    assert recommend(cfg, [], fit=False) is None


def test_constraints_and_a_target_choose_the_fastest_protocol_expected_to_reach_it() -> None:
    cfg = make_config(objectives={"objective": "maximize", "prep_time_h": "minimize"},
                      outcome_constraints=["prep_time_h <= 3"])
    trials = [_trial(0, A, objective=0.95, prep_time_h=4.0),  # best, but violates the constraint
              _trial(1, B, objective=0.80, prep_time_h=2.0), _trial(2, C, objective=0.70, prep_time_h=0.5)]
    assert recommend(cfg, trials, fit=False).params == B  # best feasible first objective
    fastest = recommend(cfg, trials, fit=False, target=0.65)
    assert fastest.params == C and fastest.meets_target is True  # both reach 0.65: the faster one
    assert recommend(cfg, trials, fit=False, target=0.9).meets_target is False


def test_with_three_trials_the_gp_posterior_gives_the_expected_value_and_its_interval(tmp_path: Path) -> None:
    cfg = make_config(objectives={"objective": "maximize", "prep_time_h": "minimize"}, budget={"experiments": 8})
    summary = Campaign(cfg, tmp_path / "c").run()
    rec = summary.recommendation
    assert rec is not None and rec.basis == "model"
    trials = Journal.open(tmp_path / "c").trials()
    assert rec.params in [t.params for t in trials]
    for name in ("objective", "prep_time_h"):
        lo, hi = rec.interval[name]
        assert lo <= rec.expected[name] <= hi
    assert rec.interval["prep_time_h"][0] >= 0.0  # a time is never negative: the interval is clipped there
    # the deterministic objective: the GP's best expected protocol is the best observed one here
    best = max(trials, key=lambda t: t.values["objective"])
    assert rec.expected["objective"] == pytest.approx(best.values["objective"], abs=0.05)
    assert "trial" in rec.summary() and "95 % interval" in rec.summary()


def test_units_come_from_the_config_and_metric_names() -> None:
    cfg = make_config(space={"parameters": {"x": {"type": "float", "low": 0, "high": 1, "unit": "mm/s"},
                                            "y": {"type": "int", "low": 0, "high": 10}}},
                      objectives={"objective": "maximize", "prep_time_h": "minimize"})
    assert units(cfg) == {"x": "mm/s", "prep_time_h": "h"}
