"""Headline benchmark: the closed loop against BO alone, flat PPO, random search and a simulated operator.

Every strategy runs ``--seeds`` campaigns of ``--blocks`` sample blocks (each at most
``--sections`` serial sections) on the simulated CLEM bench (neurons scenario, direct
backend, ``--image-size`` px LM/EM images). Campaign ``s`` of every strategy sees the
same specimens in the same order (block seeds ``s * 100_003 + i``: specimen, knife and
drift), and each seed is also one simulated operator for the manual baseline. Every
strategy starts where the lab is: block 0 runs the documented expert protocol
(:data:`~cryoopt.agents.EXPERT_PROTOCOL`; the manual operator as they habitually run it).

=============  ==========================================================================
strategy       starting protocol per block                 within the block
=============  ==========================================================================
``hrl_bo``     BoTorch GP, quality vs prep time (q=1,      HRL agent: option policy over
               noise floor); expert + Sobol up to          controllers that see the drift
               ``--n-initial``; replicates of the          (pre-trained once, frozen)
               current recommendation
``mpc_bo``     the same BO                                 GP model-predictive control of the
                                                           cutting temperature (pre-trained)
``bo_only``    the same BO                                 hold the proposal
``ppo_bo``     the same BO                                 flat PPO (pre-trained, frozen)
``random``     expert, then uniform random                 hold
``manual``     ManualOFAT: one factor at a time from the   hold (the operator does not adapt
               expert protocol, operator variability       within a block)
``hrl_cbo``    BO that sees each block's specimen before   HRL agent, as ``hrl_bo``
               committing it (context: the screened LM
               overview of the block's trim ribbon,
               :class:`~cryoopt.loop.screening.ScreeningContext`),
               replicates when the optimizer's rule says
               they pay (``replicate_every="auto"``)
``cbo_only``   the same contextual BO                      hold the proposal
=============  ==========================================================================

Each campaign ends with *recommended* protocols, the ones a lab would adopt
(:meth:`~cryoopt.loop.OuterLoop.recommend`: the optimizer's belief, replicates pooled):
``best``, the best expected quality, and ``target``, the fastest protocol expected to reach
the expert protocol's held-out quality (what prep time costs in quality). Both come from
the same campaign and are rerun, with the campaign's agent frozen, on ``--heldout``
specimens no campaign saw (the same for every strategy and seed): a campaign's best block
is mostly its luckiest specimen, a held-out mean is not. A contextual strategy's held-out
specimens are screened like its blocks, and each is given the recommendation for its own
context (what a lab does: screen the block, then pick); its belief for the average specimen
is rerun too (``best_average_specimen``). ``--context-check N`` first measures, on ``N``
fresh specimens, whether the screening context predicts block quality at all.

Reported per strategy, over seeds: held-out quality (mean, 95 % bootstrap interval),
EM CNR, EM FRC resolution, prep time per sample (a block), and the spread (sd over
seeds/operators) of held-out quality, the reference study's operator-to-operator
variability. Paired over seeds (same specimens): differences of held-out quality
between strategies, and each strategy's EM CNR, FRC, spread and prep time relative to
``manual``, with 95 % bootstrap intervals (10 000 resamples of the seeds); for the
``target`` recommendations, the quality they give up against ``best`` and ``manual`` and
their prep-time speed-up.

Run (the reported run: fresh seeds, ``--first-seed 100``)::

    OMP_NUM_THREADS=1 nice python benchmarks/headline.py --seeds 20 --first-seed 120 --blocks 10 --workers 2 --out benchmarks/results

(once the agents are pre-trained; an interrupted run resumes from ``--cache``, which also
keeps each held-out block, and ``--available`` reports the seeds every strategy finished).

Writes ``headline.json``, ``headline.md`` and ``headline.png`` to ``--out``
(``benchmarks/results/local/`` by default); pre-trained agents go to ``<out>/agents``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import results_dir  # noqa: E402  (benchmarks/results/local unless told otherwise)

STRATEGIES = ("hrl_bo", "mpc_bo", "bo_only", "ppo_bo", "random", "manual", "hrl_cbo", "cbo_only")
#: the learning agent of each strategy that has one
LEARNERS = {"hrl_bo": "hrl", "mpc_bo": "mpc", "ppo_bo": "ppo", "hrl_cbo": "hrl"}
#: strategies whose BO sees each block's screened trim ribbon (and replicates by the optimizer's rule)
CONTEXTUAL = ("hrl_cbo", "cbo_only")
#: paired differences reported (the first two are the headline's targets)
PAIRS = ("hrl_bo-bo_only", "hrl_bo-manual", "hrl_cbo-hrl_bo", "cbo_only-bo_only", "hrl_cbo-manual", "cbo_only-manual",
         "mpc_bo-bo_only", "mpc_bo-manual", "hrl_bo-mpc_bo", "bo_only-manual", "ppo_bo-bo_only", "random-bo_only",
         "random-manual")
#: the recommendations each campaign's held-out reruns judge: the best expected quality, and the
#: fastest protocol expected to reach the expert protocol's held-out quality (the prep-time trade-off;
#: not for ``manual``, the operator's own protocol, which every strategy's is compared with)
RECOMMENDATIONS = ("best", "target")
NO_TARGET = ("manual",)
#: held-out specimens are seeded from here; campaign blocks use ``seed * 100_003 + i`` (< 8e6 for < 80 seeds)
HELDOUT_SEED = 9_000_000
#: specimens of the context check (whether the screened trim ribbon predicts a block), apart from both
CONTEXT_CHECK_SEED = 8_000_000
#: the context the contextual strategies see: two features of the screened overview of the block's
#: trim ribbon (8 sections at the expert's sectioning setpoints), the two that predicted held-protocol
#: block quality on development specimens (seeds 0-3: compression r = -0.38 [-0.61, -0.07], missing
#: sections r = -0.42 [-0.66, -0.14], 40 blocks), over the ranges the bench's blocks span
CONTEXT = {"features": ("compression", "missing_fraction"), "ranges": {"compression": (0.0, 0.3), "missing_fraction": (0.0, 0.5)},
           "trim_sections": 8}
REPO_ROOT = Path(__file__).resolve().parent.parent
#: the published window of primary-antibody incubation on Tokuyasu sections (Slot & Geuze, Nat. Protoc. 2,
#: 2480 (2007): 20-60 min; the expert protocol's 30 min lies in it), against which fast protocols are read
PUBLISHED_INCUBATION_MIN = (20.0, 60.0)
#: the reference study's claims against the manual protocol (the targets)
TARGETS = {"em_cnr_change": 0.25, "frc_change": -0.15, "spread_change": -0.60, "prep_speedup": 3.0}

AGENT_KWARGS: dict[str, dict[str, Any]] = {"hrl": {"seed": 0, "k": 3, "time_weight": 0.05}, "ppo": {"seed": 0},
                                           "mpc": {"seed": 0}}


def env_kwargs(a: dict) -> dict:
    """The one simulated bench every strategy and the pre-training run on."""
    return {"scenario": "neurons", "backend": "direct", "image_size": a["image_size"]}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository root when it lies inside it (results name no machine's paths)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO_ROOT))
    except ValueError:
        return str(p)


def bootstrap_ci(d: np.ndarray, *, n: int = 10_000, seed: int = 0, stat: Any = np.mean) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of ``stat`` over the rows of ``d``."""
    d = np.asarray(d, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n, len(d)))
    with np.errstate(divide="ignore", invalid="ignore"):
        vals = np.array([stat(d[i]) for i in idx]) if stat is not np.mean else d[idx].mean(axis=1)
    vals = vals[np.isfinite(vals)]  # a resample of identical seeds has no spread: no ratio of spreads
    return (float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))) if vals.size else (math.nan, math.nan)


