"""Optimizer benchmark: cryoopt ``bo`` vs Optuna TPE vs random, and BO proposal time.

Same problems, seeds and budgets for every strategy:

* noisy Branin (2-D), Hartmann-6 (6-D) and the mixed 5-D ``StainingLandscape``
  (float, log-float, int and a categorical), noise sigma = 5% of each range;
* the reported number is the **normalized simple regret of the recommendation**
  ``(f* - f(x_rec)) / range`` on the noise-free function, where ``x_rec`` is what
  each method would hand a user: cryoopt ``bo`` its noise-aware incumbent (GP
  mean), TPE and random the trial with the best noisy observation;
* median over seeds after 20 and 40 evaluations, with a 90% percentile-bootstrap
  interval of the median; >= 10 seeds, 30 for Branin (its 10-seed medians were
  within seed noise: random's moved from 0.0072 to 0.0098 between 10 and 30 seeds).

Then the median wall time of one ``ask()`` (GP fit + acquisition optimization) at
10, 50 and 100 observations in 6 and 12 dimensions, and of ``ask(1)`` / ``ask(4)`` on
the README's 5-parameter space (a categorical, an integer, two log scales) at 25
observations in a running loop (the optimizer restored from its state after the 25th
result, so the GP fit is timed too), wall and CPU seconds (``--baseline-src DIR`` times
another checkout's ``src`` the same way, in a subprocess, for a before/after comparison),
and ``optimize()`` end to end on that space (40 evaluations, a progress line each). One
torch thread throughout; the load average is recorded with every timing (a shared
machine: CPU seconds are the comparable figure, wall seconds are not).

Optimum at a failing region's edge (quality rises up to x = 0.7, runs past it fail; random
search fails 30 % of its runs): the fraction of proposals after the initial design that
failed, and that landed deep (> 5 % of the range) past the edge, this checkout's BO
against ``--baseline-src``'s and random search, on the same seeds.

Specimen variation (``SpecimenStaining``: the best incubation depends on a screened
permeability, plus an unmeasured specimen effect): on the same specimens per seed,
contextual BO (the GP sees the permeability; recommends per specimen), context-blind
BO (the outer loop's settings) and random search, each judged by the noise-free
quality of its recommendation on 16 held-out specimens; also the blind run's
``recommend()`` against its luckiest observed run. Paired differences with 95 %
percentile-bootstrap intervals over seeds.

Usage: ``python benchmarks/optimizer.py [--seeds 10] [--problems branin ...] [--quick]
[--timing-only] [--specimen-only --specimen-seeds 100:120] [--edge-only --edge-seeds 200:206]
[--baseline-src DIR]
[--backend local|processes|ray [--address ADDR] [--workers N]]``; prints tables and writes
``benchmarks/results/optimizer.json`` (sections not rerun keep their last values).
``--backend`` spreads the regret seeds (:func:`cryoopt.scale.map_seeds`): the same
seeds give the same regrets on every backend.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import torch

from cryoopt.optim import BayesianOptimizer, Optimizer, RandomSearch, make_optimizer, optimize
from cryoopt.optim.problems import Branin, Hartmann6, Problem, SpecimenStaining, StainingLandscape
from cryoopt.scale import BACKENDS, map_seeds
from cryoopt.space import CategoricalParameter, IntParameter, SearchSpace

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _results import results_dir  # noqa: E402  (benchmarks/results/local unless told otherwise)

CHECKPOINTS = (20, 40)
RESULTS = results_dir() / "optimizer.json"


def recommend_observed(trials: list) -> dict:
    done = [t for t in trials if t.values]
    return max(done, key=lambda t: t.values["objective"]).params


def run_cryoopt(strategy: str, problem: Problem, seed: int) -> dict[int, float]:
    opt: Optimizer = make_optimizer(strategy, problem.space, seed=seed)
    out = {}
    for n in range(1, max(CHECKPOINTS) + 1):
        (t,) = opt.ask()
        opt.tell(t, problem(t.params))
        if n in CHECKPOINTS:
            rec = opt.best().params if strategy == "bo" else recommend_observed(opt.trials)
            out[n] = problem.normalized_regret(rec)
    return out


def run_tpe(problem: Problem, seed: int) -> dict[int, float]:
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def suggest(trial: optuna.Trial) -> dict:
        params = {}
        for p in problem.space:
            if isinstance(p, CategoricalParameter):
                params[p.name] = trial.suggest_categorical(p.name, list(p.choices))
            elif isinstance(p, IntParameter):
                params[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
            else:
                params[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
        return params

    out = {}
    for n in range(1, max(CHECKPOINTS) + 1):
        trial = study.ask()
        params = suggest(trial)
        study.tell(trial, problem(params))
        if n in CHECKPOINTS:
            out[n] = problem.normalized_regret(study.best_trial.params)
    return out


PROBLEMS = {cls.name: cls for cls in (Branin, Hartmann6, StainingLandscape)}


def median_ci(values: list[float], *, level: float = 0.9, n_boot: int = 2000) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median (seeded, reproducible)."""
    rng = np.random.default_rng(0)
    x = np.asarray(values, float)
    meds = np.median(rng.choice(x, (n_boot, x.size)), axis=1)
    return float(np.quantile(meds, (1 - level) / 2)), float(np.quantile(meds, (1 + level) / 2))


