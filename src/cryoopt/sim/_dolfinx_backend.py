"""The FEniCSx staining backend: dolfinx assembly, PETSc solves, MPI-parallel.

Solves exactly the discrete system of :mod:`cryoopt.sim._backend` (lumped mass as
the integral of each basis function, backward Euler, Picard-linearised binding),
so it agrees with the scikit-fem backend to solver tolerance. The stiffness matrix
is assembled once; each step scales it, adds the lumped diagonal and imposes the
face concentration symmetrically with ``MatZeroRowsColumns``. Under ``mpirun -n N`` the mesh is
partitioned; results are gathered on every rank. Uses CG with Jacobi
preconditioning (the matrix is SPD after symmetric Dirichlet lifting), which runs
in parallel without MUMPS. All nodal arithmetic runs on owned dofs only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cryoopt.sim._backend import (
    STAINING_BACKENDS,
    BackendSolution,
    DimensionlessProblem,
    StainingBackend,
    binding_update,
)


@STAINING_BACKENDS.register("dolfinx")
class DolfinxBackend(StainingBackend):
    """dolfinx P1 assembly with PETSc CG solves; runs under MPI."""

    name = "dolfinx"

    def __init__(self, comm: Any | None = None, *, rtol: float = 1e-12) -> None:
        self._comm = comm
        self.rtol = rtol

    @classmethod
    def available(cls) -> bool:  # noqa: D102
        try:
            from cryoopt.sim._dolfinx_compat import import_dolfinx

            import_dolfinx()
        except Exception:  # noqa: BLE001  (broken MPI/PETSc installs raise more than ImportError)
            return False
        return True

    def _solve(self, problem: DimensionlessProblem) -> BackendSolution:
        import ufl
        from dolfinx import fem
        from mpi4py import MPI
        from petsc4py import PETSc

        from cryoopt.sim import _dolfinx_compat as compat

        compat.import_dolfinx()
        import dolfinx.fem.petsc as fpetsc

        comm = self._comm or MPI.COMM_WORLD
        n = problem.n_elements
        if problem.geometry == "interval":
            msh = compat.interval_mesh(comm, n)
        else:
            msh = compat.rectangle_mesh(comm, n, max(1, int(np.ceil(problem.width * n))), problem.width)
        V = compat.function_space(msh)
        u_tr, w = ufl.TrialFunction(V), ufl.TestFunction(V)
        K = fpetsc.assemble_matrix(fem.form(ufl.inner(ufl.grad(u_tr), ufl.grad(w)) * ufl.dx))
        K.assemble()
        # row sums of the P1 mass matrix = integral of each basis function (mass lumping)
        lumped = fpetsc.assemble_vector(fem.form(w * ufl.dx))
        lumped.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)

        ksp = PETSc.KSP().create(comm)
        ksp.setType("cg")
        ksp.getPC().setType("jacobi")
        ksp.setTolerances(rtol=self.rtol, atol=1e-50, max_it=100_000)

        n_owned = compat.num_owned_dofs(V)
        x_owned = V.tabulate_dof_coordinates()[:n_owned, 0].copy()
        m_owned = lumped.array[:n_owned].copy()
        face_local = np.flatnonzero(np.isclose(x_owned, 0.0)).astype(np.int32)
        first_row = V.dofmap.index_map.local_range[0]
        face_rows = (face_local + first_row).astype(PETSc.IntType)
        u_fn = fem.Function(V)
        u_vec = compat.petsc_vector(u_fn)
        rhs = u_vec.duplicate()
        xbc = u_vec.duplicate()
        diag = u_vec.duplicate()
        u = np.zeros(n_owned)
        v = np.zeros(n_owned)

        da, beta, kappa, rho = problem.da, problem.beta, problem.kappa, problem.rho
        t_abs = 0.0
        times: list[float] = []
        uh: list[np.ndarray] = []
        vh: list[np.ndarray] = []
        phase_mean_v: list[float] = []
        total_m = comm.allreduce(float(m_owned.sum()), op=MPI.SUM)

        for phase in problem.phases:
            xbc.set(0.0)
            xbc.array[face_local] = phase.bath
            prev = 0.0
            for t in problem.step_times(phase):
                dt = t - prev
                prev = t
                u_star = u
                for _ in range(problem.picard):
                    g = dt / (1.0 + dt * (beta * u_star + kappa))
                    A = K.copy()
                    A.scale(dt)
                    diag.array[:] = m_owned * (1.0 + da * g)
                    A.setDiagonal(diag, addv=PETSc.InsertMode.ADD_VALUES)
                    rhs.array[:] = m_owned * u + rho * g * (beta * u_star + kappa) * m_owned * v
                    A.zeroRowsColumns(face_rows, 1.0, xbc, rhs)
                    ksp.setOperators(A)
                    ksp.solve(rhs, u_vec)
                    A.destroy()
                    u_new = u_vec.array[:n_owned].copy()
                    v_new = binding_update(u_new, u_star, v, dt, beta, kappa)
                    u_star = u_new
                u, v = u_new, v_new
                if problem.record:
                    times.append(t_abs + t)
                    uh.append(self._gather(comm, u))
                    vh.append(self._gather(comm, v))
            t_abs += phase.duration
            phase_mean_v.append(comm.allreduce(float(m_owned @ v), op=MPI.SUM) / total_m)
        ksp.destroy()
        return BackendSolution(
            x=self._gather(comm, x_owned),
            weights=self._gather(comm, m_owned),
            u=self._gather(comm, u),
            v=self._gather(comm, v),
            times=np.asarray(times),
            phase_mean_v=phase_mean_v,
            u_history=np.asarray(uh) if problem.record else None,
            v_history=np.asarray(vh) if problem.record else None,
        )

    @staticmethod
    def _gather(comm: Any, local: np.ndarray) -> np.ndarray:
        """Concatenate owned values from every rank, on every rank."""
        if comm.size == 1:
            return np.asarray(local).copy()
        return np.concatenate(comm.allgather(np.asarray(local)))
