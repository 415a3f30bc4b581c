"""HRL: option termination, option switching, OptionEnv, train/save/load round trip."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import cryoopt.envs  # noqa: F401
from cryoopt.agents import OPTIONS, HRLAgent, OptionEnv, OptionTermination, GroupControlEnv, run_block


class ScriptedOptions:
    """Stands in for the SB3 option policy: returns a fixed sequence of options."""

    def __init__(self, names):
        self.names, self.i = list(names), 0

    def predict(self, obs, deterministic=True):
        o = OPTIONS.index(self.names[min(self.i, len(self.names) - 1)])
        self.i += 1
        return np.array(o), None


@pytest.fixture(scope="module")
def env():
    e = gym.make("cryoopt/CLEMProtocol-v0", image_size=64)
    yield e
    e.close()


def test_termination_reasons():
    t = OptionTermination(k=3, target=None, patience=None)
    assert [t.update(0.1), t.update(0.2), t.update(0.3)] == [None, None, "k_steps"]
    t = OptionTermination(k=10, target=0.5, patience=None)
    assert t.update(0.2) is None and t.update(0.6) == "target_met"
    t = OptionTermination(k=10, patience=2, min_delta=0.01)
    assert [t.update(0.3), t.update(0.3), t.update(0.305)] == [None, None, "no_progress"]
    with pytest.raises(ValueError):
        OptionTermination(k=0)


def test_options_switch_on_termination_and_stop_waits_for_min_sections(env):
    agent = HRLAgent(seed=0, k=2, patience=None, min_sections=3)
    agent.option_model = ScriptedOptions(["staining", "stop", "imaging", "stop"])
    seen = []
    out = run_block(agent, env, seed=0, max_sections=20, on_step=lambda o, r, i: "setpoints" in i and seen.append(i["setpoints"]))
    # staining for k=2 sections, 'stop' before 3 sections acts as hold (2 sections), imaging 2, then stop
    assert [o for o, _, _ in agent.option_log] == ["staining", "hold", "imaging", "stop"]
    assert [n for _, n, _ in agent.option_log[:3]] == [2, 2, 2] and agent.option_log[-1][2] == "block_end"
    assert out["stopped"] and out["sections"] == 6
    assert seen[0]["imaging"] == seen[3]["imaging"]  # imaging untouched until its option runs
    assert out["options"] == {"staining": 1, "hold": 1, "imaging": 1, "stop": 1}


def test_option_env_runs_an_option_to_termination(env):
    agent = HRLAgent(seed=0, k=3, patience=None, min_sections=0)
    oenv = OptionEnv(env, agent)
    obs, _ = oenv.reset(seed=0)
    assert oenv.observation_space.contains(obs) and oenv.action_space.n == 5
    obs, r, te, tr, info = oenv.step(OPTIONS.index("hold"))
    assert info["option"] == "hold" and info["option_steps"] == 3 and info["termination"] == "k_steps" and not te
    obs, r, te, tr, info = oenv.step(OPTIONS.index("stop"))
    assert te and info["termination"] == "block_end" and info["option_steps"] == 1


def test_train_save_load_evaluate_round_trip(env, tmp_path):
    small = {"n_steps": 16, "batch_size": 8, "n_epochs": 1}
    agent = HRLAgent(seed=0, k=2, net_arch=(8,), option_kwargs={"n_steps": 8, "batch_size": 8, "n_epochs": 1},
                     controller_kwargs=small)
    agent.pretrain(16)
    agent.learn(env, 16, controller_timesteps=16)
    assert set(agent.controllers) == {"sectioning", "staining", "imaging"} and agent.option_model is not None
    path = agent.save(tmp_path / "hrl")
    loaded = HRLAgent.load(path)
    assert loaded.k == 2 and set(loaded.controllers) == set(agent.controllers)
    obs, _ = env.reset(seed=5)
    assert loaded.choose_option(obs) == agent.choose_option(obs)
    for name in ("sectioning", "staining", "imaging"):
        np.testing.assert_allclose(loaded.option_action(name, obs), agent.option_action(name, obs), atol=1e-6)
    a = run_block(agent, env, seed=9, max_sections=4)
    b = run_block(loaded, env, seed=9, max_sections=4)
    assert a["quality"] == pytest.approx(b["quality"]) and a["prep_time_h"] == pytest.approx(b["prep_time_h"])
    summary = loaded.evaluate(env, n_episodes=1, max_sections=2)
    assert summary["sections"] <= 2


def test_option_reward_counts_failed_sections_as_the_block_quality_does():
    """A failed section adds nothing to a block's quality, like a section never cut: the
    option level sees 0 for it (default), not the env's -1 that would make stopping pay."""
    from cryoopt.pipeline import LogicConsistencyEvaluator

    # impact weighted but nothing scores it: every section that is cut fails its evaluation
    failing = gym.make("cryoopt/CLEMProtocol-v0", image_size=64, weights={"logic": 0.5, "impact": 0.5},
                       evaluators=[LogicConsistencyEvaluator()])
    returns = {}
    for value in (0.0, None):
        agent = HRLAgent(seed=0, k=3, patience=None, time_weight=0.0, option_failure_reward=value)
        oenv = OptionEnv(failing, agent)
        oenv.reset(seed=0)
        _, returns[value], _, _, info = oenv.step(OPTIONS.index("hold"))
        assert info["option_steps"] >= 1
    assert returns[0.0] == 0.0
    assert returns[None] <= -1.0  # the env's failure reward, once per failed section
    failing.close()
