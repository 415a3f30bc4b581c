"""What to adopt and whether to rerun it: :class:`Recommendation` and :class:`ReplicateDecision`.

When the same protocol scores very differently on different specimens, the trial
with the best observed value is mostly the luckiest specimen. A recommendation is a
belief instead: each distinct protocol that ran (replicates pooled) is scored by the
posterior mean of its objective (``BayesianOptimizer``) or, without a model, by the
mean of its runs, with a 95 % interval either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryoopt.exceptions import ParameterError
from cryoopt.optim.objectives import Objective
from cryoopt.space import Params

__all__ = ["Recommendation", "ReplicateDecision", "choose_recommendation", "parse_target"]


@dataclass(frozen=True)
class Recommendation:
    """The protocol to adopt, with what is believed about it.

    Attributes:
        params: the recommended parameters (one that has run).
        mean: expected value of each objective (original units and sign): the posterior
            mean, averaged over the contexts seen so far unless a ``context`` was given;
            without a model, the mean of its runs.
        ci95: 95 % interval of that expected value (``None`` when unknown: one run, no model).
        predictive95: 95 % interval of the value of one more run (specimen noise included).
        n_runs: completed runs of these parameters (replicates pooled).
        trial_ids: ids of those runs.
        context: the context the belief is for; ``None``: averaged over the contexts seen.
        meets_target: with a ``target``, whether the expected values reach it.
        p_success: probability a run of these parameters does not fail (``None`` when
            no run has failed yet).
        basis: ``"posterior"`` (GP) or ``"observed"`` (means of runs).
    """

    params: Params
    mean: dict[str, float]
    ci95: dict[str, tuple[float, float] | None]
    predictive95: dict[str, tuple[float, float] | None]
    n_runs: int
    trial_ids: tuple[int, ...]
    context: dict[str, Any] | None = None
    meets_target: bool | None = None
    p_success: float | None = None
    basis: str = "posterior"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "params": dict(self.params), "mean": dict(self.mean),
            "ci95": {k: list(v) if v else None for k, v in self.ci95.items()},
            "predictive95": {k: list(v) if v else None for k, v in self.predictive95.items()},
            "n_runs": self.n_runs, "trial_ids": list(self.trial_ids), "context": self.context,
            "meets_target": self.meets_target, "p_success": self.p_success, "basis": self.basis,
        }


@dataclass(frozen=True)
class ReplicateDecision:
    """Whether rerunning the incumbent is worth more than trying something new.

    Attributes:
        replicate: the decision.
        params: the incumbent (what a replicate reruns), ``None`` before any result.
        incumbent_sd: posterior sd of the incumbent's expected value (objective units).
        best_expected_improvement: largest expected improvement over the incumbent's
            expected value at a new point (times its probability of running).
        value_of_replicate: expected rise of the best expected value among the tried
            protocols after one more run of the incumbent (knowledge gradient).
        value_of_exploring: the same for one run at the best new point.
        objective: the objective the rule looked at.
        reason: one line for logs and reports.
        context: the context the decision is for.
    """

    replicate: bool
    params: Params | None
    incumbent_sd: float
    best_expected_improvement: float
    value_of_replicate: float
    value_of_exploring: float
    objective: str
    reason: str = ""
    context: dict[str, Any] | None = field(default=None)


def parse_target(target: Mapping[str, float] | None, objectives: Sequence[Objective]) -> dict[str, float]:
    """Validate ``{objective: level}``: each name an objective, each level a finite number."""
    if target is None:
        return {}
    if not isinstance(target, Mapping):
        raise ParameterError(f"target must be a mapping {{objective: level}}, got {target!r}")
    names = [o.name for o in objectives]
    out = {}
    for k, v in target.items():
        if k not in names:
            raise ParameterError(f"target names {k!r}, which is not an objective; objectives: {names}")
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ParameterError(f"target {k!r} = {v!r} is not a number") from None
        if not np.isfinite(f):
            raise ParameterError(f"target {k!r} must be finite, got {v!r}")
        out[k] = f
    return out


def choose_recommendation(
    means: np.ndarray, objectives: Sequence[Objective], *, objective: str | None, target: Mapping[str, float]
) -> tuple[int, bool | None, str]:
    """Index of the candidate to recommend from ``n x m`` expected values (original signs).

    Without a target: the best expected ``objective`` (default: the first). With a
    target ``{name: level}`` (``>=`` for maximized objectives, ``<=`` for minimized):
    among candidates expected to reach every level, the best expected ``objective``
    (default: the first objective without a level, e.g. the fastest protocol expected
    to reach a quality); when none reaches it, the one closest on the first target.
    Returns ``(index, meets_target or None, objective used)``.
    """
    names = [o.name for o in objectives]
    if objective is None:
        objective = next((n for n in names if n not in target), names[0])
    if objective not in names:
        raise ParameterError(f"objective {objective!r} is not one of {names}")
    sign = {o.name: o.sign for o in objectives}
    score = sign[objective] * means[:, names.index(objective)]
    if not target:
        return int(np.argmax(score)), None, objective
    ok = np.ones(len(means), bool)
    for name, level in target.items():
        ok &= sign[name] * means[:, names.index(name)] >= sign[name] * level
    if ok.any():
        idx = np.flatnonzero(ok)
        return int(idx[np.argmax(score[idx])]), True, objective
    first = next(iter(target))
    return int(np.argmax(sign[first] * means[:, names.index(first)])), False, objective
