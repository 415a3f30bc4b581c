"""Drift: the tracker's prediction, the feedforward baseline, the model-based controller, HRL's views.

The controllers are checked on :class:`DriftingBlock`, a small env with the readbacks of
``CLEMProtocol-v0`` and a known answer: the measured temperature is the setpoint plus an
offset that grows by ``rate`` C per cut, and a section scores
``exp(-((T_measured - T_best) / 3 C)^2)``, best at ``T_best``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import cryoopt.envs  # noqa: F401
from cryoopt.agents import (
    DRIFT_FEATURES,
    ControllerView,
    DriftCompensationAgent,
    DriftTracker,
    GroupControlEnv,
    HRLAgent,
    InstrumentView,
    ModelBasedAgent,
    make_agent,
    run_block,
)

SPEC, KNIFE = 2, 3  # action indices of the specimen and knife temperature setpoints (step 3 C)


class DriftingBlock(gym.Env):
    """A block whose specimen and knife temperatures drift by ``rate`` C per cut (see the module docstring)."""

    def __init__(self, rate=2.0, best_c=-117.0, noise=0.0, block=8):
        self.rate, self.best, self.noise, self.block = float(rate), float(best_c), float(noise), int(block)
        self.observation_space = spaces.Box(-1.0, 1.0, (41,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (13,), np.float32)

    def _info(self):
        return {"setpoints": {"sectioning": {"section_thickness_nm": 70.0, "cutting_speed_mm_s": 1.0,
                                             "specimen_temperature_c": self.spec, "knife_temperature_c": self.knife,
                                             "chamber_temperature_c": -120.0}}}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        sp = (options or {}).get("setpoints", {})
        self.spec = float(sp.get("specimen_temperature_c", -120.0))
        self.knife = float(sp.get("knife_temperature_c", self.spec))
        self.offset, self.n, self.rewards = 0.0, 0, []
        return np.zeros(41, np.float32), self._info()

    def step(self, action):
        a = np.clip(np.asarray(action, float), -1, 1)
        if a[12] > 0.5:
            return np.zeros(41, np.float32), 0.0, True, False, {"stopped": True, "quality_summary": {}}
        self.spec += 3.0 * a[SPEC]
        self.knife += 3.0 * a[KNIFE]
        measured = self.spec + self.offset
        reward = float(np.exp(-((measured - self.best) / 3.0) ** 2) + self.noise * self.np_random.normal())
        self.rewards.append(reward)
        info = {**self._info(), "section": {"measured_specimen_temperature_c": measured,
                                            "measured_knife_temperature_c": self.knife + self.offset, "ribbon_ok": True},
                "section_failed": False, "evaluation_failed": False,
                "quality_summary": {"fused_score": float(np.mean(self.rewards))}}
        self.offset += self.rate
        self.n += 1
        return np.zeros(41, np.float32), reward, self.n >= self.block, False, info


def test_tracker_predicts_a_steady_drift_and_its_feedforward_cancels_it():
    env = DriftingBlock(rate=2.0)
    _, info = env.reset(options={"setpoints": {"specimen_temperature_c": -121.0}})
    tr = DriftTracker()
    tr.reset(info)
    assert tr.started and tr.reference == {"specimen_temperature_c": -121.0, "knife_temperature_c": -121.0}
    assert tr.next_offset() == 0.0 and tr.features().shape == (len(DRIFT_FEATURES),)
    measured = []
    for _ in range(6):
        a = np.zeros(13, np.float32)
        ff = tr.feedforward()
        a[SPEC], a[KNIFE] = ff["specimen_temperature_c"], ff["knife_temperature_c"]
        _, _, _, _, info = env.step(a)
        tr.update(info)
        measured.append(info["section"]["measured_specimen_temperature_c"])
    assert tr.rate() == pytest.approx(2.0) and tr.offset() == pytest.approx(10.0)
    assert tr.next_offset() == pytest.approx(12.0) and tr.next_offset_sd() == pytest.approx(0.5)
    # cut 1 at the setpoint, cut 2 one section of drift behind (no rate yet), cut 3 catching up
    # (a move is at most 3 C), then held exactly
    assert measured[:3] == pytest.approx([-121.0, -119.0, -120.0])
    assert np.allclose(measured[3:], -121.0)
    f = dict(zip(DRIFT_FEATURES, tr.features()))
    assert f["measured_minus_reference"] == pytest.approx(0.0, abs=1e-6)
    assert f["setpoint_minus_reference"] == pytest.approx(-10.0 / 20.0)  # moved 10 C colder to stay put


def test_tracker_without_readbacks_sees_no_drift():
    tr = DriftTracker(prior_rate_c=2.0)
    tr.reset({"setpoints": {"specimen_temperature_c": -120.0}})
    tr.update({"section": {"ribbon_ok": True}, "setpoints": {"specimen_temperature_c": -120.0}})
    assert tr.next_offset() == 0.0 and tr.feedforward() == {"specimen_temperature_c": 0.0}
    with pytest.raises(ValueError, match="window"):
        DriftTracker(window=0)


@pytest.mark.parametrize("rate", [1.0, 2.0])
def test_compensate_holds_the_measured_temperature_a_hold_lets_drift(rate):
    env = DriftingBlock(rate=rate, best_c=-120.0)
    start = {"specimen_temperature_c": -120.0, "knife_temperature_c": -120.0}
    comp = run_block(make_agent("compensate"), env, seed=0, start=start)
    hold = run_block(make_agent("bo_only"), env, seed=0, start=start)
    assert comp["steps"] == hold["steps"] == 8
    assert comp["quality"] > 0.85 and hold["quality"] < 0.5
    assert isinstance(make_agent("compensate"), DriftCompensationAgent)


@pytest.mark.parametrize("option", ["hold", "staining", "imaging"])
def test_hrl_regulates_the_temperature_under_every_option(option):
    """The feedforward runs beneath the options: whichever option acts, the measured temperature
    stays at the start (as under ``compensate``); without regulation it drifts away."""
    env = DriftingBlock(rate=2.0, best_c=-120.0)
    start = {"specimen_temperature_c": -120.0, "knife_temperature_c": -120.0}

    class Fixed(HRLAgent):
        def choose_option(self, obs):
            return option

    regulated = run_block(Fixed(seed=0), env, seed=0, start=start)
    measured = env.spec + env.offset - 2.0  # the last cut's measured temperature
    drifting = run_block(Fixed(seed=0, regulate=False), env, seed=0, start=start)
    comp = run_block(make_agent("compensate"), env, seed=0, start=start)
    assert regulated["quality"] == pytest.approx(comp["quality"]) and regulated["quality"] > 0.85
    assert measured == pytest.approx(-120.0)
    assert drifting["quality"] < 0.5


def test_mpc_learns_where_to_hold_the_temperature_from_a_few_blocks(tmp_path):
    """The model has to find the best temperature (-114 C, 6 C warmer than the start) from
    its own exploration; the feedforward alone would hold the start and lose."""
    env = DriftingBlock(rate=2.0, best_c=-114.0, noise=0.05)
    agent = ModelBasedAgent(seed=0, explore=1.0)
    start = {"specimen_temperature_c": -120.0, "knife_temperature_c": -120.0}
    before = run_block(agent, env, seed=1, start=start)["quality"]  # untrained: the feedforward
    agent.learn(gym.wrappers.TimeLimit(_RandomStarts(env), 8), 160)
    assert agent.learned_rate_c == pytest.approx(2.0, abs=0.3)
    after = run_block(agent, env, seed=1, start=start)["quality"]
    assert before < 0.3 and after > 0.7
    loaded = ModelBasedAgent.load(agent.save(tmp_path / "mpc"))
    assert run_block(loaded, env, seed=1, start=start)["quality"] == pytest.approx(after)
    with pytest.raises(ValueError, match="n_candidates"):
        ModelBasedAgent(n_candidates=1)


class _RandomStarts(gym.Wrapper):
    """Start temperatures drawn from -126..-110 C (the blocks an outer loop would hand out)."""

    def reset(self, *, seed=None, options=None):
        rng = np.random.default_rng(seed)
        t = float(rng.uniform(-126.0, -110.0))
        return self.env.reset(seed=seed, options={"setpoints": {"specimen_temperature_c": t, "knife_temperature_c": t}})


def test_sectioning_view_is_a_residual_on_the_feedforward():
    view = ControllerView("sectioning", residual_scale=0.5)
    tr = DriftTracker()
    tr.reset({"setpoints": {"specimen_temperature_c": -120.0, "knife_temperature_c": -120.0}})
    for off in (0.0, 1.5):  # two cuts: offset 0 then 1.5 C, so the next one is predicted at 3 C
        tr.update({"setpoints": {"specimen_temperature_c": -120.0, "knife_temperature_c": -120.0},
                   "section": {"measured_specimen_temperature_c": -120.0 + off, "measured_knife_temperature_c": -120.0 + off}})
    zero = view.to_env(np.zeros(5), tr)
    assert zero[SPEC] == pytest.approx(-1.0) and zero[KNIFE] == pytest.approx(-1.0) and zero[0] == 0.0
    a = np.array([0.2, 0.0, 1.0, 0.0, -0.4])
    moved = view.to_env(a, tr)
    assert moved[0] == pytest.approx(0.2) and moved[4] == pytest.approx(-0.4)  # other knobs: the controller's own
    assert moved[SPEC] == pytest.approx(-0.5)  # -1 (feedforward) + 0.5 * 1
    plain = ControllerView("sectioning", feedforward=False)
    np.testing.assert_allclose(plain.to_env(a, tr), a)
    assert view.obs_dim == 11 + len(DRIFT_FEATURES) and ControllerView("staining").obs_dim == 8
    with pytest.raises(ValueError, match="group"):
        ControllerView("stop")


def test_controller_views_match_between_composite_and_per_instrument_envs():
    comp = gym.make("cryoopt/CLEMProtocol-v0", image_size=64)
    for group, env_id in (("sectioning", "cryoopt/Sectioning-v0"), ("staining", "cryoopt/Staining-v0")):
        view = ControllerView(group)
        inst = InstrumentView(gym.make(env_id), view)
        g = GroupControlEnv(comp, group, view)
        assert g.observation_space == inst.observation_space and g.action_space == inst.action_space
        obs, _ = inst.reset(seed=0)
        assert inst.observation_space.contains(obs)
        obs, *_ = inst.step(inst.action_space.sample())
        assert inst.observation_space.contains(obs)
    assert GroupControlEnv(comp, "staining").observation_space == gym.make("cryoopt/Staining-v0").observation_space
    agent = HRLAgent(seed=0)
    obs, info = comp.reset(seed=0)
    assert agent.option_observation(obs).size == comp.observation_space.shape[0] + len(DRIFT_FEATURES)
    assert HRLAgent(seed=0, drift=False).option_observation(obs).size == comp.observation_space.shape[0]
    comp.close()
