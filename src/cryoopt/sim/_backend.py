"""The dimensionless staining problem and the abstract FEM backend that solves it.

Every backend solves the same scaled problem, so backends can be swapped and
compared node for node. With ``u = c / c0`` (free antibody over bath
concentration), ``v = b / S`` (fraction of sites bound), depth ``x = X / l``
(``l`` = distance from an exposed face to the farthest point of the section) and
time ``tau = t D / l^2``::

    du/dtau = lap(u) - Da u (1 - v) + rho kappa v        (= lap(u) - rho dv/dtau)
    dv/dtau = beta u (1 - v) - kappa v

with ``Da = k_on S l^2 / D`` (Damkoehler number), ``beta = k_on c0 l^2 / D``,
``kappa = k_off l^2 / D`` and ``rho = S / c0 = Da / beta``. Boundary: ``u = u_bath``
on the exposed face ``x = 0`` (1 during incubation, 0 during washes), no flux at
``x = 1`` (the mid-plane for two exposed faces, the glass for one).

Discretisation (shared by all backends): P1 elements, lumped (vertex-quadrature)
mass so the scheme is positivity preserving at the sharp initial front, backward
Euler in time on a grid that is geometric from a small first step (resolves the
erfc layer at t -> 0 and the slow binding at t -> hours with the same number of
steps), and the binding term linearised per step with ``picard`` fixed-point
passes::

    g = dt / (1 + dt (beta u* + kappa))
    (M + dt K + Da g M) u' = M u + rho g (beta u* + kappa) M v
    v' = (v + dt beta u') / (1 + dt (beta u* + kappa))

which keeps ``0 <= v' < 1`` and conserves antibody exactly for ``u* = u'``.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field

import numpy as np

from cryoopt.registry import Registry
from cryoopt.sim._validation import check_choice, check_int, check_range

#: Staining FEM backends by name ("skfem", "dolfinx").
STAINING_BACKENDS: Registry[type[StainingBackend]] = Registry("staining backend")


@dataclass(frozen=True)
class Phase:
    """One stage of a protocol: ``duration`` (dimensionless) with the bath at ``bath`` (u units)."""

    duration: float
    bath: float


@dataclass(frozen=True)
class DimensionlessProblem:
    """The scaled diffusion-reaction problem every backend solves.

    Attributes:
        da: Damkoehler number ``k_on S l^2 / D``.
        beta: ``k_on c0 l^2 / D``.
        kappa: ``k_off l^2 / D``.
        phases: Consecutive stages (incubation at bath 1, washes at bath 0).
        geometry: ``"interval"`` (1-D through-thickness) or ``"rectangle"``
            (2-D cross-section, depth x lateral, lateral edges no-flux).
        width: Lateral extent of the rectangle in units of ``l``.
        n_elements: Elements along the depth (the rectangle uses
            ``n_elements x ceil(width n_elements)`` squares split in triangles).
        n_steps: Time steps per phase.
        grading: ``"geometric"`` (default) or ``"uniform"`` time steps.
        first_step: First step of a geometric grid, dimensionless.
        picard: Fixed-point passes per step for the binding term.
        record: Keep ``(t, u, v)`` after every step (for tabulation).
    """

    da: float
    beta: float
    kappa: float
    phases: tuple[Phase, ...]
    geometry: str = "interval"
    width: float = 0.25
    n_elements: int = 64
    n_steps: int = 120
    grading: str = "geometric"
    first_step: float = 1e-4
    picard: int = 2
    record: bool = False

    def __post_init__(self) -> None:
        check_range("da", self.da, 0.0)
        check_range("beta", self.beta, 0.0, low_inclusive=False)
        check_range("kappa", self.kappa, 0.0)
        check_choice("geometry", self.geometry, ("interval", "rectangle"))
        check_choice("grading", self.grading, ("geometric", "uniform"))
        check_int("n_elements", self.n_elements, 2, 10_000_000)
        check_int("n_steps", self.n_steps, 1, 10_000_000)
        check_int("picard", self.picard, 1, 20)
        check_range("width", self.width, 0.0, low_inclusive=False)
        check_range("first_step", self.first_step, 0.0, low_inclusive=False)
        if not self.phases:
            raise ValueError("phases must not be empty")
        for p in self.phases:
            check_range("phase duration", p.duration, 0.0)

    @property
    def rho(self) -> float:
        """``S / c0``."""
        return self.da / self.beta

    def step_times(self, phase: Phase) -> np.ndarray:
        """Times (from the start of ``phase``) at the end of each step, length ``n_steps``.

        The geometric grid spaces steps evenly in ``s(t) = sum_k log(1 + t/tau_k) /
        log(1 + T/tau_k)`` over three time scales: the first step, the diffusion time
        (1) and the binding time ``1 / (beta u_bath + kappa)``. The scales get 1/7, 2/7 and 4/7
        of the steps, so the erfc layer, the diffusion transient and the
        Langmuir kinetics are all resolved whatever their ratio.
        """
        n, T = self.n_steps, phase.duration
        if T == 0.0:
            return np.zeros(0)
        i = np.arange(1, n + 1) / n
        if self.grading == "uniform":
            return T * i
        rate = self.beta * phase.bath + self.kappa
        scales = [min(self.first_step, T / n), 1.0]
        if rate > 0.0:
            scales.append(1.0 / rate)
        tt = np.concatenate([[0.0], np.geomspace(min(scales[0], T) * 1e-3, T, 4000)])
        ss = np.zeros_like(tt)
        for weight, tau_k in zip((0.5, 1.0, 2.0), scales):
            ss += weight * np.log1p(tt / tau_k) / math.log1p(T / tau_k)
        ss /= ss[-1]
        t = np.interp(i, ss, tt)
        t[-1] = T
        return t


@dataclass
class BackendSolution:
    """Nodal result of a backend solve (gathered over MPI ranks).

    Attributes:
        x: Depth coordinate of every node, dimensionless in [0, 1].
        weights: Lumped mass of every node (sums to the domain measure).
        u: Free antibody at the end, ``c / c0``.
        v: Bound fraction at the end, ``b / S``.
        times: Dimensionless time after each recorded step.
        phase_mean_v: Mean bound fraction at the end of each phase.
        u_history, v_history: Nodal values after each recorded step (``record=True``).
    """

    x: np.ndarray
    weights: np.ndarray
    u: np.ndarray
    v: np.ndarray
    times: np.ndarray = field(default_factory=lambda: np.zeros(0))
    phase_mean_v: list[float] = field(default_factory=list)
    u_history: np.ndarray | None = None
    v_history: np.ndarray | None = None


class StainingBackend(abc.ABC):
    """A finite-element solver for :class:`DimensionlessProblem`.

    Subclasses write :meth:`_solve`; :meth:`solve` is the public entry point.
    ``available()`` says whether the backend's dependencies import here.
    """

    name: str = ""

    @classmethod
    def available(cls) -> bool:
        """Whether this backend can run in this interpreter."""
        return True

    def solve(self, problem: DimensionlessProblem) -> BackendSolution:
        """Solve ``problem`` and return nodal fields (checked finite)."""
        sol = self._solve(problem)
        if not (np.all(np.isfinite(sol.u)) and np.all(np.isfinite(sol.v))):
            from cryoopt.exceptions import SimulationError

            raise SimulationError(f"{self.name} backend produced non-finite values; reduce the time step (n_steps)")
        return sol

    @abc.abstractmethod
    def _solve(self, problem: DimensionlessProblem) -> BackendSolution:
        """Solve ``problem``."""


def binding_update(
    u_new: np.ndarray, u_star: np.ndarray, v_old: np.ndarray, dt: float, beta: float, kappa: float
) -> np.ndarray:
    """Nodal bound-fraction update shared by every backend (see module docstring)."""
    return (v_old + dt * beta * u_new) / (1.0 + dt * (beta * u_star + kappa))
