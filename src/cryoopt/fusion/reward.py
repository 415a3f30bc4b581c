"""The fused reward ``R = w1*Logic + w2*Novelty + w3*log(Impact + 1) + w4*dRepro + w5*Meta``.

Each term is a :class:`RewardTerm` found by name in :data:`reward_terms`: which
score it reads, the range its raw value is clipped to, and its transform. The five
standard terms:

============  ==============  ===============  =====================
term          score read      clipped to       transform
============  ==============  ===============  =====================
``logic``     ``logic``       [0, 1]           identity
``novelty``   ``novelty``     [0, 1]           identity
``impact``    ``impact``      [0, impact_max]  ``log(1 + x)``
``d_repro``   ``d_repro``     [-1, 1]          identity
``meta``      ``meta``        [0, 1]           identity
============  ==============  ===============  =====================

Weights are normalised to sum to 1, so the reward is bounded in
``[min_k lo_k, max_k hi_k]`` of the transformed ranges. A missing, NaN or infinite
term marks the evaluation *failed*: :func:`fused_reward` returns a
:class:`RewardResult` with ``failed=True``, ``value=None`` and the reason, and never
a NaN number (``strict=True`` raises instead).

Example:
    >>> r = fused_reward({"logic": 1, "novelty": 0.5, "impact": 0.0, "d_repro": 0.0, "meta": 1},
    ...                  {"logic": 0.5, "novelty": 0.5, "impact": 0, "d_repro": 0, "meta": 0})
    >>> r.value, r.reward_terms["novelty"]["contribution"]
    (0.75, 0.25)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryoopt.exceptions import EvaluationError
from cryoopt.registry import Registry

__all__ = ["REWARD_TERMS", "RewardResult", "RewardTerm", "TermValue", "fused_reward", "reward_terms", "term_features"]

#: The standard terms of the reward, in the order w1..w5.
REWARD_TERMS: tuple[str, ...] = ("logic", "novelty", "impact", "d_repro", "meta")


@dataclass(frozen=True)
class RewardTerm:
    """How a reward term turns a score into a bounded number.

    Attributes:
        score: name of the score it reads (see :data:`cryoopt.pipeline.scores.METRICS`).
        low, high: the raw value is clipped to this range (``high=None``: ``impact_max``).
        transform: applied after clipping.
    """

    score: str
    low: float
    high: float | None
    transform: Callable[[float], float] = field(default=lambda x: x)

    def apply(self, raw: float, *, impact_max: float) -> tuple[float, float]:
        """(clipped, transformed) value of ``raw``."""
        hi = impact_max if self.high is None else self.high
        clipped = min(max(raw, self.low), hi)
        return clipped, float(self.transform(clipped))

    def bounds(self, *, impact_max: float) -> tuple[float, float]:
        hi = impact_max if self.high is None else self.high
        return float(self.transform(self.low)), float(self.transform(hi))


#: Registry of reward terms by name (register your own to extend the reward).
reward_terms: Registry[RewardTerm] = Registry("reward term")
reward_terms.register("logic", RewardTerm("logic", 0.0, 1.0))
reward_terms.register("novelty", RewardTerm("novelty", 0.0, 1.0))
reward_terms.register("impact", RewardTerm("impact", 0.0, None, math.log1p))
reward_terms.register("d_repro", RewardTerm("d_repro", -1.0, 1.0))
reward_terms.register("meta", RewardTerm("meta", 0.0, 1.0))


@dataclass(frozen=True)
class TermValue:
    """One term of a reward: its weight, raw score, clipped and transformed value."""

    name: str
    weight: float
    raw: float
    clipped: float
    value: float

    @property
    def contribution(self) -> float:
        return self.weight * self.value


@dataclass(frozen=True)
class RewardResult:
    """A fused reward with its per-term breakdown, or a failed evaluation.

    Attributes:
        value: the reward, or None when ``failed``.
        terms: name -> :class:`TermValue` (terms whose value was usable).
        failed: True when a term was missing or not finite.
        reason: why it failed ("" otherwise).
        bounds: (lowest, highest) reward reachable with these weights.
    """

    value: float | None
    terms: Mapping[str, TermValue]
    failed: bool = False
    reason: str = ""
    bounds: tuple[float, float] = (-math.inf, math.inf)

    @property
    def reward_terms(self) -> dict[str, dict[str, float]]:
        """Plain dict for ``info["reward_terms"]``: weight, raw, value, contribution per term."""
        return {
            k: {"weight": t.weight, "raw": t.raw, "value": t.value, "contribution": t.contribution}
            for k, t in self.terms.items()
        }

    def __float__(self) -> float:
        if self.value is None:
            raise EvaluationError(f"the evaluation failed, there is no reward: {self.reason}")
        return self.value

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "failed": self.failed, "reason": self.reason, "reward_terms": self.reward_terms}


def _normalised_weights(weights: Mapping[str, float]) -> dict[str, float]:
    w = {str(k): float(v) for k, v in dict(weights).items()}
    if not w:
        raise EvaluationError("no reward weights given")
    bad = {k: v for k, v in w.items() if not math.isfinite(v) or v < 0}
    if bad:
        raise EvaluationError(f"reward weights must be finite and >= 0, got {bad}")
    total = sum(w.values())
    if total <= 0:
        raise EvaluationError("reward weights sum to 0; give at least one term a positive weight")
    for k in w:
        reward_terms.get(k)  # RegistryError names the known terms
    return {k: v / total for k, v in w.items()}


def term_features(values: Mapping[str, Any], names: tuple[str, ...] = REWARD_TERMS, *, impact_max: float = 1e3) -> list[float]:
    """Transformed term values (e.g. ``log(1 + impact)``) in ``names`` order; NaN if missing."""
    out = []
    for name in names:
        raw = _raw(values, reward_terms.get(name).score)
        out.append(math.nan if raw is None or not math.isfinite(raw) else reward_terms.get(name).apply(raw, impact_max=impact_max)[1])
    return out


def _raw(values: Mapping[str, Any], key: str) -> float | None:
    if key not in values:
        return None
    v = values[key]
    v = getattr(v, "value", v)  # a Score
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def fused_reward(
    values: Mapping[str, Any],
    weights: Mapping[str, float] | Any,
    *,
    impact_max: float = 1e3,
    strict: bool = False,
) -> RewardResult:
    """Fuse evaluator scores into one bounded reward with its per-term breakdown.

    Args:
        values: scores by name: a :class:`~cryoopt.pipeline.scores.Scores`, or a mapping
            of floats/Scores (keys are the terms' ``score`` names).
        weights: term name -> weight (normalised to sum 1), or an object with a
            ``weights`` mapping (e.g. :class:`~cryoopt.fusion.weights.ShapleyAHPWeights`).
            Terms with weight 0 are still reported but may be missing.
        impact_max: upper clip of the raw impact before ``log(1 + x)``.
        strict: raise :class:`EvaluationError` instead of returning a failed result.

    Returns:
        :class:`RewardResult`; ``result.reward_terms`` goes into ``info["reward_terms"]``.
    """
    if not (math.isfinite(impact_max) and impact_max > 0):
        raise EvaluationError(f"impact_max must be positive and finite, got {impact_max}")
    w = _normalised_weights(getattr(weights, "weights", weights))
    terms: dict[str, TermValue] = {}
    problems: list[str] = []
    lo = hi = 0.0
    for name, wk in w.items():
        spec = reward_terms.get(name)
        b = spec.bounds(impact_max=impact_max)
        lo += wk * min(b)
        hi += wk * max(b)
        raw = _raw(values, spec.score)
        if raw is None:
            if wk > 0:
                problems.append(f"{name} (score {spec.score!r} missing)")
            continue
        if not math.isfinite(raw):
            problems.append(f"{name} (score {spec.score!r} is {raw})")
            continue
        clipped, val = spec.apply(raw, impact_max=impact_max)
        terms[name] = TermValue(name, wk, raw, clipped, val)
    if problems:
        reason = "evaluation failed: " + ", ".join(problems)
        if strict:
            raise EvaluationError(reason)
        return RewardResult(None, terms, failed=True, reason=reason, bounds=(lo, hi))
    value = math.fsum(t.contribution for t in terms.values())
    return RewardResult(value, terms, bounds=(lo, hi))
