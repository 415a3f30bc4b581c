"""Tokuyasu cryo-ultramicrotomy: section quality from the cutting setpoints and the state of knife and block.

The workflow modelled is the Tokuyasu thawed-cryosection technique used for on-section
immunolabelling and CLEM: aldehyde-fixed specimens infused with 2.3 M sucrose, frozen,
cut dry at -100 to -125 C, thawed on a sucrose/methylcellulose droplet, labelled at
room temperature and dried in methylcellulose/uranyl acetate (Tokuyasu, J. Cell Biol.
57, 551 (1973); Tokuyasu, J. Microsc. 143, 139 (1986); Slot & Geuze, Nat. Protoc. 2,
2480 (2007); Peters & Pierson, Methods Cell Biol. 88, 131 (2008)). It is an algebraic,
stochastic model (microseconds per cut); every number below names where it comes from
or says that it is a model choice.

Cutting temperature (:data:`TOKUYASU_WINDOW`, :func:`optimal_cutting_temperature_c`):
ultrathin sections are cut at about -120 C (50-70 nm), thicker ones warmer, semithin
sections and trimming at -80 to -100 C (Tokuyasu 1986; Slot & Geuze 2007; Peters &
Pierson 2008). Sucrose-infused blocks get harder and more brittle the colder they are
(Tokuyasu 1973): too cold, sections crack and chatter; too warm, they compress,
smear and stick instead of forming a ribbon. The best block temperature for a feed
``t`` is modelled as ``-120 C + 13 C log2(t / 60 nm)``: -120 C at 60 nm, -111 C at 95 nm,
-103 C at 150 nm, -90 to -80 C for semithin sections of 300-500 nm. Away from it, per
degree ``dT`` of error (model choices): a cold block cracks (crevasse density
``5 (dT / 10 C)^2`` per um) and chatters; a warm one compresses and smears (``10 nm`` per
``5 C`` and more);
ribbons keep forming on a plateau of a few degrees (``-3 C <= dT <= +2 C``) and then
fail steeply, a warm, sticky block sooner (scale 3.5 C) than a cold, brittle one (5 C),
up to 60 % of cuts (usable sections still come off, cracked or smeared). Outside the
thickness and speed windows every cut can fail.

Thickness as cut and as imaged: frozen sections are compressed along the cut and
recover their shape on thawing; drying collapses them: 110 nm frozen-hydrated sections
became 30-50 nm when air dried and 70 nm when dried in methylcellulose (Griffiths,
McDowall, Back & Dubochet, J. Ultrastruct. Res. 89, 65 (1984)). The imaged thickness is
``DRIED_THICKNESS_FRACTION = 70/110`` of the cut thickness (methylcellulose drying); the
compression left after thawing (a few per cent, more for warm, soft blocks and a
contaminated edge) distorts the imaged section.

Knife and block state, which change within a block and which a controller can see and
correct (model choices, documented where the numbers are not published):

- Wear of the diamond edge: slow (``wear_per_cut`` 2e-4 per 100 nm cut at 1 mm/s, an
  edge region lasting thousands of ultrathin sections); debris and frost picked up by
  the edge during a session grow much faster (``debris_per_cut``, drawn per block).
  Both raise chatter (more at high speed), knife marks and compression. Slowing down
  reduces the chatter of a dirty edge; a fresh edge region (moving the knife) resets
  both. Cutting very slowly lets dry sections stick to the knife instead of gliding
  into a ribbon, so the best speed falls as the edge degrades.
- Temperature drift: the specimen and knife temperatures depart from their setpoints
  by an offset that grows section by section (``temperature_drift_c_per_cut``, drawn
  per block, of either sign): a regulation loop holds its setpoint with an offset
  (droop) proportional to the heat load it fights, and that load changes with the LN2
  level of the dewar, colder after a refill and warmer as it empties. The instrument's
  measured temperatures show the offset, and moving the setpoints the other way cancels
  it. The rates (the scenarios' ``block`` ranges: the reference neurons scenario warms by
  1.2-3.4 C per section cycle of cutting, labelling and imaging, about 45 min) are a model
  choice, sized so that an uncorrected block leaves its temperature window within a
  block of 8 sections while a corrected one stays in it.
- Cracks carry over: a crevasse opened in the block face propagates into the next
  sections with a probability that is larger when the block is too cold.
- Depth: the block face recedes by the feed of every stroke, failed ones included
  (``depth_nm``, the running sum of the feeds), never by ``index x thickness``.

Example:
    >>> model = SectioningModel(seed=0)
    >>> q = model.cut(SectioningSetpoints(section_thickness_nm=70, cutting_speed_mm_s=0.8))
    >>> 0.0 <= q.compression < 1.0 and q.imaged_thickness_nm < q.thickness_nm
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from cryoopt.sim._validation import as_generator, check_range

__all__ = [
    "DRIED_THICKNESS_FRACTION",
    "SectionQuality",
    "SectioningModel",
    "SectioningSetpoints",
    "TOKUYASU_WINDOW",
    "WORKABLE_WINDOW",
    "optimal_cutting_temperature_c",
]

#: Workable ranges (low, high) of ultrathin Tokuyasu sectioning (sources in the module
#: docstring). Thickness: ultrathin sections of 50-100 nm are the norm for labelling and
#: EM (Slot & Geuze 2007), the model tolerates up to 150 nm; speed: a model window for a
#: dry diamond knife. Knife and chamber are kept at about the specimen temperature.
TOKUYASU_WINDOW: dict[str, tuple[float, float]] = {
    "section_thickness_nm": (50.0, 150.0),
    "cutting_speed_mm_s": (0.2, 2.0),
    "specimen_temp_c": (-125.0, -100.0),
    "knife_temp_c": (-125.0, -100.0),
    "chamber_temp_c": (-135.0, -100.0),
}
#: Former name, kept for callers that read the window.
WORKABLE_WINDOW = TOKUYASU_WINDOW

#: Imaged / cut thickness after methylcellulose drying (110 nm -> 70 nm, Griffiths et al. 1984).
DRIED_THICKNESS_FRACTION = 70.0 / 110.0

#: Largest failure probability a wrong temperature alone causes (model choice: even far from
#: the best temperature an occasional usable section comes off; windows of thickness and
#: speed can still fail every cut).
_TEMP_FAILURE_MAX = 0.6


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def optimal_cutting_temperature_c(thickness_nm: float) -> float:
    """Best block temperature for a feed of ``thickness_nm``: ``-120 + 13 log2(t / 60 nm)`` C,
    clipped to [-130, -70] C (ultrathin at -120 C, semithin at -80 to -100 C; see module docstring)."""
    t = check_range("thickness_nm", thickness_nm, 1.0, 1e5)
    return float(min(max(-120.0 + 13.0 * math.log2(t / 60.0), -130.0), -70.0))


@dataclass(frozen=True)
class SectioningSetpoints:
    """Setpoints of one cut.

    Attributes:
        section_thickness_nm: Nominal feed, 5-1000 nm.
        cutting_speed_mm_s: Knife speed through the block, 0.01-100 mm/s.
        specimen_temp_c: Specimen arm setpoint, -196 to 0 C.
        knife_temp_c: Knife setpoint, -196 to 0 C.
        chamber_temp_c: Cryo-chamber gas setpoint, -196 to 0 C.
    """

    section_thickness_nm: float
    cutting_speed_mm_s: float
    specimen_temp_c: float = -120.0
    knife_temp_c: float = -120.0
    chamber_temp_c: float = -120.0

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
        thickness_nm: Actual mean thickness as cut, nm.
        thickness_error_nm: Actual minus nominal thickness, nm.
        imaged_thickness_nm: Thickness after thawing and methylcellulose drying, nm.
        compression: Fractional shortening along the cut left after thawing, 0-1.
        chatter: Amplitude of periodic thickness variation relative to thickness, 0-1.
        crack_density_per_um: Crevasses per micrometre along the cut.
        crack_carried: Whether a crack from the previous sections ran into this one.
        knife_marks: Number of knife marks across a 100 um wide section.
        smear_nm: Lateral smearing of soft (too warm) sections, nm: ``10 dT/5 + 6 (dT/5)^2``.
        wear: Wear of the edge region after this cut, 0 (new) to 1 (unusable).
        edge_debris: Debris and frost on the edge region after this cut, 0 to 1.
        specimen_temp_c: Measured specimen (block) temperature at the cut, C.
        knife_temp_c: Measured knife temperature at the cut, C.
        depth_nm: Depth of the section's top below the block face at the first cut, nm.
        failure_probability: Model probability that this cut fails.
    """

    ribbon_ok: bool
    thickness_nm: float
    thickness_error_nm: float
    imaged_thickness_nm: float
    compression: float
    chatter: float
    crack_density_per_um: float
    crack_carried: bool
    knife_marks: int
    smear_nm: float
    wear: float
    edge_debris: float
    specimen_temp_c: float
    knife_temp_c: float
    depth_nm: float
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
    """A seeded cryo-ultramicrotome whose sections vary stochastically and whose knife and block drift.

    Args:
        seed: Integer seed (or pass ``rng``).
        rng: A ``numpy.random.Generator``.
        knife_wear: Initial wear of the edge region, 0 (fresh diamond edge) to 1.
        wear_per_cut: Wear added by a 100 nm cut at 1 mm/s (thicker and faster wear more).
        debris_per_cut: Debris/frost picked up by the edge per 100 nm cut (0 to 0.2).
        temperature_drift_c_per_cut: Growth per cut of the offset between measured
            specimen/knife temperatures and their setpoints, C (-5 to 5).
        section_width_um: Block face width, used for knife-mark counts.
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        knife_wear: float = 0.0,
        wear_per_cut: float = 2e-4,
        debris_per_cut: float = 0.0,
        temperature_drift_c_per_cut: float = 0.0,
        section_width_um: float = 100.0,
    ) -> None:
        self._rng = as_generator(rng, seed=seed)
        self.wear = check_range("knife_wear", knife_wear, 0.0, 1.0)
        self.wear_per_cut = check_range("wear_per_cut", wear_per_cut, 0.0, 0.1)
        self.debris_per_cut = check_range("debris_per_cut", debris_per_cut, 0.0, 0.2)
        self.temperature_drift_c_per_cut = check_range("temperature_drift_c_per_cut", temperature_drift_c_per_cut, -5.0, 5.0)
        self.section_width_um = check_range("section_width_um", section_width_um, 1.0, 10_000.0)
        self.debris = 0.0
        self.temperature_offset_c = 0.0
        self.crack_open = False
        self.depth_nm = 0.0
        self.cuts = 0

    @property
    def edge(self) -> float:
        """Condition of the edge region in use: wear plus debris, 0 (pristine) to 1."""
        return min(self.wear + self.debris, 1.0)

    def fresh_edge(self, *, wear: float = 0.0) -> None:
        """Move the knife to a fresh edge region: wear ``wear``, no debris."""
        self.wear = check_range("wear", wear, 0.0, 1.0)
        self.debris = 0.0

    def measured_temperatures(self, setpoints: SectioningSetpoints) -> tuple[float, float]:
        """``(specimen, knife)`` temperatures the instrument measures now (setpoint + drift offset), C."""
        return setpoints.specimen_temp_c + self.temperature_offset_c, setpoints.knife_temp_c + self.temperature_offset_c

    def temperature_error_c(self, setpoints: SectioningSetpoints) -> float:
        """Measured block temperature minus the best one for this feed, C (negative: too cold)."""
        spec, _ = self.measured_temperatures(setpoints)
        return spec - optimal_cutting_temperature_c(setpoints.section_thickness_nm)

    def failure_probability(self, setpoints: SectioningSetpoints) -> float:
        """Probability that a cut at ``setpoints`` yields no usable section (deterministic given the state)."""
        s = setpoints
        w = TOKUYASU_WINDOW
        spec, knife = self.measured_temperatures(s)
        dt = spec - optimal_cutting_temperature_c(s.section_thickness_nm)
        d = (
            1.6 * _outside(s.section_thickness_nm, 40.0, 300.0, log=True)  # ultrathin to semithin feeds
            + _outside(s.cutting_speed_mm_s, *w["cutting_speed_mm_s"], log=True)
            + max(0.0, abs(knife - spec) - 15.0) / 15.0  # knife much colder/warmer: sections stick or fly (static)
            + max(0.0, s.chamber_temp_c - spec - 15.0) / 15.0  # warm chamber gas: frost on the block face
        )
        slow = max(0.0, math.log(0.5 / s.cutting_speed_mm_s))  # dry sections stick to a slow knife
        z = -3.4 + 5.0 * d + 2.0 * slow * slow + 3.0 * self.edge**2
        p_other = 1.0 / (1.0 + math.exp(-z))
        # temperature: a plateau of a few degrees, then a cliff; capped (a stray usable section comes off)
        t = (max(0.0, dt - 2.0) / 3.5) ** 2 + (max(0.0, -dt - 3.0) / 5.0) ** 2
        p_temp = _TEMP_FAILURE_MAX * (_sigmoid(t - 3.4) - _sigmoid(-3.4)) / (1.0 - _sigmoid(-3.4))
        return 1.0 - (1.0 - p_other) * (1.0 - p_temp)

    def cut(self, setpoints: SectioningSetpoints) -> SectionQuality:
        """Cut one section, draw its defects and advance knife, temperature drift and depth."""
        s, rng = setpoints, self._rng
        t, v = s.section_thickness_nm, s.cutting_speed_mm_s
        p_fail = self.failure_probability(s)
        spec, knife = self.measured_temperatures(s)
        dt = spec - optimal_cutting_temperature_c(t)
        cold, warm = max(0.0, -dt) / 10.0, max(0.0, dt) / 5.0  # in units of each side's scale
        edge = self.edge
        z = rng.standard_normal(7)
        ok = bool(rng.random() >= p_fail)
        # feed error: larger for thick feeds and a worn edge; a blunt edge skips material (nm)
        sigma_t = 2.0 + 0.05 * t * (1.0 + 2.0 * edge)
        err = -0.08 * t * edge + sigma_t * z[0]
        thickness = max(1.0, t + err)
        # compression left after thawing on sucrose/methylcellulose (Griffiths et al. 1984: profiles recover)
        compression = 0.04 + 0.04 * warm + 0.03 * warm * warm + 0.2 * edge + 0.03 * max(0.0, math.log(v / 0.6)) + 0.01 * z[1]
        compression = min(max(compression, 0.0), 0.6)
        # chatter: vibration of a dirty/worn edge grows with speed; brittle (cold) blocks chatter too
        chatter = (0.015 + 0.5 * edge) * (v / 0.6) + 0.04 * cold
        chatter = min(max(chatter * math.exp(0.2 * z[2]), 0.0), 1.0)
        # crevasses: cold, brittle blocks and thick feeds; a crack in the block face runs on
        crack_mean = 0.03 + 5.0 * cold * cold * (t / 70.0) + 0.8 * max(0.0, (t - 110.0) / 100.0) ** 2 + 0.2 * edge
        carried = self.crack_open
        if carried:
            crack_mean += 0.6
        crack = crack_mean * math.exp(0.3 * z[3])
        p_propagate = 0.45 + 0.4 * min(cold, 1.0)  # cracks run on through a brittle block
        self.crack_open = bool(rng.random() < (p_propagate if carried else 1.0 - math.exp(-0.4 * crack)))
        marks = int(rng.poisson(self.section_width_um / 100.0 * (0.2 + 10.0 * edge**1.5)))
        smear = min(10.0 * warm + 6.0 * warm * warm, 80.0)
        top = self.depth_nm
        # state for the next cut
        self.wear = min(1.0, self.wear + self.wear_per_cut * (t / 100.0) * (0.5 + 0.5 * v) * math.exp(0.2 * z[4]))
        self.debris = min(1.0, self.debris + self.debris_per_cut * (t / 100.0) * math.exp(0.3 * z[5]))
        self.temperature_offset_c += self.temperature_drift_c_per_cut * (1.0 + 0.2 * z[6])
        self.depth_nm += t
        self.cuts += 1
        return SectionQuality(
            ribbon_ok=ok,
            thickness_nm=thickness,
            thickness_error_nm=thickness - t,
            imaged_thickness_nm=thickness * DRIED_THICKNESS_FRACTION,
            compression=compression,
            chatter=chatter,
            crack_density_per_um=crack,
            crack_carried=carried,
            knife_marks=marks,
            smear_nm=smear,
            wear=self.wear,
            edge_debris=self.debris,
            specimen_temp_c=spec,
            knife_temp_c=knife,
            depth_nm=top,
            failure_probability=p_fail,
        )
