"""The ``ray`` campaign executor on a local cluster: benches in parallel, a bench killed mid-trial,
the campaign process killed mid-trial and resumed.

Each bench here is a :class:`scale_helpers.Logged` function that logs every trial *start*
(what reached the instrument), so "never silently repeated" is counted, not assumed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from campaign_helpers import make_config
from scale_helpers import starts

from cryoopt.campaign import Campaign, Journal
from cryoopt.config import CampaignConfig
from cryoopt.exceptions import ConfigError

pytestmark = pytest.mark.usefixtures("ray_cluster")


def ray_config(log: Path, *, benches: int = 2, budget: int = 4, sleep_s: float = 0.2, idempotent: bool = True,
               address: str | None = None, target: str = "scale_helpers:Logged", **overrides: Any) -> CampaignConfig:
    bench = {"type": "function", "target": target, "idempotent": idempotent,
             "options": {"log": str(log), "sleep_s": sleep_s} if target == "scale_helpers:Logged" else {}}
    return make_config(
        name="ray-t", budget={"experiments": budget}, max_in_flight=benches, optimizer={"strategy": "sobol"},
        executor={"type": "ray", "target": None, "address": address, "bench": bench, "options": {"benches": benches}},
        **overrides,
    )


def actors_in(config: CampaignConfig) -> list[str]:
    import ray

    from cryoopt.campaign.ray_executor import bench_namespace

    ns = bench_namespace(config)
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == ns)


def assert_released(config: CampaignConfig) -> None:
    """No bench of the campaign is left on the cluster (Ray frees a killed actor's name within moments)."""
    wait_for(lambda: actors_in(config) == [], timeout_s=30, what=f"the benches to be released: {actors_in(config)}")


def trials_of(directory: Path) -> list[Any]:
    j = Journal.open(directory, readonly=True)
    try:
        return j.trials()
    finally:
        j.close()


def events_of(directory: Path) -> list[str]:
    j = Journal.open(directory, readonly=True)
    try:
        return [message for _, _, message in j.events()]
    finally:
        j.close()


def wait_for(condition: Any, timeout_s: float = 120.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def running_bench(config: CampaignConfig) -> tuple[Any, dict[str, Any]] | None:
    """(actor, its description) of a bench that is running a trial now, if any."""
    import ray

    from cryoopt.campaign.ray_executor import bench_namespace

    for name in actors_in(config):
        try:
            actor = ray.get_actor(name, namespace=bench_namespace(config))
            info = ray.get(actor.describe.remote(), timeout=30)
        except (ValueError, ray.exceptions.RayError):
            continue
        if info["running"] is not None:
            return actor, info
    return None


def test_trials_run_on_every_bench_at_once_one_trial_per_bench(tmp_path: Path) -> None:
    cfg = ray_config(tmp_path / "starts.log", benches=3, budget=6, sleep_s=0.5)
    summary = Campaign(cfg, tmp_path / "c", progress=False).run()

    assert summary.stop_reason == "budget" and summary.counts["completed"] == 6
    results = [r.result for r in trials_of(tmp_path / "c")]
    by_bench: dict[float, list[tuple[float, float]]] = {}
    for res in results:
        by_bench.setdefault(res["pid"], []).append((res["t0"], res["t1"]))
    assert len(by_bench) == 3, "the first three trials go to three different benches"
    for windows in by_bench.values():  # a bench never runs two trials at once
        windows.sort()
        assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:]))
    # the first trials really ran at the same time (asynchronous, not one after the other)
    edges = sorted([(t0, 1) for r in results for t0 in [r["t0"]]] + [(r["t1"], -1) for r in results])
    overlap = max(sum(d for _, d in edges[: i + 1]) for i in range(len(edges)))
    assert overlap == 3
    assert_released(cfg)


