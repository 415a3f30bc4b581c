"""HRL agent inside the BoTorch outer loop on the simulated CLEM bench (about a minute).

    python examples/hrl_campaign.py

1. pre-train the hierarchical agent (per-instrument envs, then the composite env),
2. let BO propose two sample blocks at a time (q=2) for 8 blocks while the agent adapts
   within each block and keeps learning between blocks,
3. print the quality-vs-prep-time Pareto front, save, and resume for 2 more blocks.

The same loop runs inside the campaign engine (journal, resume, tracking, ratings):
``Campaign(load_config("configs/sim_clem.yaml")).run()``.
"""

from __future__ import annotations

import tempfile

import torch

from cryoopt.agents import available_agents
from cryoopt.loop import OuterLoop

torch.set_num_threads(1)

print("agents:", available_agents())
runner_kwargs = {
    "agent_kwargs": {"seed": 0, "k": 3, "time_weight": 0.05},
    "pretrain_steps": 128,          # Sectioning-v0 / Staining-v0, then CLEMProtocol-v0
    "learn_steps_per_block": 32,    # the agent keeps learning across blocks
    "max_sections": 6,
    "env_kwargs": {"scenario": "neurons", "backend": "direct", "image_size": 64},
}
loop = OuterLoop("hrl", seed=0, batch_size=2, runner_kwargs=runner_kwargs)
loop.run(8, callback=lambda lp, recs: [print(f"block {r['block']:2d} ({r['source']}): quality {r['quality']:.3f}, "
                                             f"prep {r['prep_time_h']:.2f} h, options {({k[7:]: int(v) for k, v in r.items() if k.startswith('option_')})}")
                                       for r in recs])
print("Pareto front (quality vs prep time):")
for r in loop.pareto_front():
    print(f"  block {r['block']}: quality {r['quality']:.3f} at {r['prep_time_h']:.2f} h")

with tempfile.TemporaryDirectory() as d:
    loop.save(d)
    resumed = OuterLoop.load(d, agent="hrl", runner_kwargs={k: v for k, v in runner_kwargs.items() if k != "pretrain_steps"})
    resumed.run(10)
    print(f"resumed: {len(resumed.history)} blocks, best {resumed.best()['quality']:.3f}")
