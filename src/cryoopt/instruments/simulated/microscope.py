"""Simulated CLEM imager speaking the reference command set.

``ACQ:STAR`` takes ``exposure_ms`` of simulated time; the imaging backend renders the
tray's latest section (features merged) with the current settings. ``IMAG:META?`` gives
``rows,cols,<u2,pixel_size_nm,modality,channel``; ``IMAG:DATA?`` the pixels as an IEEE
488.2 block, little-endian ``uint16``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from cryoopt.instruments.simulated.device import SettingsConflict, SimulatedDevice, block
from cryoopt.instruments.simulated.physics import imaging_backends

__all__ = ["SimulatedMicroscope"]


class SimulatedMicroscope(SimulatedDevice):
    default_profile = "microscope-ref"
    idn = "CRYOOPT,REFSCOPE-1,SIM0001,0.1"
    settings_map: ClassVar[dict[str, str]] = {
        "MODE": "modality",
        "CHAN": "channel",
        "EXPO": "exposure_ms",
        "GAIN": "gain",
        "FOC": "focus_um",
        "STAG:X": "stage_x_um",
        "STAG:Y": "stage_y_um",
        "IMAG:SIZE": "image_size_px",
    }

    def __init__(self, profile: Any = None, **kwargs: Any) -> None:
        super().__init__(profile, **kwargs)
        if self.physics is None:
            self.physics = imaging_backends.get("default")()
        self.busy_s = 0.0
        self.image: np.ndarray | None = None
        self.image_meta = ""
        self.commands.update({
            "ACQ:STAR": lambda a: self._acquire(),
            "ACQ:ABOR": lambda a: self._abort(),
            "IMAG:META?": lambda a: self._meta(),
            "IMAG:DATA?": lambda a: self._data(),
        })

    @property
    def status(self) -> str:  # type: ignore[override]
        return "ACQUIRING" if self.busy_s > 0 else "IDLE"

    def busy(self) -> bool:
        return self.busy_s > 0

    def _next_event_dt(self) -> float:
        return max(self.busy_s, 1e-6)

    def channels(self, modality: str) -> list[str]:
        return [c.upper() for c in self.sim.get("channels", {}).get(modality, [])]

    def apply_setting(self, name: str, value: Any) -> None:
        if self.busy_s > 0:
            raise SettingsConflict(f"{name} cannot change during an acquisition")
        if name == "image_size_px":
            value = int(value)
        if name == "channel" and self.channels(self.settings["modality"]) and value not in self.channels(self.settings["modality"]):
            raise SettingsConflict(f"channel {value} is not available in {self.settings['modality']} mode")
        super().apply_setting(name, value)
        if name == "modality" and self.channels(value) and self.settings.get("channel") not in self.channels(value):
            self.settings["channel"] = self.channels(value)[0]

    def _acquire(self) -> None:
        if self.busy_s > 0:
            raise SettingsConflict("already acquiring")
        settings = dict(self.settings)
        settings.setdefault("best_focus_um", float(self.sim.get("best_focus_um", 0.0)))
        settings.setdefault("layout_seed", self.seed)
        self.image = np.ascontiguousarray(self.physics.acquire(settings, self.rng, sample=dict(self.tray.latest())))
        px = float(self.sim.get("pixel_size_nm", {}).get(self.settings["modality"], 1.0))
        r, c = self.image.shape
        self.image_meta = f"{r},{c},<u2,{px:g},{self.settings['modality']},{self.settings['channel']}"
        self.busy_s = float(self.settings["exposure_ms"]) / 1000.0

    def _abort(self) -> None:
        self.busy_s = 0.0

    def _evolve(self, dt: float) -> None:
        self.busy_s = max(0.0, self.busy_s - dt)

    def _meta(self) -> str:
        if self.image is None:
            raise SettingsConflict("no image acquired yet")
        return self.image_meta

    def _data(self) -> bytes:
        if self.image is None:
            raise SettingsConflict("no image acquired yet")
        return block(self.image.astype("<u2").tobytes())
