"""Outer loop: batch proposals, Pareto front, resume mid-campaign, manual OFAT, the campaign executor."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cryoopt.loop import BlockRunner, ManualOFAT, OuterLoop, block_space
from cryoopt.optim.base import Optimizer

RK = {"max_sections": 3, "env_kwargs": {"image_size": 64}}
BO = {"n_initial": 2, "num_restarts": 1, "raw_samples": 16, "mc_samples": 16}


@pytest.fixture(scope="module")
def runner():
    r = BlockRunner("bo_only", **RK)
    yield r
    r.close()


def test_batch_proposals_and_pareto_front(runner):
    loop = OuterLoop(runner=runner, seed=0, batch_size=2, optimizer_kwargs=BO)
    recs = loop.step()
    assert len(recs) == 2 and recs[0]["params"] != recs[1]["params"]
    loop.run(6)
    assert len(loop.history) == 6
    # Sobol until n_initial blocks succeeded (a failed block teaches the GP no quality), BO from then on
    first_bo = next(i for i, r in enumerate(loop.history) if r["source"] == "bo")
    assert sum(r.get("failure_reason") is None for r in loop.history[:first_bo]) >= 2
    assert {r["source"] for r in loop.history[first_bo:]} == {"bo"}
    for r in loop.history:
        assert r["sections"] <= 3 and r["prep_time_h"] > 0 and 0 <= r["quality"] <= 1
    front = loop.pareto_front()
    assert front
    for a in front:
        assert not any(b["quality"] > a["quality"] and b["prep_time_h"] < a["prep_time_h"] for b in loop.history)


def test_resume_mid_campaign_gives_the_same_proposals(runner):
    a = OuterLoop(runner=runner, seed=1, batch_size=2, optimizer_kwargs=BO)
    a.run(2)
    state = json.loads(json.dumps(a.state_dict(), default=float))
    b = OuterLoop.from_state_dict(state, runner=runner)
    assert json.dumps(b.history) == json.dumps(a.history)  # (NaN metrics of failed sections compare as text)
    pa, pb = a.optimizer.ask(2), b.optimizer.ask(2)
    assert [t.params for t in pa] == [t.params for t in pb]
    # the asked-but-unrun blocks are pending: a resumed loop runs them first
    state = json.loads(json.dumps(b.state_dict(), default=float))
    c = OuterLoop.from_state_dict(state, runner=runner)
    recs = c.step()
    assert [r["params"] for r in recs] == [t.params for t in pb] and len(c.history) == 4


def test_start_protocols_run_first_and_count_toward_the_design(runner):
    from cryoopt.agents import EXPERT_PROTOCOL

    loop = OuterLoop(runner=runner, seed=3, optimizer_kwargs={**BO, "n_initial": 3}, start_protocols=[EXPERT_PROTOCOL])
    loop.run(4)
    first = loop.history[0]
    assert first["source"] == "start"
    assert first["params"] == {k: EXPERT_PROTOCOL[k] for k in block_space().names}
    assert [r["source"] for r in loop.history[1:]] == ["sobol", "sobol", "bo"]
    # a resumed loop does not inject them again
    again = OuterLoop.from_state_dict(json.loads(json.dumps(loop.state_dict(), default=float)), runner=runner)
    assert len(again.optimizer.trials) == 4 and not again.optimizer.pending


def test_save_load_with_agent(tmp_path):
    loop = OuterLoop("fixed", optimizer="random", seed=2, runner_kwargs=RK)
    loop.run(1)
    loop.save(tmp_path / "loop")
    again = OuterLoop.load(tmp_path / "loop", agent="fixed", runner_kwargs=RK)
    assert again.history == loop.history and len(again.optimizer.trials) == 1
    again.run(2)
    assert len(again.history) == 2


def test_manual_ofat_changes_one_factor_at_a_time():
    space = block_space()
    opt = ManualOFAT(space, seed=0, objectives={"quality": "maximize", "prep_time_h": "minimize"})
    (t0,) = opt.ask()
    opt.tell(t0, {"quality": 0.2, "prep_time_h": 8.0})
    prev = t0.params
    for q in (0.1, 0.3, 0.1):
        (t,) = opt.ask()
        changed = [k for k in space.names if not math.isclose(t.params[k], prev[k])]
        assert len(changed) == 1
        opt.tell(t, {"quality": q, "prep_time_h": 8.0})
    restored = ManualOFAT.from_state_dict(opt.state_dict())
    assert restored.ask()[0].params == opt.ask()[0].params
    other = ManualOFAT(space, seed=1).operator_start()
    assert other != t0.params  # operators differ


def test_simulated_clem_executor_registered(tmp_path):
    from cryoopt.campaign.executors import executors, make_executor
    from cryoopt.campaign.executors import TrialRequest
    from cryoopt.config import CampaignConfig

    assert "simulated_clem" in executors
    cfg = CampaignConfig.from_dict({
        "name": "t", "space": {"parameters": {"time_min": {"type": "float", "low": 5, "high": 60}}},
        "objectives": {"quality": "maximize", "prep_time_h": "minimize"}, "budget": {"experiments": 1},
        "executor": {"type": "simulated_clem", "options": {"agent": "bo_only", **RK}},
    })
    ex = make_executor(cfg)
    assert ex.idempotent
    out = ex.run(TrialRequest(0, {"time_min": 10.0}))
    assert out == ex.run(TrialRequest(0, {"time_min": 10.0}))  # same block, same answer
    assert out["prep_time_h"] > 0 and "quality" in out
    ex.close()


@pytest.mark.slow
def test_end_to_end_hrl_bo_campaign(tmp_path):
    """configs/sim_clem.yaml (HRL + BO, q=2) runs in the campaign engine and resumes."""
    from cryoopt import Campaign, load_config
    from cryoopt.campaign import Journal

    path = Path(__file__).resolve().parents[2] / "configs" / "sim_clem.yaml"
    shipped = load_config(path)
    assert shipped.executor.options["agent"] == "hrl" and shipped.batch_size == 2
    assert shipped.optimizer.strategy == "bo" and shipped.tracking.enabled and shipped.report.on_finish
    # the shipped config, smaller: fewer pre-training steps, sections and pixels, a shorter acquisition
    # search, and 6 blocks (the 4 of the initial design, then one BO batch of q = 2); agent, strategy,
    # tracking and report as shipped
    options = {**shipped.executor.options, "instrument_pretrain_steps": 256, "pretrain_steps": 32, "max_sections": 3,
               "env_kwargs": {**shipped.executor.options["env_kwargs"], "image_size": 64}}
    search = {**shipped.optimizer.options, "num_restarts": 1, "raw_samples": 16, "mc_samples": 32}
    cfg = shipped.model_copy(update={
        "budget": shipped.budget.model_copy(update={"experiments": 6}),
        "optimizer": shipped.optimizer.model_copy(update={"options": search}),
        "executor": shipped.executor.model_copy(update={"options": options}),
    })
    assert cfg.optimizer.options["n_initial"] < cfg.budget.experiments
    summary = Campaign(cfg, tmp_path / "run", progress=False).run()
    # a block with no valid evaluation is a failed trial (with its reason), never a quality of 0
    assert summary.counts["completed"] + summary.counts["failed"] == cfg.budget.experiments
    assert summary.counts["completed"] >= cfg.budget.experiments // 2
    assert summary.best is not None and summary.best.values["prep_time_h"] > 0
    journal = Journal.open(tmp_path / "run", readonly=True)
    assert any(r.source == "bo" for r in journal.trials())  # the GP proposed, not only the initial design
    journal.close()
    assert (tmp_path / "run" / "mlflow.db").is_file() and (tmp_path / "run" / "report" / "report.md").is_file()
    again = Campaign(cfg, tmp_path / "run", progress=False).run()  # a second run continues: nothing left
    assert again.counts == summary.counts


class NoisyBlocks:
    """Stands in for a BlockRunner: quality peaks at 95 nm sections (inside the block space's
    50-120 nm), plus a specimen effect the protocol cannot control: +-0.03, and +0.35 on the
    second block (a lucky specimen under a Sobol protocol)."""

    agent = None

    def __init__(self):
        self.n = 0

    @staticmethod
    def true_quality(params):
        return 0.6 - ((params["section_thickness_nm"] - 95.0) / 45.0) ** 2 * 0.6

    def run(self, params, seed):
        self.n += 1
        specimen = 0.35 if self.n == 2 else 0.03 * (-1) ** self.n
        return {"quality": self.true_quality(params) + specimen, "prep_time_h": params["time_min"] / 60.0}


def test_recommend_on_observed_values_picks_the_fastest_block_at_target():
    loop = OuterLoop(runner=NoisyBlocks(), optimizer="random", seed=0)
    assert loop.recommend() is None
    loop.run(8)
    q = [r["quality"] for r in loop.history]
    assert loop.recommend()["block"] == q.index(max(q))  # no model: the best observed block
    target = sorted(q)[-3]
    rec = loop.recommend(target)
    at_target = [r for r in loop.history if r["quality"] >= target]
    assert rec["block"] == min(at_target, key=lambda r: r["prep_time_h"])["block"]
    assert loop.recommend(max(q) + 1)["block"] == q.index(max(q))  # nothing reaches it: the best


def test_replicates_show_the_gp_a_lucky_specimen_for_what_it_is():
    runner = NoisyBlocks()
    loop = OuterLoop(runner=runner, seed=0, optimizer_kwargs={**BO, "n_initial": 6}, objectives={"quality": "maximize"},
                     replicate_every=3)
    loop.run(12)
    sources = [r["source"] for r in loop.history]
    assert [i for i, s in enumerate(sources) if s == "replicate"] == [2, 5, 8, 11]
    lucky, replicate = loop.history[1], loop.history[2]
    assert replicate["params"] == lucky["params"]  # the incumbent after 2 blocks, on a fresh specimen
    assert lucky["quality"] - replicate["quality"] == pytest.approx(0.35 + 0.03, abs=1e-9)
    rec = loop.recommend()
    mean, _ = loop.optimizer.predict([lucky["params"]])
    assert float(mean[0, 0]) < lucky["quality"] - 0.1  # the GP no longer believes the lucky +0.35
    assert rec["expected_quality"] < max(r["quality"] for r in loop.history)
    assert runner.true_quality(rec["params"]) > runner.true_quality(lucky["params"])


def test_replicate_every_is_checked():
    with pytest.raises(ValueError, match="replicate_every"):
        OuterLoop(runner=NoisyBlocks(), optimizer="random", replicate_every=1)


class Contextual(Optimizer):
    """Random search standing in for an optimizer that models contexts: ``ask`` and ``add_trial``
    take each trial's context and keep it on the trial, as context-aware optimizers do."""

    strategy_name = "test_contextual"

    def __init__(self, space, **kw):
        super().__init__(space, **kw)
        self.contexts = {"screening": (0.0, 1.0)}
        self.asked = []

    def _propose(self, n):
        return [(p, "random") for p in self._random_points(n)]

    def ask(self, n=1, *, context=None):
        self.asked.append(list(context))
        trials = super().ask(n)
        for t, c in zip(trials, context):
            t.context = dict(c)
        return trials

    def add_trial(self, params, *, source="manual", context=None):
        t = super().add_trial(params, source=source)
        t.context = dict(context)
        return t


