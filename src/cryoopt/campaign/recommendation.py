"""The one protocol a campaign recommends adopting, and what quality to expect from it.

Progress lines, ``cryoopt status``, the report, its plots, MLflow and the live page all
show this recommendation (and nothing else under that name):

* **what**: among the protocols the campaign has run (feasible under the outcome
  constraints, replicates of one protocol pooled), the one with the best *expected*
  first objective; with a ``target`` on it, the best in the second objective among
  those expected to reach the target (e.g. the fastest protocol expected to give
  quality >= 0.3);
* **expected**: a GP's posterior mean at that protocol, fitted to every completed
  trial (the config's optimizer settings, whatever strategy ran the campaign; BoTorch
  via :class:`~cryoopt.optim.BayesianOptimizer`). The posterior mean averages the
  specimen-to-specimen noise over the protocol's replicates and its neighbours, so a
  protocol that won once on a lucky specimen does not win on luck alone;
* **interval**: the 95 % credible interval of that expected value (posterior mean
  ± 1.96 posterior sd; the spread of single runs is wider by the observation noise).

Before three completed trials, or when no GP can be fitted, the recommendation falls
back to observed means (``basis="observed"``; interval from the replicates' t
interval when there are at least two). The observed best trial (for several
objectives the balanced Pareto compromise, :meth:`Outcomes.best`) is something else:
a single, possibly lucky, observation, shown under that name.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cryoopt.campaign.journal import TrialRecord
from cryoopt.campaign.outcomes import Outcomes
from cryoopt.config import CampaignConfig

__all__ = ["Recommendation", "fit_model", "recommend", "units"]

#: 97.5 % quantile of the standard normal (two-sided 95 % interval)
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Recommendation:
    """The protocol to adopt.

    Attributes:
        params: the protocol.
        trial_id: the first trial that ran it (others are its replicates).
        trial_ids: every completed trial with these params (pooled).
        expected: the expected value of each objective (posterior mean, or observed mean).
        interval: 95 % interval of each expected value (``None`` when it cannot be given).
        observed: the mean of the pooled trials' observed values, per objective.
        basis: ``"model"`` (GP posterior) or ``"observed"``.
        objective: the objective it is chosen by (the config's first).
        target: the target on that objective, if the choice used one.
        meets_target: whether the expected value reaches ``target`` (``None`` without one).
    """

    params: dict[str, Any]
    trial_id: int
    trial_ids: tuple[int, ...]
    expected: dict[str, float]
    interval: dict[str, tuple[float, float] | None]
    observed: dict[str, float]
    basis: str
    objective: str
    target: float | None = None
    meets_target: bool | None = None
    units: dict[str, str] = field(default_factory=dict)

    @property
    def n_replicates(self) -> int:
        """How many completed trials ran this protocol (pooled into the estimate)."""
        return len(self.trial_ids)

    def summary(self, names: Sequence[str] | None = None) -> str:
        """One line: ``trial 4 protocol: quality 0.31 [0.22, 0.40], prep_time_h 1.0 [...] (2 runs, GP)``."""
        names = list(names or self.expected)
        parts = []
        for n in names:
            lo_hi = self.interval.get(n)
            iv = f" [{_g(lo_hi[0])}, {_g(lo_hi[1])}]" if lo_hi else ""
            parts.append(f"{n} {_g(self.expected[n])}{iv}")
        runs = f"{self.n_replicates} run" + ("s" if self.n_replicates != 1 else "")
        basis = "GP posterior mean, 95 % interval" if self.basis == "model" else "observed mean"
        return f"trial {self.trial_id} protocol: " + ", ".join(parts) + f" ({runs}; {basis})"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["trial_ids"] = list(self.trial_ids)
        d["interval"] = {k: (list(v) if v else None) for k, v in self.interval.items()}
        d["n_replicates"] = self.n_replicates
        return d


def _g(x: float) -> str:
    return f"{x:.3g}"


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True, default=str)


def fit_model(config: CampaignConfig, trials: Sequence[TrialRecord], *, optimizer: Any = None) -> Any:
    """A :class:`~cryoopt.optim.BayesianOptimizer` fitted to the completed trials, or ``None``.

    ``optimizer``: a BO optimizer already holding these trials (the running campaign's;
    its fitted GP is reused). Otherwise one is built with the config's optimizer options
    (when the campaign's strategy is ``bo``) and the journal's trials; ``None`` before 3
    completed trials or when the GP cannot be fitted.
    """
    done = [t for t in trials if t.status == "completed"]
    if len(done) < 3:
        return None
    from cryoopt.optim import BayesianOptimizer, Trial, TrialStatus

    opt = optimizer if isinstance(optimizer, BayesianOptimizer) else None
    if opt is None:
        options = dict(config.optimizer.options) if config.optimizer.strategy == "bo" else {}
        options.update(num_restarts=2, raw_samples=32)  # only the GP is used: no acquisition to optimize
        try:
            opt = BayesianOptimizer(config.search_space(), seed=config.seed, objectives=dict(config.objectives),
                                    outcome_constraints=list(config.outcome_constraints), **options)
        except (TypeError, ValueError):
            opt = BayesianOptimizer(config.search_space(), seed=config.seed, objectives=dict(config.objectives),
                                    outcome_constraints=list(config.outcome_constraints))
        status = {"completed": TrialStatus.COMPLETED, "failed": TrialStatus.FAILED}
        opt.trials = [
            Trial(id=t.id, params=t.params, status=status[t.status], values=t.values, error=t.error, source=t.source)
            for t in trials if t.status in status
        ]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.predict([done[0].params])
    except Exception:  # noqa: BLE001 - no model: the recommendation falls back to observed means
        return None
    return opt


def recommend(config: CampaignConfig, trials: Sequence[TrialRecord], *, model: Any = None, fit: bool = True,
              target: float | None = None) -> Recommendation | None:
    """The protocol to adopt from ``trials`` (see the module doc); ``None`` before a feasible completed trial.

    Args:
        config: the campaign's config (objectives, constraints, optimizer settings, units).
        trials: the journal's trials (any status; only completed ones count).
        model: a fitted model from :func:`fit_model` (saves fitting again).
        fit: fit a model when none is given (``False``: observed means only).
        target: a target on the first objective (default: ``config.stopping.target`` when it is a number).
    """
    outcomes = Outcomes(config)
    names = config.objective_names
    first = names[0]
    if target is None and isinstance(config.stopping.target, (int, float)):
        target = float(config.stopping.target)
    groups: dict[str, list[TrialRecord]] = {}
    for t in trials:
        if t.status == "completed" and t.values and all(n in t.values for n in names):
            groups.setdefault(_key(t.params), []).append(t)
    candidates = [g for g in groups.values() if outcomes.feasible(_mean_values(g, outcomes))]
    if not candidates:
        return None
    if model is None and fit:
        model = fit_model(config, trials)
    signs = np.array([1.0 if config.objectives[n] == "maximize" else -1.0 for n in names])
    observed = np.array([[float(np.mean([t.values[n] for t in g])) for n in names] for g in candidates])  # type: ignore[index]
    mean, half = observed.copy(), np.full_like(observed, np.nan)
    basis = "observed"
    if model is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m, sd = model.predict([g[0].params for g in candidates])
            mean, half, basis = np.asarray(m, float), Z95 * np.asarray(sd, float), "model"
        except Exception:  # noqa: BLE001 - keep the observed means
            pass
    if basis == "observed":
        for i, g in enumerate(candidates):
            if len(g) >= 2:
                from scipy import stats

                ys = np.array([[t.values[n] for n in names] for t in g])  # type: ignore[index]
                half[i] = stats.t.ppf(0.975, len(g) - 1) * ys.std(axis=0, ddof=1) / math.sqrt(len(g))
    utility = mean * signs
    i = int(np.argmax(utility[:, 0]))
    meets = None
    if target is not None:
        ok = np.flatnonzero(signs[0] * (mean[:, 0] - target) >= 0)
        if ok.size and len(names) > 1:
            i = int(ok[np.argmax(utility[ok, 1])])
        meets = bool(ok.size)
    group = sorted(candidates[i], key=lambda t: t.id)
    interval: dict[str, tuple[float, float] | None] = {}
    for k, n in enumerate(names):
        if not math.isfinite(half[i, k]):
            interval[n] = None
            continue
        lo, hi = float(mean[i, k] - half[i, k]), float(mean[i, k] + half[i, k])
        if all(t.values[n] >= 0 for g in candidates for t in g):  # type: ignore[index]
            lo = max(lo, 0.0)  # never observed negative (a time, a fraction): no negative range
        interval[n] = (lo, hi)
    return Recommendation(
        params=dict(group[0].params), trial_id=group[0].id, trial_ids=tuple(t.id for t in group),
        expected={n: float(mean[i, k]) for k, n in enumerate(names)},
        interval=interval,
        observed={n: float(observed[i, k]) for k, n in enumerate(names)},
        basis=basis, objective=first, target=target, meets_target=meets, units=units(config),
    )


def _mean_values(group: Sequence[TrialRecord], outcomes: Outcomes) -> dict[str, float]:
    """The pooled trials' mean of every value (feasibility of a protocol, not of one lucky run)."""
    keys = set.intersection(*(set(t.values or {}) for t in group))
    return {k: float(np.mean([t.values[k] for t in group])) for k in keys}  # type: ignore[index]


#: units read from a metric's name suffix (the project names quantities with their unit)
_SUFFIX_UNITS = {"_h": "h", "_min": "min", "_s": "s", "_ms": "ms", "_nm": "nm", "_um": "µm", "_mm_s": "mm/s", "_c": "°C",
                 "_px": "px", "_pct": "%"}


def units(config: CampaignConfig) -> dict[str, str]:
    """Units of the space's parameters (their ``unit`` in the config) and of objectives and
    constraint metrics (from a name suffix: ``prep_time_h`` -> ``h``)."""
    out = {name: str(spec["unit"]) for name, spec in config.space.parameters.items() if spec.get("unit")}
    metrics = list(config.objectives) + [c.split("<")[0].split(">")[0].strip() for c in config.outcome_constraints]
    for name in metrics:
        for suffix in sorted(_SUFFIX_UNITS, key=len, reverse=True):
            if name.endswith(suffix):
                out[name] = _SUFFIX_UNITS[suffix]
                break
    return out