def pretrain_agents(a: dict, names: list[str], out: Path) -> dict[str, str]:
    """Pre-train each learning agent once (the same start for every seed) and save it under ``out``.

    HRL: controllers on the per-instrument envs (``instrument_pretrain`` steps each), then
    ``pretrain`` sections in the composite env (controllers on the fused objective, then the
    option policy); PPO: ``pretrain`` composite sections; MPC: ``mpc_pretrain`` sections of
    exploration, then its GP. Composite-env episodes start from random protocols of the
    block space (what the outer loop hands an agent) and draw their own specimens,
    independent of the benchmark's.
    """
    from cryoopt.loop import BlockRunner, block_space

    paths = {}
    for name in names:
        t0 = time.perf_counter()
        steps = a["mpc_pretrain"] if name == "mpc" else a["pretrain"]
        runner = BlockRunner(name, agent_kwargs=AGENT_KWARGS[name], env_kwargs=env_kwargs(a), max_sections=a["sections"],
                             pretrain_steps=steps, pretrain_space=block_space(),
                             instrument_pretrain_steps=a["instrument_pretrain"] if name == "hrl" else 0)
        paths[name] = str(runner.agent.save(Path(out) / name))
        runner.close()
        print(f"pre-trained {name} in {time.perf_counter() - t0:.0f} s (load {load_average()}) -> {repo_relative(paths[name])}",
              flush=True)
    return paths


def bo_settings(a: dict) -> dict:
    """OuterLoop arguments of the BO strategies: initial design, noise floor, replicates, expert start."""
    from cryoopt.agents import EXPERT_PROTOCOL

    rep: int | str = a["replicate_every"]
    return {"optimizer_kwargs": {"n_initial": a["n_initial"], "noise_floor": a["noise_floor"]},
            "replicate_every": "auto" if rep == "auto" else int(rep), "start_protocols": [EXPERT_PROTOCOL]}


def screening_source(a: dict) -> Any:
    """The contextual strategies' pre-block measurement: the block's trim ribbon, overview screened."""
    from cryoopt.loop.screening import ScreeningContext

    c = a["context"]
    return ScreeningContext(env_kwargs(a), features=tuple(c["features"]), ranges={k: tuple(v) for k, v in c["ranges"].items()},
                            trim_sections=int(c["trim_sections"]))


def make_loop(strategy: str, seed: int, a: dict) -> Any:
    """The campaign of ``strategy`` for ``seed``."""
    from cryoopt.agents import EXPERT_PROTOCOL
    from cryoopt.loop import BlockRunner, OuterLoop

    rk = {"env_kwargs": env_kwargs(a), "max_sections": a["sections"], "min_sections": a["min_sections"]}
    if strategy in CONTEXTUAL:
        screen = screening_source(a)
        kw = {**bo_settings(a), "replicate_every": "auto", "context": screen, "contexts": screen.ranges}
        if strategy in LEARNERS:
            runner = BlockRunner(LEARNERS[strategy], agent_path=a["agents"][LEARNERS[strategy]], **rk)
            return OuterLoop(runner=runner, seed=seed, **kw)
        return OuterLoop("bo_only", seed=seed, runner_kwargs=rk, **kw)
    if strategy in LEARNERS:
        name = LEARNERS[strategy]
        runner = BlockRunner(name, agent_path=a["agents"][name], **rk)
        return OuterLoop(runner=runner, seed=seed, **bo_settings(a))
    if strategy == "bo_only":
        return OuterLoop("bo_only", seed=seed, runner_kwargs=rk, **bo_settings(a))
    if strategy == "random":
        return OuterLoop("bo_only", optimizer="random", seed=seed, runner_kwargs=rk, start_protocols=[EXPERT_PROTOCOL])
    if strategy == "manual":
        return OuterLoop("fixed", optimizer="manual_ofat", seed=seed, runner_kwargs=rk)
    raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")


def evaluate_protocol(runner: Any, params: dict, n: int) -> list[dict]:
    """Run ``params`` as the starting protocol on ``n`` held-out specimens (the same for every
    strategy and seed, never seen in a campaign), the agent frozen as the campaign left it."""
    runner.learn_steps_per_block = 0
    return [runner.measure(params, HELDOUT_SEED + k) for k in range(n)]  # a failed block counts as what it measured


