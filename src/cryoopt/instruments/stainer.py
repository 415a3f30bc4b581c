"""Driver for an automated staining platform speaking the reference command set.

A staining protocol is an ordered list of :class:`StainStep` (reagent, dilution,
volume, time, temperature, agitation, wash cycles). :meth:`Stainer.load_protocol`
validates *every* step against the profile before the first byte is sent.

Interlocks (checked by :meth:`Stainer.run` before ``STAIN:RUN``): the door must be
closed and each reagent must hold at least the volume the protocol needs (step
volumes plus ``wash_cycles`` x volume of the profile's ``interlocks.wash_reagent``).
During a run the device pauses itself if the door opens (error 301) or a reagent runs
out (302); :meth:`Stainer.wait_complete` turns that into ``DoorOpenError`` /
``ReagentError`` with the platform left paused.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from cryoopt.exceptions import ConfigError, ParameterError
from cryoopt.instruments.base import CryoInstrument, reading, setpoint
from cryoopt.instruments.conditions import Condition
from cryoopt.instruments.errors import DoorOpenError, ReagentError
from cryoopt.instruments.validators import Limits, in_range, in_set, integer_in_range

__all__ = ["StainStep", "Stainer"]


@dataclass(frozen=True)
class StainStep:
    """One protocol step. Units are in the names; ``dilution`` is the x of 1:x."""

    reagent: str
    dilution: float = 1.0
    volume_ul: float = 100.0
    time_min: float = 10.0
    temperature_c: float = 22.0
    agitation_rpm: float = 0.0
    wash_cycles: int = 0

    @classmethod
    def coerce(cls, step: StainStep | Mapping[str, Any]) -> StainStep:
        if isinstance(step, StainStep):
            return step
        try:
            return cls(**dict(step))
        except TypeError as exc:
            raise ParameterError(f"bad protocol step {dict(step)!r}: {exc}") from exc


class Stainer(CryoInstrument):
    """Automated staining platform: protocol load/run/pause/abort, progress, reagents, door."""

    device_class = "stainer"
    default_profile = "stainer-ref"
    actions: ClassVar[dict[str, str]] = {
        "clear_protocol": "PROT:CLE",
        "add_step": "PROT:STEP %s,%g,%g,%g,%g,%g,%d",
        "run": "STAIN:RUN",
        "pause": "STAIN:PAUS",
        "resume": "STAIN:RES",
        "abort": "STAIN:ABOR",
        "reagent_level": "REAG:LEV? %s",
        "reagent_list": "REAG:LIST?",
    }
    reply_words: ClassVar[dict[str, tuple[str, ...]]] = {
        "state": ("IDLE", "LOADED", "RUNNING", "PAUSED", "DONE", "ABORTED"),
        "door": ("OPEN", "CLOSED"),
    }

    temperature_c = setpoint("TEMP?", "TEMP %g", "Stage temperature setpoint between steps, degC.")
    measured_temperature_c = reading("MEAS:TEMP?", "Measured stage temperature, degC.")
    door = reading("DOOR?", "``OPEN`` or ``CLOSED``.", kind="word")
    step_count = reading("PROT:COUN?", "Number of steps in the loaded protocol.", kind="int")
    current_step = reading("STAIN:STEP?", "Step running now (1-based; 0 when idle).", kind="int")
    progress = reading("STAIN:PROG?", "Fraction of the protocol's duration done, 0..1.")

    # -- validation -------------------------------------------------------------------------
    def validate_step(self, step: StainStep | Mapping[str, Any], index: int = 0) -> StainStep:
        s = StainStep.coerce(step)
        where = f" (step {index + 1})" if index else ""

        def lim(name: str) -> Limits:
            return self.limit(f"step_{name}")  # type: ignore[return-value]

        try:
            return StainStep(
                reagent=in_set(s.reagent, self.limit("reagent")),  # type: ignore[arg-type]
                dilution=in_range(s.dilution, lim("dilution")),
                volume_ul=in_range(s.volume_ul, lim("volume_ul")),
                time_min=in_range(s.time_min, lim("time_min")),
                temperature_c=in_range(s.temperature_c, lim("temperature_c")),
                agitation_rpm=in_range(s.agitation_rpm, lim("agitation_rpm")),
                wash_cycles=integer_in_range(s.wash_cycles, lim("wash_cycles")),
            )
        except ParameterError as exc:
            raise ParameterError(f"{exc}{where}") from None

    def validate_protocol(self, steps: Iterable[StainStep | Mapping[str, Any]]) -> list[StainStep]:
        """Validate every step (and the step count) without sending anything."""
        out = [self.validate_step(s, i) for i, s in enumerate(steps)]
        integer_in_range(len(out), self.limit("protocol_steps"))  # type: ignore[arg-type]
        return out

    def required_volumes(self, steps: Iterable[StainStep]) -> dict[str, float]:
        """Microlitres of each reagent the protocol consumes (washes use the wash reagent)."""
        wash = str(self.profile.interlocks.get("wash_reagent", "PBS"))
        need: dict[str, float] = defaultdict(float)
        for s in steps:
            need[s.reagent] += s.volume_ul
            need[wash] += s.wash_cycles * s.volume_ul
        return dict(need)

    # -- protocol -----------------------------------------------------------------------------
    def load_protocol(self, steps: Iterable[StainStep | Mapping[str, Any]]) -> list[StainStep]:
        """Validate all steps, then ``PROT:CLE`` and one ``PROT:STEP`` per step."""
        checked = self.validate_protocol(steps)
        self._action("clear_protocol")
        for s in checked:
            self._action("add_step", s.reagent, s.dilution, s.volume_ul, s.time_min, s.temperature_c,
                         s.agitation_rpm, s.wash_cycles)
        self._protocol = checked
        return checked

    @property
    def protocol(self) -> list[StainStep]:
        """The protocol last loaded through this driver."""
        return list(getattr(self, "_protocol", []))

    def reagent_level_ul(self, reagent: str) -> float:
        name = in_set(reagent, self.limit("reagent"))  # type: ignore[arg-type]
        with self._guarded("REAG:LEV?"):
            return float(self.query(self.command("reagent_level", name), cast=float))

    def reagent_names(self) -> list[str]:
        """Names of the reagents loaded on the platform (``REAG:LIST?``)."""
        with self._guarded("REAG:LIST?"):
            return [str(n) for n in self.values(self.command("reagent_list"), cast=str) if n]

    def reagent_levels(self) -> dict[str, float]:
        """``{reagent: microlitres}`` for every loaded reagent."""
        names = self.reagent_names()
        return {n: self.reagent_level_ul(n) for n in names}

    @property
    def door_open(self) -> bool:
        return str(self.door).upper() != "CLOSED"

    def check_interlocks(self, steps: Iterable[StainStep] | None = None) -> None:
        """Raise ``DoorOpenError``/``ReagentError`` (nothing sent) if a run must not start."""
        if self.door_open:
            raise self._interlock(DoorOpenError, "door is open; close it before running a protocol")
        need = self.required_volumes(self.protocol if steps is None else steps)
        for reagent, vol in need.items():
            have = self.reagent_level_ul(reagent)
            if have < vol:
                raise self._interlock(
                    ReagentError, f"reagent {reagent} holds {have:g} ul but the protocol needs {vol:g} ul; refill it"
                )

    # -- conditions that hold a campaign -------------------------------------------------------
    def reagent_low_mark_ul(self, reagent: str) -> float:
        """The profile's low-level mark for ``reagent`` (``interlocks.reagent_low_ul``: a number,
        or a mapping of reagent -> ul with an optional ``default``; 0 when absent)."""
        marks = self.profile.interlocks.get("reagent_low_ul", 0.0)
        try:
            if isinstance(marks, Mapping):
                return float(marks.get(reagent, marks.get("default", 0.0)))
            return float(marks)
        except (TypeError, ValueError):
            raise ConfigError(
                f"profile {self.profile.name!r}: interlocks.reagent_low_ul must be a number of ul or a mapping "
                f"reagent -> ul (with an optional 'default'), got {marks!r}"
            ) from None

    def low_reagents(self) -> list[tuple[str, float, float]]:
        """``(reagent, level_ul, needed_ul)`` for each watched reagent below what it needs.

        Watched: the reagents of the protocol last loaded through this driver (with the wash
        reagent), else every loaded reagent the profile knows. Needed: the larger of the
        reagent's low-level mark and what that protocol consumes.
        """
        need = self.required_volumes(self.protocol) if self.protocol else {}
        known = {c.upper() for c in self.limit("reagent").choices}  # type: ignore[union-attr]
        names = list(need) if need else [n for n in self.reagent_names() if n.upper() in known]
        out = []
        for reagent in names:
            mark = max(self.reagent_low_mark_ul(reagent), need.get(reagent, 0.0))
            have = self.reagent_level_ul(reagent)
            if have < mark:
                out.append((reagent, have, mark))
        return out

    def conditions(self) -> list[Condition]:
        """The door open, a watched reagent low (:meth:`low_reagents`), or, while no run is
        going, the stage further than ``interlocks.temperature_tolerance_c`` from its setpoint."""
        name = self.profile.name
        out: list[Condition] = []
        if self.door_open:
            out.append(Condition(name, "door_open", "door open; close it to continue"))
        for reagent, have, need in self.low_reagents():
            out.append(Condition(name, "reagent_low", f"reagent {reagent} holds {have:g} ul, needs {need:g} ul; refill it"))
        tol = self.profile.interlocks.get("temperature_tolerance_c")
        if tol is not None and self.state not in ("RUNNING", "PAUSED"):
            sp, m = self.temperature_c, self.measured_temperature_c
            if abs(m - sp) > float(tol):
                out.append(Condition(name, "temperature", f"stage temperature {m:.2f} degC, setpoint {sp:g} degC "
                                                          f"(off by {m - sp:+.2f}, tolerance {float(tol):g})"))
        return out

    def run(self, *, wait: bool = True) -> None:
        """Check interlocks, ``STAIN:RUN`` once, and (``wait``) block until done or a fault."""
        self.check_interlocks()
        cmd = self._action("run")
        if wait:
            self.wait_complete()
            errors = self.check_errors()
            if errors:
                raise self._device_fault(errors, cmd)

    def pause(self) -> None:
        self._action("pause")

    def resume(self) -> None:
        """Resume a paused run (door and reagent interlocks are checked first)."""
        self.check_interlocks()
        self._action("resume")

    def abort(self) -> None:
        self._action("abort")

    def describe_protocol(self) -> list[dict[str, Any]]:
        return [asdict(s) for s in self.protocol]
