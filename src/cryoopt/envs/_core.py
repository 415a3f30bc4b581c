"""Shared machinery of the environments: setpoint knobs, the instrument chain, helpers.

A :class:`Knob` is one setpoint the agent moves by a normalized delta in [-1, 1]:
``new = clip(old + a * step)`` (``log`` knobs move in decades), clipped to the device
profile's limits, so the value sent to the driver is always inside them.

:class:`Chain` runs cut -> stain -> image on one of three backends with the same
validation and clipping semantics (limits from the same profile YAML):

- ``"direct"``: the ``cryoopt.sim``-backed physics objects of
  :mod:`cryoopt.instruments.simulated.sim_physics` called in process, no drivers
  (the fast one, for training);
- ``"instruments"``: real drivers over in-process simulated devices (same bytes, no
  socket), or the drivers of a user-supplied bench;
- ``"socket"``: the same drivers over TCP-simulated devices (end-to-end tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cryoopt.exceptions import ConfigError
from cryoopt.instruments.profiles import Profile, load_profile
from cryoopt.instruments.simulated import sim_physics
from cryoopt.instruments.validators import Limits, in_range
from cryoopt.envs.scenarios import Scenario

__all__ = ["BACKENDS", "Chain", "Knob", "knobs_for"]

BACKENDS = ("direct", "instruments", "socket")
_BOUNDS: dict[tuple[int, str], tuple[float, float]] = {}  # (id(profile), limit) -> (low, high); profiles are frozen


@dataclass(frozen=True)
class Knob:
    """One controllable setpoint.

    Attributes:
        name: the setpoint's name in the env (and in the driver or protocol step).
        device: device class whose profile holds its limit.
        limit: name of the profile limit.
        step: largest change per step for ``|a| = 1`` (decades when ``log``).
        log: move and normalise in log10.
        integer: sent rounded to a whole number.
    """

    name: str
    device: str
    limit: str
    step: float
    log: bool = False
    integer: bool = False

    def bounds(self, profile: Profile) -> tuple[float, float]:
        key = (id(profile), self.limit)
        b = _BOUNDS.get(key)
        if b is None:
            lim = profile.limit(self.limit)
            if not isinstance(lim, Limits):
                raise ConfigError(f"profile {profile.name!r}: limit {self.limit!r} must be numeric (low/high)")
            b = _BOUNDS[key] = (lim.low, lim.high)
        return b

    def _fwd(self, x: float) -> float:
        return math.log10(max(x, 1e-12)) if self.log else x

    def _inv(self, y: float) -> float:
        return 10.0**y if self.log else y

    def move(self, value: float, a: float, profile: Profile) -> float:
        """``value`` moved by the normalized delta ``a`` (clipped to [-1, 1]) and clipped to the limits."""
        lo, hi = self.bounds(profile)
        a = min(max(float(a), -1.0), 1.0) if a == a else 0.0  # NaN -> no move
        return min(max(self._inv(self._fwd(value) + a * self.step), lo), hi)

    def clip(self, value: float, profile: Profile) -> float:
        lo, hi = self.bounds(profile)
        return min(max(float(value), lo), hi)

    def normalize(self, value: float, profile: Profile) -> float:
        """``value`` mapped to [-1, 1] over the profile limits (log10 for ``log`` knobs)."""
        lo, hi = self.bounds(profile)
        f, l, h = self._fwd(value), self._fwd(lo), self._fwd(hi)
        return min(max(2.0 * (f - l) / (h - l) - 1.0, -1.0), 1.0) if h > l else 0.0

    def sent(self, value: float) -> float:
        return float(round(value)) if self.integer else float(value)


SECTIONING_KNOBS = (
    Knob("section_thickness_nm", "ultramicrotome", "section_thickness_nm", 10.0),
    Knob("cutting_speed_mm_s", "ultramicrotome", "cutting_speed_mm_s", 0.1, log=True),
    Knob("specimen_temperature_c", "ultramicrotome", "specimen_temperature_c", 3.0),
    Knob("knife_temperature_c", "ultramicrotome", "knife_temperature_c", 3.0),
    Knob("chamber_temperature_c", "ultramicrotome", "chamber_temperature_c", 3.0),
)
STAINING_KNOBS = (
    Knob("dilution", "stainer", "step_dilution", 0.1, log=True),
    Knob("time_min", "stainer", "step_time_min", 0.1, log=True),
    Knob("temperature_c", "stainer", "step_temperature_c", 2.0),
    Knob("wash_cycles", "stainer", "step_wash_cycles", 0.5, integer=True),
)
IMAGING_KNOBS = (
    Knob("exposure_ms", "microscope", "exposure_ms", 0.1, log=True),
    Knob("gain", "microscope", "gain", 0.1, log=True),
    Knob("focus_um", "microscope", "focus_um", 0.5),
)


def knobs_for(group: str) -> tuple[Knob, ...]:
    return {"sectioning": SECTIONING_KNOBS, "staining": STAINING_KNOBS, "imaging": IMAGING_KNOBS}[group]


def draw_start(knobs: Sequence[Knob], scenario: Scenario, rng: np.random.Generator, profiles: Mapping[str, Profile]) -> dict[str, float]:
    """Starting setpoints: uniform (log-uniform for ``log`` knobs) in the scenario's start ranges."""
    out = {}
    for k in knobs:
        lo, hi = scenario.start_range(k.name)
        if k.log:
            v = 10.0 ** rng.uniform(math.log10(lo), math.log10(hi))
        else:
            v = rng.uniform(lo, hi)
        out[k.name] = k.clip(float(v), profiles[k.device])
    return out


