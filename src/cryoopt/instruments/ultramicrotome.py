"""Driver for a (cryo-)ultramicrotome speaking the reference command set.

Example:
    >>> from cryoopt.instruments import connect
    >>> with connect("ultramicrotome-ref", simulated="inprocess", seed=0) as um:
    ...     um.section_thickness_nm = 80
    ...     um.cut(3)
    3
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from cryoopt.instruments.base import CryoInstrument, reading, setpoint
from cryoopt.instruments.conditions import Condition
from cryoopt.instruments.errors import TemperatureInterlockError
from cryoopt.instruments.validators import integer_in_range

__all__ = ["Ultramicrotome"]

_SENSORS = ("specimen", "knife", "chamber")


class Ultramicrotome(CryoInstrument):
    """Cryo-ultramicrotome: feed, speeds, cutting window, temperatures, modes, cutting.

    Safety: :meth:`cut` and :meth:`start` refuse (``TemperatureInterlockError``, nothing
    sent) unless every measured temperature is within the profile's
    ``interlocks.temperature_tolerance_c`` of its setpoint. The safe state is
    ``SECT:STOP`` (cutting stopped, temperatures held).
    """

    device_class = "ultramicrotome"
    default_profile = "ultramicrotome-ref"
    actions: ClassVar[dict[str, str]] = {
        "start": "SECT:STAR",
        "stop": "SECT:STOP",
        "cut": "SECT:CUT %d",
        "reset_counter": "SECT:COUN:RES",
    }
    reply_words: ClassVar[dict[str, tuple[str, ...]]] = {"state": ("IDLE", "CUTTING")}

    section_thickness_nm = setpoint("SECT:THIC?", "SECT:THIC %g", "Section thickness (feed per cut), nm.")
    cutting_speed_mm_s = setpoint("SECT:SPEE?", "SECT:SPEE %g", "Knife speed through the cutting window, mm/s.")
    return_speed_mm_s = setpoint("SECT:RET?", "SECT:RET %g", "Speed of the return stroke, mm/s.")
    cutting_window_start_um = setpoint("SECT:WIND:STAR?", "SECT:WIND:STAR %g", "Start of the cutting window, um.")
    cutting_window_end_um = setpoint("SECT:WIND:END?", "SECT:WIND:END %g", "End of the cutting window, um.")
    mode = setpoint("SECT:MODE?", "SECT:MODE %s", "``TRIM`` (fast, thick) or ``SECT`` (sectioning).", kind="choice")
    knife_position_um = setpoint("KNIF:POS?", "KNIF:POS %g", "Lateral knife-edge position, um (moves to a fresh edge).")
    specimen_temperature_c = setpoint("TEMP:SPEC?", "TEMP:SPEC %g", "Specimen temperature setpoint, degC.")
    knife_temperature_c = setpoint("TEMP:KNIF?", "TEMP:KNIF %g", "Knife temperature setpoint, degC.")
    chamber_temperature_c = setpoint("TEMP:CHAM?", "TEMP:CHAM %g", "Chamber temperature setpoint, degC.")

    measured_specimen_temperature_c = reading("MEAS:TEMP:SPEC?", "Measured specimen temperature, degC.")
    measured_knife_temperature_c = reading("MEAS:TEMP:KNIF?", "Measured knife temperature, degC.")
    measured_chamber_temperature_c = reading("MEAS:TEMP:CHAM?", "Measured chamber temperature, degC.")
    section_count = reading("SECT:COUN?", "Sections cut since the last counter reset.", kind="int")
    knife_wear = reading("KNIF:WEAR?", "Cuts made on the current knife-edge segment.", kind="int")

    # -- composite setters -------------------------------------------------------------
    def set_cutting_window(self, start_um: float, end_um: float) -> None:
        """Set both window edges; refuses ``start_um >= end_um`` before sending anything."""
        from cryoopt.exceptions import ParameterError
        from cryoopt.instruments.validators import in_range

        s = in_range(start_um, self.limit("cutting_window_start_um"))  # type: ignore[arg-type]
        e = in_range(end_um, self.limit("cutting_window_end_um"))  # type: ignore[arg-type]
        if s >= e:
            raise ParameterError(f"cutting window start {s:g} um must be below its end {e:g} um")
        self.cutting_window_start_um = s
        self.cutting_window_end_um = e

    def set_temperatures(self, *, specimen_c: float | None = None, knife_c: float | None = None,
                         chamber_c: float | None = None) -> None:
        """Set any of the three temperature setpoints (all validated before the first write)."""
        from cryoopt.instruments.validators import in_range

        todo = {"specimen": specimen_c, "knife": knife_c, "chamber": chamber_c}
        checked = {k: in_range(v, self.limit(f"{k}_temperature_c")) for k, v in todo.items() if v is not None}  # type: ignore[arg-type]
        for k, v in checked.items():
            setattr(self, f"{k}_temperature_c", v)

    # -- temperatures and the interlock ---------------------------------------------------
    def temperatures(self) -> dict[str, tuple[float, float]]:
        """``{sensor: (setpoint, measured)}`` for specimen, knife and chamber."""
        return {
            s: (getattr(self, f"{s}_temperature_c"), getattr(self, f"measured_{s}_temperature_c"))
            for s in _SENSORS
        }

    def temperature_deviations(self) -> dict[str, float]:
        """``{sensor: measured - setpoint}`` in degC."""
        return {s: m - sp for s, (sp, m) in self.temperatures().items()}

    @property
    def temperature_tolerance_c(self) -> float:
        return float(self.profile.interlocks.get("temperature_tolerance_c", 1.0))

    def temperatures_stable(self) -> bool:
        tol = self.temperature_tolerance_c
        return all(abs(d) <= tol for d in self.temperature_deviations().values())

    def require_stable_temperatures(self, *, wait_s: float = 0.0, poll_s: float | None = None) -> None:
        """Return once all temperatures are within tolerance; raise after ``wait_s`` otherwise.

        Raises:
            TemperatureInterlockError: still out of tolerance (names sensor and deviation);
                nothing was sent.
        """
        if not self.profile.interlocks.get("require_stable_temperatures", True):
            return
        poll = float(self.profile.interlocks.get("poll_s", 0.0) if poll_s is None else poll_s)
        deadline = time.monotonic() + wait_s
        while True:
            dev = self.temperature_deviations()
            bad = {s: d for s, d in dev.items() if abs(d) > self.temperature_tolerance_c}
            if not bad or time.monotonic() >= deadline:
                break
            time.sleep(poll)
        if bad:
            detail = ", ".join(f"{s} off by {d:+.2f} degC" for s, d in bad.items())
            raise self._interlock(
                TemperatureInterlockError,
                f"temperatures not stable within +/-{self.temperature_tolerance_c:g} degC ({detail}); "
                "wait for the cryo chamber to settle",
            )

    def conditions(self) -> list[Condition]:
        """Temperatures further than ``interlocks.temperature_tolerance_c`` from their setpoints
        (a drifting cryo chamber, or one not yet settled): a campaign waits while any is."""
        if not self.profile.interlocks.get("require_stable_temperatures", True):
            return []
        tol = self.temperature_tolerance_c
        return [
            Condition(self.profile.name, "temperature",
                      f"{s} temperature {m:.2f} degC, setpoint {sp:g} degC (off by {m - sp:+.2f}, tolerance {tol:g})")
            for s, (sp, m) in self.temperatures().items() if abs(m - sp) > tol
        ]

    # -- actions ----------------------------------------------------------------------------
    def cut(self, n: int = 1, *, wait: bool = True, stable_wait_s: float = 0.0) -> int:
        """Cut ``n`` sections; return how many the counter advanced (when ``wait``).

        Validates ``n`` against ``limits.sections_per_run``, checks the temperature
        interlock, sends ``SECT:CUT n`` once, waits on ``*OPC?`` and checks ``SYST:ERR?``
        (a temperature drift mid-run stops the device with error 303 ->
        ``TemperatureInterlockError`` with the safe state applied).
        """
        n = integer_in_range(n, self.limit("sections_per_run"))  # type: ignore[arg-type]
        self.require_stable_temperatures(wait_s=stable_wait_s)
        before = self.section_count
        cmd = self._action("cut", n)
        if not wait:
            return 0
        self.wait_complete()
        errors = self.check_errors()
        if errors:
            raise self._device_fault(errors, cmd)
        return self.section_count - before

    def start(self, *, stable_wait_s: float = 0.0) -> None:
        """Start continuous sectioning (``SECT:STAR``) after the temperature interlock."""
        self.require_stable_temperatures(wait_s=stable_wait_s)
        self._action("start")

    def stop(self) -> None:
        """Stop cutting (``SECT:STOP``); temperatures are held."""
        self._action("stop")

    def reset_counter(self) -> None:
        self._action("reset_counter")

    def setpoints(self) -> dict[str, Any]:
        """All setpoints read back from the device (for the campaign journal)."""
        names = ("section_thickness_nm", "cutting_speed_mm_s", "return_speed_mm_s", "cutting_window_start_um",
                 "cutting_window_end_um", "mode", "knife_position_um", "specimen_temperature_c",
                 "knife_temperature_c", "chamber_temperature_c")
        return {n: getattr(self, n) for n in names}
