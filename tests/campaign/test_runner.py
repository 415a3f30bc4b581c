"""Campaign runner: budget, resume, async execution, failures, stop conditions, crash rule, bad input."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import pytest
from campaign_helpers import MAX_ACTIVE, make_config

from cryoopt.campaign import Campaign, Executor, Journal
from cryoopt.exceptions import ConfigError, JournalError, TrialError


def digest(directory: Path) -> str:
    """Hash of the journal's logical content (file bytes move when SQLite checkpoints its WAL)."""
    import sqlite3

    db = sqlite3.connect(directory / "journal.sqlite")
    try:
        return hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()
    finally:
        db.close()


def test_runs_to_budget_and_records_everything(tmp_path: Path) -> None:
    summary = Campaign(make_config(), tmp_path / "c").run()
    assert summary.stop_reason == "budget"
    assert summary.counts["completed"] == 8
    j = Journal.open(tmp_path / "c", readonly=True)
    rows = j.trials()
    assert [r.id for r in rows] == list(range(8))
    assert all(r.status == "completed" and r.duration_s is not None and r.started_at and r.finished_at for r in rows)
    assert all(set(r.values) == {"objective", "prep_time_h"} for r in rows)
    assert j.meta("config_hash") == make_config().config_hash()
    assert j.optimizer_state()["rng"]  # the RNG is journaled
    assert summary.best.values["objective"] == max(r.values["objective"] for r in rows)


def test_resume_with_bigger_budget_equals_one_long_run(tmp_path: Path) -> None:
    Campaign(make_config(optimizer={"strategy": "random"}, budget={"experiments": 5}), tmp_path / "a").run()
    s = Campaign(make_config(optimizer={"strategy": "random"}, budget={"experiments": 12}), tmp_path / "a").run()
    Campaign(make_config(optimizer={"strategy": "random"}, budget={"experiments": 12}), tmp_path / "b").run()
    a = [r.params for r in Journal.open(tmp_path / "a").trials()]
    b = [r.params for r in Journal.open(tmp_path / "b").trials()]
    assert s.counts["completed"] == 12 and a == b


def test_second_run_of_finished_campaign_runs_nothing(tmp_path: Path) -> None:
    Campaign(make_config(), tmp_path / "c").run()
    s = Campaign(make_config(), tmp_path / "c").run()
    assert s.stop_reason == "budget" and s.n_trials == 8


def test_batches_and_async_in_flight(tmp_path: Path) -> None:
    MAX_ACTIVE[0] = 0
    cfg = make_config(executor={"target": "campaign_helpers:slow"}, batch_size=2, max_in_flight=3,
                      budget={"experiments": 9}, optimizer={"strategy": "random"})
    s = Campaign(cfg, tmp_path / "c").run()
    assert s.counts["completed"] == 9 and MAX_ACTIVE[0] == 3


def test_async_bo_sees_in_flight_trials_as_pending(tmp_path: Path) -> None:
    seen: list[int] = []

    class Spy(Executor):
        idempotent = True

        def __init__(self) -> None:
            self.campaign: Campaign | None = None

        def run(self, trial: Any) -> float:
            import time

            time.sleep(0.02)
            return -((trial["x"] - 0.3) ** 2)

    cfg = make_config(optimizer={"strategy": "bo", "options": {"n_initial": 3, "num_restarts": 2, "raw_samples": 32, "mc_samples": 32}},
                      max_in_flight=2, budget={"experiments": 6})
    camp = Campaign(cfg, tmp_path / "c", executor=Spy())
    original = camp._next_trial

    def spy_next(**kwargs):  # noqa: ANN202
        if camp._opt is not None:
            seen.append(len(camp._opt.pending))
        return original(**kwargs)

    camp._next_trial = spy_next  # type: ignore[method-assign]
    s = camp.run()
    assert s.counts["completed"] == 6
    assert max(seen) >= 1  # asks happened while another trial was in flight (pending)
    assert {r.source for r in Journal.open(tmp_path / "c").trials()} >= {"sobol", "bo"}


