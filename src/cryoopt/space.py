"""Search spaces: typed parameters with units, bounds, safety limits and linear constraints.

A :class:`SearchSpace` is what a campaign optimizes over. It validates a
parameter set before anything reaches an instrument, and maps parameter sets to
and from the numeric encoding the optimizers work in:

* ``float`` / ``int`` parameters map to ``[0, 1]`` (linearly, or in log space when
  ``log=True``); ints are rounded on decode.
* ``categorical`` parameters map to their choice index ``0 .. k-1`` in one column,
  which BoTorch's mixed-variable models treat as unordered categories (never as a
  float between choices).

Units live in the parameter name (``section_thickness_nm``) and, optionally, in a
``unit`` field. A ``safety`` range, narrower than the search range, is the limit an
instrument demands: the optimizer searches only inside it and validation refuses
anything outside it.

Example:
    >>> space = SearchSpace.from_dict({
    ...     "section_thickness_nm": {"type": "float", "low": 50, "high": 300},
    ...     "buffer": {"type": "categorical", "choices": ["PBS", "TBS"]},
    ... })
    >>> space.decode(space.encode({"section_thickness_nm": 80.0, "buffer": "TBS"}))
    {'section_thickness_nm': 80.0, 'buffer': 'TBS'}
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from cryoopt.exceptions import ConstraintError, ParameterError

ParamValue = float | int | str
Params = dict[str, ParamValue]

__all__ = [
    "CategoricalParameter",
    "FloatParameter",
    "IntParameter",
    "LinearConstraint",
    "Parameter",
    "SearchSpace",
]


def _fmt(x: float) -> str:
    return f"{x:g}"


# ---------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class Parameter(ABC):
    """One named, typed dimension of a search space."""

    name: str
    unit: str | None = field(default=None, kw_only=True)
    description: str | None = field(default=None, kw_only=True)

    type_name: ClassVar[str]

    @property
    @abstractmethod
    def is_numeric(self) -> bool:
        """True for float/int parameters."""

    @abstractmethod
    def validate(self, value: Any) -> ParamValue:
        """Return ``value`` as this parameter's type, or raise :class:`ParameterError`."""

    @abstractmethod
    def encode(self, value: ParamValue) -> float:
        """Map a valid value to its encoded coordinate."""

    @abstractmethod
    def decode(self, x: float) -> ParamValue:
        """Map an encoded coordinate back to a valid value (rounding/clipping as needed)."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-ready description that :meth:`SearchSpace.from_dict` reads back."""

    def _meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.unit is not None:
            out["unit"] = self.unit
        if self.description is not None:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class _NumericParameter(Parameter):
    low: float
    high: float
    log: bool = field(default=False, kw_only=True)
    safety: tuple[float, float] | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ParameterError(
                f"parameter {self.name!r}: need finite low < high, got low={self.low}, high={self.high}"
            )
        if not math.isfinite(self.high - self.low):
            raise ParameterError(
                f"parameter {self.name!r}: the range [{_fmt(self.low)}, {_fmt(self.high)}] is too wide to encode "
                "(high - low overflows); use narrower bounds"
            )
        if self.log and self.low <= 0:
            raise ParameterError(
                f"parameter {self.name!r}: log scale needs low > 0, got low={self.low}; "
                "use log=False or a positive lower bound"
            )
        if self.safety is not None:
            s_low, s_high = self.safety
            if not (self.low <= s_low < s_high <= self.high):
                raise ParameterError(
                    f"parameter {self.name!r}: safety range [{_fmt(s_low)}, {_fmt(s_high)}] must lie "
                    f"inside the search range [{_fmt(self.low)}, {_fmt(self.high)}] with low < high"
                )

    @property
    def is_numeric(self) -> bool:
        return True

    @staticmethod
    def _is_number(value: Any) -> bool:
        """A real number (numpy scalars included), not a bool."""
        return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))

    @property
    def bounds(self) -> tuple[float, float]:
        """The range actually searched: the safety range when given, else ``[low, high]``."""
        return self.safety if self.safety is not None else (self.low, self.high)

    def _check_range(self, value: float) -> None:
        unit = f" {self.unit}" if self.unit else ""
        if not (self.low <= value <= self.high):
            raise ParameterError(
                f"parameter {self.name!r} = {_fmt(value)}{unit} is outside the allowed range "
                f"[{_fmt(self.low)}, {_fmt(self.high)}]{unit}"
            )
        if self.safety is not None and not (self.safety[0] <= value <= self.safety[1]):
            raise ParameterError(
                f"parameter {self.name!r} = {_fmt(value)}{unit} is outside its safety limits "
                f"[{_fmt(self.safety[0])}, {_fmt(self.safety[1])}]{unit} (an instrument limit; "
                "change the instrument profile if the hardware allows more)"
            )

    def _to_unit(self, value: float) -> float:
        lo, hi = self.bounds
        if self.log:
            return (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return (value - lo) / (hi - lo)

    def _from_unit(self, x: float) -> float:
        lo, hi = self.bounds
        x = min(max(float(x), 0.0), 1.0)
        if self.log:
            return math.exp(math.log(lo) + x * (math.log(hi) - math.log(lo)))
        return lo + x * (hi - lo)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type_name, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.safety is not None:
            out["safety"] = {"low": self.safety[0], "high": self.safety[1]}
        return out | self._meta()


@dataclass(frozen=True)
class FloatParameter(_NumericParameter):
    """A real-valued parameter in ``[low, high]``, optionally searched in log space."""

    type_name: ClassVar[str] = "float"

    def validate(self, value: Any) -> float:
        if not self._is_number(value):
            raise ParameterError(f"parameter {self.name!r} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ParameterError(f"parameter {self.name!r} must be finite, got {value}")
        self._check_range(value)
        return value

    def encode(self, value: ParamValue) -> float:
        return self._to_unit(float(value))

    def decode(self, x: float) -> float:
        lo, hi = self.bounds
        return min(max(self._from_unit(x), lo), hi)


@dataclass(frozen=True)
class IntParameter(_NumericParameter):
    """An integer parameter in ``[low, high]`` (both inclusive)."""

    type_name: ClassVar[str] = "int"

    def __post_init__(self) -> None:
        super().__post_init__()
        for label, v in (("low", self.low), ("high", self.high)) + (
            (("safety low", self.safety[0]), ("safety high", self.safety[1])) if self.safety else ()
        ):
            if float(v) != int(v):
                raise ParameterError(f"int parameter {self.name!r}: {label} must be an integer, got {v}")

    def validate(self, value: Any) -> int:
        if not self._is_number(value) or not float(value).is_integer():
            raise ParameterError(f"parameter {self.name!r} must be an integer, got {value!r}")
        value = int(value)
        self._check_range(value)
        return value

    def encode(self, value: ParamValue) -> float:
        return self._to_unit(int(value))

    def decode(self, x: float) -> int:
        lo, hi = self.bounds
        return int(min(max(round(self._from_unit(x)), lo), hi))

    def grid(self) -> list[float]:
        """Encoded coordinates of every allowed integer (for mixed acquisition optimizers)."""
        lo, hi = self.bounds
        return [self._to_unit(v) for v in range(int(lo), int(hi) + 1)]

    @property
    def n_values(self) -> int:
        lo, hi = self.bounds
        return int(hi) - int(lo) + 1


@dataclass(frozen=True)
class CategoricalParameter(Parameter):
    """An unordered choice among ``choices`` (strings or numbers)."""

    choices: tuple[ParamValue, ...] = ()
    type_name: ClassVar[str] = "categorical"

    def __post_init__(self) -> None:
        if len(self.choices) < 1:
            raise ParameterError(f"categorical parameter {self.name!r} needs at least one choice")
        if len(set(self.choices)) != len(self.choices):
            raise ParameterError(f"categorical parameter {self.name!r} has duplicate choices: {self.choices}")

    @property
    def is_numeric(self) -> bool:
        return False

    def validate(self, value: Any) -> ParamValue:
        if value not in self.choices:
            raise ParameterError(
                f"parameter {self.name!r} = {value!r} is not an allowed choice; allowed: {list(self.choices)}"
            )
        return self.choices[self.choices.index(value)]

    def encode(self, value: ParamValue) -> float:
        return float(self.choices.index(value))

    def decode(self, x: float) -> ParamValue:
        idx = int(min(max(round(float(x)), 0), len(self.choices) - 1))
        return self.choices[idx]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "categorical", "choices": list(self.choices)} | self._meta()


_PARAMETER_TYPES: dict[str, type[Parameter]] = {
    "float": FloatParameter,
    "int": IntParameter,
    "categorical": CategoricalParameter,
}


def _is_real(value: Any) -> bool:
    """A real number (numpy scalars included), not a bool and not a numeric string."""
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def _number(name: str, label: str, value: Any) -> float:
    if not _is_real(value):
        raise ParameterError(f"parameter {name!r}: {label} must be a number, got {value!r}")
    return float(value)


def _safety_from_spec(name: str, safety: Any) -> tuple[float, float]:
    """``{low, high}`` or ``[low, high]`` -> a pair of numbers (anything else is refused)."""
    if isinstance(safety, Mapping):
        if set(safety) != {"low", "high"}:
            raise ParameterError(f"parameter {name!r}: safety must be {{low: L, high: H}}, got keys {sorted(map(str, safety))}")
        pair = (safety["low"], safety["high"])
    elif isinstance(safety, Sequence) and not isinstance(safety, str) and len(safety) == 2:
        pair = (safety[0], safety[1])
    else:
        raise ParameterError(f"parameter {name!r}: safety must be {{low: L, high: H}} or [L, H], got {safety!r}")
    return _number(name, "safety low", pair[0]), _number(name, "safety high", pair[1])


def _choices_from_spec(name: str, choices: Any) -> tuple[ParamValue, ...]:
    """A list of strings or finite numbers (a bare string is not a list of its letters)."""
    if isinstance(choices, (str, bytes, Mapping)) or not isinstance(choices, Sequence):
        raise ParameterError(f"categorical parameter {name!r}: choices must be a list, e.g. [PBS, TBS], got {choices!r}")
    for c in choices:
        if not (isinstance(c, str) or (_is_real(c) and math.isfinite(float(c)))):
            raise ParameterError(
                f"categorical parameter {name!r}: each choice must be a string or a finite number, got {c!r}"
            )
    return tuple(choices)


def _parameter_from_dict(name: str, spec: Mapping[str, Any]) -> Parameter:
    if not name.strip():
        raise ParameterError(f"parameter names must not be empty, got {name!r}")
    if not isinstance(spec, Mapping):
        raise ParameterError(f"parameter {name!r}: expected a mapping with a 'type', got {spec!r}")
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in _PARAMETER_TYPES:
        raise ParameterError(
            f"parameter {name!r}: 'type' must be one of {sorted(_PARAMETER_TYPES)}, got {kind!r}"
        )
    meta = {k: spec.pop(k) for k in ("unit", "description") if k in spec}
    for k, v in meta.items():
        if not isinstance(v, str):
            raise ParameterError(f"parameter {name!r}: {k} must be text, got {v!r}")
    if kind == "categorical":
        allowed = {"choices"}
        _refuse_unknown(name, spec, allowed)
        if "choices" not in spec:
            raise ParameterError(f"categorical parameter {name!r} needs 'choices'")
        return CategoricalParameter(name, choices=_choices_from_spec(name, spec["choices"]), **meta)
    _refuse_unknown(name, spec, {"low", "high", "log", "safety"})
    for key in ("low", "high"):
        if key not in spec:
            raise ParameterError(f"{kind} parameter {name!r} needs {key!r}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ParameterError(f"parameter {name!r}: log must be true or false, got {log!r}")
    safety = spec.get("safety")
    return _PARAMETER_TYPES[kind](
        name, _number(name, "low", spec["low"]), _number(name, "high", spec["high"]), log=log,
        safety=None if safety is None else _safety_from_spec(name, safety), **meta,
    )


def _refuse_unknown(name: str, spec: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(spec) - allowed
    if unknown:
        raise ParameterError(
            f"parameter {name!r}: unknown field(s) {sorted(unknown)}; allowed: "
            f"{sorted(allowed | {'type', 'unit', 'description'})}"
        )


# ---------------------------------------------------------------------------- constraints
#: one term of a linear expression: an optional sign (required after the first term), an optional
#: coefficient (``2*x``, ``2 x``, ``2x``) and a parameter name
_TERM = re.compile(r"\s*([+-]?)\s*(?:(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)\s*\*?\s*)?([A-Za-z_]\w*)\s*")


@dataclass(frozen=True)
class LinearConstraint:
    """``sum(coefficients[name] * params[name]) <= rhs`` between numeric parameters.

    Built from an expression such as ``"knife_temp_c - specimen_temp_c <= 20"`` or
    ``"2*a + b >= 1"`` (a ``>=`` constraint is stored negated, as ``<=``).
    """

    coefficients: Mapping[str, float]
    rhs: float
    expression: str | None = None

    @classmethod
    def parse(cls, expression: str) -> LinearConstraint:
        """Parse ``"<linear expression> <= number"`` (or ``>=``)."""
        m = re.fullmatch(r"(.+?)(<=|>=)\s*([+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*", expression)
        if not m:
            raise ParameterError(
                f"constraint {expression!r}: write it as '<linear expression> <= number' or '>= number', "
                "e.g. 'knife_temp_c - specimen_temp_c <= 20'"
            )
        lhs, sense, rhs = m.group(1), m.group(2), float(m.group(3))
        if not math.isfinite(rhs):
            raise ParameterError(f"constraint {expression!r}: the bound must be a finite number, got {m.group(3)}")
        coefficients: dict[str, float] = {}
        pos = 0
        lhs = lhs.strip()
        while pos < len(lhs):
            t = _TERM.match(lhs, pos)
            if not t or t.end() == pos:
                raise ParameterError(
                    f"constraint {expression!r}: cannot read the term at {lhs[pos:]!r}; a linear expression is "
                    "terms like '2*a', 'b', '0.5 c' joined by + or - (no products of parameters)"
                )
            if pos > 0 and not t.group(1):
                raise ParameterError(
                    f"constraint {expression!r}: expected + or - before {lhs[pos:].strip()!r}; a linear expression "
                    "joins terms with + or - (a product of two parameters is not linear)"
                )
            sign = -1.0 if t.group(1) == "-" else 1.0
            coef = float(t.group(2)) if t.group(2) else 1.0
            if not math.isfinite(coef):
                raise ParameterError(f"constraint {expression!r}: coefficient {t.group(2)} is not a finite number")
            coefficients[t.group(3)] = coefficients.get(t.group(3), 0.0) + sign * coef
            pos = t.end()
        if sense == ">=":
            coefficients = {k: -v for k, v in coefficients.items()}
            rhs = -rhs
        return cls(coefficients, rhs, expression)

    @classmethod
    def from_spec(cls, spec: str | Mapping[str, Any]) -> LinearConstraint:
        if isinstance(spec, str):
            return cls.parse(spec)
        if isinstance(spec, Mapping) and set(spec) == {"expression"} and isinstance(spec["expression"], str):
            return cls.parse(spec["expression"])
        if isinstance(spec, Mapping) and set(spec) == {"coefficients", "rhs"} and isinstance(spec["coefficients"], Mapping):
            coefficients, rhs = spec["coefficients"], spec["rhs"]
            if all(_is_real(v) and math.isfinite(v) for v in [*coefficients.values(), rhs]) and coefficients:
                return cls({str(k): float(v) for k, v in coefficients.items()}, float(rhs))
        raise ParameterError(
            f"constraint {spec!r}: give an expression string ('a - b <= 20') or "
            "{coefficients: {name: finite number, ...}, rhs: finite number}"
        )

    def slack(self, params: Mapping[str, ParamValue]) -> float:
        """``rhs - lhs``: negative when the constraint is violated."""
        return self.rhs - sum(c * float(params[k]) for k, c in self.coefficients.items())

    def describe(self) -> str:
        if self.expression:
            return self.expression
        terms = " + ".join(f"{c:g}*{k}" for k, c in self.coefficients.items())
        return f"{terms} <= {self.rhs:g}"

    def to_dict(self) -> dict[str, Any] | str:
        return self.expression if self.expression else {"coefficients": dict(self.coefficients), "rhs": self.rhs}


# ---------------------------------------------------------------------------- the space
class SearchSpace:
    """An ordered set of parameters plus linear inequality constraints between them."""

    def __init__(
        self, parameters: Iterable[Parameter], constraints: Iterable[LinearConstraint | str] = ()
    ) -> None:
        self.parameters: tuple[Parameter, ...] = tuple(parameters)
        if not self.parameters:
            raise ParameterError("a search space needs at least one parameter")
        names = [p.name for p in self.parameters]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ParameterError(f"duplicate parameter names: {sorted(dupes)}")
        self._by_name = {p.name: p for p in self.parameters}
        self.constraints: tuple[LinearConstraint, ...] = tuple(
            c if isinstance(c, LinearConstraint) else LinearConstraint.from_spec(c) for c in constraints
        )
        for c in self.constraints:
            for name in c.coefficients:
                p = self._by_name.get(name)
                if p is None:
                    raise ParameterError(f"constraint {c.describe()!r} names unknown parameter {name!r}; known: {names}")
                if not p.is_numeric:
                    raise ParameterError(f"constraint {c.describe()!r}: {name!r} is categorical, not numeric")
                if getattr(p, "log", False):
                    raise ParameterError(
                        f"constraint {c.describe()!r}: {name!r} is log-scaled; linear constraints need "
                        "linear-scale parameters (set log: false or reformulate)"
                    )

    # -- construction
    @classmethod
    def from_dict(
        cls, spec: Mapping[str, Any], *, constraints: Iterable[str | Mapping[str, Any]] | None = None
    ) -> SearchSpace:
        """Build from ``{name: {type, low, high, ...}}`` or ``{"parameters": ..., "constraints": [...]}``."""
        if not isinstance(spec, Mapping):
            raise ParameterError(f"a search space spec must be a mapping, got {type(spec).__name__}")
        if "parameters" in spec and isinstance(spec["parameters"], Mapping) and set(spec) <= {"parameters", "constraints"}:
            constraints = list(spec.get("constraints") or []) + list(constraints or [])
            spec = spec["parameters"]
        params = [_parameter_from_dict(str(name), s) for name, s in spec.items()]
        return cls(params, [LinearConstraint.from_spec(c) for c in (constraints or [])])

    def to_dict(self) -> dict[str, Any]:
        """``{"parameters": {...}, "constraints": [...]}``; :meth:`from_dict` reads it back."""
        return {
            "parameters": {p.name: p.to_dict() for p in self.parameters},
            "constraints": [c.to_dict() for c in self.constraints],
        }

    # -- introspection
    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    @property
    def dim(self) -> int:
        return len(self.parameters)

    def __len__(self) -> int:
        return len(self.parameters)

    def __iter__(self) -> Iterator[Parameter]:
        return iter(self.parameters)

    def __getitem__(self, name: str) -> Parameter:
        try:
            return self._by_name[name]
        except KeyError:
            raise ParameterError(f"unknown parameter {name!r}; known: {self.names}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"SearchSpace({', '.join(f'{p.name}:{p.type_name}' for p in self.parameters)})"

    @property
    def categorical_dims(self) -> dict[int, list[float]]:
        """Column -> allowed encoded values for categorical parameters."""
        return {
            i: [float(j) for j in range(len(p.choices))]
            for i, p in enumerate(self.parameters)
            if isinstance(p, CategoricalParameter)
        }

    @property
    def integer_dims(self) -> dict[int, list[float]]:
        """Column -> allowed encoded values for integer parameters."""
        return {i: p.grid() for i, p in enumerate(self.parameters) if isinstance(p, IntParameter)}

    def encoded_bounds(self) -> np.ndarray:
        """``2 x d`` array of lower/upper encoded bounds."""
        upper = [float(len(p.choices) - 1) if isinstance(p, CategoricalParameter) else 1.0 for p in self.parameters]
        return np.array([[0.0] * self.dim, upper])

    # -- validation
    def validate(self, params: Mapping[str, Any], *, check_constraints: bool = True) -> Params:
        """Return a clean copy of ``params`` or raise naming the bad parameter and its range.

        Raises:
            ParameterError: unknown or missing keys, wrong type, out of range or safety limits.
            ConstraintError: a linear constraint is violated.
        """
        if not isinstance(params, Mapping):
            raise ParameterError(f"params must be a mapping of name -> value, got {type(params).__name__}")
        unknown = set(params) - set(self._by_name)
        if unknown:
            raise ParameterError(f"unknown parameter(s) {sorted(unknown)}; this space has {self.names}")
        missing = [n for n in self.names if n not in params]
        if missing:
            raise ParameterError(f"missing parameter(s) {missing}; every one of {self.names} is needed")
        clean = {p.name: p.validate(params[p.name]) for p in self.parameters}
        if check_constraints:
            for c in self.constraints:
                if c.slack(clean) < -1e-9:
                    lhs = c.rhs - c.slack(clean)
                    raise ConstraintError(
                        f"constraint {c.describe()!r} is violated: left side = {lhs:g} > {c.rhs:g} "
                        f"for {{{', '.join(f'{k}={clean[k]!r}' for k in c.coefficients)}}}"
                    )
        return clean

    def is_feasible(self, params: Mapping[str, Any]) -> bool:
        try:
            self.validate(params)
        except ParameterError:
            return False
        return True

    # -- encoding
    def encode(self, params: Mapping[str, Any]) -> np.ndarray:
        """Validated params -> 1-D array of encoded coordinates (see module docstring)."""
        clean = self.validate(params, check_constraints=False)
        return np.array([p.encode(clean[p.name]) for p in self.parameters], dtype=float)

    def decode(self, x: Sequence[float] | np.ndarray) -> Params:
        """Encoded coordinates -> params (clipped into range, ints and categories rounded)."""
        x = np.asarray(x, dtype=float)
        if x.shape != (self.dim,):
            raise ParameterError(f"expected an encoded vector of shape ({self.dim},), got {x.shape}")
        return {p.name: p.decode(v) for p, v in zip(self.parameters, x)}

    def encoded_constraints(self) -> list[tuple[list[int], list[float], float]]:
        """Constraints in the encoded space as BoTorch wants them: ``sum(coef * x[idx]) >= rhs``."""
        out = []
        for c in self.constraints:
            idx, coefs, rhs = [], [], c.rhs
            for name, a in c.coefficients.items():
                p = self._by_name[name]
                lo, hi = p.bounds  # type: ignore[attr-defined]
                idx.append(self.names.index(name))
                coefs.append(-a * (hi - lo))
                rhs -= a * lo
            out.append((idx, coefs, -rhs))
        return out

    # -- sampling
    def sample(
        self, n: int, *, rng: np.random.Generator | int | None = None, method: str = "random", max_tries: int = 100
    ) -> list[Params]:
        """Draw ``n`` feasible parameter sets, uniformly (``random``) or space-filling (``sobol``).

        Constraints are met by rejection; raises :class:`ConstraintError` when the
        feasible region is too small to hit.
        """
        from scipy.stats import qmc  # scipy.stats is slow to import; only sampling needs it

        rng = np.random.default_rng(rng)
        sobol = qmc.Sobol(self.dim, scramble=True, seed=rng) if method == "sobol" else None
        if method not in ("random", "sobol"):
            raise ParameterError(f"sample method must be 'random' or 'sobol', got {method!r}")
        out: list[Params] = []
        for _ in range(max_tries):
            k = max(n - len(out), 1) * (2 if self.constraints else 1)
            # Sobol points keep their balance properties in power-of-2 batches
            u = sobol.random(1 << (k - 1).bit_length()) if sobol else rng.random((k, self.dim))
            for row in u:
                params = self.from_unit(row)
                if self.is_feasible(params):
                    out.append(params)
                    if len(out) == n:
                        return out
        raise ConstraintError(
            f"could not sample {n} points meeting the constraints {[c.describe() for c in self.constraints]}; "
            "the feasible region is tiny or empty"
        )

    def from_unit(self, u: Sequence[float] | np.ndarray) -> Params:
        """Map a point of ``[0, 1]^d`` to params (categoricals take equal-width bins)."""
        x = np.array(u, dtype=float)
        for i, p in enumerate(self.parameters):
            if isinstance(p, CategoricalParameter):
                x[i] = min(int(x[i] * len(p.choices)), len(p.choices) - 1)
        return self.decode(x)
