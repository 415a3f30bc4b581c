"""Headline benchmark: the closed loop (HRL + BO) against a simulated manual operator.

Every strategy gets the same simulated specimens (block seeds ``seed * 100_003 + i``,
neurons scenario, direct backend, 128 px LM/EM images) and the same budget of sample
blocks (``--blocks``, each at most ``--sections`` serial sections), for ``--seeds``
seeds (each seed is also one simulated operator for the manual baseline). Every
strategy starts where the lab is: block 0 runs the documented expert protocol
(:data:`~cryoopt.agents.EXPERT_PROTOCOL`; the manual operator as they habitually run it):

=============  ==========================================================================
strategy       starting protocol per block                 within the block
=============  ==========================================================================
``hrl_bo``     BoTorch GP, quality vs prep time (q=1,      HRL agent (controllers pre-trained
               ``--noise-floor`` 0.3); expert + Sobol up   on the per-instrument envs, then the
               to ``--n-initial``; every                   composite env, once for all seeds;
               ``--replicate-every`` th block reruns the   learns after each block)
               current recommendation
``bo_only``    BoTorch GP, same settings                   hold the proposal
``ppo_bo``     BoTorch GP, same settings                   flat PPO (pre-trained, learns per block)
``random``     expert, then uniform random                 hold
``manual``     ManualOFAT: one factor at a time from the   hold (the operator does not adapt
               expert protocol, operator variability       within a block)
=============  ==========================================================================

Why held-out specimens: the same protocol scores anywhere from 0 to about 0.4 on
different simulated specimens, so a campaign's best block is mostly its luckiest
specimen. Each campaign therefore ends with a *recommended* protocol, the one a lab
would adopt (:meth:`~cryoopt.loop.OuterLoop.recommend`: the fastest block
expected to reach the target quality, else the best expected one; expected = the GP's
posterior mean for the BO strategies, the observed block for random and manual), and
that protocol is rerun, with the agent as the campaign left it and no more
learning, on ``--heldout`` specimens that no campaign saw (the same for every
strategy and seed). The target quality is the documented expert protocol's mean on
those same specimens.

Reported per strategy (mean +- std over seeds): how many campaigns had a block at or
above the target and the cumulative prep time to the first one (never: the whole
budget, and counted); for the recommended protocol, held-out means of prep time per
sample, EM CNR, EM FRC resolution and quality, how many of them hold the target, and
the spread (std) of their quality across seeds/operators (the reference study's
operator-to-operator variability).

Run by hand (about 25 min on 2 cores)::

    nice -n 10 python benchmarks/headline.py --seeds 10 --workers 2

Writes ``benchmarks/results/headline.json``, ``headline.md`` and ``headline.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _results import results_dir  # noqa: E402  (benchmarks/results/local unless told otherwise)

STRATEGIES = ("hrl_bo", "bo_only", "ppo_bo", "random", "manual")
#: held-out specimens are seeded from here; campaign blocks use ``seed * 100_003 + i`` (< 9e6 for < 90 seeds)
HELDOUT_SEED = 9_000_000
REPO_ROOT = Path(__file__).resolve().parent.parent


def _env_kwargs(a: dict) -> dict:
    """The one simulated bench every strategy and the pre-training run on."""
    return {"scenario": "neurons", "backend": "direct", "image_size": a["image_size"]}


AGENT_KWARGS = {"hrl": {"seed": 0, "k": 3, "time_weight": 0.05}, "ppo": {"seed": 0}}


def pretrain_agents(a: dict, names: list[str], out: Path) -> dict[str, str]:
    """Pre-train each learning agent once (same start for every seed), save it under ``out``.

    HRL: controllers on the per-instrument envs (``instrument_pretrain`` steps each), then
    ``pretrain`` sections in the composite env; PPO: ``pretrain`` composite sections. The
    composite env draws its own specimens, independent of the benchmark's block seeds, and
    starts each episode from a random protocol of the block space (what the outer loop hands
    the agent), not from the scenario's start ranges.
    """
    import torch

    from cryoopt.loop import BlockRunner, block_space

    torch.set_num_threads(1)
    env_kwargs = _env_kwargs(a)
    paths = {}
    for name in names:
        t0 = time.perf_counter()
        runner = BlockRunner(name, agent_kwargs=AGENT_KWARGS[name], env_kwargs=env_kwargs, max_sections=a["sections"],
                             pretrain_steps=a["pretrain"], pretrain_space=block_space(),
                             instrument_pretrain_steps=a["instrument_pretrain"] if name == "hrl" else 0)
        paths[name] = str(runner.agent.save(out / "agents" / name))
        runner.close()
        print(f"pre-trained {name} in {time.perf_counter() - t0:.0f} s -> {paths[name]}", flush=True)
    return paths


def _run(task: tuple[str, int, dict]) -> dict:
    strategy, seed, a = task
    import torch

    torch.set_num_threads(1)
    from cryoopt.agents import EXPERT_PROTOCOL, run_block
    from cryoopt.loop import BlockRunner, OuterLoop

    env_kwargs = _env_kwargs(a)
    rk = {"env_kwargs": env_kwargs, "max_sections": a["sections"], "min_sections": a["min_sections"]}
    # every automated strategy starts where the lab is: block 0 runs the expert protocol
    # (the manual operator starts there too, as they habitually run it)
    warm = {"start_protocols": [EXPERT_PROTOCOL]}
    bo = {**bo_settings(a), "replicate_every": a["replicate_every"], **warm}
    t0 = time.perf_counter()
    if strategy == "hrl_bo":
        runner = BlockRunner("hrl", agent_path=a["agents"]["hrl"], learn_steps_per_block=a["learn"], **rk)
        loop = OuterLoop(runner=runner, seed=seed, **bo)
    elif strategy == "ppo_bo":
        runner = BlockRunner("ppo", agent_path=a["agents"]["ppo"], learn_steps_per_block=a["learn"], **rk)
        loop = OuterLoop(runner=runner, seed=seed, **bo)
    elif strategy == "bo_only":
        loop = OuterLoop("bo_only", seed=seed, runner_kwargs=rk, **bo)
    elif strategy == "random":
        loop = OuterLoop("bo_only", optimizer="random", seed=seed, runner_kwargs=rk, **warm)
    elif strategy == "manual":
        loop = OuterLoop("fixed", optimizer="manual_ofat", seed=seed, runner_kwargs=rk)
    else:
        raise ValueError(strategy)
    loop.run(a["blocks"])
    hist = [{k: v for k, v in r.items()} for r in loop.history]
    rec = loop.recommend(a["target"])
    heldout = evaluate_protocol(loop.runner, rec["params"], a["heldout"])
    return {"strategy": strategy, "seed": seed, "history": hist, "recommended": rec, "heldout": heldout,
            "seconds": time.perf_counter() - t0}


def bo_settings(a: dict) -> dict:
    """OuterLoop arguments for BO's formulation: ``pareto`` (quality vs prep time, the
    default objectives), ``quality`` (alone) or ``quality_under_time`` (quality subject
    to ``prep_time_h <= --max-prep-h``), with its initial design and noise floor."""
    kw: dict[str, Any] = {"n_initial": a["n_initial"], "noise_floor": a["noise_floor"]}
    if a["bo_objective"] == "quality_under_time":
        kw["outcome_constraints"] = [f"prep_time_h <= {a['max_prep_h']}"]
    out: dict[str, Any] = {"optimizer_kwargs": kw}
    if a["bo_objective"] != "pareto":
        out["objectives"] = {"quality": "maximize"}
    return out


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository root when it lies inside it (results name no machine's paths)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO_ROOT))
    except ValueError:
        return str(p)


def evaluate_protocol(runner: Any, params: dict, n: int) -> list[dict]:
    """Run ``params`` as the starting protocol on ``n`` held-out specimens (the same for every
    strategy and seed, never seen in a campaign), the agent frozen as the campaign left it."""
    runner.learn_steps_per_block = 0
    return [runner.run(params, HELDOUT_SEED + k) for k in range(n)]


def expert_reference(a: dict) -> list[dict]:
    """The documented expert protocol on the held-out specimens: the target quality."""
    from cryoopt.agents import EXPERT_PROTOCOL
    from cryoopt.loop import BlockRunner

    runner = BlockRunner("fixed", env_kwargs=_env_kwargs(a), max_sections=a["sections"], min_sections=a["min_sections"])
    try:
        return evaluate_protocol(runner, dict(EXPERT_PROTOCOL), a["heldout"])
    finally:
        runner.close()


def _mean(blocks: list[dict], key: str) -> float:
    v = np.array([b[key] for b in blocks if b.get(key) is not None and math.isfinite(b[key])], float)
    return float(v.mean()) if v.size else math.nan


def _ms(values: list[float]) -> tuple[float, float]:
    v = np.array([x for x in values if math.isfinite(x)], float)
    return (float(v.mean()), float(v.std())) if v.size else (math.nan, math.nan)


def summarize(runs: list[dict], target: float) -> dict:
    """Per strategy: campaign metrics (blocks, time to target) and the recommended protocol's
    held-out means (prep time per sample, CNR, FRC, quality), mean +- std over seeds."""
    out: dict[str, dict] = {}
    for s in STRATEGIES:
        rows = [r for r in runs if r["strategy"] == s]
        if not rows:
            continue
        ttt, reached = [], 0
        for r in rows:
            cum, hit = 0.0, None
            for b in r["history"]:
                cum += b["prep_time_h"]
                if hit is None and b["quality"] >= target:
                    hit = cum
            reached += hit is not None
            ttt.append(hit if hit is not None else cum)
        held = {key: [_mean(r["heldout"], key) for r in rows] for key in ("quality", "prep_time_h", "cnr", "frc_resolution_nm")}
        out[s] = {
            "n_seeds": len(rows), "campaign_reached_target": reached,
            "time_to_target_h": _ms(ttt),
            "heldout_holds_target": int(sum(q >= target for q in held["quality"])),
            "rec_quality": _ms(held["quality"]), "rec_prep_time_h": _ms(held["prep_time_h"]),
            "rec_cnr": _ms(held["cnr"]), "rec_frc_nm": _ms(held["frc_resolution_nm"]),
            "quality_spread_std": float(np.std(held["quality"])),
            "rec_campaign_quality": _ms([r["recommended"]["quality"] for r in rows]),
            "seconds_per_seed": float(np.mean([r["seconds"] for r in rows])),
        }
    return out


def table(summary: dict, target: float, expert: dict, a: dict) -> str:
    m = summary.get("manual")

    def f(x: tuple[float, float], d: int = 2) -> str:
        return f"{x[0]:.{d}f} ± {x[1]:.{d}f}"

    lines = [
        f"Simulated CLEM, neurons scenario, direct backend, {a['image_size']} px images; {a['seeds']} seeds "
        f"(= simulated operators for `manual`), {a['blocks']} sample blocks per strategy, <= {a['sections']} sections per block. "
        f"Each campaign's recommended protocol (`OuterLoop.recommend`: its fastest block expected to reach the target, "
        f"else its best expected block; expected = GP posterior mean for BO strategies, observed otherwise) is rerun "
        f"on the same {a['heldout']} held-out specimens; the table gives those held-out means, mean ± std over seeds. "
        f"Target quality {target:.3f}: the documented expert protocol's held-out mean "
        f"(its prep time {expert['prep_time_h']:.2f} h, EM CNR {expert['cnr']:.2f}, FRC {expert['frc_resolution_nm']:.0f} nm).",
        "",
        "| strategy | campaigns with a block >= target | prep time to that block (h, cumulative) | recommended protocols >= target on held-out | prep time per sample (h) | EM CNR | EM FRC resolution (nm) | quality | spread of quality (std) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s, v in summary.items():
        lines.append(f"| {s} | {v['campaign_reached_target']}/{v['n_seeds']} | {f(v['time_to_target_h'], 1)} | "
                     f"{v['heldout_holds_target']}/{v['n_seeds']} | {f(v['rec_prep_time_h'])} | "
                     f"{f(v['rec_cnr'])} | {f(v['rec_frc_nm'], 0)} | {f(v['rec_quality'], 3)} | {v['quality_spread_std']:.3f} |")
    if m:
        lines += ["", "Relative to `manual` (reference study: 3x throughput, +25 % CNR, -15 % resolvable size, -60 % variability):", "",
                  "| strategy | throughput (manual h / h) | CNR change | FRC resolution change | quality change | variability change |",
                  "|---|---|---|---|---|---|"]
        for s, v in summary.items():
            if s == "manual":
                continue
            thr = m["rec_prep_time_h"][0] / v["rec_prep_time_h"][0] if v["rec_prep_time_h"][0] > 0 else math.nan
            cnr = 100 * (v["rec_cnr"][0] / m["rec_cnr"][0] - 1)
            frc = 100 * (v["rec_frc_nm"][0] / m["rec_frc_nm"][0] - 1)
            q = 100 * (v["rec_quality"][0] / m["rec_quality"][0] - 1)
            var = 100 * (v["quality_spread_std"] / m["quality_spread_std"] - 1) if m["quality_spread_std"] > 0 else math.nan
            lines.append(f"| {s} | {thr:.2f}x | {cnr:+.0f} % | {frc:+.0f} % | {q:+.0f} % | {var:+.0f} % |")
    return "\n".join(lines)


def plot(runs: list[dict], summary: dict, target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(20, 4))
    for s in summary:
        rows = [r for r in runs if r["strategy"] == s]
        q = np.array([np.maximum.accumulate([b["quality"] for b in r["history"]]) for r in rows])
        x = np.arange(1, q.shape[1] + 1)
        ax[0].plot(x, q.mean(0), label=s)
        ax[0].fill_between(x, q.mean(0) - q.std(0), q.mean(0) + q.std(0), alpha=0.15)
    ax[0].axhline(target, color="k", ls="--", lw=1)
    ax[0].set(xlabel="sample block", ylabel="best observed block quality so far",
              title="campaign: best block, lucky specimens included (mean ± std)")
    ax[0].legend()
    names = list(summary)
    ax[1].bar(names, [summary[s]["rec_prep_time_h"][0] for s in names], yerr=[summary[s]["rec_prep_time_h"][1] for s in names])
    ax[1].set(ylabel="h", title="prep time per sample, recommended protocol (held-out)")
    ax[2].bar(names, [summary[s]["rec_cnr"][0] for s in names], yerr=[summary[s]["rec_cnr"][1] for s in names])
    ax[2].set(ylabel="EM CNR", title="EM CNR, recommended protocol (held-out)")
    ax[3].bar(names, [summary[s]["rec_quality"][0] for s in names], yerr=[summary[s]["rec_quality"][1] for s in names])
    ax[3].axhline(target, color="k", ls="--", lw=1, label="target (expert protocol)")
    ax[3].set(ylabel="block quality", title="quality, recommended protocol (held-out)")
    ax[3].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + seeds - 1")
    ap.add_argument("--blocks", type=int, default=16)
    ap.add_argument("--sections", type=int, default=8)
    ap.add_argument("--min-sections", type=int, default=4, help="sections every block yields before an agent may stop it")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--n-initial", type=int, default=4, help="BO initial design, the expert block included")
    ap.add_argument("--pretrain", type=int, default=2048,
                    help="HRL/PPO pre-training sections in the composite env (once, shared by every seed)")
    ap.add_argument("--instrument-pretrain", type=int, default=4096,
                    help="HRL controller pre-training steps on each per-instrument env")
    ap.add_argument("--learn", type=int, default=32, help="HRL/PPO training steps after each block")
    ap.add_argument("--replicate-every", type=int, default=4,
                    help="BO strategies rerun their recommended protocol every this many blocks (0: never)")
    ap.add_argument("--bo-objective", choices=("pareto", "quality", "quality_under_time"), default="pareto",
                    help="what the BO strategies optimize")
    ap.add_argument("--max-prep-h", type=float, default=3.0, help="prep time bound for --bo-objective quality_under_time")
    ap.add_argument("--noise-floor", type=float, default=0.3, help="BayesianOptimizer noise_floor for the BO strategies")
    ap.add_argument("--heldout", type=int, default=16, help="held-out specimens each recommended protocol is rerun on")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--out", default=str(results_dir()))
    args = ap.parse_args()
    a = {"seeds": args.seeds, "blocks": args.blocks, "sections": args.sections, "min_sections": args.min_sections,
         "image_size": args.image_size,
         "pretrain": args.pretrain, "instrument_pretrain": args.instrument_pretrain, "learn": args.learn,
         "n_initial": args.n_initial, "heldout": args.heldout,
         "replicate_every": args.replicate_every, "bo_objective": args.bo_objective, "max_prep_h": args.max_prep_h,
         "noise_floor": args.noise_floor}
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    strategies = args.strategies.split(",")
    learners = [n for n, st in (("hrl", "hrl_bo"), ("ppo", "ppo_bo")) if st in strategies]
    a["agents"] = pretrain_agents(a, learners, Path(args.out)) if learners else {}
    expert_runs = expert_reference(a)
    expert = {key: _mean(expert_runs, key) for key in ("quality", "prep_time_h", "cnr", "frc_resolution_nm")}
    target = a["target"] = expert["quality"]
    print(f"target quality {target:.3f} (expert protocol on {a['heldout']} held-out specimens)", flush=True)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    tasks = [(st, s, a) for st in strategies for s in seeds]
    t0 = time.perf_counter()

    def progress(runs: Any) -> list[dict]:
        done = []
        for r in runs:  # one line per finished (strategy, seed), in completion order
            done.append(r)
            best = max((b["quality"] for b in r["history"]), default=math.nan)
            print(f"[{len(done):>3}/{len(tasks)}] {r['strategy']:<8} seed {r['seed']:<3} best block {best:.3f}, "
                  f"recommended protocol held-out {_mean(r['heldout'], 'quality'):.3f} "
                  f"({r['seconds']:.0f} s; {time.perf_counter() - t0:.0f} s elapsed)", flush=True)
        return done

    if args.workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.workers) as pool:
            runs = progress(pool.imap_unordered(_run, tasks, chunksize=1))
    else:
        runs = progress(_run(t) for t in tasks)
    runs.sort(key=lambda r: (r["strategy"], r["seed"]))
    summary = summarize(runs, target)
    text = table(summary, target, expert, a)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {**a, "agents": {k: repo_relative(v) for k, v in a["agents"].items()}}
    (out / "headline.json").write_text(json.dumps({"settings": settings, "target_quality": target, "expert_heldout": expert_runs,
                                                   "summary": summary, "runs": runs,
                                                   "wall_s": time.perf_counter() - t0}, indent=1, default=float))
    (out / "headline.md").write_text("# Headline benchmark (simulation)\n\n" + text + "\n")
    plot(runs, summary, target, out / "headline.png")
    print(text)
    print(f"wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
