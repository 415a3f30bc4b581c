"""Cryo-ultramicrotomy section quality: defects as functions of the cutting setpoints.

An algebraic, stochastic model (microseconds per cut) of what a microscopist sees
on a ribbon of vitreous or Tokuyasu cryosections:

- Workable window (CEMOVIS practice; Al-Amoudi, Studer & Dubochet, J. Struct.
  Biol. 150, 109 (2005); Studer et al., Histochem. Cell Biol. 130, 877 (2008)):
  nominal feed 50-200 nm, cutting speed 0.4-1.6 mm/s, specimen and knife at
  -140 to -160 C with the chamber near them. Outside it ribbons stop forming
  (sections crumble, stick to the knife or fly off); the failure probability rises
  smoothly with the distance outside the window.
- Compression along the cutting direction of 20-60 % (Al-Amoudi et al. 2005;
  Han, Zuber & Dubochet, J. Microsc. 230, 167 (2008)); modelled as rising with
  knife wear and cutting speed and falling slightly with thickness.
- Crevasses (cracks on the knife-facing side) are rare below ~70 nm and dominate
  thick sections, worse at colder temperature (Al-Amoudi et al. 2005; Han et al. 2008).
- Chatter (periodic thickness variation) appears at high speed and thin feeds.
- Knife marks (lines along the cutting direction) grow with knife wear; the wear
  grows with every cut, faster for thick sections and high speed.

Example:
    >>> model = SectioningModel(seed=0)
    >>> q = model.cut(SectioningSetpoints(section_thickness_nm=100, cutting_speed_mm_s=1.0))
    >>> 0.0 <= q.compression < 1.0
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from cryoopt.sim._validation import as_generator, check_range

__all__ = ["SectioningSetpoints", "SectionQuality", "SectioningModel", "WORKABLE_WINDOW"]

#: Workable ranges (low, high) from the literature cited in the module docstring.
WORKABLE_WINDOW: dict[str, tuple[float, float]] = {
    "section_thickness_nm": (50.0, 200.0),
    "cutting_speed_mm_s": (0.4, 1.6),
    "specimen_temp_c": (-160.0, -140.0),
    "knife_temp_c": (-160.0, -140.0),
    "chamber_temp_c": (-165.0, -135.0),
}


@dataclass(frozen=True)
class SectioningSetpoints:
    """Setpoints of one cut.

    Attributes:
        section_thickness_nm: Nominal feed, 5-1000 nm.
        cutting_speed_mm_s: Knife speed through the block, 0.01-100 mm/s.
        specimen_temp_c: Specimen arm temperature, -196 to 0 C.
        knife_temp_c: Knife temperature, -196 to 0 C.
        chamber_temp_c: Cryo-chamber gas temperature, -196 to 0 C.
    """

    section_thickness_nm: float
    cutting_speed_mm_s: float
    specimen_temp_c: float = -150.0
    knife_temp_c: float = -150.0
    chamber_temp_c: float = -150.0

    def __post_init__(self) -> None:
        check_range("section_thickness_nm", self.section_thickness_nm, 5.0, 1000.0)
        check_range("cutting_speed_mm_s", self.cutting_speed_mm_s, 0.01, 100.0)
        for name in ("specimen_temp_c", "knife_temp_c", "chamber_temp_c"):
            check_range(name, getattr(self, name), -196.0, 0.0)


@dataclass(frozen=True)
class SectionQuality:
    """Quality of one section.

    Attributes:
        ribbon_ok: Whether the section joined a usable ribbon.
        thickness_nm: Actual mean thickness, nm.
        thickness_error_nm: Actual minus nominal thickness, nm.
        compression: Fractional shortening along the cutting direction, 0-1.
        chatter: Amplitude of periodic thickness variation relative to thickness, 0-1.
        crack_density_per_um: Crevasses per micrometre along the cut.
        knife_marks: Number of knife marks across a 100 um wide section.
        wear: Knife wear after this cut, 0 (new) to 1 (unusable).
        failure_probability: Model probability that this cut fails.
    """

    ribbon_ok: bool
    thickness_nm: float
    thickness_error_nm: float
    compression: float
    chatter: float
    crack_density_per_um: float
    knife_marks: int
    wear: float
    failure_probability: float

    @property
    def ribbon_failed(self) -> bool:
        """True when no usable section came off the knife."""
        return not self.ribbon_ok

    def to_dict(self) -> dict[str, float | int | bool]:
        """Plain mapping (for logs and observations)."""
        return asdict(self)


def _outside(value: float, low: float, high: float, *, log: bool = False) -> float:
    """Distance outside ``[low, high]`` relative to the window width (0 inside)."""
    if log:
        value, low, high = math.log(value), math.log(low), math.log(high)
    width = high - low
    if value < low:
        return (low - value) / width
    if value > high:
        return (value - high) / width
    return 0.0


class SectioningModel:
    """A seeded ultramicrotome + knife whose sections vary stochastically and whose knife wears.

    Args:
        seed: Integer seed (or pass ``rng``).
        rng: A ``numpy.random.Generator``.
        knife_wear: Initial wear, 0 (fresh diamond edge) to 1.
        wear_per_cut: Wear added by a 100 nm cut at 1 mm/s (thicker and faster wear more).
        section_width_um: Block face width, used for knife-mark counts.
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        knife_wear: float = 0.0,
        wear_per_cut: float = 2e-4,
        section_width_um: float = 100.0,
    ) -> None:
        self._rng = as_generator(rng, seed=seed)
        self.wear = check_range("knife_wear", knife_wear, 0.0, 1.0)
        self.wear_per_cut = check_range("wear_per_cut", wear_per_cut, 0.0, 0.1)
        self.section_width_um = check_range("section_width_um", section_width_um, 1.0, 10_000.0)
        self.cuts = 0

    def failure_probability(self, setpoints: SectioningSetpoints) -> float:
        """Probability that a cut at ``setpoints`` yields no usable section (deterministic)."""
        s = setpoints
        w = WORKABLE_WINDOW
        d = (
            _outside(s.section_thickness_nm, *w["section_thickness_nm"], log=True)
            + _outside(s.cutting_speed_mm_s, *w["cutting_speed_mm_s"], log=True)
            + _outside(s.specimen_temp_c, *w["specimen_temp_c"])
            + _outside(s.knife_temp_c, *w["knife_temp_c"])
            + _outside(s.chamber_temp_c, *w["chamber_temp_c"])
            + max(0.0, abs(s.knife_temp_c - s.specimen_temp_c) - 10.0) / 20.0  # sticking / static
        )
        z = 8.0 * d + 4.0 * self.wear**2 - 3.5
        return 1.0 / (1.0 + math.exp(-z))

    def cut(self, setpoints: SectioningSetpoints) -> SectionQuality:
        """Cut one section, draw its defects and advance the knife wear."""
        s, rng = setpoints, self._rng
        t, v = s.section_thickness_nm, s.cutting_speed_mm_s
        p_fail = self.failure_probability(s)
        z = rng.standard_normal(5)
        ok = bool(rng.random() >= p_fail)
        # thickness: feed error grows for thin feeds, fast cuts and a worn edge (nm)
        sigma_t = 3.0 + 0.06 * t * (1.0 + 2.0 * self.wear) + 4.0 * max(0.0, math.log(v / 1.6))
        bias = -0.08 * t * self.wear  # a blunt edge skips material (thin, uneven sections)
        err = bias + sigma_t * z[0]
        thickness = max(1.0, t + err)
        compression = 0.30 + 0.25 * self.wear + 0.06 * math.log(v / 0.8) - 0.04 * math.log(t / 100.0) + 0.03 * z[1]
        compression = min(max(compression, 0.0), 0.95)
        chatter = 0.02 + 0.08 * max(0.0, math.log(v / 1.6)) + 0.04 * max(0.0, math.log(70.0 / t)) + 0.1 * self.wear
        chatter = min(max(chatter * math.exp(0.25 * z[2]), 0.0), 1.0)
        cold = max(0.0, (-150.0 - s.specimen_temp_c) / 10.0)
        crack_mean = 0.05 + 1.2 * max(0.0, (t - 70.0) / 100.0) ** 2 * (1.0 + 0.5 * cold) + 0.3 * self.wear
        crack = crack_mean * math.exp(0.3 * z[3])
        marks = int(rng.poisson(self.section_width_um / 100.0 * (0.2 + 12.0 * self.wear**1.5)))
        self.wear = min(1.0, self.wear + self.wear_per_cut * (t / 100.0) * (0.5 + 0.5 * v) * math.exp(0.2 * z[4]))
        self.cuts += 1
        return SectionQuality(
            ribbon_ok=ok,
            thickness_nm=thickness,
            thickness_error_nm=thickness - t,
            compression=compression,
            chatter=chatter,
            crack_density_per_um=crack,
            knife_marks=marks,
            wear=self.wear,
            failure_probability=p_fail,
        )
