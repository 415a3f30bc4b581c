"""A trial cut off during a run (``TrialInterruptedError``: its worker died) follows the crash rule.

No Ray here: a scripted executor raises the error the Ray executor raises when a bench dies.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from campaign_helpers import make_config, value_of

from cryoopt.campaign import Campaign, Journal
from cryoopt.exceptions import TrialInterruptedError
from cryoopt.registry import Executor, TrialRequest


class CutOff(Executor):
    """Runs trials; the first attempt of each trial in ``cut`` is cut off (and, if ``lost``, every later one)."""

    def __init__(self, cut: set[int], *, idempotent: bool, recovered: dict[int, float] | None = None,
                 lost: bool = False) -> None:
        self.cut, self.idempotent, self.recovered, self.lost = set(cut), idempotent, recovered or {}, lost
        self.ran: list[int] = []
        self._lock = threading.Lock()

    def run(self, trial: TrialRequest) -> float:
        with self._lock:
            self.ran.append(trial.id)
            if self.lost:
                raise TrialInterruptedError("no bench is left", executor_lost=True)
            if trial.id in self.cut:
                self.cut.discard(trial.id)
                raise TrialInterruptedError(f"its bench bench-{trial.id % 2} died")
        return value_of(trial.params)

    def recover(self, trial: TrialRequest) -> float | None:
        return self.recovered.get(trial.id)


def _trials(directory: Path) -> dict[int, Any]:
    j = Journal.open(directory, readonly=True)
    try:
        return {r.id: r for r in j.trials()}
    finally:
        j.close()


@pytest.mark.parametrize("in_flight", [1, 2], ids=["sequential", "threads"])
def test_idempotent_trial_cut_off_runs_again_and_completes(tmp_path: Path, in_flight: int) -> None:
    ex = CutOff({2}, idempotent=True)
    summary = Campaign(make_config(max_in_flight=in_flight, budget={"experiments": 5}), tmp_path, executor=ex,
                       progress=False).run()

    trials = _trials(tmp_path)
    assert summary.counts["completed"] == 5 and summary.counts["failed"] == 0
    assert ex.ran.count(2) == 2 and trials[2].attempts == 2
    assert trials[2].status == "completed" and trials[2].values["objective"] == value_of(trials[2].params)


@pytest.mark.parametrize("in_flight", [1, 2], ids=["sequential", "threads"])
def test_instrument_trial_cut_off_is_abandoned_never_rerun_nor_failed(tmp_path: Path, in_flight: int) -> None:
    ex = CutOff({2}, idempotent=False)
    campaign = Campaign(make_config(max_in_flight=in_flight, budget={"experiments": 5}), tmp_path, executor=ex,
                        progress=False)
    summary = campaign.run()

    trials = _trials(tmp_path)
    assert ex.ran.count(2) == 1
    assert trials[2].status == "abandoned"
    assert "its bench bench-0 died" in trials[2].error and "not re-run" in trials[2].error
    assert summary.counts == {"proposed": 0, "running": 0, "completed": 4, "failed": 0, "abandoned": 1}
    assert campaign._optimizer().trial(2).status.value == "abandoned"  # not a failure fed to the model


def test_cut_off_trial_whose_result_the_executor_recovers_is_completed_not_rerun(tmp_path: Path) -> None:
    ex = CutOff({1}, idempotent=False, recovered={1: -0.5})
    summary = Campaign(make_config(budget={"experiments": 3}), tmp_path, executor=ex, progress=False).run()

    trials = _trials(tmp_path)
    assert ex.ran.count(1) == 1 and trials[1].status == "completed" and trials[1].values["objective"] == -0.5
    assert summary.counts["completed"] == 3


def test_executor_lost_stops_the_campaign_resumable(tmp_path: Path) -> None:
    cfg = make_config(budget={"experiments": 4})
    with pytest.raises(TrialInterruptedError, match="no bench is left"):
        Campaign(cfg, tmp_path, executor=CutOff(set(), idempotent=True, lost=True), progress=False).run()
    status = Campaign(cfg, tmp_path).status()
    assert status.state == "interrupted" and status.stop_reason == "executor_lost"
    assert status.counts["proposed"] == 1 and status.counts["running"] == 0  # idempotent: queued to run again

    ex = CutOff(set(), idempotent=True)
    summary = Campaign(cfg, tmp_path, executor=ex, progress=False).run()
    assert summary.counts["completed"] == 4 and ex.ran[0] == 0