def quiet() -> None:
    """No per-trial chatter (also in worker processes, which do not run main())."""
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("cryoopt").setLevel(logging.ERROR)


def one_seed(method: str, problem_cls: type[Problem], seed: int) -> dict[int, float]:
    """One method on one seed of a problem: regret at each checkpoint."""
    quiet()
    problem = problem_cls(noise_frac=0.05, seed=1000 + seed)  # same noise stream for every method
    return run_tpe(problem, seed) if method == "tpe" else run_cryoopt(method, problem, seed)


def regret_rows(problem_cls: type[Problem], seeds: int, **spread: object) -> dict:
    """Every method on one problem: per-seed regrets, medians and 90% bootstrap CIs.

    ``spread``: how the seeds run (:func:`cryoopt.scale.map_seeds` keywords).
    """
    rows: dict = {"seeds": seeds}
    for method in ("bo", "tpe", "random"):
        t0 = time.perf_counter()
        per_seed = map_seeds(functools.partial(one_seed, method, problem_cls), range(seeds),
                             label=f"{problem_cls.name} {method}", **spread)  # type: ignore[arg-type]
        row: dict = {"seconds": time.perf_counter() - t0}
        for n in CHECKPOINTS:
            values = [r[n] for r in per_seed]
            row[f"median_regret_{n}"] = statistics.median(values)
            row[f"ci90_regret_{n}"] = median_ci(values)
            row[f"regret_{n}"] = values
        rows[method] = row
        print(f"  {problem_cls.name:<11} {method:<7} regret@20={row['median_regret_20']:.4f} "
              f"regret@40={row['median_regret_40']:.4f} ({row['seconds']:.0f} s)", flush=True)
    return rows


def proposal_times(reps: int = 3) -> dict:
    out: dict = {}
    for dim in (6, 12):
        space = SearchSpace.from_dict({f"x{i}": {"type": "float", "low": 0, "high": 1} for i in range(dim)})
        rng = np.random.default_rng(0)
        for n_obs in (10, 50, 100):
            base = BayesianOptimizer(space, seed=0, n_initial=2)  # time the model path, not the Sobol design
            for x in rng.random((n_obs, dim)):
                t = base.add_trial({f"x{i}": float(v) for i, v in enumerate(x)})
                base.tell(t, float(-np.sum((x - 0.3) ** 2) + 0.05 * rng.normal()))
            state = base.state_dict()
            times, cpu = [], []
            for _ in range(reps):
                opt = Optimizer.from_state_dict(state)  # fresh: the timing includes the GP fit
                t0, c0 = time.perf_counter(), time.process_time()
                opt.ask(1)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            out[f"{dim}d_{n_obs}obs"] = statistics.median(times)
            out[f"{dim}d_{n_obs}obs_cpu"] = statistics.median(cpu)
            print(f"  ask() {dim:>2}-D with {n_obs:>3} observations: {out[f'{dim}d_{n_obs}obs']:.2f} s wall, "
                  f"{statistics.median(cpu):.2f} s CPU (load {os.getloadavg()[0]:.1f})", flush=True)
    return out


#: run in a fresh interpreter (also against another checkout's src: only APIs both have)
MIXED_TIMING = """
import json, statistics, sys, time, warnings
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(1)
from cryoopt.optim import BayesianOptimizer, Optimizer
from cryoopt.optim.problems import StainingLandscape
problem = StainingLandscape(noise_frac=0.05, seed=0)
opt = BayesianOptimizer(problem.space, seed=0)
for p in problem.space.sample(24, rng=1, method="sobol"):
    opt.tell(opt.add_trial(p), problem(p))
(t,) = opt.ask()  # a running loop: the 25th result arrives, then the next ask is timed
opt.tell(t, problem(t.params))
state = opt.state_dict()
out = {}
for q in (1, 4):
    wall, cpu = [], []
    for _ in range(int(sys.argv[1])):
        fresh = Optimizer.from_state_dict(state)  # the timing includes the GP fit
        w, c = time.perf_counter(), time.process_time()
        trials = fresh.ask(q)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    out[f"ask{q}"] = {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu),
                      "sources": [t.source for t in trials]}
print(json.dumps(out))
"""


