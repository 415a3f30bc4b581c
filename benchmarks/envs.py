"""Steps per second of every cryoopt env (scalar observations, fast ``direct`` backend),
Sectioning-v0/Staining-v0 also over the in-process drivers, and CLEMProtocol-v0 at
256^2 and 1024^2 images. Prints a table, writes ``benchmarks/results/envs.json``.

Run: ``OMP_NUM_THREADS=1 python benchmarks/envs.py [--quick]``. CLEMProtocol-v0 runs the
Tokuyasu bench (drift, re-centred fields, the evaluation pipeline) with random actions.
Targets (issue #7): >= 2,000 steps/s for Sectioning-v0 and Staining-v0,
>= 20 steps/s for CLEMProtocol-v0 at 256^2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import cryoopt.envs  # noqa: F401  (registers the envs)

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _results import results_dir  # noqa: E402  (benchmarks/results/local unless told otherwise)

TARGETS = {("cryoopt/Sectioning-v0", "direct"): 2000.0, ("cryoopt/Staining-v0", "direct"): 2000.0,
           ("cryoopt/CLEMProtocol-v0", "direct", 256): 20.0}


def bench(env_id: str, steps: int, **kwargs) -> float:
    env = gym.make(env_id, **kwargs)
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(64)]
    if env_id == "cryoopt/CLEMProtocol-v0":
        for a in actions:
            a[12] = 0.0  # never stop early
    env.step(actions[0])  # warm-up (builds the staining table once per process)
    t0 = time.perf_counter()
    for i in range(steps):
        _, _, te, tr, _ = env.step(actions[i % 64])
        if te or tr:
            env.reset()
    dt = time.perf_counter() - t0
    env.close()
    return steps / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer steps")
    args = ap.parse_args()
    n = 500 if args.quick else 5000
    cases = [
        ("cryoopt/Sectioning-v0", "direct", None, n),
        ("cryoopt/Staining-v0", "direct", None, n),
        ("cryoopt/StainingDiffusion-v0", "direct", None, n),
        ("cryoopt/Sectioning-v0", "instruments", None, n // 10),
        ("cryoopt/Staining-v0", "instruments", None, n // 10),
        ("cryoopt/CLEMProtocol-v0", "direct", 256, 10 if args.quick else 40),
        ("cryoopt/CLEMProtocol-v0", "direct", 1024, 3 if args.quick else 10),
    ]
    rows = []
    for env_id, backend, size, steps in cases:
        kw = {"backend": backend}
        if size:
            kw["image_size"] = size
        sps = bench(env_id, steps, **kw)
        target = TARGETS.get((env_id, backend, size) if size else (env_id, backend))
        rows.append({"env": env_id, "backend": backend, "image_px": size, "steps": steps, "steps_per_s": sps,
                     "target": target, "meets_target": None if target is None else sps >= target})
    print(f"{'env':32s} {'backend':12s} {'image':>6s} {'steps/s':>10s} {'target':>8s}  ok")
    for r in rows:
        print(f"{r['env']:32s} {r['backend']:12s} {r['image_px'] or '-':>6} {r['steps_per_s']:10.1f} "
              f"{r['target'] or '-':>8}  {'' if r['meets_target'] is None else ('yes' if r['meets_target'] else 'NO')}")
    out = results_dir() / "envs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "quick": args.quick, "load_average": os.getloadavg()}
    print(f"load average {os.getloadavg()} (timings on a busy machine are lower bounds of the speed)")
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {out.name}")


if __name__ == "__main__":
    main()
