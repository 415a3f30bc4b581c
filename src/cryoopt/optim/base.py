"""The ask/tell optimizer interface and the strategy registry.

A strategy subclasses :class:`Optimizer` and writes one method, :meth:`_propose`.
The public methods validate, keep the trial book and the RNG, and serialize; the
subclass only decides where to look next (the BoTorch split of a public method
that checks its inputs and a private hook that does the work).
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from scipy.stats import qmc

from cryoopt.exceptions import ParameterError, StateError, TrialError
from cryoopt.optim.objectives import Objective, OutcomeConstraint, as_objectives, as_outcome_constraints
from cryoopt.optim.pareto import balanced_compromise, pareto_indices
from cryoopt.optim.recommendation import Recommendation, ReplicateDecision, choose_recommendation, parse_target
from cryoopt.optim.trial import Failure, Trial, TrialStatus, normalize_value
from cryoopt.registry import Registry
from cryoopt.space import FloatParameter, Params, SearchSpace

Context = dict[str, Any]

STATE_VERSION = 1
#: draws per point :meth:`Optimizer._random_points` makes before it accepts a repeat
RANDOM_TRIES = 200

strategies: Registry[type[Optimizer]] = Registry("optimizer strategy")

#: built-in strategies whose modules are imported on first use (BoTorch is slow to import)
_LAZY_STRATEGIES = {"bo": "cryoopt.optim.bo"}


#: constructor keywords every strategy takes from its caller (a campaign sets them from its own fields)
CALLER_KEYWORDS = ("space", "seed", "objectives", "outcome_constraints")


class OptionError(ParameterError):
    """An optimizer option is unknown, of the wrong type or out of range; ``option`` names it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


def strategy_class(name: str) -> type[Optimizer]:
    """The class registered as ``name`` (a built-in's module is imported on first use);
    :class:`~cryoopt.exceptions.RegistryError` naming the available ones otherwise."""
    if name not in strategies and name in _LAZY_STRATEGIES:
        import importlib

        importlib.import_module(_LAZY_STRATEGIES[name])
    return strategies.get(name)


_strategy = strategy_class  # the old private name, kept for callers that used it


