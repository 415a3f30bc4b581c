"""Scale-out benchmark: one campaign on N simulated benches (Ray actors) against one bench.

Each bench is a ``latency_bench``: a sample block of ``--sections`` serial sections, each
taking ``--section-s`` seconds of (sleeping) instrument time with a log-normal spread, and
a noisy Hartmann-6 value as the block's quality (a real section takes minutes: 50 ms is
a 2-minute section at 1/2400 scale). Two questions, at equal numbers of trials:

1. **Wall time** (real runner, real Ray benches on a local cluster): speedup
   ``wall(1 bench) / wall(N benches)`` for N = 1, 2, 4, 8, paired per seed, for a
   dispatch-only strategy (``sobol``: the ask costs microseconds, so this measures the
   executor, Ray and the journal) and for BO (the ask fits a GP, in the campaign
   process, between trials). Wall time is the trial phase (first start to last finish,
   from the journal); starting the benches is reported apart.
2. **Quality** (BO, virtual clock): the runner's asynchronous rule on N benches, where
   the instrument time is simulated rather than slept, so every ask sees the N - 1
   trials that a real lab would have in flight, whatever this machine's ask time. The
   same trials give the same results as on the real benches. Normalized simple regret of
   the recommendation ``(f* - f(x_rec)) / range`` after each 5 trials; paired differences
   N benches - 1 bench over seeds with 95 % t-intervals. Seeds run with
   :func:`cryoopt.scale.map_seeds` (``--backend``; same numbers on every backend).

Usage: ``python benchmarks/scale.py [--seeds 12] [--timing-seeds 2] [--trials 32]
[--backend ray|processes|local] [--quick]``; prints tables and writes
``benchmarks/results/scale.json`` and ``scale.png``.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import json
import logging
import os
import platform
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a cluster on this machine only: no token set-up
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from cryoopt.campaign import Campaign, Journal  # noqa: E402
from cryoopt.config import CampaignConfig  # noqa: E402
from cryoopt.scale import BACKENDS, local_cluster, map_seeds  # noqa: E402

RESULTS = Path(__file__).parent / "results"
BENCHES = (1, 2, 4, 8)
PROBLEM = "hartmann6"
#: light BO settings (as configs/sim_clem.yaml): the ask is the campaign's cost per trial
BO_OPTIONS = {"n_initial": 8, "num_restarts": 2, "raw_samples": 64, "mc_samples": 64}


def campaign_config(n_benches: int, strategy: str, seed: int, trials: int, sections: int, section_s: float,
                    ) -> CampaignConfig:
    """A campaign of ``trials`` latency-bench blocks on ``n_benches`` Ray benches."""
    from cryoopt.optim.problems import PROBLEMS

    space = {p.name: {"type": "float", "low": p.low, "high": p.high} for p in PROBLEMS[PROBLEM]().space}
    return CampaignConfig.from_dict({
        "name": f"scale-{strategy}-{n_benches}-{seed}", "seed": seed, "space": {"parameters": space},
        "objectives": {"quality": "maximize"},
        "optimizer": {"strategy": strategy, "options": BO_OPTIONS if strategy == "bo" else {}},
        "budget": {"experiments": trials}, "max_in_flight": n_benches,
        "executor": {"type": "ray", "bench": {"type": "latency_bench", "options": {
            "problem": PROBLEM, "sections": sections, "section_s": section_s}},
            "options": {"benches": n_benches, "num_cpus": 0.25}},  # benches mostly wait on their instruments
        "tracking": {"enabled": False}, "report": {"on_finish": False},
    })


# ---------------------------------------------------------------------------- 1. wall time on Ray
def timed_campaign(config: CampaignConfig) -> dict[str, Any]:
    """Run a campaign on Ray; wall time of its trial phase, bench start-up, bench utilization, final regret."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        Campaign(config, Path(tmp) / "c", progress=False).run()
        total = time.monotonic() - t0
        j = Journal.open(Path(tmp) / "c", readonly=True)
        try:
            trials = j.trials()
        finally:
            j.close()
    start = min(r.started_at for r in trials)
    wall = max(r.finished_at for r in trials) - start
    done = [r for r in trials if r.status == "completed"]
    busy = sum(r.result["instrument_s"] for r in done)  # the benches' own instrument time, not the loop's view
    return {"wall_s": wall, "startup_s": total - wall, "utilization": busy / (wall * config.max_in_flight),
            "completed": len(done), "best_true": max(r.result["true_quality"] for r in done)}


