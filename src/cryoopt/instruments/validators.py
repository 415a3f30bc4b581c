"""Validators for driver properties, built from a device profile's ``limits``.

pymeasure's ``Instrument.control(..., validator=f, values=v)`` calls ``f(value, v)``
before formatting the command, so a validator that raises stops the write before any
byte leaves the host. pymeasure's own ``strict_range`` raises a bare ``ValueError``
that does not name the parameter; here ``values`` is a :class:`Limits` or
:class:`Choices` object that knows the parameter's name and unit, and the validators
raise :class:`~cryoopt.exceptions.ParameterError` (a ``ValueError``) naming the
parameter, the value and the allowed range.

Example:
    >>> lim = Limits("section_thickness_nm", 15.0, 1000.0, "nm")
    >>> in_range(80, lim)
    80.0
    >>> in_range(5000, lim)
    Traceback (most recent call last):
    ...
    cryoopt.exceptions.ParameterError: section_thickness_nm = 5000 nm is outside the allowed range [15, 1000] nm (from the device profile's limits)
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from cryoopt.exceptions import ParameterError

__all__ = ["Choices", "Limits", "in_range", "in_set", "integer_in_range"]


@dataclass(frozen=True)
class Limits:
    """Closed numeric interval ``[low, high]`` for the parameter ``name``."""

    name: str
    low: float
    high: float
    unit: str = ""

    def describe(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"[{self.low:g}, {self.high:g}]{unit}"


@dataclass(frozen=True)
class Choices:
    """Finite set of allowed values for the parameter ``name`` (compared case-insensitively)."""

    name: str
    choices: tuple[str, ...]

    def describe(self) -> str:
        return "{" + ", ".join(self.choices) + "}"


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    out = float(value)
    if not math.isfinite(out):
        raise ParameterError(f"{name} must be finite, got {value!r}")
    return out


def in_range(value: object, limits: Limits) -> float:
    """Return ``value`` as a float if ``limits.low <= value <= limits.high``, else raise."""
    x = _number(value, limits.name)
    if not limits.low <= x <= limits.high:
        unit = f" {limits.unit}" if limits.unit else ""
        raise ParameterError(
            f"{limits.name} = {value:g}{unit} is outside the allowed range {limits.describe()} "
            "(from the device profile's limits)"
        )
    return x


def integer_in_range(value: object, limits: Limits) -> int:
    """Like :func:`in_range` for whole numbers (counts, indices)."""
    x = in_range(value, limits)
    if x != int(x):
        raise ParameterError(f"{limits.name} must be a whole number, got {value!r}")
    return int(x)


def in_set(value: object, choices: Choices) -> str:
    """Return the canonical spelling of ``value`` if it is one of ``choices``, else raise."""
    if isinstance(value, str):
        for c in choices.choices:
            if c.upper() == value.strip().upper():
                return c
    raise ParameterError(
        f"{choices.name} = {value!r} is not one of the allowed values {choices.describe()} "
        "(from the device profile's limits)"
    )