def mixed_space_times(src: Path | None = None, reps: int = 3) -> dict:
    """ask(1)/ask(4) on the README's 5-parameter space at 25 observations (this checkout, or ``src``)."""
    src = src or Path(__file__).resolve().parents[1] / "src"
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", MIXED_TIMING, str(reps)], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


#: the optimum at the edge of a failing region (run in a fresh interpreter, also against another
#: checkout's src): f = x - (y - 0.4)^2 / 2 + noise where x <= 0.7, a failed run where x > 0.7, so
#: random search fails 30 % of its runs; "deep" = x > 0.75, more than 5 % of the range past the edge
FAILURE_EDGE = """
import json, math, sys, time, warnings
warnings.simplefilter("ignore")
import numpy as np
import torch
torch.set_num_threads(1)
from cryoopt.optim import BayesianOptimizer, RandomSearch
from cryoopt.space import SearchSpace
space = SearchSpace.from_dict({"x": {"type": "float", "low": 0, "high": 1}, "y": {"type": "float", "low": 0, "high": 1}})
out = {}
for seed in json.loads(sys.argv[1]):
    rng = np.random.default_rng(seed)
    row = {}
    for arm, opt in (("bo", BayesianOptimizer(space, seed=seed, n_initial=5)), ("random", RandomSearch(space, seed=seed))):
        t0 = time.process_time()
        for _ in range(int(sys.argv[2])):
            (t,) = opt.ask()
            x, y = t.params["x"], t.params["y"]
            opt.tell(t, math.nan if x > 0.7 else x - 0.5 * (y - 0.4) ** 2 + 0.01 * rng.normal())
        later = opt.trials[5:]  # after BO's initial design
        best = opt.best()
        row[arm] = {"failed": sum(t.status.value == "failed" for t in later), "deep": sum(t.params["x"] > 0.75 for t in later),
                    "n": len(later), "regret": 0.7 - (best.params["x"] - 0.5 * (best.params["y"] - 0.4) ** 2),
                    "cpu_s": time.process_time() - t0}
    out[seed] = row
    print(json.dumps({seed: row}), file=sys.stderr, flush=True)
print(json.dumps(out))
"""
EDGE_BUDGET = 25


def failure_edge(seeds: list[int], src: Path | None = None) -> dict:
    """Failed and deep-failed proposals after the initial design, per seed (this checkout, or ``src``)."""
    src = src or Path(__file__).resolve().parents[1] / "src"
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", FAILURE_EDGE, json.dumps(seeds), str(EDGE_BUDGET)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def edge_rows(seeds: list[int], baseline: Path | None) -> dict:
    runs = {"this": failure_edge(seeds)}
    if baseline:
        runs["baseline"] = failure_edge(seeds, baseline)
    out: dict = {"seeds": seeds, "budget": EDGE_BUDGET, "load_average": os.getloadavg()}
    for label, per_seed in runs.items():
        for arm in ("bo", "random"):
            rows = [per_seed[str(s)][arm] for s in seeds]
            n = sum(r["n"] for r in rows)
            out[f"{label}_{arm}"] = {
                "failed_fraction": sum(r["failed"] for r in rows) / n, "deep_fraction": sum(r["deep"] for r in rows) / n,
                "median_regret": float(np.median([r["regret"] for r in rows])), "per_seed": rows,
            }
    if baseline:
        out["paired_deep_this-baseline"] = paired(
            [r["bo"]["deep"] / r["bo"]["n"] for r in (runs["this"][str(s)] for s in seeds)],
            [r["bo"]["deep"] / r["bo"]["n"] for r in (runs["baseline"][str(s)] for s in seeds)])
        out["paired_failed_this-baseline"] = paired(
            [r["bo"]["failed"] / r["bo"]["n"] for r in (runs["this"][str(s)] for s in seeds)],
            [r["bo"]["failed"] / r["bo"]["n"] for r in (runs["baseline"][str(s)] for s in seeds)])
    return out