def wall_times(strategy: str, seeds: list[int], trials: int, sections: int, section_s: float) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for n in BENCHES:
        runs = []
        for seed in seeds:
            runs.append(timed_campaign(campaign_config(n, strategy, seed, trials, sections, section_s)))
            print(f"  {strategy:<5} {n} bench(es) seed {seed}: {runs[-1]['wall_s']:.1f} s "
                  f"(start-up {runs[-1]['startup_s']:.1f} s, benches busy {runs[-1]['utilization']:.0%})", flush=True)
        rows[str(n)] = {"runs": runs}
    for n in BENCHES:
        speedups = [one["wall_s"] / r["wall_s"] for one, r in zip(rows["1"]["runs"], rows[str(n)]["runs"])]
        rows[str(n)].update(speedup=mean_ci(speedups), efficiency=mean_ci([s / n for s in speedups]),
                            wall_s=statistics.mean(r["wall_s"] for r in rows[str(n)]["runs"]),
                            utilization=statistics.mean(r["utilization"] for r in rows[str(n)]["runs"]))
    return rows


# ---------------------------------------------------------------------------- 2. quality, virtual clock
def async_bo(n_benches: int, trials: int, sections: int, section_s: float, seed: int) -> dict[str, Any]:
    """The runner's rule on ``n_benches`` benches, on a virtual clock: a bench that finishes reports its
    result, then gets the next trial asked with the others pending. Regret after every 5 trials told."""
    from cryoopt.campaign.executors import make_executor
    from cryoopt.optim import make_optimizer

    warnings.simplefilter("ignore")
    logging.getLogger("cryoopt").setLevel(logging.ERROR)
    config = campaign_config(n_benches, "bo", seed, trials, sections, section_s)
    bench = make_executor(config.model_copy(update={"executor": config.executor.bench}))
    problem = bench.problem  # type: ignore[attr-defined]
    opt = make_optimizer("bo", config.search_space(), seed=seed, objectives={"quality": "maximize"}, **BO_OPTIONS)
    clock, events, asked, told = 0.0, [], 0, 0
    regret, ask_s = {}, []

    def dispatch() -> None:
        nonlocal asked
        t0 = time.perf_counter()
        (trial,) = opt.ask()
        ask_s.append(time.perf_counter() - t0)
        result = bench.outcome(trial.id, trial.params)  # type: ignore[attr-defined]
        heapq.heappush(events, (clock + result["instrument_s"], trial.id, trial, result))
        asked += 1

    for _ in range(min(n_benches, trials)):
        dispatch()
    while events:
        clock, _, trial, result = heapq.heappop(events)
        opt.tell(trial, {"quality": result["quality"]})
        told += 1
        if told % 5 == 0 or told == trials:
            best = opt.best()
            regret[told] = problem.normalized_regret(best.params)
        if asked < trials:
            dispatch()
    return {"regret": regret, "virtual_s": clock, "ask_s": ask_s}


