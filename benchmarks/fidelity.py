"""Multi-fidelity: does an LM quick look predict a block's EM-led quality, and does BO gain by it?

Part 1, ``--part correlation``: ``--protocols`` Sobol protocols over the headline's block space
(:func:`cryoopt.loop.block_space`), each run as a full block (8 sections, LM + EM, protocol held:
``bo_only``'s agent) on ``--specimens`` specimens, and as an LM quick look
(:class:`cryoopt.loop.fidelity.QuickLook`, the first ``--look-sections`` sections, LM only) on
``--specimens`` *other* specimens, as a multi-fidelity optimizer would see them (a look and a
block never share a block). Reported: Spearman of the protocol means of quick-look score and
block quality (95 % bootstrap interval over protocols), the same per block, a short EM series
(the first ``--look-sections`` sections with EM) for comparison, and the cost ratio from the
bench's own time model (``prep_time_h``: cuts, staining, exposures).

Part 2, ``--part bo``: multi-fidelity BO (:class:`cryoopt.optim.BayesianOptimizer` with
``fidelities=``) against single-fidelity BO at equal instrument time, paired on the same specimen
sequence per seed; each recommendation judged on ``--heldout`` held-out specimens.

Run::

    OMP_NUM_THREADS=1 nice python benchmarks/fidelity.py --part correlation --out benchmarks/results
    OMP_NUM_THREADS=1 nice python benchmarks/fidelity.py --part bo --seeds 12 --first-seed 100 --out benchmarks/results

Writes ``fidelity_correlation.{json,md,png}`` and ``fidelity.{json,md,png}`` to ``--out``
(``benchmarks/results/local/`` by default).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import results_dir  # noqa: E402

#: block seeds: full blocks of the correlation study, quick looks (other specimens), held-out judging
FULL_SEED, LOOK_SEED, HELDOUT_SEED = 7_000_000, 7_100_000, 9_000_000


def env_kwargs(a: dict) -> dict:
    """The headline's bench: neurons scenario, direct backend."""
    return {"scenario": "neurons", "backend": "direct", "image_size": a["image_size"]}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def bootstrap(stat: Any, n_rows: int, *, n: int = 5000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of ``stat(rows)`` over ``n_rows`` rows."""
    rng = np.random.default_rng(seed)
    vals = np.array([stat(rng.integers(0, n_rows, n_rows)) for _ in range(n)])
    vals = vals[np.isfinite(vals)]
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


def correlation(a: dict, out: Path) -> dict:
    """Part 1: quick look vs full block over Sobol protocols."""
    from cryoopt.loop import BlockRunner, block_space
    from cryoopt.loop.fidelity import QuickLook
    from cryoopt.optim import SobolSearch
    from cryoopt.progress import report_to  # noqa: F401

    space = block_space()
    protocols = [t.params for t in SobolSearch(space, seed=a["seed"]).ask(a["protocols"])]
    rk = {"env_kwargs": env_kwargs(a)}
    full = BlockRunner("fixed", max_sections=a["sections"], **rk)
    short = BlockRunner("fixed", max_sections=a["look_sections"], **rk)
    look = QuickLook(short, sections=a["look_sections"])
    rows = []
    t0, c0, load0 = time.perf_counter(), time.process_time(), load_average()
    for i, p in enumerate(protocols):
        row: dict[str, Any] = {"params": p, "full": [], "look": [], "short_em": []}
        for j in range(a["specimens"]):
            b = full.measure(p, FULL_SEED + j)
            row["full"].append({k: b.get(k) for k in ("quality", "prep_time_h", "cnr", "lm_cnr", "frc_resolution_nm")})
            q = look.look(p, LOOK_SEED + j)
            q = q if isinstance(q, dict) else dict(q.measured)
            row["look"].append({k: q[k] for k in ("quality", "prep_time_h", "lm_cnr", "failed_sections")})
            s = short.measure(p, LOOK_SEED + j)
            row["short_em"].append({k: s.get(k) for k in ("quality", "prep_time_h")})
        rows.append(row)
        print(f"protocol {i + 1}/{len(protocols)}: block {np.mean([r['quality'] for r in row['full']]):.3f}, "
              f"look {np.mean([r['quality'] for r in row['look']]):.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    fq = np.array([[r["quality"] for r in row["full"]] for row in rows])
    lq = np.array([[r["quality"] for r in row["look"]] for row in rows])
    sq = np.array([[r["quality"] for r in row["short_em"]] for row in rows])
    lc = np.array([[r["lm_cnr"] for r in row["look"]] for row in rows], float)
    fh = np.array([[r["prep_time_h"] for r in row["full"]] for row in rows])
    lh = np.array([[r["prep_time_h"] for r in row["look"]] for row in rows])
    fm, lm, sm = fq.mean(1), lq.mean(1), sq.mean(1)
    lcm = np.nanmean(np.where(np.isfinite(lc), lc, np.nan), 1)
    n = len(rows)
    live = (fm > 0) | (lm > 0)

    def rho(x: np.ndarray, y: np.ndarray) -> dict:
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        return {"rho": spearman(x, y), "ci95": bootstrap(lambda i: spearman(x[i], y[i]), len(x), seed=a["seed"]), "n": int(len(x))}

    res = {
        "protocol_means": {"lm_quick_look": rho(lm, fm), "lm_cnr_only": rho(lcm, fm), "short_em_series": rho(sm, fm),
                           # protocols dead at both fidelities (saturated detectors, no ribbon) are easy ties
                           "lm_quick_look_live": rho(np.where(live, lm, np.nan), fm)},
        "dead_protocols": int((~live).sum()),
        "per_block": {"lm_quick_look": rho(lq.ravel(), fq.ravel())},
        "full_quality_specimen_sd": float(np.sqrt(np.mean(fq.var(1, ddof=1)))),
        "full_quality_protocol_sd": float(fm.std(ddof=1)),
        "cost": {"full_block_h_mean": float(fh.mean()), "quick_look_h_mean": float(lh.mean()),
                 "ratio_mean_of_means": float(lh.mean() / fh.mean()),
                 "ratio_per_protocol_median": float(np.median(lh.mean(1) / fh.mean(1)))},
        "top5_overlap": int(len(set(np.argsort(-fm)[:5]) & set(np.argsort(-lm)[:5]))),
    }
    meta = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "load_average_start": load0,
            "load_average_end": load_average(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    result = {**res, "settings": a, "meta": meta, "rows": rows}
    (out / "fidelity_correlation.json").write_text(json.dumps(result, indent=1, default=float))
    text = correlation_table(res, a, n)
    (out / "fidelity_correlation.md").write_text("# LM quick look vs EM series (simulation)\n\n" + text + "\n")
    correlation_plot(lm, fm, sm, lq, fq, res, out / "fidelity_correlation.png")
    print(text)
    print(f"wall {meta['wall_s']:.0f} s, CPU {meta['cpu_s']:.0f} s, load average {load0} -> {meta['load_average_end']}")
    return result


def _rho_text(r: dict) -> str:
    return f"{r['rho']:+.2f} [{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}]"


def correlation_table(res: dict, a: dict, n: int) -> str:
    c = res["cost"]
    lines = [
        f"{n} Sobol protocols over the block space (seed {a['seed']}), neurons, {a['image_size']} px, protocol held; "
        f"full block = {a['sections']} sections LM + EM on {a['specimens']} specimens; quick look = first "
        f"{a['look_sections']} sections, LM only, on {a['specimens']} other specimens. Spearman [95 % bootstrap over protocols]:",
        "",
        "| cheap measurement | vs block quality (protocol means) |",
        "|---|---|",
        f"| LM quick look score | {_rho_text(res['protocol_means']['lm_quick_look'])} |",
        f"| LM CNR alone | {_rho_text(res['protocol_means']['lm_cnr_only'])} |",
        f"| short EM series (first {a['look_sections']} sections, LM + EM) | {_rho_text(res['protocol_means']['short_em_series'])} |",
        f"| LM quick look, the {res['protocol_means']['lm_quick_look_live']['n']} protocols not dead at both fidelities "
        f"({res['dead_protocols']} are) | {_rho_text(res['protocol_means']['lm_quick_look_live'])} |",
        f"| LM quick look, per block (n = {res['per_block']['lm_quick_look']['n']}) | {_rho_text(res['per_block']['lm_quick_look'])} |",
        "",
        f"Block quality: sd over protocols {res['full_quality_protocol_sd']:.3f}, within a protocol over specimens "
        f"{res['full_quality_specimen_sd']:.3f}. Top-5 protocols shared by the two rankings: {res['top5_overlap']} of 5.",
        "",
        f"Cost (bench time model, prep_time_h): full block {c['full_block_h_mean']:.2f} h, quick look "
        f"{c['quick_look_h_mean']:.2f} h, ratio {c['ratio_mean_of_means']:.3f} (median per protocol "
        f"{c['ratio_per_protocol_median']:.3f}).",
    ]
    return "\n".join(lines)


def correlation_plot(lm: np.ndarray, fm: np.ndarray, sm: np.ndarray, lq: np.ndarray, fq: np.ndarray, res: dict,
                     path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4.2))
    ax[0].scatter(lq.ravel(), np.repeat(fm, lq.shape[1]), s=8, alpha=0.3, color="grey", label="single quick looks")
    ax[0].scatter(lm, fm, s=24, color="C0", label="protocol means")
    ax[0].set(xlabel="LM quick-look score", ylabel="block quality (EM series, mean over specimens)",
              title=f"LM quick look: Spearman {_rho_text(res['protocol_means']['lm_quick_look'])}")
    ax[0].legend(fontsize=8)
    ax[1].scatter(sm, fm, s=24, color="C1")
    ax[1].set(xlabel="short EM series quality (first sections)", ylabel="block quality",
              title=f"short EM series: {_rho_text(res['protocol_means']['short_em_series'])}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- part 2: MF-BO vs BO
ARMS = ("single", "multi")


def _protocol_key(params: dict) -> str:
    return json.dumps({k: round(float(v), 9) for k, v in sorted(params.items())})


def run_seed(a: dict, seed: int) -> dict:
    """Both arms of one seed: the same specimen sequence (block seeds ``seed * 100_003 + i``), the same
    instrument-time budget, then each recommendation on the same held-out specimens."""
    import torch

    from cryoopt.agents import EXPERT_PROTOCOL
    from cryoopt.loop import BlockRunner, block_space
    from cryoopt.loop.fidelity import QuickLook
    from cryoopt.optim import BayesianOptimizer

    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    space = block_space()
    rk = {"env_kwargs": env_kwargs(a)}
    full = BlockRunner("fixed", max_sections=a["sections"], **rk)
    look = QuickLook(BlockRunner("fixed", max_sections=a["look_sections"], **rk), sections=a["look_sections"])
    costs = {"lm_quick_look": a["cost_look_h"], "em_series": a["cost_block_h"]}
    expert = {k: EXPERT_PROTOCOL[k] for k in space.names}
    fast = {"num_restarts": 2, "raw_samples": 64, "mc_samples": 64, "noise_floor": a["noise_floor"]}
    out: dict[str, Any] = {"seed": seed}
    for arm in ARMS:
        mf = arm == "multi"
        opt = BayesianOptimizer(space, seed=seed, objectives="quality", n_initial=a["n_initial_multi" if mf else "n_initial"],
                                fidelities=costs if mf else None, **fast)
        spent, i, history = 0.0, 0, []
        start = opt.add_trial(expert, source="expert")
        pending = [start]
        while True:
            confirm = mf and a["budget_h"] - spent <= a["confirm_h"]  # the last hours: EM series only
            trial = pending.pop() if pending else opt.ask(fidelity="em_series" if confirm else None)[0]
            fid = opt.fidelity_of(trial) or "em_series"
            left = a["budget_h"] - spent
            if left < costs[fid] and mf and left >= costs["lm_quick_look"]:  # what still fits: a quick look
                opt.abandon(trial, "an EM series no longer fits in the budget")
                trial = opt.ask(fidelity="lm_quick_look")[0]
                fid = "lm_quick_look"
            if left < costs[fid]:
                opt.abandon(trial, "instrument-time budget used")
                break
            block_seed = seed * 100_003 + i
            i += 1
            r = full.run(trial.params, block_seed) if fid == "em_series" else look.look(trial.params, block_seed)
            hours = float(r["prep_time_h"] if isinstance(r, dict) else r.measured.get("prep_time_h", 0.0))
            spent += hours
            opt.tell(trial, {"quality": r["quality"]} if isinstance(r, dict) else r)
            history.append({"fidelity": fid, "quality": r["quality"] if isinstance(r, dict) else None, "hours": hours,
                            "source": trial.source})
        rec = opt.recommend()
        out[arm] = {"history": history, "hours": spent, "recommended": rec.params if rec else None,
                    "expected_quality": rec.mean["quality"] if rec else None,
                    "n_em": sum(h["fidelity"] == "em_series" for h in history),
                    "n_look": sum(h["fidelity"] == "lm_quick_look" for h in history)}
    cache: dict[str, list[float]] = {}
    for arm in ARMS:
        params = out[arm]["recommended"] or expert
        key = _protocol_key(params)
        if key not in cache:
            cache[key] = [full.measure(params, HELDOUT_SEED + k)["quality"] for k in range(a["heldout"])]
        out[arm]["heldout"] = cache[key]
        out[arm]["heldout_mean"] = float(np.mean(cache[key]))
        out[arm]["is_expert"] = key == _protocol_key(expert)
    out["seconds"], out["cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    print(f"seed {seed}: single {out['single']['heldout_mean']:.3f} ({out['single']['n_em']} EM), multi "
          f"{out['multi']['heldout_mean']:.3f} ({out['multi']['n_em']} EM + {out['multi']['n_look']} looks), "
          f"{out['cpu_s']:.0f} CPU-s", flush=True)
    return out


def bo_benchmark(a: dict, out: Path) -> dict:
    """Part 2: MF-BO vs BO at equal instrument time over ``a['seeds']`` seeds."""
    import functools

    from cryoopt.scale import map_seeds

    t0, c0, load0 = time.perf_counter(), time.process_time(), load_average()
    seeds = list(range(a["first_seed"], a["first_seed"] + a["seeds"]))
    runs = map_seeds(functools.partial(run_seed, a), seeds, backend=a["backend"], workers=a["workers"], progress=True,
                     label="seeds")
    single = np.array([r["single"]["heldout_mean"] for r in runs])
    multi = np.array([r["multi"]["heldout_mean"] for r in runs])
    d = multi - single
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(d), (10_000, len(d)))

    def ci(v: np.ndarray) -> list[float]:
        m = v[idx].mean(1)
        return [float(np.percentile(m, 2.5)), float(np.percentile(m, 97.5))]

    summary = {
        arm: {"heldout_quality_mean": float(v.mean()), "heldout_quality_ci95": ci(v),
              "hours_mean": float(np.mean([r[arm]["hours"] for r in runs])),
              "em_series_mean": float(np.mean([r[arm]["n_em"] for r in runs])),
              "quick_looks_mean": float(np.mean([r[arm]["n_look"] for r in runs])),
              "recommends_expert": int(sum(r[arm]["is_expert"] for r in runs))}
        for arm, v in (("single", single), ("multi", multi))
    }
    summary["paired"] = {"multi-single": {"mean": float(d.mean()), "ci95": ci(d), "better": int((d > 1e-12).sum()),
                                          "worse": int((d < -1e-12).sum())}}
    meta = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0 + sum(r["cpu_s"] for r in runs),
            "load_average_start": load0, "load_average_end": load_average(), "workers": a["workers"],
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    result = {**summary, "settings": a, "meta": meta, "runs": runs}
    (out / "fidelity.json").write_text(json.dumps(result, indent=1, default=float))
    text = bo_table(summary, a)
    (out / "fidelity.md").write_text("# Multi-fidelity BO vs BO at equal instrument time (simulation)\n\n" + text + "\n")
    bo_plot(single, multi, summary, out / "fidelity.png")
    print(text)
    print(f"wall {meta['wall_s']:.0f} s, CPU {meta['cpu_s']:.0f} s on {a['workers']} workers, load average {load0} -> "
          f"{meta['load_average_end']}")
    return result


def bo_table(s: dict, a: dict) -> str:
    p = s["paired"]["multi-single"]
    seeds = f"{a['seeds']} seeds ({a['first_seed']}..{a['first_seed'] + a['seeds'] - 1})"
    lines = [
        f"Neurons bench, {a['image_size']} px, protocol held within a block; {seeds}; budget {a['budget_h']:.0f} "
        f"instrument hours per campaign (bench time model), both arms on the same specimen sequence from the expert "
        f"protocol (run as an EM series); BO on block quality (noise floor {a['noise_floor']}); multi-fidelity: "
        f"quick look ({a['look_sections']} sections, LM) cost {a['cost_look_h']} h, EM series {a['cost_block_h']} h, "
        f"max-value entropy per unit cost, EM series only in the last {a['confirm_h']:.0f} h (a quick look when no more EM series fits); a measurement starts while its nominal cost fits in the budget left. Each recommendation rerun on the same {a['heldout']} held-out specimens.",
        "",
        "| arm | held-out quality [95 % CI] | hours used | EM series | quick looks | recommends the expert protocol |",
        "|---|---|---|---|---|---|",
    ]
    for arm, name in (("single", "BO, EM series only"), ("multi", "multi-fidelity BO")):
        r = s[arm]
        lines.append(f"| {name} | {r['heldout_quality_mean']:.3f} [{r['heldout_quality_ci95'][0]:.3f}, "
                     f"{r['heldout_quality_ci95'][1]:.3f}] | {r['hours_mean']:.1f} | {r['em_series_mean']:.1f} | "
                     f"{r['quick_looks_mean']:.1f} | {r['recommends_expert']} of {a['seeds']} |")
    lines += ["", f"Paired difference multi - single (per seed, same held-out specimens): {p['mean']:+.3f} "
              f"[{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] (95 % bootstrap over seeds), {p['better']} seeds better, "
              f"{p['worse']} worse."]
    return "\n".join(lines)


def bo_plot(single: np.ndarray, multi: np.ndarray, s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 4))
    lo, hi = float(min(single.min(), multi.min())) - 0.02, float(max(single.max(), multi.max())) + 0.02
    ax[0].plot([lo, hi], [lo, hi], color="grey", lw=0.8)
    ax[0].scatter(single, multi, color="C0")
    ax[0].set(xlabel="BO, EM series only: held-out quality", ylabel="multi-fidelity BO: held-out quality",
              title="per seed (same specimens)")
    p = s["paired"]["multi-single"]
    ax[1].errorbar([0], [p["mean"]], yerr=[[p["mean"] - p["ci95"][0]], [p["ci95"][1] - p["mean"]]], fmt="o", capsize=6)
    ax[1].axhline(0, color="grey", lw=0.8)
    ax[1].set(xticks=[0], xticklabels=["multi - single"], ylabel="paired difference, 95 % CI", xlim=(-1, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("correlation", "bo"), default="correlation")
    ap.add_argument("--protocols", type=int, default=40)
    ap.add_argument("--specimens", type=int, default=3)
    ap.add_argument("--sections", type=int, default=8)
    ap.add_argument("--look-sections", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0, help="correlation: the Sobol design's seed")
    ap.add_argument("--seeds", type=int, default=12, help="bo: campaigns per arm")
    ap.add_argument("--first-seed", type=int, default=100, help="bo: seeds first-seed.. (development used 0..)")
    ap.add_argument("--budget-h", type=float, default=30.0, help="bo: instrument hours per campaign")
    ap.add_argument("--cost-look-h", type=float, default=1.0, help="bo: the optimizer's cost of a quick look (h)")
    ap.add_argument("--cost-block-h", type=float, default=3.0, help="bo: the optimizer's cost of an EM series (h)")
    ap.add_argument("--n-initial", type=int, default=4, help="bo: single-fidelity design, the expert block included")
    ap.add_argument("--n-initial-multi", type=int, default=7, help="bo: multi-fidelity design, the expert block included")
    ap.add_argument("--confirm-h", type=float, default=9.0,
                    help="bo: multi-fidelity runs only EM series once this many budget hours are left")
    ap.add_argument("--noise-floor", type=float, default=0.3)
    ap.add_argument("--heldout", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backend", default="processes", choices=("local", "processes", "ray"))
    ap.add_argument("--out", default=str(results_dir()))
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    a = {"protocols": args.protocols, "specimens": args.specimens, "sections": args.sections,
         "look_sections": args.look_sections, "image_size": args.image_size, "seed": args.seed}
    if args.part == "correlation":
        correlation(a, out)
    else:
        a.update(seeds=args.seeds, first_seed=args.first_seed, budget_h=args.budget_h, cost_look_h=args.cost_look_h,
                 cost_block_h=args.cost_block_h, n_initial=args.n_initial, n_initial_multi=args.n_initial_multi,
                 noise_floor=args.noise_floor, confirm_h=args.confirm_h, heldout=args.heldout, workers=args.workers, backend=args.backend)
        bo_benchmark(a, out)


if __name__ == "__main__":
    main()
