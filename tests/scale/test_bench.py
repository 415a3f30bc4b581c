"""latency_bench: a trial's result and time are fixed by (seed, trial id), on any bench, however often it runs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cryoopt.campaign.executors import make_executor
from cryoopt.config import CampaignConfig
from cryoopt.exceptions import ConfigError
from cryoopt.optim.problems import Branin
from cryoopt.registry import TrialRequest

SPACE = {"x1": {"type": "float", "low": -5, "high": 10}, "x2": {"type": "float", "low": 0, "high": 15}}


def config(seed: int = 0, **options: object) -> CampaignConfig:
    return CampaignConfig.from_dict({
        "name": "bench", "seed": seed, "space": {"parameters": SPACE}, "objectives": {"quality": "maximize"},
        "budget": {"experiments": 4},
        "executor": {"type": "latency_bench", "options": {"problem": "branin", "sections": 5, "section_s": 0.01,
                                                          **options}},
    })


def test_same_trial_same_result_on_any_bench_and_noise_differs_between_trials() -> None:
    params = {"x1": 3.0, "x2": 2.0}
    a, b = make_executor(config()), make_executor(config())
    first = a.run(TrialRequest(7, params))
    assert b.run(TrialRequest(7, params)) == first == a.run(TrialRequest(7, params))
    assert first["true_quality"] == pytest.approx(Branin(seed=0).evaluate_true(params))
    other = a.run(TrialRequest(8, params))
    assert other["true_quality"] == first["true_quality"] and other["quality"] != first["quality"]
    assert make_executor(config(seed=1)).run(TrialRequest(7, params))["quality"] != first["quality"]
    assert a.idempotent


def test_a_block_takes_its_sections_instrument_time() -> None:
    bench = make_executor(config(sections=10, section_s=0.02, jitter=0.3))
    times = np.concatenate([bench.block_times(i) for i in range(200)])
    assert times.mean() == pytest.approx(0.02, rel=0.05)  # log-normal with its mean held at section_s
    assert times.std() / times.mean() == pytest.approx(np.sqrt(np.exp(0.3**2) - 1), rel=0.15)
    t0 = time.monotonic()
    result = bench.run(TrialRequest(0, {"x1": 0.0, "x2": 0.0}))
    assert time.monotonic() - t0 >= result["instrument_s"] == pytest.approx(bench.block_times(0).sum())


def test_bad_bench_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="problem 'nope': unknown"):
        make_executor(config(problem="nope"))
    with pytest.raises(ConfigError, match="section_s = -1.0 must be >= 0"):
        make_executor(config(section_s=-1))
    with pytest.raises(ConfigError, match=r"\['speed'\]: unknown to latency_bench"):
        make_executor(config(speed=2))
    with pytest.raises(ConfigError, match="not those of problem 'hartmann6'"):
        make_executor(config(problem="hartmann6"))
