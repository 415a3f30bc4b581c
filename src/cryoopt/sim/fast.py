"""Fast staining path for RL: a table built once from the FEM solver, then interpolated.

Why: a Gymnasium staining environment needs thousands of steps per second; one
FEM solve costs tens of milliseconds. This module solves the scaled problem of
:mod:`cryoopt.sim._backend` with the scikit-fem backend on a grid of
dimensionless inputs once per process (about a second, cached in memory) and
answers each call by trilinear interpolation in microseconds.

Dimensionless variables: when the bath concentration is small next to the site
density (``(c0 + K_d) / S << 1``, true for IgG dilutions of 1:50 and beyond on
uM-range epitopes), free antibody is quasi-steady and the labelling of the
incubation depends only on

- ``Da = k_on S l^2 / D`` (penetration: thin sections Da << 1, thick Da >> 1),
- ``theta = c0 / (c0 + K_d)`` (equilibrium occupancy),
- ``T = (k_on c0 + k_off) t`` (binding time),

tabulated at ``(c0 + K_d) / S = 0.01``. The table holds the mean label relative to
backward-Euler Langmuir kinetics solved on the same time steps (``dv/dT = 1 - v`` in
units of ``theta``); the answer is that ratio times the exact Langmuir curve
``theta (1 - exp(-T))``, so the first-order time-stepping error of the tabulation
cancels (it is the same in both) and the table reproduces the binding kinetics to the
accuracy of its interpolation. For ``Da`` beyond the table the sharp-front similarity
(the front moves as ``sqrt(2 T / Da)``) maps the query back inside. Washes are applied
in closed form: bound label decays as ``exp(-k_off t_wash)`` (rebinding negligible once
the bath is clear) and free antibody as the slowest slab mode
``exp(-(pi^2/4) t_wash D / l^2)`` plus what dissociation releases. Error against the
full solver at 1600 time steps (where its own time error is below 0.1 %), measured over
random protocols and checked in ``tests/sim/test_sim_fast.py``:

- cryosections (50-300 nm, any washes, incubations from a tenth to ten binding times):
  mean label within 1 % (measured 0.3 % at most), uniformity within 0.01;
- thick sections (3-100 um), no washes: mean label within 8 %, uniformity within 0.2;
- thick sections with washes: not reproduced (``reliable=False``), because free
  antibody inside keeps binding deeper during the wash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cryoopt.sim._backend import DimensionlessProblem, Phase, binding_update
from cryoopt.sim._skfem_backend import SkfemBackend
from cryoopt.sim.diffusion import SUMMARY_KEYS, StainingProtocol, TissueProperties, scales_for

__all__ = ["StainingSummary", "fast_staining", "staining_table"]

_LOG_DA = np.linspace(-3.0, 4.0, 15)
_LOGIT_THETA = np.linspace(-4.5, 5.5, 11)
_LOG_T = np.linspace(-3.0, 4.5, 46)
_RATIO = 0.01  # (c0 + K_d) / S used to build the table
_OUTPUTS = ("mean_v_over_langmuir", "uniformity", "penetration", "mean_u")
_TABLE: np.ndarray | None = None


@dataclass(frozen=True)
class StainingSummary:
    """Scalar outputs of a staining protocol (the fast path's result).

    Attributes mirror :class:`~cryoopt.sim.diffusion.StainingResult`:
    ``mean_label`` (fraction of sites bound after washes), ``uniformity`` (0-1),
    ``penetration_depth_nm``, ``free_antibody`` (fraction of bath concentration left),
    ``label_density_um`` and ``mean_label_before_wash``. ``reliable`` is False where
    the table's assumptions fail: thick sections (``Da > 1``) that are washed, where
    free antibody left inside keeps binding deeper during the wash; call
    :func:`~cryoopt.sim.diffusion.solve_staining` there.
    """

    mean_label: float
    uniformity: float
    penetration_depth_nm: float
    free_antibody: float
    label_density_um: float
    mean_label_before_wash: float
    reliable: bool = True
    backend: str = "fast"

    def summary(self) -> dict[str, float]:
        """Scalar outputs as a flat mapping (same keys as ``StainingResult.summary``)."""
        return {k: getattr(self, k) for k in SUMMARY_KEYS}


def _tabulate_one(da: float, theta: float, *, n_elements: int, n_steps: int) -> np.ndarray:
    """Outputs at every ``_LOG_T`` for one ``(Da, theta)``: shape ``(len(_LOG_T), 4)``."""
    k_obs = _RATIO * da  # (beta + kappa) in diffusion-time units: beta = ratio theta Da
    beta = theta * k_obs
    kappa = (1.0 - theta) * k_obs
    t_max = 10.0 ** _LOG_T[-1] / k_obs
    problem = DimensionlessProblem(
        da=da, beta=beta, kappa=kappa, phases=(Phase(t_max, 1.0),), n_elements=n_elements, n_steps=n_steps,
        first_step=min(0.05 / n_elements**2, 1e-3 / k_obs), picard=2, record=True,
    )
    sol = SkfemBackend().solve(problem)
    if sol.v_history is None or sol.u_history is None:  # pragma: no cover - record=True above
        raise RuntimeError("the tabulation solve did not record its history")
    w = sol.weights / sol.weights.sum()
    x, vh = sol.x, sol.v_history  # interval mesh: nodes already sorted by depth
    top = np.maximum(vh.max(axis=1), 1e-300)
    uni = vh.min(axis=1) / top
    half = 0.5 * vh[:, :1]
    below = vh < half
    first = np.where(below.any(axis=1), below.argmax(axis=1), 0)
    i1 = np.maximum(first, 1)
    p0, p1 = vh[np.arange(len(vh)), i1 - 1], vh[np.arange(len(vh)), i1]
    frac = (half[:, 0] - p0) / np.where(p1 != p0, p1 - p0, 1.0)
    pen = np.where(below.any(axis=1), x[i1 - 1] + frac * (x[i1] - x[i1 - 1]), 1.0)
    # backward-Euler Langmuir kinetics on the same steps (u = 1): its time error is the FEM's
    ode = np.empty(len(sol.times))
    b, prev_t = 0.0, 0.0
    for i, t in enumerate(sol.times):
        b = float(binding_update(np.ones(1), np.ones(1), np.array([b]), t - prev_t, beta, kappa)[0])
        prev_t = t
        ode[i] = b
    rec = np.stack([(vh @ w) / np.maximum(ode, 1e-300), uni, pen, sol.u_history @ w], axis=1)
    log_t = np.log10(sol.times * k_obs)
    return np.stack([np.interp(_LOG_T, log_t, rec[:, j]) for j in range(rec.shape[1])], axis=1)


def staining_table(*, n_elements: int = 32, n_steps: int = 100, rebuild: bool = False) -> np.ndarray:
    """The cached table, shape ``(n_Da, n_theta, n_T, 4)`` of (mean v over the same-step
    backward-Euler Langmuir solution, uniformity, penetration, mean u)."""
    global _TABLE
    if _TABLE is None or rebuild:
        table = np.empty((_LOG_DA.size, _LOGIT_THETA.size, _LOG_T.size, len(_OUTPUTS)))
        for i, lda in enumerate(_LOG_DA):
            for j, lt in enumerate(_LOGIT_THETA):
                theta = 1.0 / (1.0 + math.exp(-lt))
                table[i, j] = _tabulate_one(10.0**lda, theta, n_elements=n_elements, n_steps=n_steps)
        _TABLE = table
    return _TABLE


def _locate(value: float, grid: np.ndarray) -> tuple[int, float]:
    """Index of the cell of a uniform ``grid`` holding ``value`` (clamped) and the weight of its upper node."""
    step = grid[1] - grid[0]
    f = (min(max(value, grid[0]), grid[-1]) - grid[0]) / step
    i = min(int(f), grid.size - 2)
    return i, f - i


def _interpolate(table: np.ndarray, lda: float, lth: float, lt: float) -> np.ndarray:
    i, a = _locate(lda, _LOG_DA)
    j, b = _locate(lth, _LOGIT_THETA)
    k, c = _locate(lt, _LOG_T)
    cube = table[i : i + 2, j : j + 2, k : k + 2]
    wa = np.array([1.0 - a, a])
    wb = np.array([1.0 - b, b])
    wc = np.array([1.0 - c, c])
    return np.einsum("i,j,k,ijkl->l", wa, wb, wc, cube)


def fast_staining(protocol: StainingProtocol, *, tissue: TissueProperties | None = None) -> StainingSummary:
    """Staining outcome of ``protocol`` from the cached table (microseconds per call).

    The first call in a process builds the table (about a second).

    Args:
        protocol: The staining protocol.
        tissue: Tissue properties (defaults: :class:`TissueProperties`).

    Returns:
        The scalar outcome; see :class:`StainingSummary`.
    """
    tissue = tissue or TissueProperties()
    table = staining_table()
    s = scales_for(protocol, tissue)
    ell_nm = protocol.section_thickness_nm / protocol.faces
    t_inc = protocol.incubation_min * 60.0
    if t_inc <= 0.0:
        return StainingSummary(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, True)
    theta = s.theta_eq
    da = s.da
    t_bind = s.k_obs_per_s * t_inc
    if da > 10.0 ** _LOG_DA[-1]:  # sharp-front similarity: depends on T / Da only
        t_bind *= 10.0 ** _LOG_DA[-1] / da
        da = 10.0 ** _LOG_DA[-1]
    lt = max(math.log10(t_bind), _LOG_T[0])  # below the table: the ratio to Langmuir is that of its first row
    th = min(max(theta, 1e-12), 1.0 - 1e-12)
    ratio, uniformity, pen, mean_u = _interpolate(table, math.log10(max(da, 1e-300)), math.log(th / (1.0 - th)), lt)
    before = max(0.0, ratio * theta * -math.expm1(-t_bind))
    t_wash = protocol.wash_total_min * 60.0
    after = before * math.exp(-s.k_off_per_s * t_wash)
    tau_wash = t_wash / s.time_s
    clear = math.exp(-(math.pi**2 / 4.0) * min(tau_wash, 1e4))
    released = (s.sites_m / s.c0_m) * s.k_off_per_s * s.time_s * after / 3.0
    free = mean_u * clear + released * (1.0 - clear) if t_wash > 0 else mean_u
    return StainingSummary(
        mean_label=after,
        uniformity=float(min(max(uniformity, 0.0), 1.0)),
        penetration_depth_nm=float(min(max(pen, 0.0), 1.0) * ell_nm),
        free_antibody=float(free),
        label_density_um=after * tissue.site_density_um,
        mean_label_before_wash=before,
        reliable=bool(s.da <= 1.0 or t_wash == 0.0),
    )