def test_failures_are_recorded_not_crashes(tmp_path: Path) -> None:
    cfg = make_config(executor={"target": "campaign_helpers:flaky"}, budget={"experiments": 16})
    s = Campaign(cfg, tmp_path / "c").run()
    rows = Journal.open(tmp_path / "c").trials()
    failed = [r for r in rows if r.status == "failed"]
    assert s.counts["completed"] + s.counts["failed"] == 16 and failed
    assert all(("knife broke" in r.error) or ("nan" in r.error) for r in failed)
    assert all(0.1 <= r.params["x"] <= 0.8 for r in rows if r.status == "completed")


def test_result_lacking_objective_stops_with_config_error(tmp_path: Path) -> None:
    cfg = make_config(objectives={"quality": "maximize"})
    with pytest.raises(ConfigError, match="lacks \\['quality'\\]"):
        Campaign(cfg, tmp_path / "c").run()
    assert Journal.open(tmp_path / "c").meta("stop_reason") == "error"


def test_evaluation_metrics_map_result_keys(tmp_path: Path) -> None:
    cfg = make_config(objectives={"quality": "maximize"}, evaluation={"metrics": {"quality": "objective"}})
    s = Campaign(cfg, tmp_path / "c").run()
    assert s.counts["completed"] == 8 and "quality" in s.best.values


def test_outcome_constraints_decide_feasibility(tmp_path: Path) -> None:
    cfg = make_config(outcome_constraints=["prep_time_h <= 1.25"], budget={"experiments": 10})
    s = Campaign(cfg, tmp_path / "c").run()
    assert s.best.values["prep_time_h"] <= 1.25


@pytest.mark.parametrize(
    ("stopping", "budget", "reason"),
    [
        ({"target": -0.05}, {"experiments": 40}, "target"),
        ({"patience": 3, "min_improvement": 10.0}, {"experiments": 40}, "no_improvement"),
        ({}, {"experiments": 40, "wall_time_s": 1e-6}, "wall_time"),
    ],
)
def test_stop_conditions(tmp_path: Path, stopping: dict, budget: dict, reason: str) -> None:
    s = Campaign(make_config(stopping=stopping, budget=budget), tmp_path / "c").run()
    assert s.stop_reason == reason and s.n_trials < 40


def test_no_improvement_counts_from_last_improvement(tmp_path: Path) -> None:
    s = Campaign(make_config(stopping={"patience": 4, "min_improvement": 10.0}, budget={"experiments": 40}), tmp_path / "c").run()
    assert s.counts["completed"] == 5  # first trial improves, then 4 without


# ---------------------------------------------------------------------------- crash rule
class Counting(Executor):
    def __init__(self, idempotent: bool, recovered: Any = None) -> None:
        self.idempotent = idempotent  # type: ignore[misc]
        self.recovered = recovered
        self.ran: list[int] = []

    def run(self, trial: Any) -> float:
        self.ran.append(trial.id)
        return -((trial["x"] - 0.3) ** 2)

    def recover(self, trial: Any) -> Any:
        return self.recovered


def _crash_after_two(tmp_path: Path) -> Path:
    """A journal as a process killed while trial 2 ran would leave it."""
    d = tmp_path / "c"
    Campaign(make_config(budget={"experiments": 2}), d).run()
    camp = Campaign(make_config(budget={"experiments": 3}), d)
    camp._journal = camp._open_journal(create=False)
    camp._opt = camp._optimizer()
    rec = camp._next_trial()
    camp.journal.update_trial(rec.id, status="running", started_at=1.0, attempts=1)
    camp.close()
    return d


def test_running_trial_of_idempotent_executor_is_rerun(tmp_path: Path) -> None:
    d = _crash_after_two(tmp_path)
    ex = Counting(idempotent=True)
    s = Campaign(make_config(budget={"experiments": 3}), d, executor=ex).run()
    assert ex.ran == [2] and s.counts["completed"] == 3
    r = Journal.open(d).trial(2)
    assert r.attempts == 2 and r.status == "completed"


def test_running_trial_of_instrument_is_abandoned_not_rerun(tmp_path: Path) -> None:
    d = _crash_after_two(tmp_path)
    ex = Counting(idempotent=False)
    s = Campaign(make_config(budget={"experiments": 4}), d, executor=ex).run()
    r = Journal.open(d).trial(2)
    assert r.status == "abandoned" and "not re-run" in r.error
    assert 2 not in ex.ran and ex.ran == [3]  # the budget counts the abandoned experiment
    assert s.counts == {"proposed": 0, "running": 0, "completed": 3, "failed": 0, "abandoned": 1}
    assert any(kind == "recover" for _, kind, _ in Journal.open(d).events())


