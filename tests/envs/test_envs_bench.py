"""The simulated bench inside ``cryoopt/CLEMProtocol-v0``: drift a controller can see, running
depth, paired specimens, "no measurement", and the observation layout."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import cryoopt.envs  # noqa: F401
from cryoopt.agents import EXPERT_PROTOCOL, start_setpoints
from cryoopt.envs.clem import CLEM_FEATURES, READBACK_FEATURES
from cryoopt.exceptions import ParameterError

HOLD = np.zeros(13, np.float32)
HOLD[12] = -1.0


@pytest.fixture(scope="module")
def env():
    e = gym.make("cryoopt/CLEMProtocol-v0", image_size=64)
    yield e
    e.close()


def _reset(env, specimen_seed: int, **opts):
    return env.reset(seed=1, options={"setpoints": start_setpoints(EXPERT_PROTOCOL), "specimen_seed": specimen_seed, **opts})


def test_observation_layout_is_documented_and_the_first_29_entries_keep_their_meaning(env) -> None:
    obs, _ = _reset(env, 3)
    assert env.observation_space.shape == (len(CLEM_FEATURES),) == (41,)
    assert CLEM_FEATURES[:29][-2:] == ("block_progress", "prep_time") and CLEM_FEATURES[29:] == READBACK_FEATURES
    assert env.observation_space.contains(obs)


def test_temperature_drift_shows_in_the_readback_and_holding_the_setpoint_lets_it_grow(env) -> None:
    _reset(env, 5)
    u = env.unwrapped
    rate = u.conditions.temperature_drift_c_per_cut
    assert rate != 0.0
    idx = CLEM_FEATURES.index("specimen_temperature_offset")
    offsets = []
    for _ in range(4):
        obs, *_ = env.step(HOLD)
        offsets.append(float(obs[idx]) * 10.0)  # the readback is (measured - set) / 10 C
    assert np.sign(np.diff(offsets)).tolist() == [np.sign(rate)] * 3
    assert np.mean(np.diff(offsets)) == pytest.approx(rate, rel=0.35)


def test_same_specimen_seed_same_block_whatever_the_reset_seed(env) -> None:
    _reset(env, 7)
    a = (env.unwrapped.conditions, env.unwrapped.chain.physics["microscope"].roi())
    env.reset(seed=99, options={"specimen_seed": 7})
    b = (env.unwrapped.conditions, env.unwrapped.chain.physics["microscope"].roi())
    assert a == b
    _reset(env, 8)
    assert env.unwrapped.conditions != a[0]
    with pytest.raises(ParameterError, match="specimen_seed"):
        env.reset(seed=1, options={"specimen_seed": -3})
    with pytest.raises(ParameterError, match="unknown reset options"):
        env.reset(seed=1, options={"specimen": 3})


def test_image_seed_changes_only_the_image_noise(env) -> None:
    def run(image_seed: int):
        _reset(env, 4, noise_seed=11, image_seed=image_seed)
        _, r, _, _, info = env.step(HOLD)
        return info["section"], env.unwrapped._images[1]

    (s1, em1), (s2, em2) = run(1), run(2)
    assert s1 == s2  # the same section was cut and stained
    assert not np.array_equal(em1, em2)  # imaged with other noise


def test_depth_is_the_running_sum_of_the_feeds_when_the_thickness_changes(env) -> None:
    _reset(env, 6)
    a = HOLD.copy()
    tops = []
    for move in (0.0, 1.0, -1.0, -1.0):  # 70, 80, 70, 60 nm: thickness knob steps 10 nm
        a[0] = move
        _, _, te, _, info = env.step(a)
        tops.append((info["section"]["depth_nm"], info["section"]["nominal_thickness_nm"]))
        if te:
            break
    for (top, feed), (nxt, _) in zip(tops, tops[1:]):
        assert nxt == pytest.approx(top + feed)  # never rewinds the block face


def test_a_field_with_nothing_to_measure_is_no_measurement_not_a_failure(env, monkeypatch) -> None:
    _reset(env, 2)
    scope = env.unwrapped.chain.physics["microscope"]
    monkeypatch.setattr(type(scope), "field_centre", lambda self, sample: (-1e6, -1e6))  # far outside the specimen
    for _ in range(3):
        _, r, te, _, info = env.step(HOLD)
        if not info["section_failed"]:
            break
    assert info["no_measurement"] and not info["evaluation_failed"] and r == 0.0
    summary = info["quality_summary"]
    assert summary["no_measurement_sections"] == 1 and summary["failed_evaluations"] == 0
    assert math.isfinite(r)


def test_expert_fields_are_measured_on_every_specimen(env) -> None:
    for spec in range(4):
        _reset(env, 100 + spec)
        for _ in range(3):
            _, _, te, _, info = env.step(HOLD)
            if not info["section_failed"]:
                assert not info["no_measurement"] and not info["evaluation_failed"], info.get("failure_reason")
            if te:
                break
