"""Operator feedback (blend into the objective), MLflow tracking (and its failure), the report."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from campaign_helpers import make_config

from cryoopt.campaign import Campaign, Journal
from cryoopt.exceptions import ParameterError, TrialError


def test_blend_ratings_enter_the_objective(tmp_path: Path) -> None:
    d = tmp_path / "c"
    cfg = make_config(feedback={"mode": "blend", "weight": 0.5}, budget={"experiments": 4})
    Campaign(cfg, d).run()
    camp = Campaign(make_config(feedback={"mode": "blend", "weight": 0.5}, budget={"experiments": 5}), d)
    raw = Journal.open(d).trial(1).values["objective"]
    camp.feedback(1, 5, "excellent")
    camp.feedback(1, 3)
    with pytest.raises(TrialError, match="1 to 5"):
        camp.feedback(1, 9)
    with pytest.raises(TrialError, match="unknown trial"):
        camp.feedback(77, 3)
    camp.run()
    rec = Journal.open(d).trial(1)
    assert rec.values["objective.unrated"] == pytest.approx(raw)
    assert rec.values["objective"] == pytest.approx(0.5 * raw + 0.5 * (4 - 1) / 4)  # mean rating 4


def test_inject_is_validated_and_runs_next(tmp_path: Path) -> None:
    d = tmp_path / "c"
    Campaign(make_config(budget={"experiments": 2}), d).run()
    camp = Campaign(make_config(budget={"experiments": 4}), d)
    with pytest.raises(ParameterError):
        camp.inject({"x": 2.0, "y": 1})
    camp.inject({"x": 0.3, "y": 4})
    camp.run()
    rows = Journal.open(d).trials()
    assert rows[2].source == "manual" and rows[2].params == {"x": 0.3, "y": 4}
    assert camp.best().id == 2


def test_start_protocols_run_first_once(tmp_path: Path) -> None:
    from cryoopt.exceptions import ConfigError

    d = tmp_path / "c"
    start = [{"x": 0.3, "y": 4}, {"x": 0.9, "y": 0}]
    Campaign(make_config(budget={"experiments": 3}, start_protocols=start), d).run()
    Campaign(make_config(budget={"experiments": 5}, start_protocols=start), d).run()  # resume: not queued again
    rows = Journal.open(d).trials()
    assert [r.source for r in rows[:2]] == ["start", "start"] and [r.params for r in rows[:2]] == start
    assert len(rows) == 5 and all(r.source != "start" for r in rows[2:])
    with pytest.raises(ConfigError, match=r"start_protocols\[0\].*x"):
        make_config(start_protocols=[{"x": 2.0, "y": 1}])


def test_replicates_rerun_the_incumbent_and_survive_resume(tmp_path: Path) -> None:
    from cryoopt.exceptions import ConfigError

    d = tmp_path / "c"
    Campaign(make_config(budget={"experiments": 5}, replicate_every=3), d).run()
    Campaign(make_config(budget={"experiments": 9}, replicate_every=3), d).run()  # resumed
    rows = Journal.open(d).trials()
    assert len(rows) == 9 and [i for i, r in enumerate(rows) if r.source == "replicate"] == [2, 5, 8]
    for i in (2, 5, 8):  # each reruns the best trial before it (deterministic objective here)
        before = [r for r in rows[:i] if r.status == "completed"]
        assert rows[i].params == max(before, key=lambda r: r.values["objective"]).params
    # in batches, each batch that reaches a multiple of replicate_every carries one replicate
    Campaign(make_config(budget={"experiments": 8}, batch_size=2, replicate_every=4), tmp_path / "b").run()
    sources = [r.source for r in Journal.open(tmp_path / "b").trials()]
    assert len(sources) == 8 and sources.count("replicate") == 2
    with pytest.raises(ConfigError, match="replicate_every"):
        make_config(replicate_every=1)


def test_mlflow_parent_and_child_runs(tmp_path: Path) -> None:
    d = tmp_path / "c"
    cfg = make_config(tracking={"enabled": True}, budget={"experiments": 4},
                      executor={"target": "campaign_helpers:quadratic"}, report={"on_finish": True})
    Campaign(cfg, d).run()
    Campaign(make_config(tracking={"enabled": True}, budget={"experiments": 5},
                         executor={"target": "campaign_helpers:quadratic"}), d).run()  # resume re-attaches the parent
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{d / 'mlflow.db'}")
    exp = client.get_experiment_by_name("t")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 5
    assert parents[0].data.params["strategy"] == "sobol"
    assert {c.info.status for c in children} == {"FINISHED"}
    assert all("x" in c.data.params for c in children)
    arts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert "config.json" in arts and "report" in arts
    assert all(r.tracked for r in Journal.open(d).trials())


def test_tracking_failure_warns_and_the_campaign_goes_on(tmp_path: Path) -> None:
    d = tmp_path / "c"
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    cfg = make_config(tracking={"enabled": True, "uri": f"sqlite:///{blocker}/x/mlflow.db"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = Campaign(cfg, d).run()
    assert s.counts["completed"] == 8
    assert any("tracking" in str(w.message) for w in caught)
    assert not any(r.tracked for r in Journal.open(d).trials())  # sent on a later resume


def test_report_writes_plots_and_markdown(tmp_path: Path) -> None:
    from cryoopt.campaign.report import write_report

    d = tmp_path / "c"
    cfg = make_config(objectives={"objective": "maximize", "prep_time_h": "minimize"},
                      outcome_constraints=["prep_time_h <= 1.8"], budget={"experiments": 8})
    Campaign(cfg, d).run()
    Campaign(cfg, d).feedback(3, 4, "good contrast")
    paths = write_report(d)
    assert set(paths) == {"convergence", "pareto", "effects", "parallel", "summary"}
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 1000
    md = paths["summary"].read_text()
    assert "## Recommended protocol" in md and "## Best single observation (balanced Pareto compromise)" in md
    assert "good contrast" in md and "![pareto](pareto.png)" in md


def test_report_redraws_a_plot_only_when_its_inputs_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rebuilding the report on an unchanged journal keeps the PNGs and rewrites report.md;
    one more trial (same config) redraws every plot."""
    from cryoopt.campaign import report

    drawn: list[str] = []
    for name in ("_convergence", "_effects", "_parallel"):
        def counting(path: Path, *args, _draw=getattr(report, name)):
            drawn.append(path.stem)
            return _draw(path, *args)
        monkeypatch.setattr(report, name, counting)
    d, out = tmp_path / "c", tmp_path / "r"
    cfg = make_config(budget={"experiments": 5})
    Campaign(make_config(budget={"experiments": 4}), d).run()
    first = report.write_report(d, config=cfg, out_dir=out)
    assert sorted(drawn) == ["convergence", "effects", "parallel"]
    pngs = {name: (p.read_bytes(), p.stat().st_mtime_ns) for name, p in first.items() if p.suffix == ".png"}
    (out / "report.md").unlink()
    again = report.write_report(d, config=cfg, out_dir=out)
    assert len(drawn) == 3 and again == first  # nothing redrawn, the same paths returned
    assert {name: (again[name].read_bytes(), again[name].stat().st_mtime_ns) for name in pngs} == pngs
    assert (out / "report.md").is_file()  # the summary is always rewritten
    (out / "parallel.png").unlink()  # a missing plot is drawn again whatever its key says
    report.write_report(d, config=cfg, out_dir=out)
    assert drawn[3:] == ["parallel"]
    Campaign(cfg, d).run()  # one more trial: every plot's data changed
    drawn.clear()
    report.write_report(d, config=cfg, out_dir=out)
    assert sorted(drawn) == ["convergence", "effects", "parallel"]