def quality(seeds: list[int], trials: int, sections: int, section_s: float, backend: str,
            benches: tuple[int, ...] = BENCHES) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for n in benches:
        t0 = time.perf_counter()
        runs = map_seeds(functools.partial(async_bo, n, trials, sections, section_s), seeds, backend=backend,
                         label=f"BO on {n} bench(es)")
        rows[str(n)] = {"regret": {k: [r["regret"][k] for r in runs] for k in runs[0]["regret"]},
                        "virtual_s": [r["virtual_s"] for r in runs],
                        "ask_s_median": statistics.median(a for r in runs for a in r["ask_s"][BO_OPTIONS["n_initial"]:])}
        final = rows[str(n)]["regret"][trials]
        print(f"  BO {n} bench(es): regret@{trials} mean {np.mean(final):.3f}, virtual time "
              f"{np.mean(rows[str(n)]['virtual_s']):.0f} s, median ask {rows[str(n)]['ask_s_median']:.2f} s "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    for n in benches:
        rows[str(n)]["paired_diff_vs_1"] = {
            k: mean_ci([a - b for a, b in zip(rows[str(n)]["regret"][k], rows["1"]["regret"][k])])
            for k in rows[str(n)]["regret"]}
    return rows


# ---------------------------------------------------------------------------- report
def mean_ci(values: list[float], level: float = 0.95) -> dict[str, float]:
    """Mean and two-sided t-interval."""
    x = np.asarray(values, float)
    m = float(x.mean())
    if x.size < 2:
        return {"mean": m, "lo": m, "hi": m}
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return {"mean": m, "lo": m - half, "hi": m + half}


def fmt(ci: dict[str, float], digits: int = 2) -> str:
    return f"{ci['mean']:.{digits}f} [{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ns = np.array(BENCHES)
    ax1.plot(ns, ns, "k--", lw=1, label="ideal (N)")
    ax1.plot(ns, 0.8 * ns, "k:", lw=1, label="target 0.8 N")
    for strategy, rows in report["wall_time"].items():
        sp = [rows[str(n)]["speedup"] for n in BENCHES]
        ax1.errorbar(ns, [s["mean"] for s in sp], yerr=[[s["mean"] - s["lo"] for s in sp], [s["hi"] - s["mean"] for s in sp]],
                     marker="o", capsize=3, label=f"{strategy} (measured)")
    ax1.set(xlabel="benches N", ylabel="speedup vs 1 bench (equal trials)", xticks=ns,
            title=f"wall time, {report['settings']['trials']} trials")
    ax1.legend()
    rows = report["quality"]
    for n in sorted(int(k) for k in rows):
        ks = sorted(int(k) for k in rows[str(n)]["regret"])
        cis = [mean_ci(rows[str(n)]["regret"][k]) for k in ks]
        m = np.array([c["mean"] for c in cis])
        ax2.plot(ks, m, marker=".", label=f"{n} bench(es)")
        ax2.fill_between(ks, [c["lo"] for c in cis], [c["hi"] for c in cis], alpha=0.12)
    ax2.set_ylim(bottom=0)
    ax2.set(xlabel="trials", ylabel="normalized regret of the recommendation",
            title=f"BO quality vs trials ({len(report['settings']['quality_seeds'])} seeds, 95% CI)")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=12, help="seeds of the quality comparison")
    parser.add_argument("--timing-seeds", type=int, default=2, help="seeds of the wall-time runs")
    parser.add_argument("--seed-base", type=int, default=100, help="first seed (fresh seeds for a final run)")
    parser.add_argument("--trials", type=int, default=32, help="trials per campaign (a multiple of 8: whole rounds)")
    parser.add_argument("--sections", type=int, default=20, help="serial sections per block")
    parser.add_argument("--section-s", type=float, default=0.05, help="instrument time per section (s)")
    parser.add_argument("--backend", choices=BACKENDS, default="ray", help="where the quality seeds run")
    parser.add_argument("--quality-benches", nargs="+", type=int, default=list(BENCHES),
                        help="bench counts of the quality comparison (1 is always included: the reference)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["sobol", "bo", "quality"],
                        help="parts not to run (they keep their results from the last run)")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 10 trials: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.timing_seeds, args.trials = 2, 1, 10
    logging.getLogger("cryoopt").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs", flush=True)
    timing_seeds = list(range(args.seed_base, args.seed_base + args.timing_seeds))
    quality_seeds = list(range(args.seed_base, args.seed_base + args.seeds))
    report: dict[str, Any] = {"settings": {
        "problem": PROBLEM, "trials": args.trials, "sections": args.sections, "section_s": args.section_s,
        "trial_s_mean": args.sections * args.section_s, "bo_options": BO_OPTIONS, "benches": BENCHES,
        "timing_seeds": timing_seeds, "quality_seeds": quality_seeds, "backend": args.backend}}
    out = RESULTS / ("scale_quick.json" if args.quick else "scale.json")
    previous = json.loads(out.read_text()) if out.exists() and args.skip else {}
    report["wall_time"] = {k: v for k, v in previous.get("wall_time", {}).items() if k in args.skip}
    if "quality" in args.skip and "quality" in previous:
        report["quality"] = previous["quality"]
    report["previous_parts_from"] = {k: previous.get("machine", {}).get("commit") for k in args.skip} or None
    with local_cluster(num_cpus=4, log_to_driver=False):
        for strategy in ("sobol", "bo"):
            if strategy not in args.skip:
                print(f"Wall time, {strategy}, {args.trials} trials of ~{args.sections * args.section_s:.1f} s:",
                      flush=True)
                report["wall_time"][strategy] = wall_times(strategy, timing_seeds, args.trials, args.sections,
                                                           args.section_s)
        if "quality" not in args.skip:
            print(f"Quality, BO on a virtual clock, {args.seeds} seeds:", flush=True)
            benches = tuple(sorted({1, *args.quality_benches}))
            report["quality"] = quality(quality_seeds, args.trials, args.sections, args.section_s, args.backend,
                                        benches)
    report["load_average_end"] = os.getloadavg()
    report["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "ray": _version("ray"), "commit": _commit()}

    print(f"\n| benches | {' | '.join(f'{s} speedup [95% CI]' for s in report['wall_time'])} | "
          f"{' | '.join(f'{s} benches busy' for s in report['wall_time'])} |")
    print("|---|" + "---|" * (2 * len(report["wall_time"])))
    for n in BENCHES:
        cells = [fmt(rows[str(n)]["speedup"]) for rows in report["wall_time"].values()]
        cells += [f"{rows[str(n)]['utilization']:.0%}" for rows in report["wall_time"].values()]
        print(f"| {n} | " + " | ".join(cells) + " |")
    if "quality" in report:
        q = report["quality"]
        print(f"\n| benches | regret@{args.trials} mean [95% CI] | paired diff vs 1 bench [95% CI] | median ask (s) |")
        print("|---|---|---|---|")
        for n in sorted(int(k) for k in q):
            final = q[str(n)]["regret"][args.trials]
            print(f"| {n} | {fmt(mean_ci(final), 3)} | {fmt(q[str(n)]['paired_diff_vs_1'][args.trials], 3)} | "
                  f"{q[str(n)]['ask_s_median']:.2f} |")
    targets = {}
    for strategy, rows in report["wall_time"].items():
        targets[f"{strategy}_speedup_at_least_0.8N"] = {n: bool(rows[str(n)]["speedup"]["mean"] >= 0.8 * n)
                                                        for n in BENCHES}
    if "quality" in report:
        targets["bo_quality_within_noise"] = {
            n: bool(report["quality"][str(n)]["paired_diff_vs_1"][args.trials]["lo"] <= 0.0)
            for n in sorted(int(k) for k in report["quality"])}  # not resolvably worse than 1 bench at equal trials
    report["targets"] = targets
    print("\nTargets:", json.dumps(targets))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=float))
    if report["wall_time"] and "quality" in report:
        plot(report, out.with_suffix(".png"))
    print(f"wrote {out}")


def _version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return "unknown"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
