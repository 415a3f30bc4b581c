"""Every dolfinx version difference the staining backend touches, in one place.

Debian ships dolfinx 0.5.2; 0.7+ renamed ``FunctionSpace(mesh, ...)`` to
``functionspace``, ``Function.vector`` to ``Function.x.petsc_vec`` (0.8+), and
moved ``LinearProblem``/assembly under ``dolfinx.fem.petsc`` (already there in 0.5).
Keep the rest of the backend version-free by calling only these helpers.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def import_dolfinx() -> Any:
    """Import dolfinx (raises ImportError when missing)."""
    import dolfinx  # noqa: F401
    import dolfinx.fem.petsc  # noqa: F401
    import dolfinx.mesh  # noqa: F401

    return dolfinx


def version_tuple() -> tuple[int, int]:
    """``(major, minor)`` of the installed dolfinx."""
    import dolfinx

    major, minor = dolfinx.__version__.split(".")[:2]
    return int(major), int(minor)


def function_space(msh: Any, family: str = "Lagrange", degree: int = 1) -> Any:
    """A scalar Lagrange space (``FunctionSpace`` <= 0.6, ``functionspace`` >= 0.7)."""
    from dolfinx import fem

    if hasattr(fem, "functionspace"):
        return fem.functionspace(msh, (family, degree))
    return fem.FunctionSpace(msh, (family, degree))


def petsc_vector(func: Any) -> Any:
    """The PETSc Vec behind a Function (``.vector`` <= 0.7, ``.x.petsc_vec`` >= 0.8)."""
    x = func.x
    if hasattr(x, "petsc_vec"):
        return x.petsc_vec
    return func.vector


def interval_mesh(comm: Any, n: int, length: float = 1.0) -> Any:
    """Uniform mesh of ``[0, length]`` with ``n`` cells."""
    from dolfinx import mesh

    return mesh.create_interval(comm, n, [0.0, length])


def rectangle_mesh(comm: Any, nx: int, ny: int, width: float) -> Any:
    """Triangle mesh of ``[0, 1] x [0, width]``."""
    from dolfinx import mesh

    return mesh.create_rectangle(
        comm, [np.array([0.0, 0.0]), np.array([1.0, width])], [nx, ny], cell_type=mesh.CellType.triangle
    )


def num_owned_dofs(space: Any) -> int:
    """Number of dofs owned by this rank (ghosts excluded)."""
    im = space.dofmap.index_map
    return im.size_local * space.dofmap.index_map_bs
