"""Scenario presets: specimen + instrument profiles + noise + operator variability.

A scenario is found by name, in order: ``envs/scenarios/<name>.yaml`` in the folders
of :func:`cryoopt.sim.presets.preset_dirs` (the sim's specimen-preset folders), then a
specimen preset ``envs/<name>.yaml`` itself (which gives a scenario with that specimen
and default everything else). A path to a YAML file works too, and so does a dict.

Scenario YAML (every key optional; ``extra`` keys are refused)::

    name: neurons
    specimen: neurons                # specimen preset in envs/
    specimen_seed: null              # null: drawn from the env's np_random at reset
    profiles: {ultramicrotome: ultramicrotome-ref, stainer: stainer-ref, microscope: microscope-ref}
    block_sections: 50               # sections per block (Sectioning-v0 episode length)
    target_thickness_nm: 100
    initial_knife_wear: [0.0, 0.2]   # uniform range at reset
    block:                           # per-block conditions, uniform ranges drawn from the specimen seed
      debris_per_cut: [0.0, 0.0]     # debris/frost the knife edge picks up per 100 nm cut
      temperature_drift_c_per_cut: [0.0, 0.0]   # measured-minus-set specimen/knife temperature growth per cut
    noise: {label: 0.02, thickness_nm: 2.0}       # readout noise (std) on observed features
    operator:                        # operator variability of the starting protocol
      spread: 1.0                    # scales the start ranges around their centres
      start: {section_thickness_nm: [60, 200], ...}   # start ranges (native units)
    imaging: {lm_pixel_size_nm: 100, em_pixel_size_nm: 10}   # also ice_coverage, drift_nm_per_line, scan_noise

Used as ``gymnasium.make("cryoopt/Sectioning-v0", scenario="tissue_block")``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cryoopt.exceptions import ConfigError

__all__ = ["Scenario", "available_scenarios", "load_scenario"]

#: Start ranges of an operator's protocol: around Tokuyasu practice (see :mod:`cryoopt.sim.sectioning`,
#: :data:`cryoopt.agents.EXPERT_PROTOCOL`), as a careful operator varies it.
DEFAULT_START: dict[str, tuple[float, float]] = {
    "section_thickness_nm": (55.0, 100.0),
    "cutting_speed_mm_s": (0.4, 1.5),
    "specimen_temperature_c": (-124.0, -112.0),
    "knife_temperature_c": (-124.0, -112.0),
    "chamber_temperature_c": (-126.0, -114.0),
    "dilution": (30.0, 500.0),
    "time_min": (10.0, 90.0),
    "temperature_c": (18.0, 37.0),
    "wash_cycles": (1.0, 5.0),
    "exposure_ms": (20.0, 200.0),
    "gain": (2.0, 32.0),
    "focus_um": (-1.5, 1.5),
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Noise(_Model):
    label: float = Field(0.02, ge=0, description="std of the observed label metrics (fraction)")
    thickness_nm: float = Field(2.0, ge=0, description="std of the measured section thickness, nm")


class Operator(_Model):
    spread: float = Field(1.0, ge=0, le=1, description="scales the start ranges about their centres (0: always the centre)")
    start: dict[str, tuple[float, float]] = Field(default_factory=dict, description="start range per setpoint")


class BlockRanges(_Model):
    debris_per_cut: tuple[float, float] = Field((0.0, 0.0), description="debris/frost picked up by the knife edge per 100 nm cut")
    temperature_drift_c_per_cut: tuple[float, float] = Field(
        (0.0, 0.0), description="growth per cut of the measured-minus-set specimen and knife temperature, C")


class Imaging(_Model):
    lm_pixel_size_nm: float = Field(100.0, gt=0)
    em_pixel_size_nm: float = Field(10.0, gt=0)
    ice_coverage: float = Field(0.0, ge=0, le=0.5, description="EM field fraction covered by ice crystals (simulated benches)")
    drift_nm_per_line: float = Field(0.0, description="EM stage drift per scan line, nm (simulated benches)")
    scan_noise: float = Field(0.0, ge=0, le=50, description="EM scan line jitter, px (simulated benches)")


class Scenario(_Model):
    """One scenario (see the module docstring for the YAML)."""

    name: str = "default"
    description: str = ""
    specimen: str = "neurons"
    specimen_seed: int | None = None
    profiles: dict[str, str] = Field(default_factory=dict)
    block_sections: int = Field(50, ge=1)
    target_thickness_nm: float = Field(100.0, gt=0)
    initial_knife_wear: tuple[float, float] = (0.0, 0.2)
    block: BlockRanges = BlockRanges()
    noise: Noise = Noise()
    operator: Operator = Operator()
    imaging: Imaging = Imaging()

    def profile(self, device_class: str) -> str:
        return self.profiles.get(device_class, f"{device_class}-ref")

    def start_range(self, name: str) -> tuple[float, float]:
        lo, hi = self.operator.start.get(name, DEFAULT_START[name])
        c, h = 0.5 * (lo + hi), 0.5 * (hi - lo) * self.operator.spread
        return c - h, c + h


def _dirs() -> list[Path]:
    from cryoopt.sim.presets import preset_dirs

    return preset_dirs()


def available_scenarios() -> list[str]:
    """Names usable as ``scenario=``: scenario files and specimen presets."""
    names: set[str] = set()
    for d in _dirs():
        if (d / "scenarios").is_dir():
            names.update(p.stem for p in (d / "scenarios").glob("*.yaml"))
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def load_scenario(scenario: str | os.PathLike[str] | dict[str, Any] | Scenario | None = None) -> Scenario:
    """Resolve ``scenario`` (name, path, dict, Scenario or None for the default ``neurons``).

    Raises:
        ConfigError: unknown name (the message lists the known ones) or an invalid field.
    """
    if isinstance(scenario, Scenario):
        return scenario
    if scenario is None:
        scenario = "neurons"
    if isinstance(scenario, dict):
        data, where = dict(scenario), "<dict>"
    else:
        p = Path(scenario)
        path: Path | None = p if p.suffix in (".yaml", ".yml") and p.is_file() else None
        if path is None:
            for d in _dirs():
                if (d / "scenarios" / f"{scenario}.yaml").is_file():
                    path = d / "scenarios" / f"{scenario}.yaml"
                    break
        if path is None:
            for d in _dirs():
                if (d / f"{scenario}.yaml").is_file():  # a bare specimen preset
                    return Scenario(name=str(scenario), specimen=str(scenario))
            raise ConfigError(
                f"unknown scenario {str(scenario)!r}; available: {', '.join(available_scenarios()) or '(none)'}; "
                "pass a path to a scenario YAML or set CRYOOPT_ENVS_DIR"
            )
        data = yaml.safe_load(path.read_text()) or {}
        where = path.name
        if not isinstance(data, dict):
            raise ConfigError(f"scenario {where} must be a YAML mapping")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"scenario {where} is invalid:\n{exc}") from exc
