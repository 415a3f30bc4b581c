"""A block in which no section gives a valid evaluation is a failed trial with its reason,
never a quality of 0 that a model would learn from."""

from __future__ import annotations

import math

import pytest

from cryoopt.loop import BlockRunner
from cryoopt.loop.blocks import RESULT_KEYS
from cryoopt.optim import Failure

RK = {"max_sections": 2, "min_sections": 2, "env_kwargs": {"image_size": 64}}


@pytest.fixture(scope="module")
def runner():
    r = BlockRunner("bo_only", **RK)
    yield r
    r.close()


def test_a_good_block_returns_its_measurements(runner) -> None:
    out = runner.run({"time_min": 30.0}, seed=0)
    assert isinstance(out, dict) and "failure_reason" not in out
    assert set(out) >= RESULT_KEYS  # what the campaign checks objectives against
    assert out["sections"] == 2 and math.isfinite(out["quality"])


def test_every_evaluation_failing_is_a_failure_with_the_reason(runner, monkeypatch) -> None:
    env = runner.env.unwrapped
    monkeypatch.setattr(env, "_evaluate", lambda lm, em, protocol: (None, "impact/novelty is nan"))
    out = runner.run({"time_min": 30.0}, seed=0)
    assert isinstance(out, Failure) and out.measured["sections"] == 2 and out.measured["prep_time_h"] > 0
    assert out.reason == "no section gave a valid evaluation: 2 cut, 2 evaluations failed (impact/novelty is nan)"
    measured = runner.measure({"time_min": 30.0}, seed=0)  # what a benchmark judging the protocol sees
    assert measured["quality"] == 0.0 and measured["failure_reason"] == out.reason


def test_the_campaign_records_a_failed_block_as_failed(tmp_path, monkeypatch, capsys) -> None:
    from cryoopt.campaign import Campaign, Journal
    from cryoopt.config import CampaignConfig

    cfg = CampaignConfig.from_dict({
        "name": "t", "space": {"parameters": {"time_min": {"type": "float", "low": 5, "high": 60}}},
        "objectives": {"quality": "maximize", "prep_time_h": "minimize"}, "budget": {"experiments": 2},
        "optimizer": {"strategy": "sobol"},
        "executor": {"type": "simulated_clem", "options": {"agent": "bo_only", **RK}},
        "tracking": {"enabled": False}, "report": {"on_finish": False},
    })
    from cryoopt.envs.clem import CLEMProtocolEnv

    monkeypatch.setattr(CLEMProtocolEnv, "_evaluate", lambda self, lm, em, protocol: (None, "impact/novelty is nan"))
    summary = Campaign(cfg, tmp_path / "c", progress=False).run()
    assert summary.counts["failed"] == 2 and summary.counts["completed"] == 0
    rows = Journal.open(tmp_path / "c", readonly=True).trials()
    assert all(r.values is None and "impact/novelty is nan" in r.error for r in rows)
    assert all(r.result["measured"]["prep_time_h"] > 0 for r in rows)  # the journal keeps what was measured
    from cryoopt.cli import main

    assert main(["status", str(tmp_path / "c")]) == 0
    assert "no section gave a valid evaluation" in capsys.readouterr().out  # why, in the status table


def test_the_outer_loop_tells_a_failed_block_as_a_failure(runner, monkeypatch) -> None:
    from cryoopt.loop import OuterLoop

    monkeypatch.setattr(runner.env.unwrapped, "_evaluate", lambda lm, em, protocol: (None, "impact/novelty is nan"))
    loop = OuterLoop(runner=runner, seed=0, optimizer="random")
    (rec,) = loop.step()
    (trial,) = loop.optimizer.trials
    # the reason is the evaluation's, or the ribbons' where the random protocol cut none
    assert trial.status.value == "failed" and trial.values is None
    assert trial.error.startswith("no section gave a valid evaluation") and trial.error == rec["failure_reason"]
    assert "impact/novelty is nan" in trial.error or "ribbons failed" in trial.error
    assert rec["quality"] == 0.0 and rec["prep_time_h"] > 0
    assert loop.recommend() is None  # a failed block is never recommended
