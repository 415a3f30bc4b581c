"""HRL agent inside the BoTorch outer loop on the simulated CLEM bench (1-3 minutes on 2 cores).

    python examples/hrl_campaign.py [--blocks 8] [--pretrain-steps 128]

1. pre-train the hierarchical agent (per-instrument envs, then the composite env),
2. run 8 sample blocks: 4 Sobol blocks, then BO proposes two blocks at a time (q=2)
   while the agent adapts within each block and keeps learning between blocks,
3. print the quality-vs-prep-time Pareto front and the protocol to adopt (the GP's
   expected quality, not the luckiest block), save, and resume for 2 more blocks.

The same loop runs inside the campaign engine (journal, resume, tracking, ratings):
``Campaign(load_config("configs/sim_clem.yaml")).run()``.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from cryoopt.agents import available_agents
from cryoopt.loop import OuterLoop


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=8, help="sample blocks before the resume")
    ap.add_argument("--more", type=int, default=2, help="blocks added after the resume")
    ap.add_argument("--n-initial", type=int, default=4, help="Sobol blocks before BO proposes")
    ap.add_argument("--pretrain-steps", type=int, default=128, help="composite-env sections of pre-training")
    ap.add_argument("--learn-steps", type=int, default=32, help="agent learning steps after each block")
    ap.add_argument("--sections", type=int, default=6, help="serial sections per block at most")
    ap.add_argument("--image-size", type=int, default=64)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    print("agents:", available_agents())
    runner_kwargs = {
        "agent_kwargs": {"seed": 0, "k": 3, "time_weight": 0.05},
        "pretrain_steps": args.pretrain_steps,   # Sectioning-v0 / Staining-v0, then CLEMProtocol-v0
        "learn_steps_per_block": args.learn_steps,  # the agent keeps learning across blocks
        "max_sections": args.sections,
        "env_kwargs": {"scenario": "neurons", "backend": "direct", "image_size": args.image_size},
    }
    loop = OuterLoop("hrl", seed=0, batch_size=2, optimizer_kwargs={"n_initial": args.n_initial},
                     runner_kwargs=runner_kwargs)
    loop.run(args.blocks, callback=lambda lp, recs: [print(
        f"block {r['block']:2d} ({r['source']}): quality {r['quality']:.3f}, prep {r['prep_time_h']:.2f} h, "
        f"options {({k[7:]: int(v) for k, v in r.items() if k.startswith('option_')})}") for r in recs])
    print("Pareto front (quality vs prep time):")
    for r in loop.pareto_front():
        print(f"  block {r['block']}: quality {r['quality']:.3f} at {r['prep_time_h']:.2f} h")
    rec = loop.recommend()
    print(f"recommended: block {rec['block']}'s protocol, expected quality {rec['expected_quality']:.3f} "
          f"({rec['n_runs']} run(s), {rec['basis']})")

    with tempfile.TemporaryDirectory() as d:
        loop.save(d)
        resumed = OuterLoop.load(d, agent="hrl",
                                 runner_kwargs={k: v for k, v in runner_kwargs.items() if k != "pretrain_steps"})
        resumed.run(args.blocks + args.more)
        rec = resumed.recommend()
        print(f"resumed: {len(resumed.history)} blocks; recommended: block {rec['block']}'s protocol, "
              f"expected quality {rec['expected_quality']:.3f}")


if __name__ == "__main__":
    main()