def test_a_failed_experiment_on_a_bench_is_recorded_with_its_own_error(tmp_path: Path) -> None:
    cfg = ray_config(tmp_path / "unused.log", benches=2, budget=8, target="campaign_helpers:flaky")
    summary = Campaign(cfg, tmp_path / "c", progress=False).run()

    failed = [r for r in trials_of(tmp_path / "c") if r.status == "failed"]
    assert summary.counts["completed"] + summary.counts["failed"] == 8 and failed
    raised = [r for r in failed if r.params["x"] > 0.8]
    assert raised and all(r.error == "RuntimeError: knife broke" for r in raised)  # not a Ray wrapper
    assert all("is nan" in r.error for r in failed if r.params["x"] < 0.1)


def test_bench_killed_mid_trial_idempotent_trial_runs_again(tmp_path: Path) -> None:
    import ray

    log = tmp_path / "starts.log"
    cfg = ray_config(log, benches=2, budget=4, sleep_s=1.0, idempotent=True)
    campaign = Campaign(cfg, tmp_path / "c", progress=False)
    outcome: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("summary", campaign.run()))
    runner.start()
    actor, info = wait_for(lambda: running_bench(cfg), what="a bench running a trial")
    time.sleep(0.2)
    ray.kill(actor)  # the actor dies mid-trial
    runner.join(timeout=120)
    assert not runner.is_alive()

    killed = info["running"]
    trials = {r.id: r for r in trials_of(tmp_path / "c")}
    assert outcome["summary"].counts == {"proposed": 0, "running": 0, "completed": 4, "failed": 0, "abandoned": 0}
    assert trials[killed].attempts == 2, "the interrupted trial ran again"
    assert Counter(starts(log))[json.dumps(trials[killed].params, sort_keys=True)] == 2
    assert any(f"trial {killed}: it was cut off: its bench" in e and "runs again" in e for e in events_of(tmp_path / "c"))
    assert_released(cfg)


def test_bench_process_killed_mid_trial_instrument_trial_is_abandoned_not_rerun(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    cfg = ray_config(log, benches=2, budget=4, sleep_s=1.0, idempotent=False)
    campaign = Campaign(cfg, tmp_path / "c", progress=False)
    outcome: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("summary", campaign.run()))
    runner.start()
    _, info = wait_for(lambda: running_bench(cfg), what="a bench running a trial")
    time.sleep(0.2)
    os.kill(info["pid"], signal.SIGKILL)  # the bench's worker process dies mid-trial
    runner.join(timeout=120)
    assert not runner.is_alive()

    killed = info["running"]
    trials = {r.id: r for r in trials_of(tmp_path / "c")}
    assert trials[killed].status == "abandoned"
    assert "bench" in trials[killed].error and "not re-run" in trials[killed].error
    counts = Counter(starts(log))
    assert counts[json.dumps(trials[killed].params, sort_keys=True)] == 1, "never repeated on the instrument"
    assert all(n == 1 for n in counts.values())
    # the budget counts the abandoned experiment; the replacement bench ran the rest
    assert outcome["summary"].counts == {"proposed": 0, "running": 0, "completed": 3, "failed": 0, "abandoned": 1}
    assert_released(cfg)


def _run_campaign(config_json: str, directory: str) -> None:
    Campaign(CampaignConfig.model_validate_json(config_json), directory, progress=False).run()


