"""Within-block value of the agents against the oracle ceiling, paired on the same specimens.

Every row runs the same ``--blocks`` sample blocks: the same specimens, knife and drift
(``specimen_seed``), the same process noise (``noise_seed``) and image noise
(``image_seed``), from the documented expert protocol
(:data:`~cryoopt.agents.EXPERT_PROTOCOL`), ``--sections`` sections per block:

* ``oracle``: the bench's perfect-model oracle (``benchmarks/identifiability.py``,
  :func:`oracle_sectioning_action`): it knows the temperature offset the next cut will
  see and sets the specimen and knife setpoints to the best block temperature for the
  feed, within the env's bounded moves;
* ``static@T``: the expert protocol with one fixed cutting-temperature setpoint ``T``
  (specimen and knife) over ``--static-low .. --static-high`` (default -140 .. -120 C:
  a block warms by 1.2-3.4 C a section, so the best fixed setpoint starts colder than
  the expert's -120 C); the **best static protocol** is the ``T`` with the best mean on
  these very blocks (hindsight: it favours the static protocol);
* the agents, frozen after pre-training: ``hrl`` (option policy over controllers that see
  the drift), ``mpc`` (GP model-predictive control of the cutting temperature),
  ``compensate`` (the drift feedforward alone, no learning), ``ppo`` (flat PPO) and
  ``hold`` (the expert protocol held: ``static@-120``).

Reported: each row minus the best static protocol, per block, mean with a 95 % bootstrap
interval over blocks; ``captured_fraction`` = (agent - static) / (oracle - static), with a
paired bootstrap interval. Block quality is :class:`~cryoopt.loop.BlockRunner`'s for every
row. Agents come from ``--agents`` (the headline benchmark saves its pre-trained agents
there); missing ones are pre-trained with the headline's settings.

Seeds: ``--seed`` offsets every specimen and noise seed (tuning used seed 0; the reported
run a fresh one). Blocks run in parallel with :func:`cryoopt.scale.map_seeds`
(``--workers``); each worker loads the agents once.

Run: ``OMP_NUM_THREADS=1 python benchmarks/ceiling.py --seed 1 --blocks 60 --workers 2``.
Writes ``benchmarks/results/ceiling.json`` and ``ceiling.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from headline import AGENT_KWARGS, bootstrap_ci, env_kwargs, load_average, pretrain_agents, repo_relative  # noqa: E402

AGENTS = ("hrl", "mpc", "compensate", "ppo")
#: paired differences between rows: what learning adds over the feedforward, and the agents against each other
AGENT_PAIRS = (("hrl", "compensate"), ("mpc", "compensate"), ("hrl", "mpc"), ("hrl", "ppo"), ("compensate", "hold"))
_RUNNERS: dict[str, Any] = {}


def oracle_agent_class() -> type:
    """The bench's perfect-model oracle as an agent (it reads the simulator's state, so it is a
    benchmark device, not a registered agent)."""
    from identifiability import oracle_sectioning_action

    from cryoopt.agents import BaseAgent

    class Oracle(BaseAgent):
        """Sectioning setpoints from :func:`oracle_sectioning_action`; everything else held."""

        env: Any = None

        def act(self, obs: Any, info: Any = None) -> np.ndarray:
            a = self.zero_action()
            a[:5] = oracle_sectioning_action(self.env.unwrapped)
            return a

    return Oracle


def block_options(seed: int, j: int) -> dict[str, int]:
    """The reset options of paired block ``j``: every row sees this specimen and these noise streams."""
    return {"specimen_seed": 600_000 + 1000 * seed + 13 * j, "noise_seed": 40_000 * seed + j + 11, "image_seed": 5 + seed}


def _runners(a: dict) -> dict[str, Any]:
    """This process's runners (built once per worker)."""
    key = json.dumps(a, sort_keys=True, default=str)
    if key not in _RUNNERS:
        from cryoopt.loop import BlockRunner

        rk = {"env_kwargs": env_kwargs(a), "max_sections": a["sections"]}
        runners = {"hold": BlockRunner("bo_only", **rk), "compensate": BlockRunner("compensate", **rk)}
        oracle = BlockRunner(oracle_agent_class(), **rk)
        oracle.agent.env = oracle.env
        runners["oracle"] = oracle
        for name in ("hrl", "mpc", "ppo"):
            if name in a["rows"]:
                runners[name] = BlockRunner(name, agent_path=a["agents"][name], min_sections=a["min_sections"], **rk)
        _RUNNERS.clear()
        _RUNNERS[key] = runners
    return _RUNNERS[key]


