"""Benchmark the simulators: FEM staining time/error per backend and resolution, the FEM's
error against Crank's slab solution at its default steps, the fast path (time, table build,
error against the FEM near the binding time), sectioning, LM+EM image synthesis, and the
simulated bench's LM+EM pair (the CLEM env's imaging). Prints a table, writes
benchmarks/results/simulators.json (with the load average: timings taken on a busy machine
are upper bounds).

Run: ``OMP_NUM_THREADS=1 python benchmarks/simulators.py``
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from cryoopt.sim._backend import DimensionlessProblem, Phase
from cryoopt.sim._dolfinx_backend import DolfinxBackend
from cryoopt.sim._skfem_backend import SkfemBackend
from cryoopt.sim.analytic import slab_profile
from cryoopt.sim.diffusion import StainingProtocol, TissueProperties, scales_for, solve_staining
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
    for steps in (120, 240, 480):  # Crank eq. 4.17: the slab filling from both faces, no binding
        errs = []
        for tau in (0.02, 0.1, 0.3, 1.0):
            prob = DimensionlessProblem(da=0.0, beta=1e-12, kappa=0.0, phases=(Phase(tau, 1.0),), n_elements=64, n_steps=steps, picard=1)
            sol = SkfemBackend().solve(prob)
            e = sol.u - slab_profile(sol.x, tau)
            errs.append(float(np.sqrt(np.sum(sol.weights * e * e) / sol.weights.sum())))
        rows.append({"case": "FEM vs Crank slab (L2, max)", "size": f"64 el x {steps} steps", "seconds": float("nan"),
                     "crank_l2_max": max(errs)})
    t0 = time.process_time()
    staining_table(rebuild=True)
    rows.append({"case": "fast_staining table build", "size": "once per process", "seconds": time.process_time() - t0})
    rng = np.random.default_rng(7)
    errs = []
    for _ in range(12):  # incubations from a tenth to ten binding times, where the kinetics bend
        pr = StainingProtocol(section_thickness_nm=float(rng.uniform(50, 300)), antibody_dilution=float(10 ** rng.uniform(1.7, 3.3)),
                              incubation_min=1.0, temperature_c=float(rng.uniform(4, 37)), wash_cycles=int(rng.integers(0, 4)), wash_min=5.0)
        tb = 1.0 / scales_for(pr, TissueProperties()).k_obs_per_s / 60.0
        pr = StainingProtocol(section_thickness_nm=pr.section_thickness_nm, antibody_dilution=pr.antibody_dilution,
                              incubation_min=float(min(tb * 10 ** rng.uniform(-1, 1), 10_000)), temperature_c=pr.temperature_c,
                              wash_cycles=pr.wash_cycles, wash_min=5.0)
        errs.append(abs(fast_staining(pr).mean_label / solve_staining(pr, backend="skfem", n_steps=1600).mean_label - 1))
    rows.append({"case": "fast_staining vs FEM 1600 steps", "size": "12 cryosections", "seconds": float("nan"),
                 "mean_label_rel_err": max(errs)})
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
    from cryoopt.instruments.simulated.sim_physics import SimImaging

    for size in (128, 256):
        phys = SimImaging(preset="neurons", specimen_seed=0)
        sample = {"section_index": 0, "actual_thickness_nm": 70.0, "depth_nm": 0.0, "label_intensity": 0.8, "background_um": 0.03,
                  "chatter": 0.05, "knife_marks": 1, "crack_density_per_um": 0.3}
        gen = np.random.default_rng(0)

        def bench_pair(size: int = size, phys=phys, sample=sample) -> None:
            phys._cache.clear()  # a new section each call: render it
            for modality in ("LM", "EM"):
                phys.acquire({"modality": modality, "image_size_px": size, "exposure_ms": 100.0, "gain": 8.0}, gen, sample=sample)

        bench_pair()
        rows.append({"case": "bench LM+EM pair (SimImaging)", "size": f"{size}^2", "seconds": _best(bench_pair, 5)})
    print(f"{'case':32s} {'size':22s} {'time':>12s} {'mean err':>10s} {'profile err':>12s} {'Crank L2':>10s}")
    for r in rows:
        t = r["seconds"]
        tt = "" if t != t else (f"{t * 1e6:.1f} us" if t < 1e-3 else f"{t * 1e3:.1f} ms")
        me = f"{r['mean_label_rel_err']:.2e}" if "mean_label_rel_err" in r else ""
        pe = f"{r['profile_max_err']:.2e}" if "profile_max_err" in r else ""
        ce = f"{r['crank_l2_max']:.2e}" if "crank_l2_max" in r else ""
        print(f"{r['case']:32s} {r['size']:22s} {tt:>12s} {me:>10s} {pe:>12s} {ce:>10s}")
    print(f"load average {os.getloadavg()}")
    out = results_dir() / "simulators.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "reference": "skfem 1024 elements x 1920 steps", "load_average": os.getloadavg(),
                               "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}, indent=2))


if __name__ == "__main__":
    main()
