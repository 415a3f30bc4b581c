"""Fault injection for simulated devices, configured by pydantic models.

Two families:

*Link faults* act on one exchange, selected by a regular expression on the command
(``match``), skipping the first ``skip`` matches and firing ``count`` times (``None`` =
forever) with ``probability`` (drawn from the injector's seeded generator):

- ``latency``: the reply comes ``seconds`` late (later than the driver's timeout = lost);
- ``drop``: the command is executed but no reply is sent;
- ``garble``: the reply's first bytes are replaced by non-ASCII noise;
- ``disconnect``: the link closes, ``when="before"`` (command lost) or ``"after"`` it ran;
- ``error_code``: the device refuses the command and queues ``code``/``message`` for
  ``SYST:ERR?``.

*Device faults* change the simulated hardware:

- ``reagent_out``: ``reagent``'s level drops to 0 when protocol step ``at_step`` begins;
- ``door_open``: the stainer's door opens when step ``at_step`` begins;
- ``temperature_drift``: from simulated time ``start_s`` the ``sensor`` temperature
  leaves control and drifts at ``rate_c_per_s``.

Example:
    >>> cfg = FaultConfig.coerce([{"kind": "drop", "match": r"SECT:THIC\\?", "count": 1}])
    >>> cfg.faults[0].kind
    'drop'
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class GarbleFault(_LinkFault):
    kind: Literal["garble"] = "garble"


class DisconnectFault(_LinkFault):
    kind: Literal["disconnect"] = "disconnect"
    when: Literal["before", "after"] = "after"


class ErrorCodeFault(_LinkFault):
    kind: Literal["error_code"] = "error_code"
    code: int = -300
    message: str = "Device-specific error"


class ReagentOutFault(_Fault):
    kind: Literal["reagent_out"] = "reagent_out"
    reagent: str
    at_step: int = Field(1, ge=1)


class DoorOpenFault(_Fault):
    kind: Literal["door_open"] = "door_open"
    at_step: int = Field(1, ge=1)


class TemperatureDriftFault(_Fault):
    kind: Literal["temperature_drift"] = "temperature_drift"
    sensor: Literal["specimen", "knife", "chamber", "stage"] = "chamber"
    rate_c_per_s: float = 0.5
    start_s: float = Field(0.0, ge=0)


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


class FaultInjector:
    """Decides, exchange by exchange, which link faults fire (seeded, deterministic)."""

    def __init__(self, config: FaultConfig | Any = None) -> None:
        self.config = FaultConfig.coerce(config)
        self.rng = np.random.default_rng(self.config.seed)
        self._seen = [0] * len(self.config.faults)
        self._fired = [0] * len(self.config.faults)
        self._patterns = [
            re.compile(getattr(f, "match", ".*"), re.IGNORECASE) for f in self.config.faults
        ]
        self.log: list[tuple[str, str]] = []  # (fault kind, command) each time one fires

    def link_faults(self, command: str) -> list[_LinkFault]:
        fired: list[_LinkFault] = []
        for i, f in enumerate(self.config.faults):
            if not isinstance(f, _LinkFault) or not self._patterns[i].fullmatch(command):
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
        return [f for f in self.config.faults if f.kind == kind]

    def note(self, kind: str, detail: str) -> None:
        self.log.append((kind, detail))