def optimize_run(budget: int = 40, seed: int = 0) -> dict:
    """``optimize()`` end to end on the README's 5-parameter space (``StainingLandscape``), progress lines shown."""
    problem = StainingLandscape(noise_frac=0.05, seed=seed)
    w, c = time.perf_counter(), time.process_time()
    result = optimize(problem, problem.space, budget=budget, seed=seed, strategy="bo")  # a line per evaluation
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    return {"budget": budget, "wall_s": wall, "cpu_s": cpu, "load_average_after": os.getloadavg(),
            "normalized_regret": problem.normalized_regret(result.best.params),
            "sources": {s: sum(t.source == s for t in result.history) for s in {t.source for t in result.history}}}


def paired(a: list[float], b: list[float], *, n_boot: int = 4000) -> dict:
    """Mean of the paired differences ``a - b`` with a 95 % percentile-bootstrap interval (seeded)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(0)
    means = rng.choice(d, (n_boot, d.size)).mean(axis=1)
    return {"mean": float(d.mean()), "ci95": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))],
            "n": int(d.size)}


SPECIMEN_BUDGET = 30
SPECIMEN_HELDOUT = 16
#: the outer loop's BO settings (cryoopt.loop.FAST_BO), for both BO arms
SPECIMEN_BO = {"num_restarts": 2, "raw_samples": 64, "mc_samples": 64}


def specimen_seed(seed: int) -> dict:
    """One seed: every arm meets the same specimens (permeability and specimen effect) in the same order."""
    problem = SpecimenStaining(seed=seed)
    rng = np.random.default_rng(seed)
    specimens = problem.sample_contexts(SPECIMEN_BUDGET, rng)
    effects = rng.normal(0.0, problem.specimen_sd, SPECIMEN_BUDGET)
    heldout = problem.sample_contexts(SPECIMEN_HELDOUT, np.random.default_rng(10_000 + seed))

    def judge(pick) -> float:  # noise-free quality of what would be adopted, per held-out specimen
        return float(np.mean([problem.evaluate_true(pick(c), c) for c in heldout]))

    def run(opt: Optimizer, contextual: bool) -> Optimizer:
        for c, e in zip(specimens, effects):
            (t,) = opt.ask(context=c) if contextual else opt.ask()
            opt.tell(t, problem.evaluate_true(t.params, c) + e)
        return opt

    def luckiest(opt: Optimizer) -> dict:
        return max(opt.completed, key=lambda t: t.values["objective"]).params

    t0 = time.process_time()
    ctx = run(BayesianOptimizer(problem.space, seed=seed, contexts=problem.contexts, **SPECIMEN_BO), True)
    blind = run(BayesianOptimizer(problem.space, seed=seed, noise_floor=0.3, **SPECIMEN_BO), False)
    rand = run(RandomSearch(problem.space, seed=seed), False)
    blind_rec = blind.recommend().params
    return {
        "contextual": judge(lambda c: ctx.recommend(context=c).params),
        "blind": judge(lambda c: blind_rec),
        "blind_luckiest": judge(lambda c: luckiest(blind)),
        "random": judge(lambda c: luckiest(rand)),
        "oracle": float(np.mean([problem.optimal_value(c) for c in heldout])),
        "blind_recommend_in_ci95": _covers(blind, blind_rec, heldout, problem),
        "cpu_s": time.process_time() - t0,
    }


def _covers(opt: BayesianOptimizer, params: dict, heldout: list, problem: SpecimenStaining) -> bool:
    """Whether the recommendation's 95 % interval holds its true mean quality over the held-out specimens."""
    lo, hi = opt.recommend().ci95["objective"]
    return bool(lo <= np.mean([problem.evaluate_true(params, c) for c in heldout]) <= hi)


