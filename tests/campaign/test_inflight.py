"""Trials in flight: results stored the moment they arrive, executor timeouts that follow the
crash rule, a suspended bench that pauses the campaign and resumes it by itself."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from campaign_helpers import make_config, value_of

from cryoopt.campaign import Campaign, Executor, Journal


def events(d: Path, kind: str) -> list[str]:
    j = Journal.open(d, readonly=True)
    try:
        return [m for _, _, m in j.events(kind)]
    finally:
        j.close()


# ---------------------------------------------------------------------------- timeouts
class Hangs(Executor):
    """Hangs (until released) on the trials in ``hang``; every other trial returns at once."""

    def __init__(self, hang: set[int], *, idempotent: bool, hang_attempts: int = 99, recovered: Any = None) -> None:
        self.idempotent = idempotent  # type: ignore[misc]
        self.hang, self.hang_attempts, self.recovered = hang, hang_attempts, recovered
        self.release = threading.Event()
        self.calls: list[int] = []

    def run(self, trial: Any) -> float:
        self.calls.append(trial.id)
        if trial.id in self.hang and self.calls.count(trial.id) <= self.hang_attempts:
            self.release.wait(30)  # an instrument that stopped answering
            return 123.0  # a late result: must be ignored
        return value_of(trial.params)

    def recover(self, trial: Any) -> Any:
        return self.recovered

    def close(self) -> None:
        self.release.set()


def _run(ex: Executor, d: Path, budget: int = 4, **cfg: Any) -> Any:
    config = make_config(budget={"experiments": budget}, executor={"timeout_s": 0.3}, **cfg)
    t0 = time.monotonic()
    summary = Campaign(config, d, executor=ex, progress=False).run()
    return summary, time.monotonic() - t0


def test_a_hung_instrument_trial_is_abandoned_and_the_campaign_goes_on(tmp_path: Path) -> None:
    ex = Hangs({1}, idempotent=False)
    summary, took = _run(ex, tmp_path / "c")
    j = Journal.open(tmp_path / "c", readonly=True)
    r = j.trial(1)
    assert r.status == "abandoned" and "timed out after" in r.error and "not re-run" in r.error
    assert ex.calls.count(1) == 1  # never run twice on an instrument
    assert summary.counts == {"proposed": 0, "running": 0, "completed": 3, "failed": 0, "abandoned": 1}
    assert took < 10  # bounded: the hung call did not hold the campaign
    assert any("timed out" in m for m in events(tmp_path / "c", "recover"))


def test_an_idempotent_trial_that_timed_out_runs_again(tmp_path: Path) -> None:
    ex = Hangs({1}, idempotent=True, hang_attempts=1)
    summary, _ = _run(ex, tmp_path / "c")
    r = Journal.open(tmp_path / "c", readonly=True).trial(1)
    assert r.status == "completed" and r.attempts == 2 and r.values["objective"] == pytest.approx(value_of(r.params))
    assert summary.counts["completed"] == 4 and ex.calls.count(1) == 2


def test_an_idempotent_trial_that_always_hangs_is_abandoned_after_two_attempts(tmp_path: Path) -> None:
    ex = Hangs({0}, idempotent=True)
    summary, _ = _run(ex, tmp_path / "c", budget=2)
    r = Journal.open(tmp_path / "c", readonly=True).trial(0)
    assert r.status == "abandoned" and r.attempts == 2 and "attempt 2 of 2" in r.error
    assert summary.counts["completed"] == 1 and ex.calls.count(0) == 2


def test_a_timed_out_trial_is_rechecked_by_the_executor(tmp_path: Path) -> None:
    ex = Hangs({0}, idempotent=False, recovered=-0.25)
    _run(ex, tmp_path / "c", budget=2)
    r = Journal.open(tmp_path / "c", readonly=True).trial(0)
    assert r.status == "completed" and r.values["objective"] == -0.25


# ---------------------------------------------------------------------------- suspenders
class Door(Executor):
    """A bench whose door is open from the second trial on, until ``close_after_s`` later."""

    idempotent = True

    def __init__(self, close_after_s: float, *, broken_check: bool = False) -> None:
        self.close_after_s, self.broken_check = close_after_s, broken_check
        self.opened: float | None = None
        self.starts: list[float] = []
        self.polls = 0

    def suspended(self) -> str | None:
        self.polls += 1
        if len(self.starts) >= 1 and self.opened is None:
            self.opened = time.monotonic()
        if self.opened is not None and time.monotonic() - self.opened < self.close_after_s:
            if self.broken_check:
                raise OSError("door sensor not answering")
            return "door open"
        return None

    def run(self, trial: Any) -> float:
        self.starts.append(time.monotonic())
        return value_of(trial.params)


def test_a_suspended_bench_pauses_and_resumes_by_itself(tmp_path: Path) -> None:
    d = tmp_path / "c"
    door = Door(close_after_s=0.8)
    cfg = make_config(budget={"experiments": 3}, executor={"suspend_poll_s": 0.05})
    seen: list[Any] = []

    def watch() -> None:  # `cryoopt status` from another process while the campaign waits
        while door.opened is None:
            time.sleep(0.01)
        time.sleep(0.3)
        seen.append(Campaign.open(d, progress=False).status())

    watcher = threading.Thread(target=watch)
    watcher.start()
    t0 = time.monotonic()
    summary = Campaign(cfg, d, executor=door, progress=False).run()
    wall = time.monotonic() - t0
    watcher.join()
    assert summary.counts["completed"] == 3
    # no trial started while the door was open
    assert not any(door.opened < t < door.opened + 0.8 for t in door.starts)
    assert door.polls >= 5  # asked again every suspend_poll_s while paused
    assert seen[0].state == "running" and seen[0].paused == "door open"
    assert events(d, "pause") == ["paused: door open"]
    (resumed,) = events(d, "resume")
    assert resumed.startswith("resumed after")
    j = Journal.open(d, readonly=True)
    assert j.meta("paused") is None
    # the wall-time budget counts active time only: the pause (>= 0.8 s) is not in it
    (started, _, _), (stopped, _, _) = j.events("start")[-1], j.events("stop")[-1]
    assert j.meta("elapsed_s") < (stopped - started) - 0.6 and stopped - started <= wall
    assert Campaign.open(d, progress=False).status().paused is None


def test_a_pause_does_not_use_up_the_wall_time_budget(tmp_path: Path) -> None:
    door = Door(close_after_s=0.6)
    cfg = make_config(budget={"experiments": 3, "wall_time_s": 0.5}, executor={"suspend_poll_s": 0.05})
    summary = Campaign(cfg, tmp_path / "c", executor=door, progress=False).run()
    assert summary.stop_reason == "budget" and summary.counts["completed"] == 3


def test_a_failing_suspension_check_pauses_too(tmp_path: Path) -> None:
    door = Door(close_after_s=0.3, broken_check=True)
    cfg = make_config(budget={"experiments": 2}, executor={"suspend_poll_s": 0.05})
    Campaign(cfg, tmp_path / "c", executor=door, progress=False).run()
    (paused,) = events(tmp_path / "c", "pause")
    assert "cannot tell whether the bench may start a trial" in paused and "door sensor" in paused


def test_operator_stop_while_paused_closes_the_pause(tmp_path: Path) -> None:
    door = Door(close_after_s=60)
    cfg = make_config(budget={"experiments": 3}, executor={"suspend_poll_s": 0.05})
    camp = Campaign(cfg, tmp_path / "c", executor=door, progress=False)
    threading.Timer(0.5, camp.request_stop).start()
    summary = camp.run()
    assert summary.stop_reason == "operator" and summary.counts["completed"] == 1
    assert events(tmp_path / "c", "resume")[0].startswith("session ended while paused")


# ---------------------------------------------------------------------------- results arrive
class Quick(Executor):
    idempotent = False

    def run(self, trial: Any) -> float:
        time.sleep(0.05 if trial.id % 2 == 0 else 0.0)
        return value_of(trial.params)


def test_a_result_is_stored_when_it_arrives_not_after_the_next_ask(tmp_path: Path) -> None:
    d = tmp_path / "c"
    cfg = make_config(budget={"experiments": 6}, max_in_flight=2, optimizer={"strategy": "random"})
    camp = Campaign(cfg, d, executor=Quick(), progress=False)
    seen: list[tuple[int, set[int]]] = []
    original = camp._next_trial

    def slow_ask(**kwargs: Any) -> Any:  # an ask that takes a while (a GP fit)
        time.sleep(0.3)
        j = Journal.open(d, readonly=True)
        seen.append((j.count(status="running"), set(j.arrivals())))
        j.close()
        return original(**kwargs)

    camp._next_trial = slow_ask  # type: ignore[method-assign]
    camp.run()
    # during some ask, a running trial's result was already durable in the journal
    assert any(arrived for _, arrived in seen)
    rows = Journal.open(d, readonly=True).trials()
    assert all(r.status == "completed" for r in rows)
    assert max(r.duration_s for r in rows) < 0.25  # the executor's time, not the time spent waiting on the ask


def test_a_result_that_arrived_before_a_crash_is_recorded_not_rerun(tmp_path: Path) -> None:
    from cryoopt.campaign.inflight import encode_result

    d = tmp_path / "c"
    Campaign(make_config(budget={"experiments": 2}), d, progress=False).run()
    camp = Campaign(make_config(budget={"experiments": 3}), d, progress=False)
    camp._journal = camp._open_journal(create=False)
    camp._opt = camp._optimizer()
    rec = camp._next_trial(start=True)  # running, as a killed process leaves it ...
    kind, payload = encode_result({"objective": -0.5, "prep_time_h": 1.0})
    camp.journal.add_arrival(rec.id, rec.attempts, kind, payload, 0.125)  # ... after its result arrived
    camp.close()

    class Never(Executor):
        idempotent = False

        def run(self, trial: Any) -> float:
            raise AssertionError("a trial whose result had arrived must not run again")

    s = Campaign(make_config(budget={"experiments": 3}), d, executor=Never(), progress=False).run()
    r = Journal.open(d, readonly=True).trial(rec.id)
    assert r.status == "completed" and r.values["objective"] == -0.5 and r.duration_s == 0.125
    assert s.counts["completed"] == 3 and not Journal.open(d, readonly=True).arrivals()
    assert any("its result had arrived" in m for m in events(d, "recover"))
