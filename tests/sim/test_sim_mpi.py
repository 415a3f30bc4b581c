"""dolfinx backend: agreement with scikit-fem, and an MPI run (skipped without mpirun/dolfinx)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from cryoopt.sim._dolfinx_backend import DolfinxBackend
from cryoopt.sim.diffusion import StainingProtocol, solve_staining

needs_dolfinx = pytest.mark.skipif(not DolfinxBackend.available(), reason="dolfinx not importable")
P = StainingProtocol(section_thickness_nm=20_000, antibody_dilution=200, incubation_min=60, wash_cycles=2)


@needs_dolfinx
@pytest.mark.slow
def test_dolfinx_and_skfem_backends_agree() -> None:
    # same discrete scheme: agreement to CG tolerance (stated 1e-8, measured ~1e-13)
    a = solve_staining(P, backend="dolfinx", n_elements=32, n_steps=60)
    b = solve_staining(P, backend="skfem", n_elements=32, n_steps=60)
    assert np.abs(a.bound_fraction - b.bound_fraction).max() < 1e-8
    assert a.free_antibody == pytest.approx(b.free_antibody, rel=1e-8)


_SCRIPT = """
import json
from mpi4py import MPI
from cryoopt.sim.diffusion import StainingProtocol, solve_staining
p = StainingProtocol(section_thickness_nm=20_000, antibody_dilution=200, incubation_min=60, wash_cycles=2)
r = solve_staining(p, backend="dolfinx", geometry="rectangle", n_elements=24, n_steps=40)
if MPI.COMM_WORLD.rank == 0:
    print("RESULT" + json.dumps({"size": MPI.COMM_WORLD.size, "mean": r.mean_label, "uni": r.uniformity}))
"""


@needs_dolfinx
@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not found")
def test_dolfinx_backend_runs_under_mpirun_and_matches_serial() -> None:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    cmd = ["mpirun", "-n", "2", "--oversubscribe", sys.executable, "-c", _SCRIPT]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT"))
    res = json.loads(line[len("RESULT"):])
    serial = solve_staining(P, backend="skfem", geometry="rectangle", n_elements=24, n_steps=40)
    assert res["size"] == 2
    assert res["mean"] == pytest.approx(serial.mean_label, rel=1e-8)
    assert res["uni"] == pytest.approx(serial.uniformity, rel=1e-7)