def one_block(a: dict, j: int) -> dict[str, float]:
    """Block quality of every row on paired block ``j``."""
    from cryoopt.agents import EXPERT_PROTOCOL

    runners = _runners(a)
    opts = block_options(a["seed"], j)
    out = {}
    for t in a["grid"]:
        p = {**EXPERT_PROTOCOL, "specimen_temperature_c": t, "knife_temperature_c": t}
        out[f"static@{t:g}"] = runners["hold"].measure(p, j, options=opts)["quality"]
    hold = f"static@{EXPERT_PROTOCOL['specimen_temperature_c']:g}"
    out["hold"] = out[hold] if hold in out else runners["hold"].measure(EXPERT_PROTOCOL, j, options=opts)["quality"]
    for name in ("oracle", *[r for r in AGENTS if r in a["rows"]]):
        out[name] = runners[name].measure(EXPERT_PROTOCOL, j, options=opts)["quality"]
    return out


def summarize(rows: dict[str, np.ndarray], grid: list[float], seed: int) -> dict[str, Any]:
    statics = {f"static@{t:g}": rows[f"static@{t:g}"] for t in grid}
    best = max(statics, key=lambda k: statics[k].mean())
    static = rows[best]
    gain = rows["oracle"] - static
    out: dict[str, Any] = {"blocks": int(static.size), "best_static": best, "best_static_quality": float(static.mean()),
                           "oracle_quality": float(rows["oracle"].mean()),
                           "static_grid": {k: float(v.mean()) for k, v in statics.items()}}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, static.size, size=(10_000, static.size))
    for name, q in rows.items():
        if name.startswith("static@") and name != best:
            continue
        d = q - static
        out[f"{name}_minus_static"] = {"mean": float(d.mean()), "ci95": list(bootstrap_ci(d, seed=seed)),
                                       "quality": float(q.mean())}
        if name != "oracle":
            ratio = d[idx].mean(1) / np.maximum(gain[idx].mean(1), 1e-9)
            frac = float(d.mean() / gain.mean()) if gain.mean() > 0 else float("nan")
            key = "captured_fraction" if name == "hrl" else f"{name}_captured_fraction"
            out[key] = frac
            out[key + "_ci95"] = [float(np.percentile(ratio, 2.5)), float(np.percentile(ratio, 97.5))]
    pairs = {}
    for a_, b_ in AGENT_PAIRS:
        if a_ in rows and b_ in rows:
            d = rows[a_] - rows[b_]
            pairs[f"{a_}-{b_}"] = {"mean": float(d.mean()), "ci95": list(bootstrap_ci(d, seed=seed)),
                                   "blocks_better": int((d > 0).sum()), "blocks_worse": int((d < 0).sum())}
    out["paired"] = pairs
    return out


def table(s: dict[str, Any], rows: list[str]) -> str:
    lines = [f"{s['blocks']} paired blocks from the expert protocol. Best static protocol in hindsight: {s['best_static']} "
             f"(quality {s['best_static_quality']:.3f}); oracle {s['oracle_quality']:.3f}. Difference to the best static "
             "protocol per block: mean [95 % bootstrap interval]; captured = share of the oracle's gain.", "",
             "| row | block quality | minus best static | captured |", "|---|---|---|---|"]
    for name in ["oracle", *rows]:
        d = s.get(f"{name}_minus_static")
        if d is None:
            continue
        key = "captured_fraction" if name == "hrl" else f"{name}_captured_fraction"
        cap = f"{100 * s[key]:.0f} % [{100 * s[key + '_ci95'][0]:.0f}, {100 * s[key + '_ci95'][1]:.0f}]" if key in s else ""
        lines.append(f"| {name} | {d['quality']:.3f} | {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] | {cap} |")
    if s.get("paired"):
        lines += ["", "Paired differences between rows (per block; mean [95 % bootstrap interval], blocks better / worse): "
                  + "; ".join(f"{k} {v['mean']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}] ({v['blocks_better']} / "
                              f"{v['blocks_worse']})" for k, v in s["paired"].items())]
    lines += ["", "Static grid (mean block quality): " + ", ".join(f"{k} {v:.3f}" for k, v in s["static_grid"].items())]
    return "\n".join(lines)