def specimen_rows(seeds: range) -> dict:
    per_seed = []
    for seed in seeds:
        per_seed.append(specimen_seed(seed))
        r = per_seed[-1]
        print(f"  seed {seed}: contextual {r['contextual']:.3f}  blind {r['blind']:.3f}  luckiest {r['blind_luckiest']:.3f}"
              f"  random {r['random']:.3f}  oracle {r['oracle']:.3f}  ({r['cpu_s']:.0f} cpu-s)", flush=True)
    arms = ("contextual", "blind", "blind_luckiest", "random", "oracle")
    col = {a: [r[a] for r in per_seed] for a in arms}
    return {
        "seeds": [seeds.start, seeds.stop], "budget": SPECIMEN_BUDGET, "heldout": SPECIMEN_HELDOUT, "bo": SPECIMEN_BO,
        "heldout_quality_mean": {a: float(np.mean(col[a])) for a in arms},
        "paired": {
            "contextual-blind": paired(col["contextual"], col["blind"]),
            "blind_recommend-blind_luckiest": paired(col["blind"], col["blind_luckiest"]),
            "blind-random": paired(col["blind"], col["random"]),
            "oracle-contextual": paired(col["oracle"], col["contextual"]),
        },
        "blind_ci95_coverage": float(np.mean([r["blind_recommend_in_ci95"] for r in per_seed])),
        "per_seed": per_seed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--problems", nargs="+", choices=sorted(PROBLEMS), default=sorted(PROBLEMS),
                        help="run only these (the others keep their rows from the last run)")
    parser.add_argument("--seeds-for", nargs="*", default=["branin=30"], metavar="PROBLEM=N",
                        help="more seeds for a problem whose 10-seed medians are within seed noise "
                             "(default: branin=30)")
    parser.add_argument("--quick", action="store_true", help="2 seeds, for a smoke run")
    parser.add_argument("--backend", choices=BACKENDS, default="local",
                        help="where the seeds run: here one by one, in local processes, or on Ray (same numbers)")
    parser.add_argument("--address", default=None, help="--backend ray: the cluster (default: a local one)")
    parser.add_argument("--workers", type=int, default=None, help="seeds at once (default: all the backend allows)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per seed (the regrets can depend on it)")
    parser.add_argument("--timing-only", action="store_true",
                        help="only the proposal-time tables (keeps the other sections of the last run)")
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="also time the mixed-space ask() of another checkout's src (e.g. the previous release)")
    parser.add_argument("--specimen-only", action="store_true",
                        help="only the specimen-variation comparison (keeps the other sections)")
    parser.add_argument("--specimen-seeds", default="100:120", metavar="START:STOP",
                        help="seeds of the specimen comparison (fresh ones for a final run)")
    parser.add_argument("--edge-only", action="store_true",
                        help="only the failing-edge comparison (keeps the other sections)")
    parser.add_argument("--edge-seeds", default="200:206", metavar="START:STOP",
                        help="seeds of the failing-edge comparison")
    args = parser.parse_args()
    seeds = 2 if args.quick else args.seeds
    quiet()
    # one thread by default: the machine is shared, and with two spinning OpenMP threads on a loaded
    # machine a 6-D ask() measured 9.6 CPU-s instead of ~1.5 (timings before 2026-12 used two threads)
    torch.set_num_threads(args.threads)
    spread = {"backend": args.backend, "address": args.address, "workers": args.workers, "threads": args.threads}

    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    regret = dict(previous.get("regret", {}))
    for row in regret.values():  # rows written before seeds were kept per problem
        row.setdefault("seeds", previous.get("seeds"))
    if not (args.timing_only or args.specimen_only or args.edge_only):
        extra = {k: int(v) for k, v in (item.split("=") for item in args.seeds_for)}
        print("Regret (median over seeds, noise 5% of range):", flush=True)
        for name in args.problems:
            regret[name] = regret_rows(PROBLEMS[name], 2 if args.quick else max(seeds, extra.get(name, seeds)), **spread)
    timing, mixed = previous.get("ask_seconds", {}), previous.get("mixed_space_ask", {})
    edge = previous.get("failure_edge", {})
    if args.edge_only or not (args.timing_only or args.specimen_only or args.quick):
        start, stop = (int(v) for v in args.edge_seeds.split(":"))
        print(f"Optimum at a failing region's edge (seeds {start}-{stop - 1}):", flush=True)
        edge = edge_rows(list(range(start, stop)), args.baseline_src)
    if not (args.specimen_only or args.edge_only):
        print("Proposal time (median of 3):", flush=True)
        timing = proposal_times()
        mixed = {"load_average_before": os.getloadavg(), "this": mixed_space_times()}
        if args.baseline_src:
            mixed["baseline"] = mixed_space_times(args.baseline_src)
            mixed["baseline_src"] = str(args.baseline_src)
        mixed["load_average_after"] = os.getloadavg()
        print("optimize() on the README's 5-parameter space, 40 evaluations:", flush=True)
        mixed["optimize_40"] = optimize_run()
    specimen = previous.get("specimen", {})
    if not (args.timing_only or args.edge_only) and (args.specimen_only or not args.quick):
        start, stop = (int(v) for v in args.specimen_seeds.split(":"))
        print(f"Specimen variation ({SpecimenStaining.name}, seeds {start}-{stop - 1}):", flush=True)
        specimen = specimen_rows(range(start, stop))

    print("\n| problem | seeds | cryoopt bo @20 | TPE @20 | random @20 | cryoopt bo @40 | TPE @40 | random @40 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in regret.items():
        cells = []
        for n in CHECKPOINTS:
            for m in ("bo", "tpe", "random"):
                ci = row[m].get(f"ci90_regret_{n}")
                cells.append(f"{row[m][f'median_regret_{n}']:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
        print(f"| {name} | {row.get('seeds', previous.get('seeds', '?'))} | " + " | ".join(cells) + " |")
    print("\n| observations | 6-D ask (s) | 12-D ask (s) |\n|---|---|---|")
    for n_obs in (10, 50, 100):
        print(f"| {n_obs} | {timing[f'6d_{n_obs}obs']:.2f} | {timing[f'12d_{n_obs}obs']:.2f} |")
    if mixed:
        print("\n| README 5-parameter space, 25 observations | ask(1) wall / CPU s | ask(4) wall / CPU s |\n|---|---|---|")
        for label in ("this", "baseline"):
            if label in mixed:
                r = mixed[label]
                print(f"| {label} | {r['ask1']['wall_s']:.2f} / {r['ask1']['cpu_s']:.2f} | "
                      f"{r['ask4']['wall_s']:.2f} / {r['ask4']['cpu_s']:.2f} |")
        print(f"(load average {mixed['load_average_before']} before, {mixed['load_average_after']} after)")
        if "optimize_40" in mixed:
            r = mixed["optimize_40"]
            print(f"optimize(), 40 evaluations: {r['wall_s'] / 60:.1f} min wall, {r['cpu_s'] / 60:.1f} min CPU "
                  f"(load {r['load_average_after'][0]:.1f}); normalized regret {r['normalized_regret']:.4f}; "
                  f"proposals by source {r['sources']}")
    if specimen:
        print(f"\nSpecimen variation: mean held-out quality over {specimen['seeds'][1] - specimen['seeds'][0]} seeds")
        print(" ".join(f"{k} {v:.3f}" for k, v in specimen["heldout_quality_mean"].items()))
        for k, v in specimen["paired"].items():
            print(f"  {k}: {v['mean']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]")
        print(f"  blind recommendation's 95% interval covers its held-out mean in {specimen['blind_ci95_coverage']:.0%} of seeds")
    if edge:
        print(f"\nOptimum at a failing region's edge: {edge['budget'] - 5} proposals after 5 initial, "
              f"{len(edge['seeds'])} seeds (load {edge['load_average'][0]:.1f})")
        print("| arm | failed | deep (> 5 % past the edge) | median regret |\n|---|---|---|---|")
        for key in ("this_bo", "baseline_bo", "this_random"):
            if key in edge:
                r = edge[key]
                print(f"| {key} | {r['failed_fraction']:.0%} | {r['deep_fraction']:.0%} | {r['median_regret']:.4f} |")
        for key in ("paired_deep_this-baseline", "paired_failed_this-baseline"):
            if key in edge:
                v = edge[key]
                print(f"  {key}: {v['mean']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]")
    targets = {
        "regret_below_tpe_and_random_at_40": {
            name: bool(row["bo"]["median_regret_40"] < min(row["tpe"]["median_regret_40"], row["random"]["median_regret_40"]))
            for name, row in regret.items()
        },
        "ask_12d_100obs_under_2s": bool(timing["12d_100obs"] < 2.0),
    }
    if mixed.get("baseline"):
        targets["mixed_ask_3x_faster_cpu"] = {
            q: bool(mixed["baseline"][q]["cpu_s"] >= 3 * mixed["this"][q]["cpu_s"]) for q in ("ask1", "ask4")
        }
    if edge:
        targets["edge_deep_failures_below_random"] = bool(edge["this_bo"]["deep_fraction"] < edge["this_random"]["deep_fraction"])
    if specimen:
        targets["contextual_beats_blind_ci95_above_0"] = bool(specimen["paired"]["contextual-blind"]["ci95"][0] > 0)
    print("\nTargets:", json.dumps(targets))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "seeds": "per problem, see regret[problem]['seeds']", "noise_frac": 0.05, "checkpoints": CHECKPOINTS, "regret": regret,
        "ask_seconds": timing, "mixed_space_ask": mixed, "specimen": specimen, "failure_edge": edge, "targets": targets,
        "machine": {"cpus": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__},
    }, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