def test_running_trial_rechecked_by_executor(tmp_path: Path) -> None:
    d = _crash_after_two(tmp_path)
    ex = Counting(idempotent=False, recovered=-0.5)
    Campaign(make_config(budget={"experiments": 3}), d, executor=ex).run()
    r = Journal.open(d).trial(2)
    assert ex.ran == [] and r.status == "completed" and r.values["objective"] == -0.5


# ---------------------------------------------------------------------------- bad input
def test_refuses_incompatible_config_and_leaves_journal_untouched(tmp_path: Path) -> None:
    d = tmp_path / "c"
    Campaign(make_config(), d).run()
    before = digest(d)
    with pytest.raises(JournalError, match="differs from the journal's in seed"):
        Campaign(make_config(seed=3), d).run()
    with pytest.raises(JournalError, match="campaign 't', not 'other'"):
        Campaign(make_config(name="other"), d).run()
    assert digest(d) == before


def test_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(JournalError, match="writable --dir"):
        Campaign(make_config(), blocker / "sub").run()


def test_second_runner_is_refused(tmp_path: Path) -> None:
    from cryoopt.campaign import CampaignLock

    d = tmp_path / "c"
    d.mkdir()
    with CampaignLock(d), pytest.raises(JournalError, match="in use"):
        Campaign(make_config(), d).run()


def test_manual_loop_suggest_tell(tmp_path: Path) -> None:
    d = tmp_path / "m"
    cfg = make_config(executor={"type": "manual", "target": None}, budget={"experiments": 3})
    assert Campaign(cfg, d).run().stop_reason == "manual"
    camp = Campaign.open(d)
    (t0,) = camp.suggest()
    assert t0.status == "running"
    camp.tell(t0.id, 0.5)
    (t1, t2) = camp.suggest(2)
    camp.tell(t1.id, {"objective": 0.7})
    camp.tell(t2.id, float("nan"))
    assert camp.suggest() == []  # budget spent
    j = Journal.open(d)
    assert [r.status for r in j.trials()] == ["completed", "completed", "failed"]
    before = digest(d)
    with pytest.raises(TrialError, match="already completed"):
        camp.tell(t0.id, 0.1)
    with pytest.raises(TrialError, match="unknown trial 9"):
        camp.tell(9, 0.1)
    assert digest(d) == before
    assert math.isclose(camp.best().values["objective"], 0.7)


def test_an_executor_that_cannot_be_built_leaves_no_journal(tmp_path: Path) -> None:
    d = tmp_path / "c"
    with pytest.raises(ConfigError, match="building the 'function' executor failed: ConnectionRefusedError"):
        Campaign(make_config(executor={"target": "campaign_helpers:Unplugged"}), d).run()
    assert not Journal.exists(d)
    assert Campaign(make_config(), d).run().counts["completed"] == 8  # the corrected config starts cleanly


def test_a_version_1_journal_is_read_and_upgraded(tmp_path: Path) -> None:
    import sqlite3

    d = tmp_path / "c"
    Campaign(make_config(budget={"experiments": 3}), d).run()
    db = sqlite3.connect(d / "journal.sqlite")  # as the previous cryoopt wrote it
    db.execute("DROP TABLE arrivals")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    assert Campaign.open(d).status().counts["completed"] == 3  # read as it is
    assert Campaign(make_config(budget={"experiments": 5}), d).run().counts["completed"] == 5
    j = Journal.open(d, readonly=True)
    assert j.meta("schema_version") == 2 and j.arrivals() == {}
    assert [m for _, _, m in j.events("migrate")] == ["journal schema upgraded from version 1 to 2"]


def test_trial_ids_beyond_sqlite_integers_are_unknown(tmp_path: Path) -> None:
    d = tmp_path / "m"
    Campaign(make_config(executor={"type": "manual", "target": None}), d).run()
    before = digest(d)
    for bad in (2**63, 2**70, -1):
        with pytest.raises(TrialError, match="unknown trial"):
            Campaign.open(d).tell(bad, 0.5)
        with pytest.raises(TrialError, match="unknown trial"):
            Campaign.open(d).feedback(bad, 3)
    assert digest(d) == before
