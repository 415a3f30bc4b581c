"""The cryoopt command: commands, exit codes, messages; Ctrl-C in a real subprocess."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "campaign"))
from campaign_helpers import make_config  # noqa: E402

from cryoopt.cli import EXIT_CONFIG, EXIT_INPUT, EXIT_JOURNAL, EXIT_OK, EXIT_STOPPED, main  # noqa: E402


def write_config(tmp_path: Path, **overrides: object) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(make_config(**overrides).model_dump(mode="json")))
    return p


def dump(d: Path) -> str:
    db = sqlite3.connect(d / "journal.sqlite")
    try:
        return "\n".join(db.iterdump())
    finally:
        db.close()


@pytest.fixture
def campaign_dir(tmp_path: Path) -> Path:
    d = tmp_path / "c"
    assert main(["run", str(write_config(tmp_path)), "--dir", str(d), "-q"]) == EXIT_OK
    return d


def test_run_status_json(campaign_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["status", str(campaign_dir), "--json"]) == EXIT_OK
    st = json.loads(capsys.readouterr().out)
    assert st["counts"]["completed"] == 8 and st["state"] == "finished" and st["best"]["trial"] is not None


def test_status_table(campaign_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(campaign_dir)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "best observed: trial" in out and "experiments 8/8" in out and out.count("completed") >= 8


def test_run_prints_a_line_per_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(write_config(tmp_path)), "--dir", str(tmp_path / "d")]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.count("best observed objective=") == 8 and "[  8/8]" in out
    assert out.count("recommended: trial") == 8  # one recommendation line per finished trial


def test_feedback_and_inject(campaign_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = dump(campaign_dir)
    assert main(["feedback", str(campaign_dir), "2", "--rating", "0"]) == EXIT_INPUT
    assert main(["feedback", str(campaign_dir), "99", "--rating", "3"]) == EXIT_INPUT
    assert main(["inject", str(campaign_dir), "x=7", "y=1"]) == EXIT_INPUT
    assert main(["inject", str(campaign_dir), "x"]) == EXIT_INPUT
    assert dump(campaign_dir) == before  # bad input leaves the journal untouched
    assert "rating must be an integer from 1 to 5" in capsys.readouterr().err
    assert main(["feedback", str(campaign_dir), "2", "--rating", "5", "--note", "crisp membranes"]) == EXIT_OK
    assert main(["inject", str(campaign_dir), "x=0.3", "y=4"]) == EXIT_OK
    assert main(["resume", str(campaign_dir), "--budget", "9", "-q"]) == EXIT_OK
    from cryoopt.campaign import Journal

    j = Journal.open(campaign_dir, readonly=True)
    last = j.trials()[-1]
    assert last.source == "manual" and last.params == {"x": 0.3, "y": 4} and last.status == "completed"
    assert j.feedback(2)[0].note == "crisp membranes"


def test_manual_suggest_tell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "m"
    cfg = write_config(tmp_path, executor={"type": "manual", "target": None}, budget={"experiments": 2})
    assert main(["run", str(cfg), "--dir", str(d)]) == EXIT_OK
    capsys.readouterr()
    assert main(["suggest", str(d), "--json"]) == EXIT_OK
    (s,) = json.loads(capsys.readouterr().out)
    assert main(["tell", str(d), str(s["trial"]), "0.25"]) == EXIT_OK
    before = dump(d)
    assert main(["tell", str(d), str(s["trial"]), "0.5"]) == EXIT_INPUT  # already completed
    assert main(["tell", str(d), "42", "0.5"]) == EXIT_INPUT  # unknown
    assert main(["tell", str(d), "0", "banana"]) == EXIT_INPUT  # malformed
    assert dump(d) == before
    assert main(["suggest", str(d)]) == EXIT_OK
    assert main(["tell", str(d), "1", "fail: slide cracked"]) == EXIT_OK
    assert "trial 1 failed (slide cracked)" in capsys.readouterr().out


def test_bad_inputs_exit_codes(tmp_path: Path, campaign_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbudget: {experiments: 0}\n")
    assert main(["run", str(bad), "--dir", str(tmp_path / "b")]) == EXIT_CONFIG
    assert "bad.yaml:2: budget.experiments" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    assert main(["status", str(tmp_path / "nowhere")]) == EXIT_JOURNAL
    assert f"no campaign directory {tmp_path / 'nowhere'}; check the path, or start a campaign there with " \
           f"`cryoopt run CONFIG --dir {tmp_path / 'nowhere'}`" in capsys.readouterr().err
    other = write_config(tmp_path, name="other")
    before = dump(campaign_dir)
    assert main(["run", str(other), "--dir", str(campaign_dir)]) == EXIT_JOURNAL
    assert "holds the journal of campaign 't'" in capsys.readouterr().err
    assert main(["run", str(write_config(tmp_path, seed=5)), "--dir", str(campaign_dir)]) == EXIT_JOURNAL
    assert dump(campaign_dir) == before
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    assert main(["run", str(write_config(tmp_path)), "--dir", str(blocker / "x")]) == EXIT_JOURNAL
    assert main(["validate", str(write_config(tmp_path))]) == EXIT_OK


def test_ctrl_c_finishes_the_step_and_leaves_a_resumable_journal(tmp_path: Path) -> None:
    from conftest_env import child_env

    d = tmp_path / "c"
    cfg = write_config(tmp_path, executor={"target": "campaign_helpers:sleepy", "idempotent": False},
                       budget={"experiments": 40})
    proc = subprocess.Popen([sys.executable, "-m", "cryoopt", "run", str(cfg), "--dir", str(d)],
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until a few trials are done, then interrupt mid-trial
        time.sleep(0.1)
        if (d / "journal.sqlite").exists():
            db = sqlite3.connect(d / "journal.sqlite")
            n = db.execute("SELECT count(*) FROM trials WHERE status = 'completed'").fetchone()[0]
            db.close()
            if n >= 2:
                break
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_STOPPED, err
    assert "stopping after the trials in flight" in err
    from cryoopt.campaign import Journal

    j = Journal.open(d, readonly=True)
    counts = j.status_counts()
    assert counts["running"] == 0 and counts["abandoned"] == 0  # the trial in flight finished cleanly
    assert j.meta("stop_reason") == "operator" and 2 <= counts["completed"] < 40
    n_before = counts["completed"]
    j.close()
    # resume in-process with a smaller budget: continues, nothing repeated
    assert main(["resume", str(d), "--budget", str(n_before + 2), "-q"]) == EXIT_OK
    j = Journal.open(d, readonly=True)
    params = [json.dumps(r.params, sort_keys=True) for r in j.trials()]
    assert j.status_counts()["completed"] == n_before + 2 and len(set(params)) == len(params)


def test_run_set_overrides_config_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    assert main(["run", str(cfg), "--dir", str(tmp_path / "d"), "-q", "--set", "budget.experiments=3",
                 "--set", "seed=5"]) == EXIT_OK
    from cryoopt.campaign import Journal

    j = Journal.open(tmp_path / "d")
    assert j.count() == 3 and j.meta("config")["seed"] == 5
    assert main(["run", str(cfg), "--dir", str(tmp_path / "e"), "--set", "budget"]) == EXIT_CONFIG
    assert main(["run", str(cfg), "--dir", str(tmp_path / "e"), "--set", "budget.experiments=-1"]) == EXIT_CONFIG
    assert main(["run", str(cfg), "--dir", str(tmp_path / "e"), "--set", "no_such_field=1"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "KEY=VALUE" in err and "budget.experiments" in err and "no_such_field" in err


def test_status_shows_the_recommendation(campaign_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(campaign_dir), "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    rec = data["recommendation"]
    assert rec["basis"] == "model" and rec["trial_id"] in rec["trial_ids"] and "objective" in rec["interval"]
    assert main(["status", str(campaign_dir)]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"recommended: trial {rec['trial_id']} protocol" in out and "(* runs of the recommended protocol)" in out
    assert main(["serve", str(campaign_dir / "missing")]) == EXIT_JOURNAL


# ---------------------------------------------------------------------------- bad input never changes the journal
def _manual_campaign(tmp_path: Path) -> tuple[Path, int]:
    """A manual campaign with trial 0 told and trial 1 handed out (running)."""
    d = tmp_path / "m"
    cfg = write_config(tmp_path, executor={"type": "manual", "target": None}, budget={"experiments": 4},
                       objectives={"objective": "maximize"}, outcome_constraints=["prep_time_h <= 5"])
    assert main(["run", str(cfg), "--dir", str(d), "-q"]) == EXIT_OK
    assert main(["suggest", str(d), "-n", "2"]) == EXIT_OK
    assert main(["tell", str(d), "0", '{"objective": 0.5, "prep_time_h": 1}']) == EXIT_OK
    return d, 1


BIG = str(2**64)
BAD_TELL = [  # (value, what the message says) for a running trial: refused, the trial stays running
    ("{}", "lacks"), ('{"objective": 0.5}', "lacks \\['prep_time_h'\\]"), ("NaN", "not a finite number"),
    ("1e999", "not a finite number"), ("Infinity", "not a finite number"), ('"abc"', "cannot read"),
    ("banana", "cannot read"), ("true", "cannot read"), ("null", "cannot read"), ("[1, 2]", "cannot read"),
    ('{"objective": NaN, "prep_time_h": 1}', "not a finite number"),
    ('{"objective": "high", "prep_time_h": 1}', "is not a number"), ('{"objective": 0.5, "prep_time_h": null}', "not a number"),
    ("failure-is-not-a-word", "cannot read"),
]


@pytest.mark.parametrize(("value", "says"), BAD_TELL, ids=[v for v, _ in BAD_TELL])
def test_bad_tell_changes_nothing(tmp_path: Path, value: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    import re

    d, running = _manual_campaign(tmp_path)
    before = dump(d)
    capsys.readouterr()
    assert main(["tell", str(d), str(running), value]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert re.search(says, err) and "Traceback" not in err, err
    assert dump(d) == before
    assert main(["tell", str(d), str(running), "fail: slide cracked"]) == EXIT_OK  # still open to a real result


def test_bad_commands_never_change_the_journal(tmp_path: Path, campaign_dir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Every bad input: its exit code, a one-line error, no traceback, and the journal byte-for-byte as before."""
    d = str(campaign_dir)
    m, running = _manual_campaign(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: t\nbudget: {experiments: true}\n")

    def config_file(stem: str, **overrides: object) -> str:  # each in its own file
        path = tmp_path / f"{stem}.yaml"
        path.write_text(write_config(tmp_path, **overrides).read_text())
        return str(path)

    unknown_strategy = Path(config_file("nope"))
    unknown_strategy.write_text(unknown_strategy.read_text().replace("strategy: sobol", "strategy: nope"))
    cases: list[tuple[list[str], int]] = [
        (["tell", str(m), BIG, "0.5"], EXIT_INPUT), (["tell", str(m), "-1", "0.5"], EXIT_INPUT),
        (["tell", str(m), "0", "0.7"], EXIT_INPUT),  # already completed
        (["tell", str(m), "99", "0.7"], EXIT_INPUT),
        (["feedback", d, BIG, "--rating", "3"], EXIT_INPUT), (["feedback", d, "-1", "--rating", "3"], EXIT_INPUT),
        (["feedback", d, "0", "--rating", "6"], EXIT_INPUT), (["feedback", d, "0", "--rating", "0"], EXIT_INPUT),
        (["inject", d, "x=0.1", "x=0.2", "y=1"], EXIT_INPUT), (["inject", d, "x=NaN", "y=1"], EXIT_INPUT),
        (["inject", d, "x=1e999", "y=1"], EXIT_INPUT), (["inject", d, "x=0.1", "y=1", "z=3"], EXIT_INPUT),
        (["inject", d, "x=0.1"], EXIT_INPUT), (["inject", d, "=3"], EXIT_INPUT), (["inject", d, "x=0.5", "y=true"], EXIT_INPUT),
        (["inject", d, "x=0.5", "y=2.5"], EXIT_INPUT), (["inject", d, "x", "y=1"], EXIT_INPUT),
        (["resume", d, "--budget", "0"], EXIT_INPUT), (["resume", d, "--budget", "-3"], EXIT_INPUT),
        (["suggest", str(m), "-n", "0"], EXIT_INPUT),
        (["report", d, "--out", str(blocker / "sub")], EXIT_JOURNAL),
        (["run", config_file("other", name="other"), "--dir", d], EXIT_JOURNAL),
        (["run", config_file("seed", seed=5), "--dir", d], EXIT_JOURNAL),
        (["run", str(bad_yaml), "--dir", d], EXIT_CONFIG), (["run", str(unknown_strategy), "--dir", d], EXIT_CONFIG),
        (["feedback", str(tmp_path / "nowhere"), "0", "--rating", "3"], EXIT_JOURNAL),
        (["tell", d, "abc", "1"], 2), (["feedback", d, "0"], 2), (["inject", d], 2),
    ]
    assert len(cases) >= 25
    before = {p: dump(Path(p)) for p in (d, str(m))}
    for argv, code in cases:
        capsys.readouterr()
        try:
            got = main(argv)
        except SystemExit as exit_:  # argparse usage errors
            got = exit_.code
        err = capsys.readouterr().err
        assert got == code, (argv, got, err)
        assert "Traceback" not in err and err.strip(), (argv, err)
        assert {p: dump(Path(p)) for p in before} == before, argv


def test_run_refused_by_the_checks_leaves_no_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("target: campaign_helpers:quadratic", "target: campaign_helpers:nope"))
    assert main(["validate", str(cfg)]) == EXIT_CONFIG
    assert main(["run", str(cfg), "--dir", str(tmp_path / "r")]) == EXIT_CONFIG
    assert "has no 'nope'" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_a_failed_start_does_not_bind_the_journal_to_the_broken_config(tmp_path: Path) -> None:
    """A start that fails after the journal exists (here: no trial ever ran) takes the corrected config."""
    d = tmp_path / "c"
    manual = write_config(tmp_path, executor={"type": "manual", "target": None})
    assert main(["run", str(manual), "--dir", str(d), "-q"]) == EXIT_OK  # a journal, no trial
    assert main(["run", str(write_config(tmp_path, seed=3)), "--dir", str(d), "-q"]) == EXIT_OK
    from cryoopt.campaign import Journal

    j = Journal.open(d, readonly=True)
    assert j.status_counts()["completed"] == 8 and j.meta("config")["seed"] == 3
    assert any("replaced before the first trial" in m for _, _, m in j.events("config"))


def test_status_shows_why_trials_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "f"
    cfg = write_config(tmp_path, executor={"target": "campaign_helpers:flaky"}, budget={"experiments": 10})
    assert main(["run", str(cfg), "--dir", str(d), "-q"]) == EXIT_OK
    capsys.readouterr()
    assert main(["status", str(d)]) == EXIT_OK
    out = capsys.readouterr().out
    assert " why" in out and "RuntimeError: knife broke" in out
