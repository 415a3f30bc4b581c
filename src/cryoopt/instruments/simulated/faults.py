"""Fault injection for simulated devices, configured by pydantic models.

Two families:

*Link faults* act on one exchange, selected by a regular expression on the command
(``match``), skipping the first ``skip`` matches and firing ``count`` times (``None`` =
forever) with ``probability`` (drawn from the injector's seeded generator):

- ``latency``: the reply comes ``seconds`` late (later than the driver's timeout: it arrives
  after the driver gave up, just before the reply to the next command);
- ``drop``: the command is executed but no reply is sent (``execute=False``: the
  command is lost before the device runs it, e.g. an ``*OPC?`` that never completes);
- ``garble``: the reply's first bytes are replaced by non-ASCII noise;
- ``disconnect``: the link closes, ``when="before"`` (command lost) or ``"after"`` it ran;
- ``error_code``: the device refuses the command and queues ``code``/``message`` for
  ``SYST:ERR?``.

*Device faults* change the simulated hardware. Each fires once, when protocol step
``at_step`` begins or at simulated time ``start_s`` (also while the device is idle), and
clears by itself after ``duration_s`` simulated seconds (``None``: it stays until
:meth:`~cryoopt.instruments.simulated.SimulatedDevice.clear_faults`):

- ``reagent_out``: ``reagent``'s level drops to 0; cleared, it is refilled to its level;
- ``door_open``: the stainer's door opens; cleared, it closes;
- ``temperature_drift``: the ``sensor`` temperature leaves control and drifts at
  ``rate_c_per_s`` (from ``start_s``); cleared, it relaxes back to its setpoint.

Faults can also be added while a device runs
(:meth:`~cryoopt.instruments.simulated.SimulatedDevice.inject`).

Example:
    >>> cfg = FaultConfig.coerce([{"kind": "drop", "match": r"SECT:THIC\\?", "count": 1}])
    >>> cfg.faults[0].kind
    'drop'
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from cryoopt.exceptions import ConfigError

__all__ = [
    "DisconnectFault",
    "DoorOpenFault",
    "DropFault",
    "ErrorCodeFault",
    "FaultConfig",
    "FaultInjector",
    "GarbleFault",
    "LatencyFault",
    "ReagentOutFault",
    "TemperatureDriftFault",
]


class _Fault(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _LinkFault(_Fault):
    match: str = Field(".*", description="regex on the command text (fullmatch, case-insensitive)")
    skip: int = Field(0, ge=0, description="let this many matching commands through first")
    count: int | None = Field(1, ge=1, description="fire this many times; None = always")
    probability: float = Field(1.0, ge=0, le=1)


class LatencyFault(_LinkFault):
    kind: Literal["latency"] = "latency"
    seconds: float = Field(gt=0)


class DropFault(_LinkFault):
    kind: Literal["drop"] = "drop"
    execute: bool = Field(True, description="False: the command is lost before the device runs it (a hang)")


class GarbleFault(_LinkFault):
    kind: Literal["garble"] = "garble"


class DisconnectFault(_LinkFault):
    kind: Literal["disconnect"] = "disconnect"
    when: Literal["before", "after"] = "after"


class ErrorCodeFault(_LinkFault):
    kind: Literal["error_code"] = "error_code"
    code: int = -300
    message: str = "Device-specific error"


class _DeviceFault(_Fault):
    duration_s: float | None = Field(None, gt=0, description="clears by itself after this long; None = stays")


class _TriggeredFault(_DeviceFault):
    at_step: int | None = Field(None, ge=1, description="fires when this protocol step begins")
    start_s: float | None = Field(None, ge=0, description="fires at this simulated time, also when idle")

    @model_validator(mode="after")
    def _default_trigger(self) -> _TriggeredFault:
        if self.at_step is None and self.start_s is None:
            self.at_step = 1
        return self


class ReagentOutFault(_TriggeredFault):
    kind: Literal["reagent_out"] = "reagent_out"
    reagent: str


class DoorOpenFault(_TriggeredFault):
    kind: Literal["door_open"] = "door_open"


class TemperatureDriftFault(_DeviceFault):
    kind: Literal["temperature_drift"] = "temperature_drift"
    sensor: Literal["specimen", "knife", "chamber", "stage"] = "chamber"
    rate_c_per_s: float = 0.5
    start_s: float = Field(0.0, ge=0)

    def active(self, now: float) -> bool:
        return now >= self.start_s and (self.duration_s is None or now < self.start_s + self.duration_s)


AnyFault = Annotated[
    Union[LatencyFault, DropFault, GarbleFault, DisconnectFault, ErrorCodeFault, ReagentOutFault,
          DoorOpenFault, TemperatureDriftFault],
    Field(discriminator="kind"),
]


class FaultConfig(BaseModel):
    """The faults a simulated device injects, and the seed of their random draws."""

    model_config = ConfigDict(extra="forbid")
    faults: list[AnyFault] = []
    seed: int = 0

    @classmethod
    def coerce(cls, value: Any) -> FaultConfig:
        """Accept ``None``, a ``FaultConfig``, a dict (``{"faults": [...]}``) or a list of fault dicts."""
        if value is None:
            return cls()
        if isinstance(value, FaultConfig):
            return value
        if isinstance(value, _Fault):
            value = [value]
        if isinstance(value, (list, tuple)):
            value = {"faults": list(value)}
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            raise ConfigError(f"invalid fault configuration:\n{exc}") from exc


_ANY_FAULT: TypeAdapter[Any] = TypeAdapter(AnyFault)


class FaultInjector:
    """Decides, exchange by exchange, which link faults fire (seeded, deterministic)."""

    def __init__(self, config: FaultConfig | Any = None) -> None:
        self.config = FaultConfig.coerce(config).model_copy(deep=True)  # add() must not touch the caller's
        self.rng = np.random.default_rng(self.config.seed)
        self._seen = [0] * len(self.config.faults)
        self._fired = [0] * len(self.config.faults)
        self._patterns = [
            re.compile(getattr(f, "match", ".*"), re.IGNORECASE) for f in self.config.faults
        ]
        self._cleared: set[int] = set()
        self.log: list[tuple[str, str]] = []  # (fault kind, command) each time one fires

    def add(self, fault: Any) -> Any:
        """Add a fault (a model or a dict with ``kind``) from now on; returns the validated fault."""
        try:
            f = fault if isinstance(fault, _Fault) else _ANY_FAULT.validate_python(fault)
        except ValidationError as exc:
            raise ConfigError(f"invalid fault:\n{exc}") from exc
        self.config.faults.append(f)
        self._seen.append(0)
        self._fired.append(0)
        self._patterns.append(re.compile(getattr(f, "match", ".*"), re.IGNORECASE))
        return f

    def clear(self, kind: str | None = None) -> None:
        """Clear the device faults of ``kind`` (all kinds: ``None``); link faults stop firing too."""
        for f in self.config.faults:
            if kind is None or f.kind == kind:
                self._cleared.add(id(f))

    def link_faults(self, command: str) -> list[_LinkFault]:
        fired: list[_LinkFault] = []
        for i, f in enumerate(self.config.faults):
            if not isinstance(f, _LinkFault) or id(f) in self._cleared or not self._patterns[i].fullmatch(command):
                continue
            self._seen[i] += 1
            if self._seen[i] <= f.skip or (f.count is not None and self._fired[i] >= f.count):
                continue
            if f.probability < 1.0 and self.rng.random() >= f.probability:
                continue
            self._fired[i] += 1
            self.log.append((f.kind, command))
            fired.append(f)
        return fired

    def device_faults(self, kind: str) -> list[Any]:
        """The device faults of ``kind`` not cleared."""
        return [f for f in self.config.faults if f.kind == kind and id(f) not in self._cleared]

    def note(self, kind: str, detail: str) -> None:
        self.log.append((kind, detail))
