"""The ask/tell optimizer interface and the strategy registry.

A strategy subclasses :class:`Optimizer` and writes one method, :meth:`_propose`.
The public methods validate, keep the trial book and the RNG, and serialize; the
subclass only decides where to look next (the BoTorch split of a public method
that checks its inputs and a private hook that does the work).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from scipy.stats import qmc

from cryoopt.exceptions import ParameterError, StateError, TrialError
from cryoopt.optim.pareto import balanced_compromise, pareto_indices
from cryoopt.optim.objectives import Objective, OutcomeConstraint, as_objectives, as_outcome_constraints
from cryoopt.optim.trial import Failure, Trial, TrialStatus, normalize_value
from cryoopt.registry import Registry
from cryoopt.space import Params, SearchSpace

STATE_VERSION = 1

strategies: Registry[type[Optimizer]] = Registry("optimizer strategy")

#: built-in strategies whose modules are imported on first use (BoTorch is slow to import)
_LAZY_STRATEGIES = {"bo": "cryoopt.optim.bo"}


def _strategy(name: str) -> type[Optimizer]:
    if name not in strategies and name in _LAZY_STRATEGIES:
        import importlib

        importlib.import_module(_LAZY_STRATEGIES[name])
    return strategies.get(name)


def register_strategy(name: str):  # noqa: ANN201 - decorator
    """Class decorator: make an :class:`Optimizer` subclass available by ``name``."""

    def _wrap(cls: type[Optimizer]) -> type[Optimizer]:
        cls.strategy_name = name
        strategies.register(name, cls)
        return cls

    return _wrap


def available_strategies() -> list[str]:
    return sorted(set(strategies.names()) | set(_LAZY_STRATEGIES))


def replicate_due(started: int, batch: int, every: int, replicated: int) -> bool:
    """Whether the next ``batch`` trials should carry a replicate of the incumbent: one per
    ``every`` trials, placed in the batch that reaches the next multiple (``every`` 0: never).

    ``started`` trials ran or run already, ``replicated`` of them were replicates; the
    first trial is never one (there is no incumbent yet)."""
    return bool(every) and started > 0 and (started + batch) // every > replicated


def make_optimizer(strategy: str | type[Optimizer], space: SearchSpace, **kwargs: Any) -> Optimizer:
    """Build an optimizer by registered name (``bo``, ``random``, ``sobol``) or class."""
    cls = _strategy(strategy) if isinstance(strategy, str) else strategy
    return cls(space, **kwargs)


class Optimizer(ABC):
    """Base class of every search strategy: ask for trials, tell their results.

    Args:
        space: the search space.
        seed: seeds every random choice; same seed and same tells -> same proposals.
        objectives: ``None`` (one maximized ``objective``), a name, ``{name: direction}``
            or a list of :class:`Objective`.
        outcome_constraints: e.g. ``["prep_time_h <= 4"]``: metrics a result must
            report and satisfy to count as feasible.
    """

    strategy_name: ClassVar[str] = "base"

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int = 0,
        objectives: Any = None,
        outcome_constraints: Iterable[str | OutcomeConstraint] | None = None,
    ) -> None:
        if not isinstance(space, SearchSpace):
            raise ParameterError(f"space must be a SearchSpace, got {type(space).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ParameterError(f"seed must be an int, got {seed!r}")
        self.space = space
        self.seed = int(seed)
        self.objectives: list[Objective] = as_objectives(objectives)
        self.outcome_constraints: list[OutcomeConstraint] = as_outcome_constraints(outcome_constraints)
        self.trials: list[Trial] = []
        self._rng = np.random.default_rng(self.seed)
        self._sobol_drawn = 0
        self._sobol = self._new_sobol()

    # ------------------------------------------------------------------ ask / tell
    def ask(self, n: int = 1) -> list[Trial]:
        """Propose ``n`` new trials (pending until told). Pending trials are taken into account."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ParameterError(f"ask(n): n must be a positive integer, got {n!r}")
        proposals = self._propose(int(n))
        return [self._new_trial(params, source) for params, source in proposals]

    @abstractmethod
    def _propose(self, n: int) -> list[tuple[Params, str]]:
        """Return ``n`` feasible parameter sets and the name of their source."""

    def tell(self, trial: Trial | int, value: Any) -> Trial:
        """Record the result of a pending trial.

        ``value`` is a float, a dict of objectives (and constraint metrics), or a
        failure: NaN/inf, ``None``, an exception instance or :class:`Failure`.
        Failures are recorded and never given to a model as a number.
        """
        t = self._pending_trial(trial)
        result = normalize_value(value, self.objective_names)
        if isinstance(result, Failure):
            t.status, t.error = TrialStatus.FAILED, result.reason
            return t
        missing = [c.name for c in self.outcome_constraints if c.name not in result]
        if missing:
            raise TrialError(
                f"trial {t.id}: result lacks constraint metric(s) {missing}; report them in the result dict"
            )
        t.status, t.values = TrialStatus.COMPLETED, result
        return t

    def add_trial(self, params: Mapping[str, Any], *, source: str = "manual") -> Trial:
        """Inject a trial of your own (validated); it is pending until told."""
        return self._new_trial(self.space.validate(params), source)

    def update_values(self, trial: Trial | int, values: Mapping[str, float]) -> Trial:
        """Replace a completed trial's values (e.g. after an operator rating re-scores it)."""
        t = self.trial(trial.id if isinstance(trial, Trial) else trial)
        if t.status is not TrialStatus.COMPLETED:
            raise TrialError(f"trial {t.id} is {t.status.value}; only completed trials have values to update")
        result = normalize_value(dict(values), self.objective_names)
        if isinstance(result, Failure):
            raise TrialError(f"trial {t.id}: new values are not finite numbers ({result.reason})")
        t.values = result
        self._data_changed()
        return t

    def _data_changed(self) -> None:
        """Hook: observed data changed other than by ``tell`` (strategies drop caches here)."""

    def abandon(self, trial: Trial | int, reason: str = "abandoned") -> Trial:
        """Withdraw a pending trial without a result (it is neither data nor in flight)."""
        t = self._pending_trial(trial)
        t.status, t.error = TrialStatus.ABANDONED, reason
        return t

    # ------------------------------------------------------------------ queries
    @property
    def objective_names(self) -> list[str]:
        return [o.name for o in self.objectives]

    def trial(self, trial_id: int) -> Trial:
        if isinstance(trial_id, bool) or not isinstance(trial_id, (int, np.integer)) or not 0 <= trial_id < len(self.trials):
            raise TrialError(f"unknown trial {trial_id!r}; trials are numbered 0..{len(self.trials) - 1}")
        return self.trials[int(trial_id)]

    def _by_status(self, status: TrialStatus) -> list[Trial]:
        return [t for t in self.trials if t.status is status]

    @property
    def pending(self) -> list[Trial]:
        return self._by_status(TrialStatus.PENDING)

    @property
    def completed(self) -> list[Trial]:
        return self._by_status(TrialStatus.COMPLETED)

    @property
    def failed(self) -> list[Trial]:
        return self._by_status(TrialStatus.FAILED)

    def is_feasible(self, trial: Trial) -> bool:
        """Completed and meeting every outcome constraint."""
        return trial.status is TrialStatus.COMPLETED and all(
            c.satisfied(trial.values or {}) for c in self.outcome_constraints
        )

    def utility(self, values: Mapping[str, float]) -> np.ndarray:
        """Objective values signed so that larger is better, in objective order."""
        return np.array([o.sign * values[o.name] for o in self.objectives])

    def pareto_front(self) -> list[Trial]:
        """Feasible completed trials that no other feasible trial dominates."""
        feas = [t for t in self.trials if self.is_feasible(t)]
        if not feas:
            return []
        return [feas[i] for i in pareto_indices([self.utility(t.values or {}) for t in feas])]

    def best(self) -> Trial | None:
        """The incumbent: the best feasible observed trial (strategies may refine this).

        With several objectives, the balanced compromise of the Pareto front
        (:func:`~cryoopt.optim.pareto.balanced_compromise`).
        """
        front = self.pareto_front()
        if not front:
            return None
        return front[balanced_compromise([self.utility(t.values or {}) for t in front])]

    # ------------------------------------------------------------------ helpers for strategies
    def _new_sobol(self) -> qmc.Sobol:
        engine = qmc.Sobol(self.space.dim, scramble=True, seed=self.seed)
        if self._sobol_drawn:
            engine.fast_forward(self._sobol_drawn)
        return engine

    def _sobol_points(self, n: int) -> list[Params]:
        """Next ``n`` feasible points of this optimizer's scrambled Sobol sequence."""
        out: list[Params] = []
        if n == 0:
            return out
        for _ in range(10_000):
            u = self._sobol.random(1)[0]
            self._sobol_drawn += 1
            params = self.space.from_unit(u)
            if self.space.is_feasible(params) and not self._is_duplicate(params, out):
                out.append(params)
                if len(out) == n:
                    return out
        raise ParameterError("the Sobol design found no feasible points: check the space's constraints")

    def _random_points(self, n: int) -> list[Params]:
        out: list[Params] = []
        while len(out) < n:
            (params,) = self.space.sample(1, rng=self._rng)
            if not self._is_duplicate(params, out) or len(out) + len(self.trials) > 10 * self._space_size():
                out.append(params)
        return out

    def _space_size(self) -> float:
        """Number of distinct points (inf when any parameter is continuous)."""
        from cryoopt.space import CategoricalParameter, IntParameter

        size = 1.0
        for p in self.space:
            if isinstance(p, CategoricalParameter):
                size *= len(p.choices)
            elif isinstance(p, IntParameter):
                size *= p.n_values
            else:
                return float("inf")
        return size

    def _is_duplicate(self, params: Params, batch: Sequence[Params] = ()) -> bool:
        """True if ``params`` equals a point in ``batch`` or a trial still pending."""
        return any(params == other for other in batch) or any(
            params == t.params for t in self.pending
        )

    def _new_trial(self, params: Params, source: str) -> Trial:
        t = Trial(id=len(self.trials), params=dict(params), source=source)
        self.trials.append(t)
        return t

    def _pending_trial(self, trial: Trial | int) -> Trial:
        t = self.trial(trial.id if isinstance(trial, Trial) else trial)
        if isinstance(trial, Trial) and trial is not t and trial.params != t.params:
            raise TrialError(f"trial {trial.id} does not belong to this optimizer")
        if t.status is not TrialStatus.PENDING:
            raise TrialError(f"trial {t.id} is already {t.status.value}; each trial is told once")
        return t

    # ------------------------------------------------------------------ state
    def state_dict(self, *, include_trials: bool = True) -> dict[str, Any]:
        """Everything needed to continue exactly: space, settings, trials, RNG and Sobol state.

        ``include_trials=False`` leaves ``trials`` empty, for stores (the campaign
        journal) that keep the trials themselves and add them back before restoring.
        """
        return {
            "version": STATE_VERSION,
            "strategy": self.strategy_name,
            "space": self.space.to_dict(),
            "seed": self.seed,
            "objectives": [o.to_dict() for o in self.objectives],
            "outcome_constraints": [str(c) for c in self.outcome_constraints],
            "settings": self._settings(),
            "trials": [t.to_dict() for t in self.trials] if include_trials else [],
            "rng": self._rng.bit_generator.state,
            "sobol_drawn": self._sobol_drawn,
        }

    def _settings(self) -> dict[str, Any]:
        """Constructor keyword arguments of the subclass (JSON-ready)."""
        return {}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Optimizer:
        """Rebuild an optimizer saved by :meth:`state_dict` (any registered strategy)."""
        if state.get("version") != STATE_VERSION:
            raise StateError(f"optimizer state version {state.get('version')!r} is not {STATE_VERSION}")
        klass = _strategy(state["strategy"])
        if cls is not Optimizer and not issubclass(klass, cls):
            raise StateError(f"state is for strategy {state['strategy']!r}, not {cls.__name__}")
        opt = klass(
            SearchSpace.from_dict(state["space"]),
            seed=state["seed"],
            objectives=[Objective(**o) for o in state["objectives"]],
            outcome_constraints=state["outcome_constraints"],
            **state.get("settings", {}),
        )
        opt.trials = [Trial.from_dict(t) for t in state["trials"]]
        opt._rng.bit_generator.state = state["rng"]
        opt._sobol_drawn = int(state["sobol_drawn"])
        opt._sobol = opt._new_sobol()
        return opt

    def to_json(self) -> str:
        return json.dumps(self.state_dict())

    @classmethod
    def from_json(cls, text: str) -> Optimizer:
        return cls.from_state_dict(json.loads(text))


@register_strategy("random")
class RandomSearch(Optimizer):
    """Uniform random search over the (constrained) space: the baseline every strategy must beat."""

    def _propose(self, n: int) -> list[tuple[Params, str]]:
        return [(p, "random") for p in self._random_points(n)]


@register_strategy("sobol")
class SobolSearch(Optimizer):
    """A scrambled Sobol sequence: space-filling, no learning."""

    def _propose(self, n: int) -> list[tuple[Params, str]]:
        return [(p, "sobol") for p in self._sobol_points(n)]