HELDOUT_KEYS = ("quality", "prep_time_h", "cnr", "frc_resolution_nm", "sections", "failed_sections", "good_sections")


def heldout_block(runner: Any, agent: str, params: dict, k: int, a: dict, memo: str | None) -> dict:
    """Held-out specimen ``k`` run from ``params`` by the frozen ``agent``; kept in ``memo``.

    A frozen agent (no campaign trains it: ``learn_steps_per_block`` is 0) on a given specimen
    from a given protocol gives the same block every time (the bench is seeded by the specimen),
    so campaigns that recommend the same protocol share its held-out blocks instead of rerunning them.
    """
    runner.learn_steps_per_block = 0
    path = None
    if memo:
        key = settings_key({"agent": agent, "agent_path": a["agents"].get(agent), "params": params, "k": k,
                            "env": env_kwargs(a), "sections": a["sections"], "min_sections": a["min_sections"]})
        path = Path(memo) / f"{agent}_{k}_{key}.json"
        if path.exists():
            return json.loads(path.read_text())
    h = runner.measure(params, HELDOUT_SEED + k)  # a failed block counts as what it measured
    out = {key_: h.get(key_) for key_ in HELDOUT_KEYS}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(out, default=float))
        tmp.replace(path)
    return out


def _rec_record(rec: dict) -> dict:
    return {k: rec.get(k) for k in ("params", "expected_quality", "expected_prep_time_h", "quality_ci95", "n_runs", "basis")}


def judge_recommendation(loop: Any, strategy: str, kind: str, a: dict, memo: str | None, *,
                         per_specimen: bool) -> dict:
    """``loop``'s ``kind`` recommendation (``best`` or ``target``) rerun on the held-out specimens.

    ``per_specimen``: the lab screens each held-out block first (the same trim-ribbon overview the
    campaign saw) and adopts ``recommend(context=...)`` for that specimen; otherwise one protocol
    (for a contextual optimizer: its belief averaged over the specimens it has seen) for all.
    """
    target = a["target"] if kind == "target" else None
    if per_specimen:
        recs = [loop.recommend(target, context=loop.context(HELDOUT_SEED + k)) for k in range(a["heldout"])]
    else:
        recs = [loop.recommend(target)] * a["heldout"]
    protocols: list[dict] = []
    index = []
    for r in recs:
        rec = _rec_record(r)
        if rec not in protocols:
            protocols.append(rec)
        index.append(protocols.index(rec))
    agent = LEARNERS.get(strategy, "fixed")
    held = [heldout_block(loop.runner, agent, recs[k]["params"], k, a, memo) for k in range(a["heldout"])]
    return {"protocols": protocols, "per_specimen": index if per_specimen else None, "heldout": held,
            "heldout_mean": {k: _finite_mean(held, k) for k in ("quality", "prep_time_h", "cnr", "frc_resolution_nm")},
            "expert_protocol": [p["params"] == expert_params(loop) for p in protocols]}


def expert_params(loop: Any) -> dict:
    """The expert protocol as a point of ``loop``'s search space (how the start block's trial holds it)."""
    from cryoopt.agents import EXPERT_PROTOCOL

    names = loop.optimizer.space.names
    return {k: v for k, v in EXPERT_PROTOCOL.items() if k in names}


def _finite_mean(blocks: list[dict], key: str) -> float:
    v = np.array([b[key] for b in blocks if b.get(key) is not None and math.isfinite(b[key])], float)
    return float(v.mean()) if v.size else math.nan


