"""Gymnasium/SB3 conformance of every registered cryoopt env, determinism, clipping, backends."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.registration import registry

import cryoopt.envs
from cryoopt.envs import ENV_IDS
from cryoopt.exceptions import ParameterError

FAST_KW = {"cryoopt/CLEMProtocol-v0": {"image_size": 64}}


def make(env_id: str, **kw):
    return gym.make(env_id, **{**FAST_KW.get(env_id, {}), **kw})


def test_all_cryoopt_ids_registered_with_time_limits():
    ids = sorted(i for i in registry if i.startswith("cryoopt/"))
    assert ids == sorted(ENV_IDS)
    for i in ids:
        assert registry[i].max_episode_steps is not None


@pytest.mark.parametrize("env_id", sorted(i for i in registry if i.startswith("cryoopt/")))
def test_gymnasium_and_sb3_checkers_pass_without_warnings(env_id):
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    env = make(env_id, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check(env.unwrapped, skip_render_check=False)
        sb3_check(env.unwrapped, warn=True)
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_episode(env_id):
    def run(seed):
        env = make(env_id)
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(123)
        out = [obs]
        for _ in range(4 if "CLEM" in env_id else 15):
            o, r, te, tr, _ = env.step(env.action_space.sample())
            out += [o, np.array([r])]
            if te or tr:
                break
        env.close()
        return out

    a, b, c = run(7), run(7), run(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_reward_terms_and_render(env_id):
    env = make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    _, r, _, _, info = env.step(env.action_space.sample())
    assert math.isfinite(r)
    assert "reward_terms" in info and info["reward_terms"]
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and frame.shape[1] == 2 * frame.shape[0]
    env.close()


def test_clem_info_groups_and_stop():
    env = make("cryoopt/CLEMProtocol-v0")
    groups = env.unwrapped.action_groups
    assert groups["sectioning"] == slice(0, 5) and groups["staining"] == slice(5, 9) and groups["imaging"] == slice(9, 12)
    env.reset(seed=1)
    a = np.zeros(13, np.float32)
    _, r, _, _, info = env.step(a)
    for key in ("reward_terms", "scores", "prep_time_h", "quality_summary", "evaluation_failed"):
        assert key in info
    assert set(info["quality_summary"]) >= {"fused_score", "cnr", "frc_resolution_nm", "prep_time_h"}
    a[12] = 1.0
    _, r, te, _, info = env.step(a)
    assert te and r == 0.0 and info["stopped"]
    env.close()


def test_clem_failed_evaluation_gives_documented_penalty_not_nan():
    from cryoopt.pipeline import LogicConsistencyEvaluator

    # impact weighted but nothing scores it: every evaluated section fails its reward
    env = make("cryoopt/CLEMProtocol-v0", weights={"logic": 0.5, "impact": 0.5}, evaluators=[LogicConsistencyEvaluator()])
    env.reset(seed=0)
    seen = False
    for _ in range(6):
        _, r, te, _, info = env.step(np.zeros(13, np.float32))
        assert math.isfinite(r)
        if not info["section_failed"]:
            assert info["evaluation_failed"] and r == -1.0
            seen = True
        if te:
            env.reset()
    assert seen
    env.close()


def test_clem_scores_sections_against_the_simulators_structures():
    """On the simulator, the label is scored against the specimen's labelled sites and
    the EM contrast over its target structures (neurites here): sections are scored,
    not failed, and a bad choice of structures option is refused."""
    from cryoopt.agents import EXPERT_PROTOCOL, start_setpoints

    env = make("cryoopt/CLEMProtocol-v0", image_size=128, scenario="neurons")
    env.reset(seed=0, options={"setpoints": start_setpoints(EXPERT_PROTOCOL)})  # a protocol known to label and image
    assert env.unwrapped.structures == "known" and env.unwrapped._target_structures() == ("cells",)
    scored, failed = [], 0
    for _ in range(8):
        _, r, te, _, info = env.step(np.zeros(13, np.float32))
        if info["section_failed"]:
            continue
        if info["evaluation_failed"]:
            failed += 1
        else:
            scored.append(info["scores"]["scores"])
        if te:
            break
    assert len(scored) >= 4 and failed <= 1
    assert all(math.isfinite(s["em_cnr"]["value"]) and s["em_cnr"]["value"] > 0.5 for s in scored)
    assert all(0.0 < s["logic_precision"]["value"] <= 1.0 for s in scored)
    env.close()
    with pytest.raises(ValueError, match="structures"):
        make("cryoopt/CLEMProtocol-v0", structures="guess")


def test_clem_image_observation():
    env = make("cryoopt/CLEMProtocol-v0", observation="images", obs_image_px=32)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, *_ = env.step(np.zeros(13, np.float32))
    assert obs["lm"].shape == (32, 32, 1) and obs["lm"].dtype == np.uint8
    env.close()


def test_extreme_actions_stay_inside_profile_limits_on_the_wire():
    env = make("cryoopt/Sectioning-v0", backend="instruments", failure_limit=1000)
    env.reset(seed=0)
    um = env.unwrapped.chain.bench.ultramicrotome
    for sign in (1.0, -1.0):
        for _ in range(8):
            _, _, te, _, info = env.step(np.full(5, sign * 5.0, np.float32))  # beyond the Box: clipped too
            for name, v in info["setpoints"].items():
                lim = um.profile.limit(name)
                assert lim.low <= v <= lim.high
    sent = [e.data.decode() for e in um.exchange_log if e.direction == "write" and e.data.startswith(b"SECT:THIC ")]
    assert sent and all(15 <= float(s.split()[1]) <= 1000 for s in sent)
    # bypassing the env's clip: the driver refuses before any byte is sent
    n = len(um.exchange_log)
    with pytest.raises(ParameterError):
        um.section_thickness_nm = 5000
    assert len(um.exchange_log) == n
    env.close()


@pytest.mark.parametrize("backend", ["instruments", "socket"])
@pytest.mark.parametrize("env_id", ["cryoopt/Sectioning-v0", "cryoopt/Staining-v0"])
def test_driver_backends_run(env_id, backend):
    env = make(env_id, backend=backend)
    obs, _ = env.reset(seed=3)
    for _ in range(3):
        obs, r, te, tr, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and math.isfinite(r)
    env.close()


def test_clem_over_in_process_drivers():
    env = make("cryoopt/CLEMProtocol-v0", backend="instruments")
    env.reset(seed=2)
    _, r, _, _, info = env.step(np.zeros(13, np.float32))
    assert math.isfinite(r) and "reward_terms" in info
    env.close()


def test_scenarios_select_specimen_and_noise():
    env = gym.make("cryoopt/Staining-v0", scenario="tissue_block")
    assert env.unwrapped.scenario.specimen == "tissue_block"
    env = gym.make("cryoopt/Sectioning-v0", scenario={"name": "x", "block_sections": 3})
    env.reset(seed=0)
    done = [env.step(np.zeros(5, np.float32))[2] for _ in range(3)]
    assert done[-1]
    with pytest.raises(cryoopt.exceptions.ConfigError, match="unknown scenario"):
        gym.make("cryoopt/Sectioning-v0", scenario="no_such_scenario")


def test_make_vec_and_subproc_vec_env():
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    venv = gym.make_vec("cryoopt/Sectioning-v0", num_envs=2, vectorization_mode="sync")
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (2, 11)
    obs, r, te, tr, _ = venv.step(venv.action_space.sample())
    assert r.shape == (2,)
    venv.close()
    sub = make_vec_env("cryoopt.envs:cryoopt/Sectioning-v0", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv)
    sub.reset()
    for _ in range(3):
        _, r, _, _ = sub.step(np.stack([sub.action_space.sample() for _ in range(2)]))
        assert np.all(np.isfinite(r))
    sub.close()


def test_clem_reset_starts_from_requested_setpoints() -> None:
    import gymnasium as gym
    import pytest

    from cryoopt.exceptions import ParameterError

    env = gym.make("cryoopt/CLEMProtocol-v0", image_size=64)
    _, info = env.reset(seed=0, options={"setpoints": {"section_thickness_nm": 90.0, "exposure_ms": 1e9}})
    assert info["setpoints"]["sectioning"]["section_thickness_nm"] == 90.0
    limit = info["setpoints"]["imaging"]["exposure_ms"]
    assert limit < 1e9  # clipped to the microscope profile's limit, never sent as asked
    _, a = env.reset(seed=0)
    _, b = env.reset(seed=0)
    assert a["setpoints"] == b["setpoints"]  # without options: the scenario's seeded draw
    with pytest.raises(ParameterError, match=r"unknown setpoint\(s\) \['knife_angle'\]"):
        env.reset(seed=0, options={"setpoints": {"knife_angle": 6}})
    env.close()