def test_context_is_measured_per_block_before_it_is_committed():
    from cryoopt.agents import EXPERT_PROTOCOL
    from cryoopt.loop.blocks import OBJECTIVES

    calls = []

    def screen(block_seed):
        calls.append(block_seed)
        return {"screening": (block_seed % 7) / 7}

    opt = Contextual(block_space(), seed=0, objectives=OBJECTIVES)
    loop = OuterLoop(runner=NoisyBlocks(), optimizer=opt, seed=2, batch_size=2, context=screen,
                     start_protocols=[EXPERT_PROTOCOL])
    loop.run(6)
    for r in loop.history:
        assert r["context"] == {"screening": (loop.block_seed(r["block"]) % 7) / 7}
    assert loop.history[0]["source"] == "start"  # the start protocol ran on block 0's measured specimen
    # after the start block, each batch of proposals was asked for its own blocks' specimens
    assert opt.asked == [[{"screening": (loop.block_seed(i) % 7) / 7} for i in (j, j + 1)] for j in (1, 3, 5)]
    assert sorted(calls) == [loop.block_seed(i) for i in range(len(loop.history))]  # each specimen measured once


def test_a_context_needs_an_optimizer_that_models_it():
    with pytest.raises(ValueError, match="contexts"):
        OuterLoop(runner=NoisyBlocks(), optimizer="random", context=lambda s: {"screening": 0.5})
    with pytest.raises(ValueError, match="context"):
        OuterLoop(runner=NoisyBlocks(), optimizer="random", context=0.5)


