"""Conditions that should hold a campaign: a door open, a temperature off its setpoint, a reagent out.

Each driver reports its own with ``driver.conditions()`` (read from the device with the
readbacks listed in ``instruments/PROTOCOL.md``, thresholds from the profile's
``interlocks``); :meth:`cryoopt.instruments.Bench.suspend_reason` joins them into the
sentence a campaign logs while it waits. None of them is a fault: each clears when
someone closes the door, refills the reagent or the temperature settles, and the
campaign then resumes by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Condition", "ConditionKind"]

ConditionKind = Literal["door_open", "temperature", "reagent_low"]


@dataclass(frozen=True)
class Condition:
    """One condition on one instrument; ``str()`` is the human sentence (device first)."""

    device: str
    kind: ConditionKind
    message: str

    def __str__(self) -> str:
        return f"{self.device}: {self.message}"
