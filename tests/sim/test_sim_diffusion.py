"""Staining diffusion-reaction: analytic solutions, convergence, physics limits, inputs.

Analytic references (see cryoopt.sim.analytic): Crank, The Mathematics of Diffusion
(1975) eq. 2.45 (erfc), Danckwerts, Trans. Faraday Soc. 46, 300 (1950) (first-order
reaction), the cosh steady state (Crank 1975 section 14.2), Langmuir kinetics.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryoopt.exceptions import BackendUnavailableError, ParameterError
from cryoopt.sim._backend import DimensionlessProblem, Phase
from cryoopt.sim._skfem_backend import SkfemBackend
from cryoopt.sim.analytic import (
    danckwerts_profile,
    erfc_profile,
    langmuir_bound_fraction,
    slab_profile,
    steady_first_order_profile,
)
from cryoopt.sim.diffusion import (
    StainingProtocol,
    TissueProperties,
    resolve_backend,
    scales_for,
    solve_staining,
    time_to_uniformity,
)
from cryoopt.sim.temperature import arrhenius_factor, stokes_einstein_factor, water_viscosity_pa_s


def _linear(da: float, duration: float, n: int, steps: int, grading: str = "uniform") -> tuple[np.ndarray, np.ndarray]:
    """Solve the scaled problem with negligible site occupancy (beta -> 0): linear in u."""
    p = DimensionlessProblem(
        da=da, beta=1e-12, kappa=0.0, phases=(Phase(duration, 1.0),), n_elements=n, n_steps=steps,
        grading=grading, first_step=1e-6, picard=1,
    )
    s = SkfemBackend().solve(p)
    return s.x, s.u


def test_pure_diffusion_matches_erfc() -> None:
    # tau = 0.01: the far face sees erfc(5) ~ 1e-12, so the slab is semi-infinite
    x, u = _linear(0.0, 0.01, 200, 2000)
    err = np.abs(u - erfc_profile(x, 0.01, 1.0)).max()
    assert err < 1e-3  # measured 3.5e-5 (space) + 7e-4 (time, 2000 steps)


def test_space_convergence_is_second_order() -> None:
    errs = []
    for n in (20, 40, 80):
        x, u = _linear(0.0, 0.01, n, 5000)
        errs.append(np.abs(u - erfc_profile(x, 0.01, 1.0)).max())
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(orders > 1.8), (errs, orders)  # P1 with lumped mass: O(h^2), measured ~2.0


def test_time_convergence_is_first_order() -> None:
    errs = []
    for steps in (25, 50, 100):
        x, u = _linear(0.0, 0.01, 400, steps)
        errs.append(np.abs(u - erfc_profile(x, 0.01, 1.0)).max())
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all((orders > 0.9) & (orders < 1.2)), (errs, orders)  # backward Euler, measured ~1.0


def test_default_steps_meet_their_stated_error_on_the_crank_slab() -> None:
    # stated in solve_staining: at the default 64 elements and 120 backward-Euler steps the
    # slab's mean-square (L2) error against Crank eq. 4.17 stays below 2.5e-3 (measured
    # 0.5e-3 at tau = 0.02 to 2.1e-3 at tau = 1) and halves with twice the steps
    def l2(steps: int, tau: float) -> float:
        p = DimensionlessProblem(da=0.0, beta=1e-12, kappa=0.0, phases=(Phase(tau, 1.0),), n_elements=64, n_steps=steps, picard=1)
        s = SkfemBackend().solve(p)
        e = s.u - slab_profile(s.x, tau)
        return float(np.sqrt(np.sum(s.weights * e * e) / s.weights.sum()))

    at_default = [l2(120, tau) for tau in (0.02, 0.1, 1.0)]
    assert max(at_default) < 2.5e-3
    assert l2(240, 1.0) < 0.6 * at_default[-1]  # first order in time
    assert l2(240, 1.0) < 1.2e-3


def test_first_order_reaction_matches_danckwerts() -> None:
    # Da = 100 -> reaction length 0.1, penetration stays far from the back face at tau = 0.005
    x, u = _linear(100.0, 0.005, 100, 5000)
    err = np.abs(u - danckwerts_profile(x, 0.005, 1.0, 100.0)).max()
    assert err < 1e-3  # measured 2.5e-4


def test_steady_state_matches_cosh_profile() -> None:
    x, u = _linear(25.0, 20.0, 100, 400, grading="geometric")
    err = np.abs(u - steady_first_order_profile(x, 1.0, 1.0, 25.0)).max()
    assert err < 2e-4  # measured 3.8e-5


def test_thin_section_follows_langmuir_kinetics() -> None:
    # 100 nm: diffusion time ~1 ms << binding time ~100 s, so the section is well mixed
    tissue = TissueProperties()
    for minutes in (2.0, 20.0, 120.0):
        p = StainingProtocol(section_thickness_nm=100, antibody_dilution=500, incubation_min=minutes, wash_cycles=0)
        s = scales_for(p, tissue)
        expected = float(langmuir_bound_fraction(minutes * 60, s.c0_m, s.k_on_per_m_s, s.k_off_per_s))
        r = solve_staining(p, tissue=tissue, backend="skfem")
        assert r.mean_label == pytest.approx(expected, rel=0.01)
        assert r.uniformity > 0.999


def test_washing_dissociates_bound_label_at_k_off() -> None:
    tissue = TissueProperties()
    p = StainingProtocol(section_thickness_nm=100, antibody_dilution=100, incubation_min=60, wash_cycles=6, wash_min=20)
    r = solve_staining(p, tissue=tissue, backend="skfem", n_steps=800)  # backward Euler: 3% at 120 steps, 1/n
    k_off = scales_for(p, tissue).k_off_per_s
    assert r.mean_label == pytest.approx(r.mean_label_before_wash * math.exp(-k_off * 120 * 60), rel=0.01)
    assert r.free_antibody < 1e-3  # washed out


def test_thick_section_is_penetration_limited_and_uniformity_grows_with_time() -> None:
    short = solve_staining(StainingProtocol(section_thickness_nm=50_000, antibody_dilution=500, incubation_min=30), backend="skfem")
    long = solve_staining(StainingProtocol(section_thickness_nm=50_000, antibody_dilution=500, incubation_min=600), backend="skfem")
    assert short.uniformity < 0.2 and short.penetration_depth_nm < 10_000
    assert long.uniformity > short.uniformity and long.mean_label > short.mean_label
    assert short.bound_fraction[0] > short.bound_fraction[len(short.bound_fraction) // 2]


def test_rectangle_cross_section_equals_interval() -> None:
    p = StainingProtocol(section_thickness_nm=20_000, antibody_dilution=200, incubation_min=60)
    r1 = solve_staining(p, backend="skfem", n_elements=32)
    r2 = solve_staining(p, backend="skfem", n_elements=32, geometry="rectangle")
    assert r2.mean_label == pytest.approx(r1.mean_label, rel=1e-3)
    assert np.abs(r2.bound_fraction - r1.bound_fraction).max() < 2e-3


def test_one_face_takes_longer_than_two() -> None:
    two = time_to_uniformity(StainingProtocol(section_thickness_nm=20_000, antibody_dilution=200, incubation_min=1), 0.8)
    one = time_to_uniformity(StainingProtocol(section_thickness_nm=20_000, antibody_dilution=200, incubation_min=1, faces=1), 0.8)
    assert one > 2.0 * two  # the distance to cover doubles


def test_time_to_uniformity_is_consistent_with_solve() -> None:
    p = StainingProtocol(section_thickness_nm=30_000, antibody_dilution=200, incubation_min=1, wash_cycles=0)
    t = time_to_uniformity(p, 0.7)
    assert 1.0 < t < 10080.0
    r = solve_staining(StainingProtocol(section_thickness_nm=30_000, antibody_dilution=200, incubation_min=t, wash_cycles=0), backend="skfem", n_steps=400)
    assert r.uniformity == pytest.approx(0.7, abs=0.03)


def test_water_viscosity_and_temperature_scaling() -> None:
    # CRC Handbook: water viscosity 1.0016 mPa s at 20 C, 0.6527 mPa s at 40 C
    assert water_viscosity_pa_s(20.0) == pytest.approx(1.0016e-3, rel=0.01)
    assert water_viscosity_pa_s(40.0) == pytest.approx(0.6527e-3, rel=0.01)
    assert stokes_einstein_factor(37.0) == pytest.approx((310.15 / 293.15) * 1.0016 / 0.6913, rel=0.01)
    assert arrhenius_factor(30.0, 50.0) == pytest.approx(math.exp(-50e3 / 8.314 * (1 / 303.15 - 1 / 293.15)), rel=1e-4)
    warm = solve_staining(StainingProtocol(section_thickness_nm=100, antibody_dilution=500, incubation_min=10, temperature_c=37), backend="skfem")
    cold = solve_staining(StainingProtocol(section_thickness_nm=100, antibody_dilution=500, incubation_min=10, temperature_c=4), backend="skfem")
    assert warm.mean_label_before_wash > cold.mean_label_before_wash  # faster binding when warm


@pytest.mark.parametrize(
    ("field", "value"),
    [("section_thickness_nm", -5.0), ("antibody_dilution", 0.5), ("incubation_min", float("nan")), ("faces", 3), ("temperature_c", 90.0)],
)
def test_bad_protocol_raises_parameter_error_naming_the_field(field: str, value: float) -> None:
    kwargs = {"section_thickness_nm": 100.0, "antibody_dilution": 100.0, "incubation_min": 30.0, field: value}
    with pytest.raises(ParameterError, match=field):
        StainingProtocol(**kwargs)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ParameterError, match="backend"):
        resolve_backend("comsol")
    assert resolve_backend("auto") in ("skfem", "dolfinx")


def test_missing_backend_raises_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    from cryoopt.sim._dolfinx_backend import DolfinxBackend

    monkeypatch.setattr(DolfinxBackend, "available", classmethod(lambda cls: False))
    assert resolve_backend("auto") == "skfem"
    with pytest.raises(BackendUnavailableError):
        resolve_backend("dolfinx")
