"""Kill the campaign process with SIGKILL at random moments, resume, and check nothing is lost or run twice.

The killed child is forked from the test process (its imports are already loaded,
so a kill point costs milliseconds, not an interpreter start); it runs the real
runner against the real journal, and SIGKILL gives it no chance to clean up.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from campaign_helpers import make_config, value_of

from cryoopt.campaign import Campaign, Journal

N_KILLS = 20
#: kills of the tracked campaign: each session pays MLflow's start-up (~2 CPU-s), so fewer
#: than above; the kill points are drawn from the same windows
N_MLFLOW_KILLS = 12
FINAL = ("completed", "failed", "abandoned")


def _child(config_json: str, directory: str) -> None:
    from cryoopt.config import CampaignConfig

    Campaign(CampaignConfig.model_validate_json(config_json), directory, progress=False).run()


def _snapshot(directory: Path) -> dict[int, tuple[dict, str]]:
    j = Journal.open(directory, readonly=True)
    try:
        rows = j.trials()
    finally:
        j.close()
    assert [r.id for r in rows] == list(range(len(rows))), "trial ids must stay contiguous"
    return {r.id: (r.params, r.status) for r in rows}


def _wait_for_a_call(p: multiprocessing.process.BaseProcess, log: Path, size: int, timeout_s: float = 60.0) -> None:
    """Return once the child has called the objective (``log`` grew past ``size``) or has exited."""
    deadline = time.monotonic() + timeout_s
    while p.exitcode is None and time.monotonic() < deadline:
        if log.exists() and log.stat().st_size > size:
            return
        time.sleep(0.002)


# the same budget for both rules: every other kill waits for the session's first call, so kills land
# among running trials whatever a session's start-up costs, without a long run to make room for them
@pytest.mark.parametrize(("idempotent", "budget"), [(False, 200), (True, 200)], ids=["instrument-like", "idempotent"])
def test_sigkill_at_random_points_then_resume(tmp_path: Path, idempotent: bool, budget: int) -> None:
    log = tmp_path / "calls.log"
    cfg = make_config(
        budget={"experiments": budget}, optimizer={"strategy": "sobol"},
        executor={"target": "campaign_helpers:LoggedObjective", "options": {"log": str(log)}, "idempotent": idempotent},
    )
    # reference: the same campaign without interruptions
    ref_log = tmp_path / "ref.log"
    ref_cfg = cfg.model_copy(update={"executor": cfg.executor.model_copy(update={"options": {"log": str(ref_log)}})})
    t0 = time.monotonic()
    Campaign(ref_cfg, tmp_path / "ref", progress=False).run()
    full_s = time.monotonic() - t0
    reference = _snapshot(tmp_path / "ref")

    d = tmp_path / "killed"
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(1234 + idempotent)
    landed, tries, history, mid_run = 0, 0, [], 0
    previous: dict[int, tuple[dict, str]] = {}
    running_at_kill: set[int] = set()
    while landed < N_KILLS and tries < 200:
        tries += 1
        size = log.stat().st_size if log.exists() else 0
        p = ctx.Process(target=_child, args=(cfg.model_dump_json(), str(d)))
        p.start()
        if tries % 2 == 0:  # among running trials: after this session's first call
            _wait_for_a_call(p, log, size)
            mid_run += 1
            time.sleep(rng.uniform(0.0, 1.0) * full_s / (4 * N_KILLS))
        else:  # anywhere, start-up included
            # about 1/160 of a full run per kill plus a little start-up, so that N_KILLS kills use well
            # under half the run even on a fast, idle machine (the campaign must not finish first)
            time.sleep(rng.uniform(0.005, 0.015) + rng.uniform(0.0, 1.0) * full_s / (4 * N_KILLS))
        if p.exitcode is None:
            os.kill(p.pid, signal.SIGKILL)
        p.join()
        if p.exitcode != -signal.SIGKILL:
            break  # the campaign finished before this kill
        if not (d / "journal.sqlite").exists():
            continue  # killed before the journal existed: fine, but not a kill point worth counting
        landed += 1
        snap = _snapshot(d)
        # no trial lost, none changed: every trial seen before is still there with its params,
        # and a final status never changes again
        for i, (params, status) in previous.items():
            assert snap[i][0] == params
            if status in FINAL:
                assert snap[i][1] == status
        running_at_kill |= {i for i, (_, s) in snap.items() if s == "running"}
        history.append((len(previous), len(snap)))
        assert len(snap) >= len(previous)
        previous = snap

    assert landed >= N_KILLS, f"only {landed} kills landed in {tries} tries"
    summary = Campaign(cfg, d, progress=False).run()  # finish the campaign
    final = _snapshot(d)
    counts = Counter(s for _, s in final.values())

    # the interrupted campaign proposed exactly the reference trials, in order
    assert [final[i][0] for i in sorted(final)] == [reference[i][0] for i in sorted(reference)]
    assert summary.stop_reason == "budget" and counts["proposed"] == counts["running"] == 0
    calls = Counter(json.dumps(json.loads(line), sort_keys=True) for line in log.read_text().splitlines())
    key = {i: json.dumps(final[i][0], sort_keys=True) for i in final}
    j = Journal.open(d, readonly=True)
    for r in j.trials():
        if r.status == "completed":
            assert r.values["objective"] == pytest.approx(value_of(r.params))
            assert calls[key[r.id]] >= 1
    if idempotent:
        # everything completes; only trials running at a kill may have been run again
        assert counts["completed"] == budget
        rerun = {i for i in final if calls[key[i]] > 1}
        assert rerun <= running_at_kill
    else:
        # never run twice; a trial running at a kill is abandoned, and it counts against the budget
        assert max(calls.values()) == 1
        assert counts["completed"] + counts["abandoned"] == budget
        assert {i for i, (_, s) in final.items() if s == "abandoned"} <= running_at_kill
        assert all("not re-run" in r.error for r in j.trials(status="abandoned"))
    j.close()
    print(f"\nkill test ({'idempotent' if idempotent else 'instrument-like'}): {landed} kills ({mid_run} after a call), "
          f"{len(running_at_kill)} trials running at a kill, "
          f"trials before/after kill (first 5): {history[:5]}, final counts {dict(counts)}, "
          f"re-run calls {sum(c - 1 for c in calls.values())}, uninterrupted run {full_s:.2f} s")


@pytest.mark.slow
def test_mlflow_holds_every_journal_trial_after_random_sigkills(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL a tracked campaign >= 12 times (the first kills while MLflow's store is still being
    made, later ones while trials are being sent), resume: MLflow holds exactly the journal's trials."""
    import mlflow.entities  # noqa: F401 - imported before forking, as the runner's tracker does
    import mlflow.tracking  # noqa: F401

    monkeypatch.setenv("CRYOOPT_CACHE_DIR", str(tmp_path / "cache"))  # no pristine store yet: it is made under the kills
    cfg = make_config(budget={"experiments": 400}, optimizer={"strategy": "sobol"}, tracking={"enabled": True},
                      executor={"target": "campaign_helpers:sleepy", "idempotent": False})
    d = tmp_path / "killed"
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(7)
    def tracked() -> int:
        j = Journal.open(d, readonly=True)
        try:
            return sum(r.tracked for r in j.trials())
        finally:
            j.close()

    landed, tries, in_creation, with_store = 0, 0, 0, 0
    while landed < N_MLFLOW_KILLS and tries < 60:
        tries += 1
        p = ctx.Process(target=_child, args=(cfg.model_dump_json(), str(d)))
        p.start()
        if landed == 3:  # one session lives until MLflow confirmed a trial (the store is made by then)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not ((d / "journal.sqlite").exists() and tracked() > 0):
                time.sleep(0.2)
        elif landed == 0:  # the first at once: before mlflow.db exists however fast the machine (on a quiet
            time.sleep(0.02)  # one the file was there within 0.7 s, and no kill landed before it)
        else:  # kills 2-3 land while the store is made (it takes seconds), the others anywhere in 3 s
            time.sleep(rng.uniform(0.3, 3.0))
        has_store = (d / "mlflow.db").exists()
        if p.exitcode is None:
            os.kill(p.pid, signal.SIGKILL)
        p.join()
        assert p.exitcode == -signal.SIGKILL
        landed += 1
        in_creation += not has_store
        with_store += has_store
    assert landed >= N_MLFLOW_KILLS and in_creation >= 1 and with_store >= N_MLFLOW_KILLS // 2
    started = Journal.open(d, readonly=True).count(started=True)
    Campaign(cfg.model_copy(update={"budget": cfg.budget.model_copy(update={"experiments": started + 2})}), d,
             progress=False).run()

    from mlflow.tracking import MlflowClient

    j = Journal.open(d, readonly=True)
    final = {r.id: r.status for r in j.trials(status=FINAL)}
    j.close()
    client = MlflowClient(tracking_uri=f"sqlite:///{d / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id], max_results=5000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    ids = [int(r.data.tags["cryoopt.trial_id"]) for r in children]
    status = {"completed": "FINISHED", "failed": "FAILED", "abandoned": "KILLED"}
    assert len(parents) == 1 and all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    assert sorted(ids) == sorted(final) and len(final) > 5  # every trial once, none twice, none lost
    assert {int(r.data.tags["cryoopt.trial_id"]): r.info.status for r in children} == {i: status[s] for i, s in final.items()}
    print(f"\nmlflow kill test: {landed} kills ({in_creation} before mlflow.db existed, {with_store} after), "
          f"{len(final)} trials in the journal and in MLflow")