class Chain:
    """Cut, stain and image a section on one backend (see the module docstring).

    Args:
        backend: ``"direct"``, ``"instruments"`` or ``"socket"``.
        scenario: the scenario (specimen, profiles, imaging pixel sizes).
        bench: a user-supplied :class:`~cryoopt.instruments.Bench` (or any object with
            ``ultramicrotome``/``stainer``/``microscope`` drivers); default: the env owns
            a simulated bench, rebuilt at every reset from the env's seed.
        section_reader: on a bench without a simulated ``tray``, a callable returning
            the latest section's features (thickness, defects, label metrics).
    """

    def __init__(self, backend: str, scenario: Scenario, *, bench: Any = None,
                 section_reader: Callable[[], Mapping[str, Any]] | None = None) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if bench is not None and backend == "direct":
            raise ConfigError("backend='direct' calls the simulators; pass bench= with backend='instruments'")
        self.backend, self.scenario, self.user_bench, self.section_reader = backend, scenario, bench, section_reader
        self.bench: Any = bench
        self.profiles: dict[str, Profile] = {}
        for dev in ("ultramicrotome", "stainer", "microscope"):
            drv = getattr(bench, dev, None) if bench is not None else None
            self.profiles[dev] = drv.profile if drv is not None else load_profile(scenario.profile(dev))
        im = scenario.imaging
        px = {"LM": im.lm_pixel_size_nm, "EM": im.em_pixel_size_nm}
        scope = self.profiles["microscope"]
        if bench is None:
            self.profiles["microscope"] = scope.with_overrides(sim={"pixel_size_nm": px})
        self.wash_min = float(self.profiles["stainer"].sim.get("wash_time_s", 60.0)) / 60.0
        self.sections: list[dict[str, Any]] = []
        self.rng = np.random.default_rng(0)
        self.image_rng = np.random.default_rng(1)
        self.physics: dict[str, Any] = {}
        self.applied: dict[str, float] = {}
        self.knife_cuts = 0
        self._limits: dict[tuple[str, str], Limits] = {}

    def _limit(self, device: str, name: str) -> Limits:
        """The profile's numeric limit (cached): the same check the driver's validator runs."""
        key = (device, name)
        lim = self._limits.get(key)
        if lim is None:
            got = self.profiles[device].limit(name)
            if not isinstance(got, Limits):
                raise ConfigError(f"profile {self.profiles[device].name!r}: limit {name!r} must be numeric")
            lim = self._limits[key] = got
        return lim

    # -- lifecycle ------------------------------------------------------------------
    def reset(self, seed: int, *, conditions: sim_physics.BlockConditions, specimen_seed: int,
              image_seed: int | None = None) -> None:
        """New block: fresh physics (and a fresh owned bench) seeded from ``seed``.

        ``conditions`` are the block's knife and drift state (drawn by the env from the
        specimen seed); in the direct backend image noise comes from its own stream
        ``image_seed`` (default: derived from ``seed``), so a block can be re-imaged with
        other noise and nothing else changed."""
        self.rng = np.random.default_rng(seed)
        self.image_rng = np.random.default_rng([seed, 1] if image_seed is None else [int(image_seed), 2])
        im = self.scenario.imaging
        self.physics = {
            "ultramicrotome": sim_physics.SimSectioning.for_block(conditions),
            "stainer": sim_physics.SimStaining(tissue=self._tissue(), wash_min=self.wash_min),
            "microscope": sim_physics.SimImaging(preset=self.scenario.specimen, specimen_seed=specimen_seed,
                                                lm_pixel_size_nm=im.lm_pixel_size_nm, em_pixel_size_nm=im.em_pixel_size_nm,
                                                ice_coverage=im.ice_coverage, drift_nm_per_line=im.drift_nm_per_line,
                                                scan_noise=im.scan_noise),
        }
        self.sections = []
        self.applied = {}
        self.knife_cuts = 0
        if self.backend != "direct" and self.user_bench is None:
            from cryoopt.instruments import open_bench

            if self.bench is not None:
                self.bench.close()
            self.bench = open_bench("inprocess" if self.backend == "instruments" else "socket", seed=seed,
                                    physics=dict(self.physics), profiles=dict(self.profiles))

    def _tissue(self) -> Any:
        from cryoopt.sim.diffusion import TissueProperties

        return TissueProperties.from_preset(self.scenario.specimen)

    def close(self) -> None:
        if self.bench is not None and self.user_bench is None:
            self.bench.close()
            self.bench = None

    @property
    def simulated(self) -> bool:
        return self.backend == "direct" or getattr(self.bench, "tray", None) is not None

    def latest(self) -> dict[str, Any]:
        if self.backend == "direct":
            return self.sections[-1] if self.sections else {}
        tray = getattr(self.bench, "tray", None)
        if tray is not None:
            return dict(tray.latest())
        if self.section_reader is None:
            raise ConfigError("this bench has no simulated tray; pass section_reader= to read section features")
        return dict(self.section_reader())

    # -- sectioning -------------------------------------------------------------------
    def cut(self, setpoints: Mapping[str, float]) -> dict[str, Any]:
        """Apply the (already clipped) sectioning setpoints and cut one section."""
        checked = {k: in_range(v, self._limit("ultramicrotome", k)) for k, v in setpoints.items()}
        if self.backend == "direct":
            sp = dict(checked, mode="SECT", knife_wear=self.knife_cuts)
            features = self.physics["ultramicrotome"].cut(sp, self.rng)
            features.update(section_index=len(self.sections))
            self.sections.append(features)
            self.knife_cuts += 1
            return dict(features)
        um = self.bench.ultramicrotome
        for k, v in checked.items():
            if self.applied.get(k) != v:
                setattr(um, k, v)
                self.applied[k] = v
        if self.simulated:
            um.require_stable_temperatures(wait_s=5.0, poll_s=0.0)  # simulated time advances per query
        else:  # pragma: no cover - hardware
            um.require_stable_temperatures(wait_s=600.0)
        um.cut(1)
        return self.latest()

    # -- staining ------------------------------------------------------------------------
    def protocol(self, setpoints: Mapping[str, float]) -> list[dict[str, Any]]:
        """The staining protocol (one antibody step with its washes) for these setpoints."""
        return [{
            "reagent": "PRIMARY", "dilution": float(setpoints["dilution"]), "volume_ul": 20.0,
            "time_min": float(setpoints["time_min"]), "temperature_c": float(setpoints["temperature_c"]),
            "agitation_rpm": 0.0, "wash_cycles": int(round(setpoints["wash_cycles"])),
        }]

    def stain(self, setpoints: Mapping[str, float], *, section: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run the staining protocol on the latest section (or on ``section`` in direct mode)."""
        steps = self.protocol(setpoints)
        for s in steps:
            for key in ("dilution", "volume_ul", "time_min", "temperature_c", "agitation_rpm", "wash_cycles"):
                in_range(s[key], self._limit("stainer", f"step_{key}"))
        if self.backend == "direct":
            target = dict(section) if section is not None else (self.sections[-1] if self.sections else {})
            out = self.physics["stainer"].run(steps, self.rng, section=target)
            if section is None and self.sections:
                self.sections[-1].update(out, stained=True)
            return dict(target, **out)
        st = self.bench.stainer
        st.load_protocol(steps)
        st.run()
        return self.latest()

    # -- imaging -----------------------------------------------------------------------------
    def image(self, modality: str, settings: Mapping[str, float], size: int) -> np.ndarray:
        """Acquire one image of the latest section (``uint16``, ``size x size``)."""
        prof = self.profiles["microscope"]
        checked = {k: in_range(v, self._limit("microscope", k)) for k, v in settings.items()}
        if self.backend == "direct":
            full = dict(checked, modality=modality, image_size_px=size, best_focus_um=float(prof.sim.get("best_focus_um", 0.0)))
            return self.physics["microscope"].acquire(full, self.image_rng, sample=self.latest())
        m = self.bench.microscope
        if m.modality != modality:
            m.modality = modality
        m.channel = "GFP" if modality == "LM" else "BSE"
        for k, v in checked.items():
            setattr(m, k, v)
        m.image_size_px = int(size)
        return m.acquire().array

    def pixel_size_nm(self, modality: str) -> float:
        return float(self.profiles["microscope"].sim.get("pixel_size_nm", {}).get(modality, 1.0))