class Decision:
    def __init__(self, replicate, reason):
        self.replicate, self.reason = replicate, reason


class Judging(Optimizer):
    """Random search with a replicate rule: replicate when 3 or 6 blocks are done."""

    strategy_name = "test_judging"

    def _propose(self, n):
        return [(p, "random") for p in self._random_points(n)]

    def replicate_value(self, context=None):
        done = len(self.completed)
        return Decision(done in (3, 6), f"{done} done")


def test_auto_replicates_follow_the_optimizers_rule():
    from cryoopt.loop.blocks import OBJECTIVES

    loop = OuterLoop(runner=NoisyBlocks(), optimizer=Judging(block_space(), seed=0, objectives=OBJECTIVES), seed=0,
                     replicate_every="auto")
    loop.run(9)
    reps = [r for r in loop.history if r["source"] == "replicate"]
    assert [r["block"] for r in reps] == [3, 6] and [r["replicate_reason"] for r in reps] == ["3 done", "6 done"]
    for r in reps:  # each reruns the protocol recommended from the blocks before it
        before = [b for b in loop.history[:r["block"]]]
        best = max(before, key=lambda b: b["quality"])
        assert r["params"] == best["params"]
    # an optimizer without a rule never replicates under "auto"
    plain = OuterLoop(runner=NoisyBlocks(), optimizer="random", seed=0, replicate_every="auto")
    plain.run(6)
    assert all(r["source"] != "replicate" for r in plain.history)
    with pytest.raises(ValueError, match="replicate_every"):
        OuterLoop(runner=NoisyBlocks(), optimizer="random", replicate_every="sometimes")