def write(out: Path, settings: dict, summary: dict, data: dict[str, np.ndarray], meta: dict, rows: list[str]) -> str:
    """``ceiling.json`` and ``ceiling.md`` in ``out``; returns the table."""
    text = table(summary, ["hold", *rows])
    out.mkdir(parents=True, exist_ok=True)
    (out / "ceiling.json").write_text(json.dumps({"settings": settings, **summary, "per_block": {k: v.tolist() for k, v in data.items()},
                                                  "meta": meta}, indent=1, default=float))
    (out / "ceiling.md").write_text("# Within-block ceiling: agents vs the oracle and the best static protocol (simulation)\n\n"
                                    + text + "\n")
    return text


def resummarize(path: Path, out: Path) -> None:
    """Summary and tables of an earlier run, from its per-block results (no block is rerun)."""
    old = json.loads(path.read_text())
    settings, meta = old["settings"], old["meta"]
    data = {k: np.array(v, float) for k, v in old["per_block"].items()}
    summary = summarize(data, settings["grid"], settings["seed"])
    print(write(out, settings, summary, data, meta, settings["rows"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=1, help="offsets every specimen/noise seed (tuning used 0)")
    ap.add_argument("--blocks", type=int, default=60)
    ap.add_argument("--sections", type=int, default=8)
    ap.add_argument("--min-sections", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--static-low", type=float, default=-140.0)
    ap.add_argument("--static-high", type=float, default=-120.0)
    ap.add_argument("--static-step", type=float, default=2.0)
    ap.add_argument("--rows", default=",".join(AGENTS), help="agents to compare (of " + ",".join(AGENTS) + ")")
    ap.add_argument("--agents", default=str(Path(__file__).parent / "results" / "agents"))
    ap.add_argument("--pretrain", type=int, default=2048)
    ap.add_argument("--instrument-pretrain", type=int, default=4096)
    ap.add_argument("--mpc-pretrain", type=int, default=768)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backend", default="processes", choices=("local", "processes", "ray"))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--resummarize", default=None, metavar="CEILING_JSON",
                    help="run nothing: rebuild the summary and tables of an earlier run from its per-block results")
    args = ap.parse_args()
    if args.resummarize:
        resummarize(Path(args.resummarize), Path(args.out))
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from cryoopt.progress import report_to
    from cryoopt.scale import map_seeds

    rows = [r for r in args.rows.split(",") if r]
    grid = [float(t) for t in np.arange(args.static_low, args.static_high + 1e-9, args.static_step)]
    a = {"seed": args.seed, "sections": args.sections, "min_sections": args.min_sections, "image_size": args.image_size,
         "pretrain": args.pretrain, "instrument_pretrain": args.instrument_pretrain, "mpc_pretrain": args.mpc_pretrain,
         "grid": grid, "rows": rows}
    agents_dir = Path(args.agents)
    learners = [n for n in ("hrl", "mpc", "ppo") if n in rows]
    missing = [n for n in learners if not (agents_dir / n / "agent.json").exists()]
    load0, t0 = load_average(), time.perf_counter()
    if missing:
        with report_to(print):
            pretrain_agents(a, missing, agents_dir)
    a["agents"] = {n: str(agents_dir / n) for n in learners}
    t1 = time.perf_counter()
    per_block = map_seeds(functools.partial(one_block, a), range(args.blocks), backend=args.backend, workers=args.workers,
                          label="ceiling blocks")
    wall = time.perf_counter() - t1
    names = list(per_block[0])
    data = {k: np.array([b[k] for b in per_block], float) for k in names}
    summary = summarize(data, grid, args.seed)
    out = Path(args.out)
    settings = {**a, "agents": {k: repo_relative(v) for k, v in a["agents"].items()}, "workers": args.workers,
                "agent_kwargs": AGENT_KWARGS}
    meta = {"wall_s_blocks": wall, "wall_s_total": time.perf_counter() - t0, "load_average_start": load0,
            "load_average_end": load_average(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    print(write(out, settings, summary, data, meta, rows))
    print(f"blocks: {wall:.0f} s wall on {args.workers} workers; load average {meta['load_average_start']} -> {meta['load_average_end']}")


if __name__ == "__main__":
    main()
