"""The ``simulated_clem`` executor in a campaign directory: the pre-trained agent is kept and reused
on resume, each section's images are kept, and a seed reproduces the campaign."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cryoopt.campaign import Campaign, Journal
from cryoopt.config import CampaignConfig


def _config(budget: int, **options: Any) -> CampaignConfig:
    return CampaignConfig.from_dict({
        "name": "blocks", "seed": 3,
        "space": {"parameters": {"time_min": {"type": "float", "low": 5, "high": 60, "unit": "min"}}},
        "objectives": {"quality": "maximize", "prep_time_h": "minimize"},
        "optimizer": {"strategy": "sobol"}, "budget": {"experiments": budget},
        "executor": {"type": "simulated_clem", "options": {
            "agent": "ppo", "agent_kwargs": {"net_arch": [8]}, "pretrain_steps": 64, "max_sections": 2,
            "env_kwargs": {"scenario": "neurons", "image_size": 32}, **options}},
        "tracking": {"enabled": False}, "report": {"on_finish": False},
    })


def _run(cfg: CampaignConfig, d: Path) -> list[str]:
    lines: list[str] = []
    Campaign(cfg, d, progress=True, output=lines.append).run()
    return lines


@pytest.mark.slow
def test_agent_kept_and_reused_images_kept_and_a_seed_reproduces(tmp_path: Path) -> None:
    d = tmp_path / "a"
    out = _run(_config(2), d)
    assert any("pre-training ppo" in line for line in out)
    saved = d / "agent"
    assert (saved / "model.zip").is_file() and (saved / "pretraining.json").is_file()
    stamp = (saved / "model.zip").stat().st_mtime_ns
    trials = Journal.open(d).trials()
    for t in trials:  # every section cut has its LM and EM image, named relative to the campaign directory
        sections = t.result["section_images"]
        assert [s["section"] for s in sections] == list(range(1, len(sections) + 1)) and sections
        for s in sections:
            if s["lm"] is not None:
                assert s["lm"] == f"images/trial_{t.id:04d}/s{s['section']:02d}_lm.png"
                png = (d / s["lm"]).read_bytes()
                assert png[:4] == b"\x89PNG" and len(png) < 20_000
    # resume: the saved agent is loaded, nothing is pre-trained again
    out = _run(_config(3), d)
    assert any("loading the pre-trained ppo agent" in line for line in out)
    assert not any(line.startswith(("agent: pre-training", "training")) for line in out)
    assert (saved / "model.zip").stat().st_mtime_ns == stamp
    # the same config and seed in another directory gives the same campaign, bit for bit
    _run(_config(3), tmp_path / "b")
    a, b = Journal.open(d).trials(), Journal.open(tmp_path / "b").trials()
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.values for t in a] == [t.values for t in b]


def test_run_block_reports_this_blocks_option_counts() -> None:
    """HRL option counts in a block summary are the block's own, not the agent's running total."""
    import gymnasium as gym

    import cryoopt.envs  # noqa: F401
    from cryoopt.agents import BaseAgent, run_block
    from collections import Counter

    class Counting(BaseAgent):
        def __init__(self) -> None:
            super().__init__()
            self.option_counts: Counter[str] = Counter()

        def act(self, obs: Any, info: Any = None) -> np.ndarray:
            self.option_counts["hold"] += 1
            return self.zero_action()

    env = gym.make("cryoopt/CLEMProtocol-v0", scenario="neurons", image_size=32)
    agent = Counting()
    first = run_block(agent, env, seed=0, max_sections=2)
    second = run_block(agent, env, seed=1, max_sections=3)
    assert first["options"] == {"hold": first["steps"]} and second["options"] == {"hold": second["steps"]}
    assert sum(agent.option_counts.values()) == first["steps"] + second["steps"]
