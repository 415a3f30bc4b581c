"""Temperature scaling of antibody transport and binding.

Why a module of its own: the staining solver, its fast tabulated path and the
instrument simulators all need the same D(T), k_on(T), k_off(T).

- Diffusivity follows Stokes-Einstein, ``D ~ T / eta(T)``, with the viscosity of
  water from the Vogel equation ``eta = A 10^(B / (T - C))``, A = 2.414e-5 Pa s,
  B = 247.8 K, C = 140 K (CRC Handbook fit, valid 0-370 C).
- Rate constants follow Arrhenius, ``k(T) = k_ref exp(-Ea/R (1/T - 1/T_ref))``.
  Antibody-antigen association is partly diffusion-influenced (Ea of a few tens of
  kJ/mol) and dissociation has larger activation energies (typically 50-120 kJ/mol
  in SPR temperature series); the defaults in :class:`~cryoopt.sim.diffusion.TissueProperties`
  sit inside those ranges.
"""

from __future__ import annotations

import math

from cryoopt.sim._validation import check_range

#: Gas constant, J/(mol K).
R_J_MOL_K = 8.314462618
#: Reference temperature for tabulated tissue properties, deg C.
T_REF_C = 20.0


def kelvin(temperature_c: float) -> float:
    """Convert deg C to K."""
    return temperature_c + 273.15


def water_viscosity_pa_s(temperature_c: float) -> float:
    """Dynamic viscosity of water (Vogel equation), Pa s.

    Args:
        temperature_c: Temperature in deg C, within [-10, 100] (supercooled to boiling).

    Returns:
        Viscosity in Pa s (1.002e-3 at 20 C).
    """
    check_range("temperature_c", temperature_c, -10.0, 100.0)
    return 2.414e-5 * 10.0 ** (247.8 / (kelvin(temperature_c) - 140.0))


def stokes_einstein_factor(temperature_c: float, *, reference_c: float = T_REF_C) -> float:
    """``D(T) / D(T_ref)`` from Stokes-Einstein, ``D = k_B T / (6 pi eta r)``."""
    t, t0 = kelvin(temperature_c), kelvin(reference_c)
    return (t / t0) * (water_viscosity_pa_s(reference_c) / water_viscosity_pa_s(temperature_c))


def arrhenius_factor(temperature_c: float, activation_kj_mol: float, *, reference_c: float = T_REF_C) -> float:
    """``k(T) / k(T_ref)`` for an Arrhenius rate with activation energy in kJ/mol."""
    check_range("activation_kj_mol", activation_kj_mol, 0.0, 500.0)
    t, t0 = kelvin(temperature_c), kelvin(reference_c)
    return math.exp(-activation_kj_mol * 1e3 / R_J_MOL_K * (1.0 / t - 1.0 / t0))
