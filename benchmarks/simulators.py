"""Benchmark the simulators: FEM staining time/error per backend and resolution, fast path,
sectioning, and LM+EM image synthesis. Prints a table, writes benchmarks/results/simulators.json.

Run: ``OMP_NUM_THREADS=1 python benchmarks/simulators.py``
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from cryoopt.sim._dolfinx_backend import DolfinxBackend
from cryoopt.sim.diffusion import StainingProtocol, solve_staining
from cryoopt.sim.fast import fast_staining, staining_table
from cryoopt.sim.imaging import IceContamination, image_em, image_lm
from cryoopt.sim.sectioning import SectioningModel, SectioningSetpoints
from cryoopt.sim.specimen import Specimen

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _results import results_dir  # noqa: E402  (benchmarks/results/local unless told otherwise)


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    rows: list[dict] = []
    # a penetration-limited case, so the profile (not only the mean) is tested
    p = StainingProtocol(section_thickness_nm=20_000, antibody_dilution=200, incubation_min=60, wash_cycles=3)
    ref = solve_staining(p, backend="skfem", n_elements=1024, n_steps=1920)
    backends = ["skfem"] + (["dolfinx"] if DolfinxBackend.available() else [])
    for backend in backends:
        solve_staining(p, backend=backend, n_elements=16, n_steps=10)  # JIT / import warm-up
        for factor in (1, 4, 16):
            n_el, n_st = 64 * factor, 120
            res = solve_staining(p, backend=backend, n_elements=n_el, n_steps=n_st)
            prof = np.interp(ref.depth_nm, res.depth_nm, res.bound_fraction)
            rows.append({
                "case": f"staining {backend}", "size": f"{n_el} el x {n_st} steps",
                "seconds": _best(lambda: solve_staining(p, backend=backend, n_elements=n_el, n_steps=n_st), 3 if backend == "skfem" else 1),
                "mean_label_rel_err": abs(res.mean_label / ref.mean_label - 1),
                "profile_max_err": float(np.abs(prof - ref.bound_fraction).max()),
            })
    staining_table()
    q = StainingProtocol(section_thickness_nm=100, antibody_dilution=300, incubation_min=30)
    n = 5000
    rows.append({"case": "fast_staining", "size": "1 call", "seconds": _best(lambda: [fast_staining(q) for _ in range(n)], 1) / n})
    model = SectioningModel(seed=0)
    sp = SectioningSetpoints(section_thickness_nm=80, cutting_speed_mm_s=1.0)
    rows.append({"case": "sectioning cut", "size": "1 cut", "seconds": _best(lambda: [model.cut(sp) for _ in range(n)], 1) / n})
    spec = Specimen.from_preset("neurons", seed=0)
    cx, cy = spec.cells.ellipsoids[0][:2]
    for size in (512, 1024, 2048):
        def pair(size: int = size) -> None:
            lm = spec.section(5, thickness_nm=100, shape=(size, size), pixel_size_nm=60_000 / size, n_planes=1)
            em = spec.section(5, thickness_nm=100, shape=(size, size), pixel_size_nm=8_000 / size, origin_nm=(cx - 4000, cy - 4000), n_planes=2)
            image_lm(lm, 1.5, rng=0)
            image_em(em, charging=1.0, ice=IceContamination(), drift_nm_per_line=0.01, scan_noise=0.3, rng=0)
        pair()
        rows.append({"case": "LM+EM pair (all artifacts)", "size": f"{size}^2", "seconds": _best(pair, 2)})
    print(f"{'case':30s} {'size':22s} {'time':>12s} {'mean err':>10s} {'profile err':>12s}")
    for r in rows:
        t = r["seconds"]
        tt = f"{t * 1e6:.1f} us" if t < 1e-3 else f"{t * 1e3:.1f} ms"
        me = f"{r['mean_label_rel_err']:.2e}" if "mean_label_rel_err" in r else ""
        pe = f"{r['profile_max_err']:.2e}" if "profile_max_err" in r else ""
        print(f"{r['case']:30s} {r['size']:22s} {tt:>12s} {me:>10s} {pe:>12s}")
    out = results_dir() / "simulators.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "reference": "skfem 1024 elements x 1920 steps"}, indent=2))


if __name__ == "__main__":
    main()
