"""Small input checks shared by the simulators.

Every check raises :class:`~cryoopt.exceptions.ParameterError` naming the
parameter, the value it got and the allowed range, so a caller (an RL agent, a
campaign config, a person at a prompt) knows what to change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np

from cryoopt.exceptions import ParameterError

T = TypeVar("T")


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``float(value)`` if it is finite and inside ``[low, high]``.

    Raises:
        ParameterError: ``value`` is not a finite number or lies outside the range.
    """
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, got {value!r}") from None
    lo_txt = "-inf" if low is None else f"{low:g}"
    hi_txt = "inf" if high is None else f"{high:g}"
    bracket = ("[" if low_inclusive else "(") + f"{lo_txt}, {hi_txt}" + ("]" if high_inclusive else ")")
    if not math.isfinite(x):
        raise ParameterError(f"{name}={value!r} is not finite; allowed range {bracket}")
    bad_low = low is not None and (x < low or (not low_inclusive and x == low))
    bad_high = high is not None and (x > high or (not high_inclusive and x == high))
    if bad_low or bad_high:
        raise ParameterError(f"{name}={x:g} is outside the allowed range {bracket}")
    return x


def check_int(name: str, value: int, low: int | None = None, high: int | None = None) -> int:
    """Return ``int(value)`` if it is an integer inside ``[low, high]``.

    Raises:
        ParameterError: ``value`` is not integral or lies outside the range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise ParameterError(f"{name} must be an integer, got {value!r}")
    check_range(name, int(value), low, high)
    return int(value)


def check_choice(name: str, value: str, choices: tuple[str, ...] | list[str]) -> str:
    """Return ``value`` if it is one of ``choices``.

    Raises:
        ParameterError: ``value`` is not one of the allowed choices.
    """
    if value not in choices:
        raise ParameterError(f"{name}={value!r} is not allowed; choose one of {', '.join(map(repr, choices))}")
    return value


def as_generator(rng: np.random.Generator | int | None = None, *, seed: int | None = None) -> np.random.Generator:
    """Turn a Generator, an integer seed or ``None`` into a ``numpy.random.Generator``.

    ``None`` for both gives a generator seeded with 0, so results never depend on
    global state: same inputs, same output.
    """
    if rng is not None and seed is not None:
        raise ParameterError("pass either rng or seed, not both")
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        rng = seed
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ParameterError(f"rng must be a numpy.random.Generator or an integer seed, got {type(rng).__name__}")


def float_fields_from_dict(cls: type[T], data: Mapping[str, Any], what: str) -> T:
    """``cls(**data)`` for a dataclass of float fields read from a preset mapping; unknown keys
    are refused (a typo in a preset must not fall back to a default silently)."""
    known = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    extra = set(data) - known
    if extra:
        raise ParameterError(f"unknown {what} {sorted(extra)}; allowed: {sorted(known)}")
    return cls(**{k: float(v) for k, v in data.items()})