def test_campaign_process_killed_then_resume_reconnects_and_collects_the_running_trial(
        ray_cluster: str, tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    cfg = ray_config(log, benches=2, budget=4, sleep_s=1.5, idempotent=False, address=ray_cluster)
    d = tmp_path / "c"
    child = multiprocessing.get_context("spawn").Process(target=_run_campaign, args=(cfg.model_dump_json(), str(d)))
    child.start()
    try:
        wait_for(lambda: (d / "journal.sqlite").exists() and [r for r in trials_of(d) if r.status == "running"],
                 what="a running trial in the campaign process")
        time.sleep(0.3)
    finally:
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join()
    at_kill = [r.id for r in trials_of(d) if r.status == "running"]
    benches_before = actors_in(cfg)
    assert at_kill and benches_before == ["bench-0", "bench-1"], "the benches outlive the killed campaign process"

    summary = Campaign(cfg, d, progress=False).run()  # this process is on the same cluster

    trials = {r.id: r for r in trials_of(d)}
    assert summary.counts == {"proposed": 0, "running": 0, "completed": 4, "failed": 0, "abandoned": 0}
    for tid in at_kill:  # finished on its bench while the campaign was down: collected, not abandoned, not re-run
        assert trials[tid].attempts == 1
        assert any(f"trial {tid}: the process ended while this trial ran; re-checked" in e for e in events_of(d))
    assert all(n == 1 for n in Counter(starts(log)).values()), "no trial ran twice on an instrument"
    assert len(starts(log)) == 4
    assert len({r.result["pid"] for r in trials.values()}) == 2, "the resume reused the two benches, not fresh ones"
    assert_released(cfg)


def test_a_campaign_started_on_threads_continues_on_ray(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    ray_cfg = ray_config(log, benches=2, budget=4)
    local_cfg = ray_cfg.model_copy(update={"executor": ray_cfg.executor.bench, "max_in_flight": 1,
                                           "budget": ray_cfg.budget.model_copy(update={"experiments": 2})})
    assert local_cfg.config_hash() == ray_cfg.config_hash(), "where trials run is not part of a campaign's identity"
    Campaign(local_cfg, tmp_path / "c", progress=False).run()
    summary = Campaign(ray_cfg, tmp_path / "c", progress=False).run()

    assert summary.counts["completed"] == 4
    assert all(n == 1 for n in Counter(starts(log)).values()) and len(starts(log)) == 4


def test_a_bench_that_cannot_start_is_a_config_error_naming_it(tmp_path: Path) -> None:
    # a target that does not exist is refused before any bench starts (cryoopt validate finds it) ...
    missing = ray_config(tmp_path / "x.log", benches=1, budget=1, target="campaign_helpers:no_such_function")
    with pytest.raises(ConfigError, match="executor.bench.target: module 'campaign_helpers' has no 'no_such_function'"):
        Campaign(missing, tmp_path / "m", progress=False).run()
    assert not (tmp_path / "m" / "journal.sqlite").exists()
    # ... one that exists but cannot be built on its bench (an instrument not connected) at the bench
    cfg = ray_config(tmp_path / "x.log", benches=1, budget=1, target="campaign_helpers:Unplugged")
    with pytest.raises(ConfigError, match="bench bench-0 could not start"):
        Campaign(cfg, tmp_path / "c", progress=False).run()
    assert_released(cfg)


def test_close_leaves_a_bench_that_still_runs_a_trial_and_release_benches_frees_it(tmp_path: Path) -> None:
    from cryoopt.campaign.ray_executor import RayExecutor, release_benches
    from cryoopt.registry import TrialRequest

    log = tmp_path / "starts.log"
    cfg = ray_config(log, benches=2, sleep_s=2.0, idempotent=False)
    executor = RayExecutor(cfg)
    assert executor.idempotent is False and actors_in(cfg) == ["bench-0", "bench-1"]
    runner = threading.Thread(target=executor.run, args=(TrialRequest(0, {"x": 0.5, "y": 3}),))
    runner.start()
    wait_for(lambda: starts(log), what="the trial to start")
    executor.close()  # an abort with a trial in flight: the idle bench goes, the busy one finishes its trial
    left = wait_for(lambda: actors_in(cfg) if len(actors_in(cfg)) == 1 else None, timeout_s=30,
                    what="the idle bench to be released")
    assert runner.is_alive(), "the busy bench was left to finish its trial"
    runner.join(timeout=60)
    assert release_benches(cfg, address=None) == left
    assert_released(cfg)