def validate_options(strategy: str | type[Optimizer], options: Mapping[str, Any]) -> dict[str, Any]:
    """Check a strategy's options (its constructor keywords) without building an optimizer.

    Refuses, with an :class:`OptionError` whose ``option`` names the culprit: keywords
    the strategy does not take (listing those it does), keywords its caller sets
    (``space``, ``seed``, ``objectives``, ``outcome_constraints``), and values of the
    wrong type or out of range (the strategy's own rules, e.g. ``raw_samples >= 1``).
    Returns the options as the strategy will use them.

    Example:
        >>> validate_options("bo", {"raw_samples": 0})
        Traceback (most recent call last):
        cryoopt.optim.base.OptionError: raw_samples: must be an integer >= 1, got 0
    """
    cls = strategy_class(strategy) if isinstance(strategy, str) else strategy
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        raise ParameterError(f"strategy must be a registered name or an Optimizer subclass, got {strategy!r}")
    if not isinstance(options, Mapping):
        raise ParameterError(f"options must be a mapping {{name: value}}, got {options!r}")
    accepted = [
        name for name, p in inspect.signature(cls.__init__).parameters.items()
        if name not in ("self", *CALLER_KEYWORDS) and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    for key in options:
        if not isinstance(key, str):
            raise OptionError(str(key), f"option names are strings, got {key!r}")
        if key in CALLER_KEYWORDS:
            raise OptionError(key, f"is set by the caller, not an option of strategy {cls.strategy_name!r}")
        if key not in accepted:
            raise OptionError(
                key, f"strategy {cls.strategy_name!r} has no such option; its options: {', '.join(accepted) or 'none'}"
            )
    if options.get("contexts") is not None:
        try:  # the spec's shape; name clashes with parameters need the space
            as_context_space(options["contexts"], None)
        except ParameterError as err:
            raise OptionError("contexts", str(err)) from None
    return cls._check_options(dict(options))


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
    cls = strategy_class(strategy) if isinstance(strategy, str) else strategy
    return cls(space, **kwargs)


def as_context_space(spec: Any, space: SearchSpace | None) -> SearchSpace | None:
    """Contexts as a :class:`SearchSpace`: ``None``, a space, or ``{name: (low, high) | parameter spec}``."""
    if spec is None:
        return None
    if isinstance(spec, SearchSpace):
        ctx = spec
    elif isinstance(spec, Mapping):
        if "parameters" in spec and isinstance(spec["parameters"], Mapping):
            ctx = SearchSpace.from_dict(spec)
        else:
            params = []
            for name, item in spec.items():
                if isinstance(item, Mapping):
                    params.extend(SearchSpace.from_dict({name: item}).parameters)
                elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
                    params.append(FloatParameter(str(name), float(item[0]), float(item[1])))
                else:
                    raise ParameterError(
                        f"context {name!r}: give (low, high) or a parameter spec like "
                        f"{{'type': 'float', 'low': 0, 'high': 1}}, got {item!r}"
                    )
            ctx = SearchSpace(params)
    else:
        raise ParameterError(f"contexts must be a mapping {{name: (low, high)}} or a SearchSpace, got {spec!r}")
    clash = set(ctx.names) & set(space.names if space is not None else ())
    if clash:
        raise ParameterError(f"context name(s) {sorted(clash)} are also search-space parameters; rename them")
    return ctx


class Optimizer(ABC):
    """Base class of every search strategy: ask for trials, tell their results.

    Args:
        space: the search space.
        seed: seeds every random choice; same seed and same tells -> same proposals.
        objectives: ``None`` (one maximized ``objective``), a name, ``{name: direction}``
            or a list of :class:`Objective`.
        outcome_constraints: e.g. ``["prep_time_h <= 4"]``: metrics a result must
            report and satisfy to count as feasible.
        contexts: measurements known before each trial is committed and not chosen by
            the optimizer (e.g. ``{"screening_score": (0, 1)}``: name -> ``(low, high)``
            or a parameter spec). Each ``ask``/``add_trial`` then takes the trial's
            ``context``, stored on the trial; model-based strategies condition on it.
    """

    strategy_name: ClassVar[str] = "base"

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int = 0,
        objectives: Any = None,
        outcome_constraints: Iterable[str | OutcomeConstraint] | None = None,
        contexts: Any = None,
    ) -> None:
        if not isinstance(space, SearchSpace):
            raise ParameterError(f"space must be a SearchSpace, got {type(space).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ParameterError(f"seed must be an int, got {seed!r}")
        self.space = space
        self.seed = int(seed)
        self.objectives: list[Objective] = as_objectives(objectives)
        self.outcome_constraints: list[OutcomeConstraint] = as_outcome_constraints(outcome_constraints)
        # the declared contexts; the base class reads its private copy, so a subclass may keep its
        # own description in ``contexts`` (e.g. a stand-in that stores contexts without modelling them)
        self._context_space: SearchSpace | None = as_context_space(contexts, space)
        self.contexts: SearchSpace | None = self._context_space
        self.trials: list[Trial] = []
        self._rng = np.random.default_rng(self.seed)
        self._sobol_drawn = 0
        self._sobol = self._new_sobol()

    @classmethod
    def _check_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Hook: each of the strategy's own options checked (raise :class:`OptionError`), cleaned."""
        return options

    # ------------------------------------------------------------------ ask / tell
    def ask(self, n: int = 1, *, context: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None) -> list[Trial]:
        """Propose ``n`` new trials (pending until told). Pending trials are taken into account.

        ``context``: with ``contexts`` declared, the measured context of the trials, one
        mapping for all ``n`` or a list of ``n`` (one per trial, e.g. one per specimen).
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ParameterError(f"ask(n): n must be a positive integer, got {n!r}")
        contexts = self._contexts_for(int(n), context)
        proposals = self._propose_in_context(int(n), contexts)
        return [
            self._new_trial(params, source, context=contexts[i] if contexts else None)
            for i, (params, source) in enumerate(proposals)
        ]

    @abstractmethod
    def _propose(self, n: int) -> list[tuple[Params, str]]:
        """Return ``n`` feasible parameter sets and the name of their source."""

    def _propose_in_context(self, n: int, contexts: list[Context] | None) -> list[tuple[Params, str]]:
        """Hook for strategies that use the trials' contexts (one per trial); the default ignores them."""
        return self._propose(n)

    def validate_context(self, context: Any) -> Context:
        """A clean copy of one trial's context, or an error naming the context and its range."""
        if self._context_space is None:
            raise ParameterError(
                "this optimizer has no contexts; declare them when building it, e.g. "
                f"{type(self).__name__}(space, contexts={{'screening_score': (0, 1)}})"
            )
        if not isinstance(context, Mapping):
            raise ParameterError(f"context must be a mapping {{name: value}} over {self._context_space.names}, got {context!r}")
        try:
            return self._context_space.validate(context)
        except ParameterError as err:
            raise type(err)(f"context: {err}") from None

    def _contexts_for(self, n: int, context: Any) -> list[Context] | None:
        if context is None:
            if self._context_space is not None:
                raise ParameterError(
                    f"this optimizer models the contexts {self._context_space.names}: pass each trial's measured "
                    "context, ask(n, context={...}) (one mapping, or a list of n)"
                )
            return None
        if isinstance(context, Mapping):
            return [self.validate_context(context)] * n
        if isinstance(context, Sequence) and not isinstance(context, str):
            if len(context) != n:
                raise ParameterError(f"ask({n}) got {len(context)} contexts; give one mapping or a list of {n}")
            return [self.validate_context(c) for c in context]
        raise ParameterError(f"context must be a mapping or a list of mappings, got {context!r}")

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

    def add_trial(
        self, params: Mapping[str, Any], *, source: str = "manual", context: Mapping[str, Any] | None = None
    ) -> Trial:
        """Inject a trial of your own (validated; ``context`` when contexts are declared); pending until told."""
        clean = self.space.validate(params)
        (ctx,) = self._contexts_for(1, context) or (None,)
        return self._new_trial(clean, source, context=ctx)

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
            n = len(self.trials)
            raise TrialError(f"unknown trial {trial_id!r}; " + (f"trials are numbered 0..{n - 1}" if n else
                                                                  "there are no trials yet: ask() for one first"))
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

    def recommend(
        self,
        *,
        context: Mapping[str, Any] | None = None,
        target: Mapping[str, float] | None = None,
        objective: str | None = None,
    ) -> Recommendation | None:
        """The parameters to adopt: the best expected value over the distinct parameter sets that ran.

        This model-free version pools the replicates of each parameter set and ranks
        them by their mean (95 % t-intervals from two runs on); ``context`` is not
        used (runs are pooled over contexts). :class:`~cryoopt.optim.BayesianOptimizer`
        ranks by the posterior instead. ``target``, e.g. ``{"quality": 0.6}``: the best
        ``objective`` (default: the first objective without a level, e.g. the fastest)
        among those expected to reach it. ``None`` before any feasible result.
        """
        from scipy import stats

        goal = parse_target(target, self.objectives)
        groups = self._feasible_groups()
        if not groups:
            return None
        names = self.objective_names
        means = np.array([[np.mean([t.values[n] for t in g]) for n in names] for g in groups])  # type: ignore[index]
        i, meets, _ = choose_recommendation(means, self.objectives, objective=objective, target=goal)
        runs = groups[i]
        ci: dict[str, tuple[float, float] | None] = {}
        pred: dict[str, tuple[float, float] | None] = {}
        for j, name in enumerate(names):
            values = np.array([t.values[name] for t in runs])  # type: ignore[index]
            if len(values) < 2:
                ci[name] = pred[name] = None
                continue
            half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1))
            ci[name] = (means[i, j] - half / np.sqrt(len(values)), means[i, j] + half / np.sqrt(len(values)))
            pred[name] = (means[i, j] - half * np.sqrt(1 + 1 / len(values)), means[i, j] + half * np.sqrt(1 + 1 / len(values)))
        return Recommendation(
            params=dict(runs[0].params), mean=dict(zip(names, map(float, means[i]))), ci95=ci, predictive95=pred,
            n_runs=len(runs), trial_ids=tuple(t.id for t in runs), context=None, meets_target=meets,
            basis="observed",
        )

    def replicate_value(self, *, context: Mapping[str, Any] | None = None, objective: str | None = None) -> ReplicateDecision:
        """Whether to rerun the incumbent now (see :class:`ReplicateDecision`).

        Model-free strategies have no belief to sharpen, so they never ask for one;
        :class:`~cryoopt.optim.BayesianOptimizer` weighs the incumbent's posterior sd
        against the expected improvement elsewhere.
        """
        rec = self.recommend(context=context)
        nan = float("nan")
        return ReplicateDecision(
            replicate=False, params=rec.params if rec else None, incumbent_sd=nan, best_expected_improvement=nan,
            value_of_replicate=nan, value_of_exploring=nan, objective=objective or self.objective_names[0],
            reason=f"strategy {self.strategy_name!r} has no model to weigh a replicate against exploring",
        )

    def should_replicate(self, *, context: Mapping[str, Any] | None = None, objective: str | None = None) -> bool:
        """``replicate_value(...).replicate``: rerun the incumbent next (e.g. on a fresh specimen)?"""
        return self.replicate_value(context=context, objective=objective).replicate

    def _feasible_groups(self) -> list[list[Trial]]:
        """Feasible completed trials grouped by identical parameters (replicates together), in first-run order."""
        groups: dict[tuple[Any, ...], list[Trial]] = {}
        for t in self.completed:
            if self.is_feasible(t):
                groups.setdefault(tuple(sorted(t.params.items())), []).append(t)
        return list(groups.values())

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

    def _random_points(self, n: int, avoid: Sequence[Params] = ()) -> list[Params]:
        """``n`` uniform random feasible points, never one of ``avoid``, a pending trial or each other
        while the space has such points left, and preferably none that has run already.

        Each point is drawn up to :data:`RANDOM_TRIES` times for a point new to the batch and
        to the finished trials, as long again for one new to the batch only (a replicate of a
        finished trial), then taken as drawn (a space with fewer distinct points than asked).
        """
        out: list[Params] = []
        finished = [t.params for t in self.trials if t.is_finished]
        for _ in range(n):
            taken = [*avoid, *out]
            params = None
            for exclude in ([*taken, *finished], taken):
                for _ in range(RANDOM_TRIES):
                    (draw,) = self.space.sample(1, rng=self._rng)
                    if not self._is_duplicate(draw, exclude):
                        params = draw
                        break
                if params is not None:
                    break
            if params is None:  # every distinct point is in the batch or pending: repeat one
                (params,) = self.space.sample(1, rng=self._rng)
            out.append(params)
        return out

    def _is_duplicate(self, params: Params, batch: Sequence[Params] = ()) -> bool:
        """True if ``params`` equals a point in ``batch`` or a trial still pending."""
        return any(params == other for other in batch) or any(
            params == t.params for t in self.pending
        )

    def _new_trial(self, params: Params, source: str, *, context: Context | None = None) -> Trial:
        t = Trial(id=len(self.trials), params=dict(params), source=source, context=dict(context) if context else None)
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
        state = {
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
        if self._context_space is not None:  # absent otherwise: states of context-free optimizers are unchanged
            state["contexts"] = self._context_space.to_dict()
        extra = self._strategy_state()
        if extra:
            state["strategy_state"] = extra
        return state

    def _strategy_state(self) -> dict[str, Any]:
        """Hook: what a strategy learned that its next proposal depends on, beyond trials and RNG (JSON-ready)."""
        return {}

    def _load_strategy_state(self, state: Mapping[str, Any]) -> None:
        """Hook: restore :meth:`_strategy_state` (states written before it existed have none)."""

    def _settings(self) -> dict[str, Any]:
        """Constructor keyword arguments of the subclass (JSON-ready)."""
        return {}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Optimizer:
        """Rebuild an optimizer saved by :meth:`state_dict` (any registered strategy)."""
        if state.get("version") != STATE_VERSION:
            raise StateError(f"optimizer state version {state.get('version')!r} is not {STATE_VERSION}")
        klass = strategy_class(state["strategy"])
        if cls is not Optimizer and not issubclass(klass, cls):
            raise StateError(f"state is for strategy {state['strategy']!r}, not {cls.__name__}")
        extra = {"contexts": state["contexts"]} if state.get("contexts") is not None else {}
        opt = klass(
            SearchSpace.from_dict(state["space"]),
            seed=state["seed"],
            objectives=[Objective(**o) for o in state["objectives"]],
            outcome_constraints=state["outcome_constraints"],
            **extra,
            **state.get("settings", {}),
        )
        opt.trials = [Trial.from_dict(t) for t in state["trials"]]
        opt._rng.bit_generator.state = state["rng"]
        opt._sobol_drawn = int(state["sobol_drawn"])
        opt._sobol = opt._new_sobol()
        opt._load_strategy_state(state.get("strategy_state") or {})
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