def _mlflow_runs(d: Path, experiment: str = "t") -> tuple[list, list]:
    """(parent runs, terminated child runs) of the campaign's MLflow store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{d / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=5000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags and r.info.status in ("FINISHED", "FAILED", "KILLED")]
    return parents, children


def test_mlflow_is_backfilled_from_the_journal_once(tmp_path: Path) -> None:
    import sqlite3

    d = tmp_path / "c"
    Campaign(make_config(budget={"experiments": 4}), d).run()  # tracking off: MLflow has nothing
    tracked = {"tracking": {"enabled": True}}
    Campaign(make_config(budget={"experiments": 5}, **tracked), d).run()
    parents, children = _mlflow_runs(d)
    assert len(parents) == 1 and sorted(int(c.data.tags["cryoopt.trial_id"]) for c in children) == [0, 1, 2, 3, 4]
    # the journal forgets what MLflow confirmed (a kill between the two) and even the parent run's id
    db = sqlite3.connect(d / "journal.sqlite")
    db.execute("UPDATE trials SET tracked = 0")
    db.execute("DELETE FROM meta WHERE key = 'mlflow_parent_run_id'")
    db.commit()
    db.close()
    Campaign(make_config(budget={"experiments": 6}, **tracked), d).run()
    parents, children = _mlflow_runs(d)
    ids = sorted(int(c.data.tags["cryoopt.trial_id"]) for c in children)
    assert len(parents) == 1 and ids == list(range(6))  # nothing twice, the parent found again
    assert all(r.tracked for r in Journal.open(d).trials())


def test_a_broken_mlflow_store_is_moved_aside_and_rebuilt(tmp_path: Path) -> None:
    d = tmp_path / "c"
    tracked = {"tracking": {"enabled": True}}
    Campaign(make_config(budget={"experiments": 3}, **tracked), d).run()
    (d / "mlflow.db").write_bytes(b"\x00half-made by a killed process" * 100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Campaign(make_config(budget={"experiments": 4}, **tracked), d).run()
    assert any("could not be opened" in str(w.message) for w in caught)
    assert len(list(d.glob("mlflow.db.broken-*"))) == 1
    parents, children = _mlflow_runs(d)
    assert len(parents) == 1 and sorted(int(c.data.tags["cryoopt.trial_id"]) for c in children) == [0, 1, 2, 3]
