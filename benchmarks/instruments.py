"""Instrument benchmarks: command round-trip latency and simulated section cycles per second.

Prints a table and writes JSON to benchmarks/results/instruments.json.
Run: python benchmarks/instruments.py
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from cryoopt.instruments import StainStep, connect, open_bench  # noqa: E402

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _results import results_dir  # noqa: E402  (benchmarks/results/local unless told otherwise)

N_QUERIES = 300
N_CYCLES = 20
STEPS = [StainStep("PRIMARY", dilution=200, volume_ul=10, time_min=30, wash_cycles=1),
         StainStep("SECONDARY", dilution=500, volume_ul=10, time_min=20, wash_cycles=1)]


def round_trip(channel: str) -> dict[str, float]:
    with connect("ultramicrotome-ref", simulated=channel, seed=0) as um:
        um.exchange_log.enabled = False
        um.section_thickness_nm  # noqa: B018  warm-up
        times = []
        for _ in range(N_QUERIES):
            t = time.perf_counter()
            um.section_thickness_nm  # noqa: B018
            times.append(time.perf_counter() - t)
    times.sort()
    return {"median_us": 1e6 * statistics.median(times), "p95_us": 1e6 * times[int(0.95 * len(times))]}


def cycles(channel: str) -> dict[str, float]:
    with open_bench(channel, seed=0) as bench:
        for d in bench.drivers:
            d.exchange_log.enabled = False
        bench.microscope.image_size_px = 128
        t = time.perf_counter()
        for _ in range(N_CYCLES):
            bench.ultramicrotome.cut(1)
            bench.stainer.load_protocol(STEPS)
            bench.stainer.run()
            bench.microscope.acquire()
        dt = time.perf_counter() - t
    return {"cycles_per_s": N_CYCLES / dt, "ms_per_cycle": 1e3 * dt / N_CYCLES}


def main() -> None:
    channels = ["inprocess", "socket", "pty"]
    rows = []
    for ch in channels:
        rt, cy = round_trip(ch), cycles(ch)
        rows.append({"channel": ch, **rt, **cy})
    print(f"{'channel':<10} {'query median us':>16} {'query p95 us':>13} {'cycles/s':>9} {'ms/cycle':>9}")
    for r in rows:
        print(f"{r['channel']:<10} {r['median_us']:>16.1f} {r['p95_us']:>13.1f} {r['cycles_per_s']:>9.1f} "
              f"{r['ms_per_cycle']:>9.1f}")
    out = results_dir() / "instruments.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "instruments",
        "description": "query round trip (SECT:THIC?) and full simulated cycle (cut 1, load+run 2-step stain, "
                       "acquire 128x128) per channel",
        "n_queries": N_QUERIES, "n_cycles": N_CYCLES, "python": platform.python_version(),
        "results": rows,
    }, indent=2))
    print(f"wrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out.name}")


if __name__ == "__main__":
    main()
