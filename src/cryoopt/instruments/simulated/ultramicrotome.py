"""Simulated cryo-ultramicrotome speaking the reference command set.

Temperatures relax to their setpoints with time constant ``sim.temperature_tau_s``
(a ``temperature_drift`` fault takes a sensor out of control; when it ends or is
cleared, the sensor relaxes back). ``SECT:CUT n`` runs
``n`` strokes of ``window/speed + window/return_speed`` seconds each; each finished
stroke asks the sectioning backend for the section's features and appends them to the
tray. If a temperature is further than ``sim.device_tolerance_c`` from its setpoint
at the end of a stroke, the device stops and queues error 303.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from cryoopt.instruments.simulated.device import SettingsConflict, SimulatedDevice
from cryoopt.instruments.simulated.physics import sectioning_backends

__all__ = ["SimulatedUltramicrotome"]

_SENSORS = ("specimen", "knife", "chamber")


class SimulatedUltramicrotome(SimulatedDevice):
    default_profile = "ultramicrotome-ref"
    idn = "CRYOOPT,REFCUT-1,SIM0001,0.1"
    settings_map: ClassVar[dict[str, str]] = {
        "SECT:THIC": "section_thickness_nm",
        "SECT:SPEE": "cutting_speed_mm_s",
        "SECT:RET": "return_speed_mm_s",
        "SECT:WIND:STAR": "cutting_window_start_um",
        "SECT:WIND:END": "cutting_window_end_um",
        "SECT:MODE": "mode",
        "KNIF:POS": "knife_position_um",
        "TEMP:SPEC": "specimen_temperature_c",
        "TEMP:KNIF": "knife_temperature_c",
        "TEMP:CHAM": "chamber_temperature_c",
    }

    def __init__(self, profile: Any = None, **kwargs: Any) -> None:
        super().__init__(profile, **kwargs)
        if self.physics is None:
            self.physics = sectioning_backends.get("default")()
        self.measured = {s: float(self.settings[f"{s}_temperature_c"]) for s in _SENSORS}
        self.count = 0
        self.wear: dict[int, int] = {}
        self.remaining = 0  # strokes left; -1 = continuous
        self.stroke_t = 0.0
        self.commands.update({
            "SECT:STAR": self._start,
            "SECT:STOP": lambda a: self._stop(),
            "SECT:CUT": self._cut,
            "SECT:COUN?": lambda a: str(self.count),
            "SECT:COUN:RES": lambda a: self._reset_count(),
            "KNIF:WEAR?": lambda a: str(self.knife_wear),
            **{f"MEAS:TEMP:{s[:4].upper()}?": (lambda a, s=s: f"{self.measured[s]:.3f}") for s in _SENSORS},
        })

    # -- state ----------------------------------------------------------------------------
    @property
    def status(self) -> str:  # type: ignore[override]
        return "CUTTING" if self.remaining != 0 else "IDLE"

    @property
    def knife_wear(self) -> int:
        return self.wear.get(self._segment(), 0)

    def _segment(self) -> int:
        return int(float(self.settings.get("knife_position_um", 0)) // float(self.sim.get("knife_segment_um", 500)))

    def busy(self) -> bool:
        return self.remaining > 0

    def apply_setting(self, name: str, value: Any) -> None:
        if self.remaining != 0 and name not in ("specimen_temperature_c", "knife_temperature_c", "chamber_temperature_c"):
            raise SettingsConflict(f"{name} cannot change while cutting")
        super().apply_setting(name, value)

    def _reset_count(self) -> None:
        self.count = 0

    def stroke_period_s(self) -> float:
        window_mm = max(float(self.settings["cutting_window_end_um"]) - float(self.settings["cutting_window_start_um"]), 1.0) / 1000.0
        return window_mm / float(self.settings["cutting_speed_mm_s"]) + window_mm / float(self.settings["return_speed_mm_s"])

    def _start(self, arg: str) -> None:
        self.remaining, self.stroke_t = -1, 0.0

    def _cut(self, arg: str) -> None:
        n = int(float(arg))
        lim = self.profile.limit("sections_per_run") if "sections_per_run" in self.profile.limits else None
        if n < 1 or (lim is not None and n > lim.high):  # type: ignore[union-attr]
            raise ValueError(arg)
        if self.remaining != 0:
            raise SettingsConflict("already cutting")
        self.remaining, self.stroke_t = n, 0.0

    def _stop(self) -> None:
        self.remaining, self.stroke_t = 0, 0.0

    def _next_event_dt(self) -> float:
        return max(self.stroke_period_s() - self.stroke_t, 1e-3)

    # -- dynamics ---------------------------------------------------------------------------
    def _drifting(self) -> dict[str, float]:
        return {f.sensor: f.rate_c_per_s for f in self.faults.device_faults("temperature_drift") if f.active(self.now)}

    def _evolve(self, dt: float) -> None:
        while dt > 1e-12:
            step = dt
            if self.remaining != 0:
                step = min(dt, self.stroke_period_s() - self.stroke_t)
            self._relax(step)
            dt -= step
            if self.remaining != 0:
                self.stroke_t += step
                if self.stroke_t >= self.stroke_period_s() - 1e-9:
                    self.stroke_t = 0.0
                    self._finish_stroke()

    def _relax(self, dt: float) -> None:
        tau = float(self.sim.get("temperature_tau_s", 3.0))
        drift = self._drifting()
        for s in _SENSORS:
            if s in drift:
                self.measured[s] += drift[s] * dt
            else:
                target = float(self.settings[f"{s}_temperature_c"])
                self.measured[s] = target + (self.measured[s] - target) * math.exp(-dt / tau)

    def _finish_stroke(self) -> None:
        tol = float(self.sim.get("device_tolerance_c", 2.0))
        bad = [s for s in _SENSORS if abs(self.measured[s] - float(self.settings[f"{s}_temperature_c"])) > tol]
        if bad:
            self.remaining = 0
            self.push_error(303, f"Temperature out of tolerance; {','.join(bad)}; cutting stopped")
            return
        setpoints = dict(self.settings)
        setpoints.update({f"measured_{s}_temperature_c": v for s, v in self.measured.items()})
        setpoints["knife_wear"] = self.knife_wear
        features = self.physics.cut(setpoints, self.rng)
        features.update(section_index=len(self.tray.sections), t_s=self.now)
        self.tray.sections.append(features)
        self.count += 1
        seg = self._segment()
        self.wear[seg] = self.wear.get(seg, 0) + 1
        if self.remaining > 0:
            self.remaining -= 1
