"""Non-specific background of on-section immunolabelling: what sticks besides the antigen.

Antibody also binds, weakly and abundantly, to everything else in a fixed section
(hydrophobic and charged patches of the fixed proteins, the embedding gelatin), which
is why protocols block (BSA, fish-skin gelatin) and wash several times after each
antibody step (Slot & Geuze, Nat. Protoc. 2, 2480 (2007); Griffiths, *Fine Structure
Immunocytochemistry*, Springer (1993), ch. 9). Two populations, per unit section volume:

- reversible low-affinity sites (density ``site_density_um``, dissociation constant
  ``kd_um``, off-rate ``k_off_per_s``): they fill within minutes, in proportion to the
  antibody concentration ``c0 / (c0 + K)``, and empty during washes as
  ``exp(-k_off t_wash)`` (one 2-min wash removes about half at the default
  ``k_off = 5e-3 /s``);
- irreversible adsorption (aggregates, denatured IgG) that grows with concentration
  and time, ``adsorption_per_s * c0 * t``, and that washing does not remove.

So background grows with concentration and incubation time and falls with washes,
while the specific label saturates: the usual trade-off behind a primary's working
dilution. The numbers are model choices (no published per-site constants exist for a
fixed section): with the defaults a 1:100 dilution of a 1 mg/ml IgG stock for 30 min
followed by three 1-min washes leaves about 2.5 % of the specific label density of a
1.5 uM antigen as background (a clean immunofluorescence), unwashed about 6 %, and a
1:20 dilution without washes about 22 %: summed over a cell's area, enough to outline
every cell in the fluorescence image.
Rates follow Arrhenius with ``ea_kj_mol``.

Example:
    >>> from cryoopt.sim.diffusion import StainingProtocol
    >>> p = StainingProtocol(section_thickness_nm=70, antibody_dilution=100, incubation_min=30, wash_cycles=3, wash_min=1)
    >>> 0.0 < nonspecific_label_um(p) < 1.0
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from cryoopt.sim._validation import check_range, float_fields_from_dict
from cryoopt.sim.diffusion import StainingProtocol
from cryoopt.sim.temperature import arrhenius_factor

__all__ = ["NonspecificBinding", "nonspecific_label_um"]


@dataclass(frozen=True)
class NonspecificBinding:
    """Non-specific binding of the antibody to a fixed section (at 20 C).

    Attributes:
        site_density_um: Low-affinity sites per section volume, uM.
        kd_um: Their dissociation constant, uM.
        k_off_per_s: Their off-rate, /s (sets how fast washes remove them).
        adsorption_per_s: Irreversible adsorption, uM adsorbed per uM antibody per second.
        ea_kj_mol: Activation energy of both rates, kJ/mol.
    """

    site_density_um: float = 3.0
    kd_um: float = 3.0
    k_off_per_s: float = 5e-3
    adsorption_per_s: float = 5e-5
    ea_kj_mol: float = 30.0

    def __post_init__(self) -> None:
        check_range("site_density_um", self.site_density_um, 0.0, 1e5)
        check_range("kd_um", self.kd_um, 1e-6, 1e6)
        check_range("k_off_per_s", self.k_off_per_s, 0.0, 10.0)
        check_range("adsorption_per_s", self.adsorption_per_s, 0.0, 1.0)
        check_range("ea_kj_mol", self.ea_kj_mol, 0.0, 300.0)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NonspecificBinding:
        """Build from a preset's ``nonspecific:`` mapping (unknown keys are refused)."""
        return float_fields_from_dict(cls, data, "nonspecific-binding properties")

    def to_dict(self) -> dict[str, float]:
        """Plain mapping (for logging)."""
        return asdict(self)


def nonspecific_label_um(protocol: StainingProtocol, binding: NonspecificBinding | None = None) -> float:
    """Non-specifically bound antibody left after ``protocol``'s incubation and washes, uM.

    Args:
        protocol: The staining protocol (concentration, incubation, temperature, washes).
        binding: The section's non-specific binding (defaults: :class:`NonspecificBinding`).

    Returns:
        Background antibody per section volume, uM (compare with the specific label
        density ``mean_label * site_density_um``).
    """
    b = binding or NonspecificBinding()
    factor = arrhenius_factor(protocol.temperature_c, b.ea_kj_mol)
    c_um = protocol.concentration_nm * 1e-3
    t_s = protocol.incubation_min * 60.0
    k_off = b.k_off_per_s * factor
    k_obs = k_off * (1.0 + c_um / b.kd_um)  # k_on c0 + k_off with k_on = k_off / K
    reversible = b.site_density_um * c_um / (c_um + b.kd_um) * -math.expm1(-k_obs * t_s)
    reversible *= math.exp(-k_off * protocol.wash_total_min * 60.0)
    adsorbed = b.adsorption_per_s * factor * c_um * t_s
    return float(reversible + adsorbed)