def run_campaign(tasks: list[tuple[str, int]], a: dict, index: int, memo: str | None = None) -> dict:
    """One (strategy, seed) campaign and the held-out reruns of its recommendations (:data:`RECOMMENDATIONS`,
    all from this one campaign: only the reruns differ).

    A contextual strategy's held-out specimens are screened first and each gets the recommendation
    for its own context (``recommendations[kind]``); with ``--average-specimen``,
    ``best_average_specimen`` is its belief averaged over the specimens it saw, one protocol for
    all (what a lab that does not screen would adopt).
    """
    strategy, seed = tasks[index]
    t0, c0 = time.perf_counter(), time.process_time()
    loop = make_loop(strategy, seed, a)
    loop.run(a["blocks"])
    contextual = loop.context is not None
    kinds = [k for k in RECOMMENDATIONS if not (k == "target" and strategy in NO_TARGET)]
    recs = {kind: judge_recommendation(loop, strategy, kind, a, memo, per_specimen=contextual) for kind in kinds}
    if contextual and a.get("average_specimen"):
        recs["best_average_specimen"] = judge_recommendation(loop, strategy, "best", a, memo, per_specimen=False)
    hist = [{k: r[k] for k in ("block", "source", "quality", "prep_time_h", "context", "replicate_reason") if k in r}
            for r in loop.history]
    best = recs["best"]
    out = {"strategy": strategy, "seed": seed, "history": hist, "contextual": contextual,
           "recommended": best["protocols"][0] if len(best["protocols"]) == 1 else best["protocols"],
           "heldout": best["heldout"], "heldout_mean": best["heldout_mean"], "recommendations": recs,
           "seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    loop.runner.close()
    if contextual:
        loop.context.close()
    return out


def settings_key(a: dict) -> str:
    """A short hash of settings: cached campaigns (and held-out blocks) are reused only under the same ones."""
    import hashlib

    return hashlib.sha256(json.dumps(a, sort_keys=True, default=str).encode()).hexdigest()[:10]


#: the settings a campaign and its held-out reruns depend on (not how many seeds a run has)
CAMPAIGN_SETTINGS = ("blocks", "sections", "min_sections", "image_size", "n_initial", "pretrain", "instrument_pretrain",
                     "mpc_pretrain", "replicate_every", "noise_floor", "heldout", "agents", "target")


def campaign_key(a: dict, strategy: str) -> str:
    """:func:`settings_key` of what ``strategy``'s campaigns depend on (the context's settings for a contextual one)."""
    s = {k: a[k] for k in CAMPAIGN_SETTINGS if k != "agents"}
    s["agent"] = a["agents"].get(LEARNERS.get(strategy, ""))  # its own agent only: runs of other strategies do not matter
    s["recommendations"] = RECOMMENDATIONS
    if strategy in CONTEXTUAL:
        s["context"] = a["context"]
        s["average_specimen"] = bool(a.get("average_specimen"))
    return settings_key(s)


def cache_path(cache: str, strategy: str, seed: int, a: dict) -> Path:
    return Path(cache) / f"{strategy}_{seed}_{campaign_key(a, strategy)}.json"


def cached_campaign(tasks: list[tuple[str, int]], a: dict, cache: str | None, index: int) -> dict:
    """:func:`run_campaign`, its result kept in ``cache`` (one JSON per campaign) as soon as it ends,
    so an interrupted run resumes where it stopped and ``--available`` can report the seeds done;
    held-out blocks are kept in ``cache/heldout`` (see :func:`heldout_block`)."""
    if not cache:
        return run_campaign(tasks, a, index)
    strategy, seed = tasks[index]
    path = cache_path(cache, strategy, seed, a)
    if path.exists():
        return json.loads(path.read_text())
    out = run_campaign(tasks, a, index, memo=str(Path(cache) / "heldout"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, default=float))
    tmp.replace(path)
    return out


def available_runs(tasks: list[tuple[str, int]], a: dict, cache: str) -> list[dict]:
    """The cached campaigns of the seeds every strategy has finished (a seed is paired or left out)."""
    done = {}
    for strategy, seed in tasks:
        path = cache_path(cache, strategy, seed, a)
        if path.exists():
            done[(strategy, seed)] = json.loads(path.read_text())
    strategies = sorted({s for s, _ in tasks})
    seeds = sorted({seed for _, seed in tasks if all((s, seed) in done for s in strategies)})
    return [done[(s, seed)] for seed in seeds for s in strategies]


def expert_reference(a: dict) -> dict[str, float]:
    """The documented expert protocol on the held-out specimens (``--recommend target``'s target)."""
    from cryoopt.agents import EXPERT_PROTOCOL
    from cryoopt.loop import BlockRunner

    runner = BlockRunner("fixed", env_kwargs=env_kwargs(a), max_sections=a["sections"], min_sections=a["min_sections"])
    try:
        held = evaluate_protocol(runner, dict(EXPERT_PROTOCOL), a["heldout"])
    finally:
        runner.close()
    return {k: _finite_mean(held, k) for k in ("quality", "prep_time_h", "cnr", "frc_resolution_nm")}


def _corr_ci(x: np.ndarray, y: np.ndarray, seed: int = 0, n: int = 4000) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of Pearson's r over the (x, y) pairs."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n, len(x)))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.array([np.corrcoef(x[i], y[i])[0, 1] for i in idx])
    r = r[np.isfinite(r)]
    return (float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))) if r.size else (math.nan, math.nan)


#: the context check's outcomes: block quality of the expert protocol held, of a colder start held
#: (-125 C: which of the two is better depends on the block's drift), and with the HRL agent
CHECK_RUNS = {"held_expert": ("fixed", {}), "held_cold": ("fixed", {"specimen_temperature_c": -125.0}),
              "hrl_expert": ("hrl", {})}


def context_check(a: dict, n: int) -> dict[str, Any]:
    """Does the screened trim ribbon predict the block? ``n`` fresh specimens: every screening
    feature against each :data:`CHECK_RUNS` block quality and against ``held_cold - held_expert``
    (which protocol is better for that specimen): Pearson r with a 95 % bootstrap interval."""
    from cryoopt.agents import EXPERT_PROTOCOL
    from cryoopt.loop import BlockRunner
    from cryoopt.loop.screening import ScreeningContext
    from cryoopt.pipeline.screening import CONTEXT_FEATURES

    t0 = time.perf_counter()
    seeds = [CONTEXT_CHECK_SEED + i for i in range(n)]
    screen = ScreeningContext(env_kwargs(a), features=CONTEXT_FEATURES, trim_sections=int(a["context"]["trim_sections"]))
    ctx = [screen.screen(b) for b in seeds]
    screen.close()
    quality: dict[str, np.ndarray] = {}
    rk = {"env_kwargs": env_kwargs(a), "max_sections": a["sections"], "min_sections": a["min_sections"]}
    for agent in dict.fromkeys(ag for ag, _ in CHECK_RUNS.values()):
        runner = BlockRunner(agent, agent_path=a["agents"].get(agent), **rk)
        for name, (ag, change) in CHECK_RUNS.items():
            if ag == agent:
                quality[name] = np.array([runner.measure({**EXPERT_PROTOCOL, **change}, b)["quality"] for b in seeds])
        runner.close()
    quality["cold_minus_expert"] = quality["held_cold"] - quality["held_expert"]
    feats = {f: np.array([c[f] for c in ctx]) for f in CONTEXT_FEATURES}
    outcomes = {}
    for name, y in quality.items():
        rs = {}
        for f, x in feats.items():
            if x.std() > 0:
                rs[f] = {"r": float(np.corrcoef(x, y)[0, 1]), "ci95": list(_corr_ci(x, y))}
        outcomes[name] = {"mean": float(y.mean()), "sd": float(y.std(ddof=1)), "r": rs}
    print(f"context check: {n} specimens in {time.perf_counter() - t0:.0f} s (load {load_average()})", flush=True)
    return {"n_blocks": n, "specimen_seeds": [seeds[0], seeds[-1]], "used": list(a["context"]["features"]),
            "features": {f: {"mean": float(x.mean()), "sd": float(x.std(ddof=1))} for f, x in feats.items()},
            "outcomes": outcomes}


