"""The light staining backend: scikit-fem assembly, SciPy solves.

Needs only pip packages. The 1-D mesh is tridiagonal, so each step is one banded
solve (``scipy.linalg.solve_banded``): a 64-element, 120-step default solve takes
a few milliseconds. The 2-D cross-section uses sparse LU per step.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from cryoopt.sim._backend import (
    STAINING_BACKENDS,
    BackendSolution,
    DimensionlessProblem,
    StainingBackend,
    binding_update,
)


def _assemble(problem: DimensionlessProblem) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """Node depths, lumped mass and stiffness matrix for the problem's mesh."""
    from skfem import Basis, BilinearForm, ElementLineP1, ElementTriP1, MeshLine, MeshTri, asm
    from skfem.helpers import dot, grad

    n = problem.n_elements
    if problem.geometry == "interval":
        mesh = MeshLine(np.linspace(0.0, 1.0, n + 1))
        basis = Basis(mesh, ElementLineP1())
    else:
        ny = max(1, math.ceil(problem.width * n))
        mesh = MeshTri.init_tensor(np.linspace(0.0, 1.0, n + 1), np.linspace(0.0, problem.width, ny + 1))
        basis = Basis(mesh, ElementTriP1())

    @BilinearForm
    def laplace(u, v, _):
        return dot(grad(u), grad(v))

    @BilinearForm
    def mass(u, v, _):
        return u * v

    K = asm(laplace, basis).tocsr()
    m = np.asarray(asm(mass, basis).sum(axis=1)).ravel()
    x = basis.doflocs[0].copy()
    return x, m, K


@STAINING_BACKENDS.register("skfem")
class SkfemBackend(StainingBackend):
    """scikit-fem P1 assembly with SciPy banded / sparse solves (serial)."""

    name = "skfem"

    @classmethod
    def available(cls) -> bool:  # noqa: D102
        try:
            import skfem  # noqa: F401
        except ImportError:
            return False
        return True

    def _solve(self, problem: DimensionlessProblem) -> BackendSolution:
        x, m, K = _assemble(problem)
        face = np.isclose(x, 0.0)
        n = x.size
        order = np.argsort(x, kind="stable")
        banded = problem.geometry == "interval" and np.all(order == np.arange(n))
        if banded:
            kd = K.diagonal(0)
            ku = np.concatenate([[0.0], K.diagonal(1)])  # upper diagonal, aligned as solve_banded wants
            kl = np.concatenate([K.diagonal(-1), [0.0]])
        else:
            interior = np.flatnonzero(~face)
            K_II = K[interior][:, interior].tocsc()
            K_ID = K[interior][:, np.flatnonzero(face)].tocsc()
        da, beta, kappa, rho = problem.da, problem.beta, problem.kappa, problem.rho
        u = np.zeros(n)
        v = np.zeros(n)
        t_abs = 0.0
        times: list[float] = []
        uh: list[np.ndarray] = []
        vh: list[np.ndarray] = []
        phase_mean_v: list[float] = []
        ab = np.zeros((3, n))
        for phase in problem.phases:
            prev = 0.0
            for t in problem.step_times(phase):
                dt = t - prev
                prev = t
                u_star = u
                for _ in range(problem.picard):
                    denom = 1.0 + dt * (beta * u_star + kappa)
                    g = dt / denom
                    diag = m * (1.0 + da * g)
                    rhs = m * u + rho * g * (beta * u_star + kappa) * m * v
                    if banded:
                        ab[0] = dt * ku
                        ab[1] = diag + dt * kd
                        ab[2] = dt * kl
                        ab[0, 1] = 0.0  # Dirichlet row 0: u_0 = bath
                        ab[1, 0] = 1.0
                        rhs[0] = phase.bath
                        u_new = scipy.linalg.solve_banded((1, 1), ab, rhs, check_finite=False)
                    else:
                        u_new = np.empty(n)
                        u_new[face] = phase.bath
                        A = (dt * K_II + sp.diags(diag[interior])).tocsc()
                        b = rhs[interior] - dt * (K_ID @ u_new[face])
                        u_new[interior] = spla.spsolve(A, b)
                    v_new = binding_update(u_new, u_star, v, dt, beta, kappa)
                    u_star = u_new
                u, v = u_new, v_new
                if problem.record:
                    times.append(t_abs + t)
                    uh.append(u.copy())
                    vh.append(v.copy())
            t_abs += phase.duration
            phase_mean_v.append(float(m @ v) / float(m.sum()))
        return BackendSolution(
            x=x,
            weights=m,
            u=u,
            v=v,
            times=np.asarray(times),
            phase_mean_v=phase_mean_v,
            u_history=np.asarray(uh) if problem.record else None,
            v_history=np.asarray(vh) if problem.record else None,
        )
