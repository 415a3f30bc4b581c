"""What each agent adds inside a sample block, over many starting protocols: paired against holding the start.

Every agent runs the same starting protocols (the documented expert protocol and
``--starts`` Sobol points of the outer loop's block space) on the same simulated
specimens (``--specimens`` per start: the same specimen, knife, drift and noise streams
for every agent), so specimen-to-specimen variation cancels in the differences. ``hold``
(the ``bo_only`` agent) keeps the starting protocol: the difference to it is what
within-block adaptation is worth from wherever the outer loop starts a block (the
ceiling benchmark, ``benchmarks/ceiling.py``, measures it from the expert protocol
against the best static protocol and the oracle).

Rows: ``random``; ``compensate`` (the drift feedforward, no learning); ``mpc`` (GP
model-predictive control); ``ppo`` (flat PPO); ``hrl``; and ``hrl[<option>]``, the HRL
agent with one option forced throughout (does each controller help on its own?).

Agents are loaded from ``--agents`` (the headline benchmark saves its pre-trained
agents there); missing ones are pre-trained with the headline's settings.

Run: ``OMP_NUM_THREADS=1 python benchmarks/agents.py --out benchmarks/results``.
Writes ``agents.json`` and ``agents.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import results_dir  # noqa: E402  (benchmarks/results/local unless told otherwise)
from headline import bootstrap_ci, env_kwargs, load_average, pretrain_agents, repo_relative  # noqa: E402

SPECIMEN_SEED = 8_000_000  # campaign blocks use seed * 100_003 + i, held-out evaluation 9_000_000 + k
#: paired differences between rows (per start, specimens averaged): learning against the feedforward, the
#: model-based agent against HRL, and the option policy against its best single option
PAIRS = ("hrl-compensate", "mpc-compensate", "mpc-hrl", "hrl[sectioning]-hrl", "ppo-compensate")


class ForcedOption:
    """Stands in for the HRL option policy: always the same option."""

    def __init__(self, option: str) -> None:
        from cryoopt.agents import OPTIONS

        self.index = OPTIONS.index(option)

    def predict(self, obs: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
        return np.array(self.index), None


def evaluate(runner: Any, starts: list[dict], specimens: int) -> dict[str, np.ndarray]:
    """Block results per (start, specimen), every block on its own paired specimen and noise."""
    rows = []
    for i, s in enumerate(starts):
        row = []
        for j in range(specimens):
            opts = {"specimen_seed": SPECIMEN_SEED + 100 * i + j, "noise_seed": 100 * i + j + 1, "image_seed": 3}
            row.append(runner.measure(s, SPECIMEN_SEED + 100 * i + j, options=opts))
        rows.append(row)
    return {key: np.array([[r.get(key, np.nan) for r in row] for row in rows], float)
            for key in ("quality", "sections", "prep_time_h")}


def _counts(options: dict[str, int] | None) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(options.items(), key=lambda kv: -kv[1])) if options else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--starts", type=int, default=24, help="Sobol starting protocols (plus the expert protocol)")
    ap.add_argument("--specimens", type=int, default=2, help="specimens per starting protocol")
    ap.add_argument("--sections", type=int, default=8)
    ap.add_argument("--min-sections", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--agents", default=None, help="pre-trained agents (default <out>/agents)")
    ap.add_argument("--pretrain", type=int, default=2048)
    ap.add_argument("--instrument-pretrain", type=int, default=4096)
    ap.add_argument("--mpc-pretrain", type=int, default=768)
    ap.add_argument("--out", default=str(results_dir()))
    args = ap.parse_args()

    import torch

    from cryoopt.agents import EXPERT_PROTOCOL
    from cryoopt.loop import BlockRunner, block_space
    from cryoopt.progress import report_to

    torch.set_num_threads(1)
    a = {"image_size": args.image_size, "sections": args.sections, "pretrain": args.pretrain,
         "instrument_pretrain": args.instrument_pretrain, "mpc_pretrain": args.mpc_pretrain}
    out = Path(args.out)
    agents_dir = Path(args.agents) if args.agents else out / "agents"
    missing = [n for n in ("hrl", "mpc", "ppo") if not (agents_dir / n / "agent.json").exists()]
    load0, t0 = load_average(), time.perf_counter()
    with report_to(print):
        pretrain_agents(a, missing, agents_dir)
    starts = [dict(EXPERT_PROTOCOL)] + block_space().sample(args.starts, rng=0, method="sobol")
    rk = {"env_kwargs": env_kwargs(a), "max_sections": args.sections, "min_sections": args.min_sections}

    runners = {"hold": BlockRunner("bo_only", **rk), "random": BlockRunner("random", agent_kwargs={"seed": 0}, **rk),
               "compensate": BlockRunner("compensate", **rk)}
    for name in ("mpc", "ppo"):
        runners[name] = BlockRunner(name, agent_path=str(agents_dir / name), **rk)
    hrl = BlockRunner("hrl", agent_path=str(agents_dir / "hrl"), **rk)
    policy = hrl.agent.option_model
    results: dict[str, dict[str, np.ndarray]] = {}
    options: dict[str, dict[str, int]] = {}
    for name in ["hold", "random", "compensate", "mpc", "ppo", "hrl", "hrl[hold]", "hrl[sectioning]", "hrl[staining]",
                 "hrl[imaging]"]:
        t1 = time.perf_counter()
        if name.startswith("hrl"):
            runner = hrl
            runner.agent.option_model = ForcedOption(name[4:-1]) if "[" in name else policy
            runner.agent.option_counts.clear()
        else:
            runner = runners[name]
        results[name] = evaluate(runner, starts, args.specimens)
        if name.startswith("hrl"):
            options[name] = dict(runner.agent.option_counts)
        print(f"{name:<16} quality {results[name]['quality'].mean():.3f} ({time.perf_counter() - t1:.0f} s)", flush=True)

    base = results["hold"]["quality"].mean(1)
    summary = {}
    for name, r in results.items():
        diff = r["quality"].mean(1) - base  # paired by start (and specimen)
        summary[name] = {
            "quality": float(r["quality"].mean()), "expert_start_quality": float(r["quality"][0].mean()),
            "diff_vs_hold": float(diff.mean()), "ci95": list(bootstrap_ci(diff, seed=0)),
            "starts_better_than_hold": int((diff > 0).sum()), "starts_worse_than_hold": int((diff < 0).sum()),
            "sections": float(r["sections"].mean()),
            "prep_time_h": float(r["prep_time_h"].mean()), "options": options.get(name),
        }
    pairs = {}
    for pair in PAIRS:
        first, second = pair.split("-")
        diff = results[first]["quality"].mean(1) - results[second]["quality"].mean(1)
        pairs[pair] = {"mean": float(diff.mean()), "ci95": list(bootstrap_ci(diff, seed=0)),
                       "starts_better": int((diff > 0).sum()), "starts_worse": int((diff < 0).sum())}
    lines = [f"Within-block value of each agent: {len(starts)} starting protocols (expert + {args.starts} Sobol) x "
             f"{args.specimens} paired specimens, <= {args.sections} sections per block ({args.min_sections} before an agent "
             f"may stop), {args.image_size} px. Difference to `hold`: mean over starts [95 % bootstrap interval] (paired).", "",
             "| agent | block quality | expert start | vs hold | starts better / worse | sections per block | prep time (h) | options chosen (HRL) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, v in summary.items():
        lines.append(f"| {name} | {v['quality']:.3f} | {v['expert_start_quality']:.3f} | {v['diff_vs_hold']:+.3f} "
                     f"[{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}] | {v['starts_better_than_hold']} / {v['starts_worse_than_hold']} | "
                     f"{v['sections']:.2f} | {v['prep_time_h']:.2f} | {_counts(v['options'])} |")
    lines += ["", "Paired differences between rows (per start; mean [95 % bootstrap interval], starts better / worse): "
              + "; ".join(f"{k} {v['mean']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}] "
                          f"({v['starts_better']} / {v['starts_worse']})" for k, v in pairs.items())]
    text = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"wall_s": time.perf_counter() - t0, "load_average_start": load0, "load_average_end": load_average()}
    (out / "agents.json").write_text(json.dumps({"settings": {**vars(args), "agents": repo_relative(agents_dir),
                                                              "out": repo_relative(out)},
                                                 "summary": summary, "pairs": pairs,
                                                 "quality_per_start": {k: r["quality"].tolist() for k, r in results.items()},
                                                 "meta": meta}, indent=1))
    (out / "agents.md").write_text("# Within-block value of the agents (simulation)\n\n" + text + "\n")
    print(text)


if __name__ == "__main__":
    main()