def test_recommend_pools_replicates_and_defers_to_the_optimizers_belief():
    from cryoopt.loop.blocks import OBJECTIVES

    loop = OuterLoop(runner=NoisyBlocks(), optimizer="random", seed=0, replicate_every=3)
    loop.run(6)
    rec = loop.recommend()
    runs = [r for r in loop.history if r["params"] == rec["params"]]
    assert rec["n_runs"] == len(runs) and rec["basis"] == "observed"
    assert rec["expected_quality"] == pytest.approx(sum(r["quality"] for r in runs) / len(runs))
    if len(runs) >= 2:
        lo, hi = rec["quality_ci95"]
        assert lo < rec["expected_quality"] < hi

    class Believer(Judging):
        def recommend(self, *, context=None, target=None):
            t = self.completed[0]  # an optimizer's belief may favour a block that did not score best
            return type("R", (), {"params": dict(t.params), "mean": {"quality": 0.42, "prep_time_h": 1.5},
                                  "ci95": {"quality": (0.3, 0.5)}, "n_runs": 1, "trial_ids": (t.id,),
                                  "basis": "posterior"})()

    loop = OuterLoop(runner=NoisyBlocks(), optimizer=Believer(block_space(), seed=0, objectives=OBJECTIVES), seed=0)
    loop.run(3)
    rec = loop.recommend()
    assert rec["params"] == loop.history[0]["params"] and rec["block"] == 0
    assert rec["expected_quality"] == 0.42 and rec["quality_ci95"] == [0.3, 0.5] and rec["basis"] == "posterior"
