"""Trials: one proposed parameter set and what became of it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from cryoopt.exceptions import TrialError
from cryoopt.space import Params


class TrialStatus(str, Enum):
    """Life cycle of a trial: pending -> completed | failed | abandoned."""

    PENDING = "pending"  # asked, not yet told (the optimizer treats it as in flight)
    COMPLETED = "completed"
    FAILED = "failed"  # the experiment or the objective failed; never fed to the model as a number
    ABANDONED = "abandoned"  # withdrawn without a result (e.g. lost in a crash, not re-run)


@dataclass(frozen=True)
class Failure:
    """Explicit failure value for :meth:`Optimizer.tell` (instead of a number)."""

    reason: str = "failed"


@dataclass
class Trial:
    """A parameter set proposed (or injected) for evaluation.

    Attributes:
        id: sequential id within its optimizer, from 0.
        params: the parameter values, validated against the search space.
        status: see :class:`TrialStatus`.
        values: objective/metric values once completed (``{name: value}``).
        error: why the trial failed or was abandoned.
        source: who proposed it: ``sobol``, ``random``, ``bo``, ``manual``, ``replicate``.
        metadata: free-form notes of the caller (kept in the optimizer state).
        context: the measured context the trial runs in (e.g. ``{"screening_score": 0.62}``),
            for optimizers built with ``contexts=``; ``None`` otherwise.
    """

    id: int
    params: Params
    status: TrialStatus = TrialStatus.PENDING
    values: dict[str, float] | None = None
    error: str | None = None
    source: str = "manual"
    metadata: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] | None = None

    @property
    def is_finished(self) -> bool:
        return self.status is not TrialStatus.PENDING

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status.value
        if out["context"] is None:  # context-free trials serialize as they always have
            del out["context"]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Trial:
        """Read :meth:`to_dict` output (states saved before contexts existed have no ``context``)."""
        d = dict(d)
        d["status"] = TrialStatus(d["status"])
        return cls(**d)


def normalize_value(value: Any, objective_names: list[str]) -> dict[str, float] | Failure:
    """Turn what an objective returned into ``{name: float}`` or a :class:`Failure`.

    A float maps to the single objective; a dict must hold every objective (and may
    hold extra metrics, e.g. for outcome constraints). NaN/inf, ``None``, an
    exception instance or a :class:`Failure` mean the trial failed.
    """
    if isinstance(value, Failure):
        return value
    if value is None:
        return Failure("objective returned None")
    if isinstance(value, BaseException):
        return Failure(f"{type(value).__name__}: {value}")
    if isinstance(value, Mapping):
        missing = [n for n in objective_names if n not in value]
        if missing:
            raise TrialError(
                f"result is missing objective(s) {missing}; got keys {sorted(value)}; "
                f"return a dict with every objective in {objective_names}"
            )
        out: dict[str, float] = {}
        for k, v in value.items():
            try:
                f = float(v)
            except (TypeError, ValueError):
                raise TrialError(f"result {k!r} = {v!r} is not a number") from None
            if not math.isfinite(f):
                return Failure(f"result {k!r} is {f}")
            out[str(k)] = f
        return out
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise TrialError(
            f"cannot use {value!r} as a result: return a float, a dict of objectives, or Failure(reason)"
        ) from None
    if not math.isfinite(f):
        return Failure(f"objective returned {f}")
    if len(objective_names) != 1:
        raise TrialError(
            f"got one number but there are {len(objective_names)} objectives {objective_names}; return a dict"
        )
    return {objective_names[0]: f}
