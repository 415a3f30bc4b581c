"""Objectives and outcome constraints of an optimization."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryoopt.exceptions import ParameterError


@dataclass(frozen=True)
class Objective:
    """A named quantity to maximize or minimize."""

    name: str = "objective"
    direction: Literal["maximize", "minimize"] = "maximize"

    def __post_init__(self) -> None:
        if self.direction not in ("maximize", "minimize"):
            raise ParameterError(f"objective {self.name!r}: direction must be 'maximize' or 'minimize', got {self.direction!r}")

    @property
    def sign(self) -> float:
        """+1 for maximize, -1 for minimize (values are multiplied by it to maximize)."""
        return 1.0 if self.direction == "maximize" else -1.0

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "direction": self.direction}


@dataclass(frozen=True)
class OutcomeConstraint:
    """``metric <= bound`` or ``metric >= bound`` on a measured outcome (e.g. ``prep_time_h <= 4``)."""

    name: str
    op: Literal["<=", ">="]
    bound: float

    @classmethod
    def parse(cls, text: str) -> OutcomeConstraint:
        m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*(<=|>=)\s*([+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*", text)
        if not m:
            raise ParameterError(f"outcome constraint {text!r}: write it as 'metric <= number' or 'metric >= number'")
        return cls(m.group(1), m.group(2), float(m.group(3)))  # type: ignore[arg-type]

    def satisfied(self, values: Mapping[str, float]) -> bool:
        v = values[self.name]
        return v <= self.bound if self.op == "<=" else v >= self.bound

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.bound:g}"


def as_objectives(spec: None | str | Objective | Mapping[str, str] | Sequence[Any]) -> list[Objective]:
    """Accept ``None`` (one maximized 'objective'), a name, ``{name: direction}``, or a list."""
    if spec is None:
        return [Objective()]
    if isinstance(spec, Objective):
        return [spec]
    if isinstance(spec, str):
        return [Objective(spec)]
    if isinstance(spec, Mapping):
        if set(spec) <= {"name", "direction"} and "name" in spec:
            return [Objective(**spec)]
        return [Objective(str(k), v) for k, v in spec.items()]
    out = []
    for item in spec:
        out.extend(as_objectives(item))
    names = [o.name for o in out]
    if len(set(names)) != len(names) or not out:
        raise ParameterError(f"objectives need distinct names and at least one, got {names}")
    return out


def as_outcome_constraints(spec: None | Iterable[str | OutcomeConstraint | Mapping[str, Any]]) -> list[OutcomeConstraint]:
    out = []
    for item in spec or []:
        if isinstance(item, OutcomeConstraint):
            out.append(item)
        elif isinstance(item, str):
            out.append(OutcomeConstraint.parse(item))
        else:
            out.append(OutcomeConstraint(item["name"], item["op"], float(item["bound"])))
    return out