def context_table(cc: dict) -> str:
    """The context check as a table: r [95 % CI] of each screening feature with each outcome."""
    names = list(cc["outcomes"])
    lines = [f"Does the screened trim ribbon predict the block? {cc['n_blocks']} fresh specimens (seeds "
             f"{cc['specimen_seeds'][0]}..{cc['specimen_seeds'][1]}); Pearson r [95 % bootstrap CI] of each screening "
             f"feature with block quality (the contextual strategies use {', '.join(cc['used'])}):", "",
             "| feature | " + " | ".join(f"{n} (mean {cc['outcomes'][n]['mean']:+.3f})" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for f in cc["features"]:
        cells = []
        for n in names:
            r = cc["outcomes"][n]["r"].get(f)
            cells.append("" if r is None else f"{r['r']:+.2f} [{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}]")
        if any(cells):
            lines.append(f"| {f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed(runs: list[dict], strategy: str, key: str, kind: str = "best") -> np.ndarray:
    """Held-out mean of ``key`` per seed (sorted) of ``strategy``'s ``kind`` recommendation."""
    rows = sorted((r for r in runs if r["strategy"] == strategy), key=lambda r: r["seed"])
    return np.array([r["recommendations"][kind]["heldout_mean"][key] for r in rows], float)


def _paired(d: np.ndarray, seed: int) -> dict:
    lo, hi = bootstrap_ci(d, seed=seed)
    return {"mean": float(d.mean()), "ci95": [lo, hi], "seeds_better": int((d > 0).sum()), "seeds_worse": int((d < 0).sum())}


def _incubation(run: dict, kind: str) -> float:
    """The primary-antibody incubation (min) of a campaign's ``kind`` recommendation (mean over its protocols)."""
    return float(np.mean([p["params"].get("time_min", math.nan) for p in run["recommendations"][kind]["protocols"]]))


def _param_set(run: dict, kind: str) -> set[str]:
    return {json.dumps(p["params"], sort_keys=True) for p in run["recommendations"][kind]["protocols"]}


def distinct_protocols(run: dict, kind: str = "best") -> int:
    """How many different protocols a campaign's ``kind`` recommendation gave its held-out specimens."""
    return len(_param_set(run, kind))


def prep_tradeoff(runs: list[dict], strategies: list[str], seed: int = 0) -> dict[str, Any]:
    """What prep time costs in quality: each strategy's ``target`` recommendation (the fastest protocol
    expected to reach the expert protocol's quality) against its own ``best`` one and against ``manual``'s
    protocol, paired by seed on the same held-out specimens."""
    out: dict[str, Any] = {}
    has_manual = any(r["strategy"] == "manual" for r in runs)
    for s in strategies:
        if s in NO_TARGET or not any(r["strategy"] == s for r in runs):
            continue
        qt, qb = per_seed(runs, s, "quality", "target"), per_seed(runs, s, "quality", "best")
        pt, pb = per_seed(runs, s, "prep_time_h", "target"), per_seed(runs, s, "prep_time_h", "best")
        rows = sorted((r for r in runs if r["strategy"] == s), key=lambda r: r["seed"])
        inc = np.array([_incubation(r, "target") for r in rows], float)
        v: dict[str, Any] = {"heldout_quality_mean": float(qt.mean()), "heldout_quality_ci95": list(bootstrap_ci(qt, seed=seed)),
                             "prep_h_mean": float(np.nanmean(pt)), "best_prep_h_mean": float(np.nanmean(pb)),
                             "target_minus_best": _paired(qt - qb, seed),
                             "seeds_target_is_best": int(sum(_param_set(r, "target") == _param_set(r, "best") for r in rows)),
                             "incubation_min_median": float(np.median(inc)),
                             "seeds_below_published_incubation": int((inc < PUBLISHED_INCUBATION_MIN[0]).sum()),
                             "best_incubation_min_median": float(np.median([_incubation(r, "best") for r in rows]))}
        both = np.column_stack([pb, pt])
        lo, hi = bootstrap_ci(both, seed=seed, stat=lambda x: np.nanmean(x[:, 0]) / np.nanmean(x[:, 1]), n=4000)
        v["speedup_vs_best"] = {"value": float(np.nanmean(pb) / np.nanmean(pt)), "ci95": [lo, hi]}
        if has_manual and s != "manual":
            qm, pm = per_seed(runs, "manual", "quality"), per_seed(runs, "manual", "prep_time_h")
            v["target_minus_manual"] = _paired(qt - qm, seed)
            both = np.column_stack([pm, pt])
            est = float(np.nanmean(pm) / np.nanmean(pt))
            lo, hi = bootstrap_ci(both, seed=seed, stat=lambda x: np.nanmean(x[:, 0]) / np.nanmean(x[:, 1]), n=4000)
            v["prep_speedup_vs_manual"] = {"value": est, "ci95": [lo, hi], "target": TARGETS["prep_speedup"],
                                           "met": bool(est >= TARGETS["prep_speedup"])}
        out[s] = v
    return out


def summarize(runs: list[dict], strategies: list[str], seed: int = 0) -> dict[str, Any]:
    """Per strategy (over seeds), paired differences, and each strategy relative to ``manual``."""
    out: dict[str, Any] = {}
    for s in strategies:
        q = per_seed(runs, s, "quality")
        if not q.size:
            continue
        lo, hi = bootstrap_ci(q, seed=seed)
        out[s] = {"n_seeds": int(q.size), "heldout_quality_mean": float(q.mean()), "heldout_quality_ci95": [lo, hi],
                  "em_cnr_mean": float(np.nanmean(per_seed(runs, s, "cnr"))),
                  "frc_nm_mean": float(np.nanmean(per_seed(runs, s, "frc_resolution_nm"))),
                  "spread_sd": float(q.std(ddof=1)) if q.size > 1 else math.nan,
                  "prep_h_mean": float(np.nanmean(per_seed(runs, s, "prep_time_h"))),
                  "seconds_per_seed": float(np.mean([r["seconds"] for r in runs if r["strategy"] == s])),
                  "seeds_recommending_expert": int(sum(all(r["recommendations"]["best"]["expert_protocol"])
                                                       for r in runs if r["strategy"] == s)),
                  "distinct_protocols_per_seed": float(np.mean([distinct_protocols(r) for r in runs if r["strategy"] == s]))}
    paired = {}
    for pair in PAIRS:
        a_, b_ = pair.split("-")
        if a_ in out and b_ in out:
            paired[pair] = _paired(per_seed(runs, a_, "quality") - per_seed(runs, b_, "quality"), seed)
    for s in CONTEXTUAL:  # the contextual strategies' per-specimen picks against their average-specimen belief
        if s in out and all("best_average_specimen" in r["recommendations"] for r in runs if r["strategy"] == s):
            d = per_seed(runs, s, "quality") - per_seed(runs, s, "quality", "best_average_specimen")
            paired[f"{s}-{s}(average specimen)"] = _paired(d, seed)
    vs_manual = {}
    if "manual" in out:
        m = {k: per_seed(runs, "manual", k) for k in ("quality", "cnr", "frc_resolution_nm", "prep_time_h")}
        for s in out:
            if s == "manual":
                continue
            v = {k: per_seed(runs, s, k) for k in m}
            both = np.column_stack([v["cnr"], m["cnr"], v["frc_resolution_nm"], m["frc_resolution_nm"],
                                    v["prep_time_h"], m["prep_time_h"], v["quality"], m["quality"]])
            stats = {
                "em_cnr_change": lambda x: np.nanmean(x[:, 0]) / np.nanmean(x[:, 1]) - 1.0,
                "frc_change": lambda x: np.nanmean(x[:, 2]) / np.nanmean(x[:, 3]) - 1.0,
                "prep_speedup": lambda x: np.nanmean(x[:, 5]) / np.nanmean(x[:, 4]),
                "spread_change": lambda x: np.std(x[:, 6], ddof=1) / np.std(x[:, 7], ddof=1) - 1.0,
            }
            vs_manual[s] = {}
            for k, f in stats.items():
                lo, hi = bootstrap_ci(both, seed=seed, stat=f, n=4000)
                est = float(f(both))
                met = est >= TARGETS[k] if k in ("em_cnr_change", "prep_speedup") else est <= TARGETS[k]
                vs_manual[s][k] = {"value": est, "ci95": [lo, hi], "target": TARGETS[k], "met": bool(met)}
    return {"strategies": out, "paired": paired, "vs_manual": vs_manual, "prep_tradeoff": prep_tradeoff(runs, list(out), seed)}


def seeds_text(a: dict) -> str:
    """'20 (100..119)', or the seeds reported from an interrupted run."""
    done = a.get("seeds_reported")
    if done is not None:
        return f"{len(done)} of the {a['seeds']} planned ({', '.join(map(str, done))})"
    return f"{a['seeds']} ({a['first_seed']}..{a['first_seed'] + a['seeds'] - 1})"


def table(summary: dict, a: dict, expert: dict) -> str:
    st, paired, vm = summary["strategies"], summary["paired"], summary["vs_manual"]
    lines = [
        f"Simulated CLEM bench (neurons, direct backend, {a['image_size']} px), {seeds_text(a)} seeds "
        f"(= simulated operators for `manual`), {a['blocks']} blocks "
        f"of <= {a['sections']} sections per campaign; each campaign's recommended protocol (best expected quality) "
        f"rerun on the same {a['heldout']} held-out specimens (contextual strategies: each held-out specimen screened first "
        f"and given the recommendation for its own context). Expert protocol there: quality {expert['quality']:.3f}, "
        f"prep {expert['prep_time_h']:.2f} h, EM CNR {expert['cnr']:.2f}, FRC {expert['frc_resolution_nm']:.0f} nm.", "",
        "| strategy | held-out quality [95 % CI] | EM CNR | EM FRC (nm) | prep h / sample | spread (sd over seeds) "
        "| seeds recommending the expert protocol | protocols per seed |",
        "|---|---|---|---|---|---|---|---|"]
    for s, v in st.items():
        lo, hi = v["heldout_quality_ci95"]
        lines.append(f"| {s} | {v['heldout_quality_mean']:.3f} [{lo:.3f}, {hi:.3f}] | {v['em_cnr_mean']:.2f} | "
                     f"{v['frc_nm_mean']:.0f} | {v['prep_h_mean']:.2f} | {v['spread_sd']:.3f} | "
                     f"{v['seeds_recommending_expert']} | {v['distinct_protocols_per_seed']:.1f} |")
    lines += ["", "Paired differences of held-out quality (same specimens, per seed; mean [95 % bootstrap CI], seeds better/worse):",
              "", "| pair | difference | better / worse |", "|---|---|---|"]
    for p, v in paired.items():
        lines.append(f"| {p} | {v['mean']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}] | {v['seeds_better']} / {v['seeds_worse']} |")
    if vm:
        lines += ["", "Relative to `manual` (targets: EM CNR >= +25 %, FRC >= 15 % finer, spread <= -60 %, prep >= 3x shorter):",
                  "", "| strategy | EM CNR | FRC resolution | spread | prep time speed-up |", "|---|---|---|---|---|"]

        def pct(d: dict) -> str:
            return f"{100 * d['value']:+.0f} % [{100 * d['ci95'][0]:+.0f}, {100 * d['ci95'][1]:+.0f}]{'' if d['met'] else ' (missed)'}"

        for s, v in vm.items():
            sp = v["prep_speedup"]
            lines.append(f"| {s} | {pct(v['em_cnr_change'])} | {pct(v['frc_change'])} | {pct(v['spread_change'])} | "
                         f"{sp['value']:.2f}x [{sp['ci95'][0]:.2f}, {sp['ci95'][1]:.2f}]{'' if sp['met'] else ' (missed)'} |")
    tr = summary.get("prep_tradeoff") or {}
    if tr:
        lines += ["", f"Prep time against quality: each campaign's `target` recommendation (the fastest protocol expected to reach "
                  f"the expert protocol's held-out quality, {a['target']:.3f}), from the same campaigns, rerun on the same held-out "
                  "specimens; paired by seed with the strategy's own `best` recommendation and with `manual`'s protocol "
                  "(target: prep >= 3x shorter than manual); incubation: median primary-antibody time of the target "
                  f"protocols (seeds below the published {PUBLISHED_INCUBATION_MIN[0]:.0f}-{PUBLISHED_INCUBATION_MIN[1]:.0f} min):", "",
                  "| strategy | held-out quality [95 % CI] | prep h / sample | incubation min (seeds < 20) | seeds target = best | "
                  "target - best | target - manual | speed-up vs own best | speed-up vs manual |", "|---|---|---|---|---|---|---|---|---|"]

        def diff(d: dict | None) -> str:
            return "" if d is None else f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"

        def ratio(d: dict | None) -> str:
            if d is None:
                return ""
            miss = "" if d.get("met", True) else " (missed)"
            return f"{d['value']:.2f}x [{d['ci95'][0]:.2f}, {d['ci95'][1]:.2f}]{miss}"

        for s, v in tr.items():
            lo, hi = v["heldout_quality_ci95"]
            lines.append(f"| {s} | {v['heldout_quality_mean']:.3f} [{lo:.3f}, {hi:.3f}] | {v['prep_h_mean']:.2f} | "
                         f"{v['incubation_min_median']:.0f} ({v['seeds_below_published_incubation']}) | {v['seeds_target_is_best']} | {diff(v['target_minus_best'])} | {diff(v.get('target_minus_manual'))} | "
                         f"{ratio(v['speedup_vs_best'])} | {ratio(v.get('prep_speedup_vs_manual'))} |")
    cc = summary.get("context_check")
    if cc:
        lines += ["", context_table(cc)]
    return "\n".join(lines)


def plot(runs: list[dict], summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st, paired = summary["strategies"], summary["paired"]
    names = list(st)
    fig, ax = plt.subplots(1, 3, figsize=(18, 4.5))
    for s in names:
        rows = [r for r in runs if r["strategy"] == s]
        q = np.array([np.maximum.accumulate([b["quality"] for b in r["history"]]) for r in rows])
        ax[0].plot(np.arange(1, q.shape[1] + 1), q.mean(0), label=s)
    ax[0].set(xlabel="sample block", ylabel="best observed block quality so far (mean over seeds)",
              title="campaigns (lucky specimens included)")
    ax[0].legend(fontsize=8)
    means = [st[s]["heldout_quality_mean"] for s in names]
    err = np.array([[m - st[s]["heldout_quality_ci95"][0], st[s]["heldout_quality_ci95"][1] - m] for s, m in zip(names, means)]).T
    ax[1].bar(names, means, yerr=err, capsize=4, color="tab:blue")
    for i, s in enumerate(names):
        ax[1].scatter(np.full(st[s]["n_seeds"], i) + np.linspace(-0.2, 0.2, st[s]["n_seeds"]), per_seed(runs, s, "quality"),
                      s=6, color="k", zorder=3)
    tr = summary.get("prep_tradeoff") or {}
    xt = [i for i, s in enumerate(names) if s in tr]
    if xt:
        mt = np.array([tr[names[i]]["heldout_quality_mean"] for i in xt])
        et = np.array([[m - tr[names[i]]["heldout_quality_ci95"][0], tr[names[i]]["heldout_quality_ci95"][1] - m]
                       for i, m in zip(xt, mt)]).T
        ax[1].errorbar(np.array(xt) + 0.3, mt, yerr=et, fmt="D", color="tab:red", capsize=3,
                       label="target: fastest protocol expected to reach the expert's quality")
        ax[1].legend(fontsize=8, loc="lower left")
    ax[1].set(ylabel="held-out block quality", title="recommended protocol on held-out specimens (95 % CI, seeds as dots)")
    ax[1].tick_params(axis="x", rotation=30)
    pairs = list(paired)
    y = np.arange(len(pairs))
    ax[2].errorbar([paired[p]["mean"] for p in pairs], y,
                   xerr=np.array([[paired[p]["mean"] - paired[p]["ci95"][0], paired[p]["ci95"][1] - paired[p]["mean"]]
                                  for p in pairs]).T, fmt="o", capsize=4)
    ax[2].axvline(0, color="k", lw=1)
    ax[2].set_yticks(y, pairs)
    ax[2].set(xlabel="difference of held-out quality (paired by seed)", title="paired differences, 95 % bootstrap CI")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def compact_run(run: dict) -> dict:
    """A campaign for headline.json: its held-out means, not every held-out block (those stay in the cache)."""
    out = {k: v for k, v in run.items() if k != "heldout"}
    out["recommendations"] = {kind: {k: v for k, v in rec.items() if k != "heldout"} for kind, rec in run["recommendations"].items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=100, help="seeds are first-seed .. first-seed + seeds - 1 (tuning used 0..)")
    ap.add_argument("--blocks", type=int, default=10, help="sample blocks per campaign (the expert block included)")
    ap.add_argument("--sections", type=int, default=8)
    ap.add_argument("--min-sections", type=int, default=4, help="sections every block yields before an agent may stop it")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--n-initial", type=int, default=4, help="BO initial design, the expert block included")
    ap.add_argument("--pretrain", type=int, default=2048, help="HRL/PPO pre-training sections in the composite env")
    ap.add_argument("--instrument-pretrain", type=int, default=4096, help="HRL controller steps on each per-instrument env")
    ap.add_argument("--mpc-pretrain", type=int, default=768, help="MPC exploration sections before its GP is fitted")
    ap.add_argument("--replicate-every", default="4", help="BO replicates: every N blocks, 0 (never) or 'auto' (the optimizer's rule)")
    ap.add_argument("--noise-floor", type=float, default=0.3, help="BayesianOptimizer noise_floor for the BO strategies")
    ap.add_argument("--context-check", type=int, default=40,
                    help="fresh specimens on which to check whether the screening context predicts block quality (0: skip)")
    ap.add_argument("--check-only", action="store_true", help="run only the context check (kept in --cache) and stop")
    ap.add_argument("--average-specimen", action="store_true",
                    help="also rerun each contextual campaign's belief for the average specimen on every held-out specimen")
    ap.add_argument("--heldout", type=int, default=16, help="held-out specimens each recommended protocol is rerun on")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backend", default="processes", choices=("local", "processes", "ray"))
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--agents", default=None, help="pre-trained agents (default <out>/agents); missing ones are trained")
    ap.add_argument("--out", default=str(results_dir()))
    ap.add_argument("--cache", default=str(Path(__file__).resolve().parent / "results" / "local" / "headline_runs"),
                    help="keep each finished campaign here and reuse it on a rerun with the same settings ('' : off)")
    ap.add_argument("--available", action="store_true",
                    help="run nothing: report the seeds whose campaigns are all in --cache (an interrupted run)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from cryoopt.progress import report_to
    from cryoopt.scale import map_seeds

    strategies = [s for s in args.strategies.split(",") if s]
    rep = args.replicate_every if args.replicate_every == "auto" else int(args.replicate_every)
    a = {"seeds": args.seeds, "first_seed": args.first_seed, "blocks": args.blocks, "sections": args.sections,
         "min_sections": args.min_sections, "image_size": args.image_size, "n_initial": args.n_initial,
         "pretrain": args.pretrain, "instrument_pretrain": args.instrument_pretrain, "mpc_pretrain": args.mpc_pretrain,
         "replicate_every": rep, "noise_floor": args.noise_floor, "heldout": args.heldout,
         "context": {"features": list(CONTEXT["features"]), "ranges": {k: list(v) for k, v in CONTEXT["ranges"].items()},
                     "trim_sections": CONTEXT["trim_sections"]}, "average_specimen": args.average_specimen}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    agents_dir = Path(args.agents) if args.agents else out / "agents"
    load0, t0, c0 = load_average(), time.perf_counter(), time.process_time()
    names = list(dict.fromkeys(LEARNERS[s] for s in strategies if s in LEARNERS))
    if args.context_check and "hrl" not in names:
        names.append("hrl")
    missing = [n for n in names if not (agents_dir / n / "agent.json").exists()]
    with report_to(print):
        pretrain_agents(a, missing, agents_dir)
    a["agents"] = {n: str(agents_dir / n) for n in names}
    t_pre = time.perf_counter() - t0
    expert_path = Path(args.cache or out) / f"expert_{settings_key({k: a[k] for k in ('sections', 'min_sections', 'image_size', 'heldout')})}.json"
    if args.cache and expert_path.exists():
        expert = json.loads(expert_path.read_text())
    else:
        expert = expert_reference(a)
        if args.cache:
            expert_path.parent.mkdir(parents=True, exist_ok=True)
            expert_path.write_text(json.dumps(expert))
    a["target"] = expert["quality"]
    print(f"expert protocol on {a['heldout']} held-out specimens: quality {expert['quality']:.3f}", flush=True)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    tasks = [(s, seed) for seed in seeds for s in strategies]
    if args.context_check:  # before the campaigns: seconds, and its answer is wanted first
        key = settings_key({"n": args.context_check, "env": env_kwargs(a), "sections": a["sections"], "min_sections": a["min_sections"],
                            "context": a["context"], "hrl": a["agents"]["hrl"]})
        path = Path(args.cache or out) / f"context_check_{args.context_check}_{key}.json"
        if args.cache and path.exists():
            check = json.loads(path.read_text())
        else:
            check = context_check(a, args.context_check)
            if args.cache:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(check))
        print(context_table(check), flush=True)
        if args.check_only:
            return
    t1 = time.perf_counter()
    if args.available:
        runs = available_runs(tasks, a, args.cache)
        if not runs:
            raise SystemExit(f"no seed has all its campaigns in {args.cache} under these settings; run without --available")
        a["seeds_reported"] = sorted({r["seed"] for r in runs})
        print(f"reporting the {len(a['seeds_reported'])} seeds finished: {a['seeds_reported']}", flush=True)
    else:
        runs = map_seeds(functools.partial(cached_campaign, tasks, a, args.cache or None), range(len(tasks)),
                         backend=args.backend, workers=args.workers, progress=True, label="campaigns")
    t_runs = time.perf_counter() - t1
    summary = summarize(runs, strategies)
    if args.context_check:
        summary["context_check"] = check
    text = table(summary, a, expert)
    cpu = time.process_time() - c0 + sum(r["cpu_s"] for r in runs)
    meta = {"wall_s_total": time.perf_counter() - t0, "wall_s_pretrain": t_pre, "wall_s_campaigns": t_runs,
            "cpu_s_total": cpu, "cpu_s_campaigns": sum(r["cpu_s"] for r in runs),
            "load_average_start": load0, "load_average_end": load_average(), "workers": args.workers,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpus": os.cpu_count()}
    settings = {**a, "agents": {k: repo_relative(v) for k, v in a["agents"].items()}, "agent_kwargs": AGENT_KWARGS}
    result = {**summary["strategies"], "paired": summary["paired"], "vs_manual": summary["vs_manual"],
              "prep_tradeoff": summary["prep_tradeoff"], "context_check": summary.get("context_check"),
              "expert_heldout": expert, "settings": settings, "meta": meta, "runs": [compact_run(r) for r in runs]}
    (out / "headline.json").write_text(json.dumps(result, indent=1, default=float))
    (out / "headline.md").write_text("# Headline benchmark (simulation)\n\n" + text + "\n")
    plot(runs, summary, out / "headline.png")
    print(text)
    print(f"wall {meta['wall_s_total']:.0f} s (pre-training {t_pre:.0f} s, campaigns {t_runs:.0f} s on {args.workers} workers); "
          f"CPU {cpu:.0f} s (= {cpu / 2 / 60:.1f} min on 2 cores); load average {load0} -> {meta['load_average_end']}")


if __name__ == "__main__":
    main()
