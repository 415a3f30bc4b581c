"""Agent registry, a user agent, baselines, flat SB3 agents and the MLflow writer."""

from __future__ import annotations

import tempfile

import gymnasium as gym
import numpy as np
import pytest

import cryoopt.envs  # noqa: F401
from cryoopt.agents import (
    EXPERT_PROTOCOL,
    Agent,
    BaseAgent,
    FixedAgent,
    FlatPPOAgent,
    MLflowOutputFormat,
    agents,
    available_agents,
    make_agent,
    register_agent,
    run_block,
)
from cryoopt.exceptions import RegistryError


@pytest.fixture(scope="module")
def env():
    e = gym.make("cryoopt/CLEMProtocol-v0", image_size=64)
    yield e
    e.close()


def test_registry_lists_the_documented_agents():
    assert {"random", "fixed", "bo_only", "ppo", "sac", "hrl"} <= set(available_agents())
    assert isinstance(make_agent("fixed"), FixedAgent)
    assert isinstance(make_agent(FixedAgent), FixedAgent)
    assert isinstance(make_agent("cryoopt.agents.baselines:RandomAgent", scale=0.1), Agent)
    with pytest.raises(RegistryError, match="available"):
        make_agent("no_such_agent")


def test_user_agent_plugs_in_with_one_class(env):
    @register_agent("test_more_dilute")
    class MoreDilute(BaseAgent):
        def act(self, obs, info=None):
            a = self.zero_action()
            a[5] = 1.0  # dilution up one step per section
            return a

    try:
        agent = make_agent("test_more_dilute")
        seen = []
        out = run_block(agent, env, seed=0, start=EXPERT_PROTOCOL, max_sections=3,
                        on_step=lambda o, r, i: "setpoints" in i and seen.append(i["setpoints"]["staining"]["dilution"]))
        assert out["sections"] == 3 and out["stopped"]
        assert seen[0] > EXPERT_PROTOCOL["dilution"] and seen[1] > seen[0]
    finally:
        agents._items.pop("test_more_dilute")


def test_min_sections_overrides_an_early_stop(env):
    class Quitter(BaseAgent):
        def act(self, obs, info=None):
            a = self.zero_action()
            a[-1] = 1.0  # stop at once, every time
            return a

    assert run_block(Quitter(), env, seed=2, start=EXPERT_PROTOCOL, max_sections=5)["sections"] == 0
    out = run_block(Quitter(), env, seed=2, start=EXPERT_PROTOCOL, max_sections=5, min_sections=3)
    assert out["sections"] == 3 and out["stopped"]


def test_random_starts_draw_from_the_space_and_keep_explicit_setpoints(env):
    from cryoopt.agents import RandomStarts
    from cryoopt.loop import block_space

    space = block_space()
    wrapped = RandomStarts(env, space, seed=0)
    _, a = wrapped.reset(seed=5)
    _, b = wrapped.reset(seed=5)
    _, c = wrapped.reset()
    dil = [i["setpoints"]["staining"]["dilution"] for i in (a, b, c)]
    assert dil[0] == dil[1] != dil[2]
    assert all(space["dilution"].low <= d <= space["dilution"].high for d in dil)
    _, d = wrapped.reset(options={"setpoints": {"dilution": 333.0}})
    assert d["setpoints"]["staining"]["dilution"] == pytest.approx(333.0)


def test_fixed_starts_from_the_expert_protocol_and_holds(env):
    seen = []
    run_block(make_agent("fixed"), env, seed=1, max_sections=2, on_step=lambda o, r, i: "setpoints" in i and seen.append(i["setpoints"]))
    assert seen[0]["staining"]["dilution"] == pytest.approx(EXPERT_PROTOCOL["dilution"])
    assert seen[0]["imaging"]["exposure_ms"] == pytest.approx(EXPERT_PROTOCOL["exposure_ms"])
    assert seen[0]["staining"] == seen[1]["staining"]


def test_random_agent_actions_in_bounds_and_never_stop():
    a = make_agent("random", seed=3).act(np.zeros(29, np.float32))
    assert a.shape == (13,) and a.dtype == np.float32 and np.all(np.abs(a[:12]) <= 0.3) and a[12] < 0.5


def test_flat_ppo_learns_saves_and_loads(env, tmp_path, monkeypatch):
    system_tmp = tmp_path / "system-tmp"  # where SB3's default logger would make its SB3-<date> folders
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    agent = FlatPPOAgent(seed=0, net_arch=(8,), algo_kwargs={"n_steps": 32, "batch_size": 16, "n_epochs": 1})
    agent.learn(env, 32)
    obs, _ = env.reset(seed=0)
    before = agent.act(obs)
    agent.save(tmp_path / "ppo")
    loaded = make_agent("ppo").__class__.load(tmp_path / "ppo")
    np.testing.assert_allclose(loaded.act(obs), before, atol=1e-6)
    loaded.learn(env, 32)  # a loaded model keeps training without a log folder either
    assert list(system_tmp.glob("SB3-*")) == []


def test_flat_sac_smoke(env):
    agent = make_agent("sac", seed=0, net_arch=(8,), algo_kwargs={"learning_starts": 8, "batch_size": 8})
    agent.learn(env, 16)
    obs, _ = env.reset(seed=0)
    assert agent.act(obs).shape == (13,)


def test_mlflow_writer_logs_numeric_sb3_keys(monkeypatch):
    import mlflow

    logged = []
    monkeypatch.setattr(mlflow, "active_run", lambda: object())
    monkeypatch.setattr(mlflow, "log_metrics", lambda m, step=0: logged.append((m, step)))
    MLflowOutputFormat("hrl/").write({"train/loss": 0.5, "rollout/ep_rew_mean": np.float32(1.0), "time/name": "x"},
                                     {"train/loss": None, "rollout/ep_rew_mean": ("mlflow",), "time/name": None}, step=7)
    assert logged == [({"hrl/train/loss": 0.5}, 7)]
