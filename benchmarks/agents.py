"""What each agent adds inside a sample block: a paired comparison against holding the start.

Every agent runs the same starting protocols (the documented expert protocol and
``--starts`` Sobol points of the outer loop's block space) on the same simulated
specimens (``--specimens`` per start, seeds no campaign uses), so specimen-to-specimen
variation cancels in the differences. ``hold`` (the ``bo_only`` agent) keeps the
starting protocol: the difference to it is what within-block adaptation is worth.
For the HRL agent, rows ``hrl[<option>]`` force one option throughout, which shows
whether each pre-trained controller helps on its own.

Agents are loaded from ``--agents`` (the headline benchmark saves its pre-trained
HRL and PPO agents there); missing ones are pre-trained with the headline's settings.

Run: ``OMP_NUM_THREADS=1 python benchmarks/agents.py`` (about 5 min on one core).
Writes ``benchmarks/results/agents.json`` and ``agents.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from headline import _env_kwargs, pretrain_agents, repo_relative  # noqa: E402

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _results import results_dir  # noqa: E402  (benchmarks/results/local unless told otherwise)

SPECIMEN_SEED = 8_000_000  # campaign blocks use seed * 100_003 + i, held-out evaluation 9_000_000 + k


class ForcedOption:
    """Stands in for the HRL option policy: always the same option."""

    def __init__(self, option: str) -> None:
        from cryoopt.agents import OPTIONS

        self.index = OPTIONS.index(option)

    def predict(self, obs: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
        return np.array(self.index), None


def evaluate(runner: Any, starts: list[dict], specimens: int) -> dict[str, np.ndarray]:
    """Block results per (start, specimen)."""
    rows = [[runner.run(s, SPECIMEN_SEED + 100 * i + j) for j in range(specimens)] for i, s in enumerate(starts)]
    return {key: np.array([[r.get(key, np.nan) for r in row] for row in rows], float)
            for key in ("quality", "sections", "prep_time_h")}


def _counts(options: dict[str, int] | None) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(options.items(), key=lambda kv: -kv[1])) if options else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--starts", type=int, default=24, help="Sobol starting protocols (plus the expert protocol)")
    ap.add_argument("--specimens", type=int, default=4, help="specimens per starting protocol")
    ap.add_argument("--sections", type=int, default=8)
    ap.add_argument("--min-sections", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--agents", default=str(results_dir() / "agents"))
    ap.add_argument("--pretrain", type=int, default=2048)
    ap.add_argument("--instrument-pretrain", type=int, default=4096)
    ap.add_argument("--out", default=str(results_dir()))
    args = ap.parse_args()

    import torch

    from cryoopt.agents import EXPERT_PROTOCOL
    from cryoopt.loop import BlockRunner, block_space

    torch.set_num_threads(1)
    a = {"image_size": args.image_size, "sections": args.sections, "pretrain": args.pretrain,
         "instrument_pretrain": args.instrument_pretrain}
    agents_dir = Path(args.agents)
    missing = [n for n in ("hrl", "ppo") if not (agents_dir / n / "agent.json").exists()]
    if missing:
        pretrain_agents(a, missing, agents_dir.parent)
    starts = [dict(EXPERT_PROTOCOL)] + block_space().sample(args.starts, rng=0, method="sobol")
    rk = {"env_kwargs": _env_kwargs(a), "max_sections": args.sections, "min_sections": args.min_sections}

    runners = {"hold": BlockRunner("bo_only", **rk), "random": BlockRunner("random", agent_kwargs={"seed": 0}, **rk),
               "ppo": BlockRunner("ppo", agent_path=str(agents_dir / "ppo"), **rk)}
    hrl = BlockRunner("hrl", agent_path=str(agents_dir / "hrl"), **rk)
    policy = hrl.agent.option_model
    results: dict[str, dict[str, np.ndarray]] = {}
    options: dict[str, dict[str, int]] = {}
    for name in ["hold", "random", "ppo", "hrl", "hrl[hold]", "hrl[sectioning]", "hrl[staining]", "hrl[imaging]"]:
        t0 = time.perf_counter()
        if name.startswith("hrl"):
            runner = hrl
            runner.agent.option_model = ForcedOption(name[4:-1]) if "[" in name else policy
            runner.agent.option_counts.clear()
        else:
            runner = runners[name]
        results[name] = evaluate(runner, starts, args.specimens)
        if name.startswith("hrl"):
            options[name] = dict(runner.agent.option_counts)
        print(f"{name:<16} quality {results[name]['quality'].mean():.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    base = results["hold"]["quality"].mean(1)
    summary = {}
    for name, r in results.items():
        diff = r["quality"].mean(1) - base  # paired by start (and specimen)
        summary[name] = {
            "quality": float(r["quality"].mean()), "expert_start_quality": float(r["quality"][0].mean()),
            "diff_vs_hold": float(diff.mean()), "diff_se": float(diff.std(ddof=1) / np.sqrt(diff.size)),
            "starts_better_than_hold": int((diff > 0).sum()), "starts_worse_than_hold": int((diff < 0).sum()),
            "sections": float(r["sections"].mean()),
            "prep_time_h": float(r["prep_time_h"].mean()), "options": options.get(name),
        }
    lines = [f"Within-block value of each agent: {len(starts)} starting protocols (expert + {args.starts} Sobol) x "
             f"{args.specimens} specimens, <= {args.sections} sections per block ({args.min_sections} before an agent may stop), "
             f"{args.image_size} px. Difference to `hold`: mean over starts ± standard error (paired).", "",
             "| agent | block quality | expert start | vs hold | starts better / worse | sections per block | prep time (h) | options chosen (HRL) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, v in summary.items():
        lines.append(f"| {name} | {v['quality']:.3f} | {v['expert_start_quality']:.3f} | {v['diff_vs_hold']:+.3f} ± {v['diff_se']:.3f} | "
                     f"{v['starts_better_than_hold']} / {v['starts_worse_than_hold']} | {v['sections']:.2f} | "
                     f"{v['prep_time_h']:.2f} | {_counts(v['options'])} |")
    text = "\n".join(lines)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "agents.json").write_text(json.dumps({"settings": {**vars(args), "agents": repo_relative(args.agents), "out": repo_relative(args.out)},
                                                 "summary": summary}, indent=1))
    (out / "agents.md").write_text("# Within-block value of the agents (simulation)\n\n" + text + "\n")
    print(text)


if __name__ == "__main__":
    main()
