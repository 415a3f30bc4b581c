"""``optimize``: the one-call way to maximize a black-box objective over a SearchSpace."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cryoopt.exceptions import ParameterError
from cryoopt.optim.base import Optimizer, make_optimizer
from cryoopt.optim.trial import Failure, Trial, TrialStatus
from cryoopt.space import Params, SearchSpace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Best:
    """The incumbent: its parameters, its observed value(s) and its trial id."""

    params: Params
    value: float | dict[str, float]
    trial_id: int


@dataclass
class Result:
    """What :func:`optimize` returns.

    Attributes:
        best: the incumbent (noise-aware for ``bo``), or ``None`` if every trial failed.
        history: every trial in order, failed ones included.
        trace: after each evaluation, the best value so far (NaN before the first
            success); with several objectives, the first objective's best feasible value.
        optimizer: the optimizer, to continue with ask/tell or to save its state.
    """

    best: Best | None
    history: list[Trial]
    trace: np.ndarray
    optimizer: Optimizer = field(repr=False)

    @property
    def n_failed(self) -> int:
        return sum(t.status is TrialStatus.FAILED for t in self.history)


def optimize(
    objective: Callable[[Params], Any],
    space: SearchSpace | Mapping[str, Any],
    *,
    budget: int,
    seed: int = 0,
    strategy: str | type[Optimizer] = "bo",
    batch_size: int = 1,
    objectives: Any = None,
    outcome_constraints: Any = None,
    progress: bool | None = None,
    **strategy_kwargs: Any,
) -> Result:
    """Maximize ``objective(params)`` over ``space`` with ``budget`` evaluations.

    ``objective`` returns a float, a dict of named objectives/metrics, or fails by
    raising or returning NaN: a failed trial is recorded and never modelled as a
    number. ``strategy`` is a registered name (``bo``, ``random``, ``sobol``) or an
    :class:`Optimizer` subclass.

    Progress: on a terminal, a bar (tqdm); otherwise one line per evaluation (trial,
    value, best so far, seconds) to the ``cryoopt.optim.api`` logger at INFO, printed
    to stderr when logging is not configured. ``progress=False`` silences both,
    ``progress=True`` forces the bar.

    Example:
        >>> result = optimize(lambda p: -(p["x"] - 0.3) ** 2, {"x": {"type": "float", "low": 0, "high": 1}},
        ...                   budget=15, seed=0)
        >>> round(result.best.params["x"], 1)
        0.3
    """
    if not isinstance(space, SearchSpace):
        space = SearchSpace.from_dict(space)
    for name, v in (("budget", budget), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ParameterError(f"{name} must be a positive integer, got {v!r}")
    opt = make_optimizer(
        strategy, space, seed=seed, objectives=objectives, outcome_constraints=outcome_constraints, **strategy_kwargs
    )
    trace: list[float] = []
    best_so_far = -math.inf
    first = opt.objectives[0]
    on_terminal = sys.stderr is not None and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    use_bar = bool(progress) if progress is not None else on_terminal
    lines = progress is not False and not use_bar
    started = time.perf_counter()
    with tqdm(total=budget, desc=f"optimize[{opt.strategy_name}]", disable=not use_bar, leave=False) as bar:
        while len(trace) < budget:
            for trial in opt.ask(min(batch_size, budget - len(trace))):
                try:
                    value = objective(dict(trial.params))
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as err:  # a failed experiment is data, not a crash
                    log.warning("trial %d failed: %s: %s", trial.id, type(err).__name__, err)
                    value = Failure(f"{type(err).__name__}: {err}")
                opt.tell(trial, value)
                if opt.is_feasible(trial):
                    best_so_far = max(best_so_far, first.sign * (trial.values or {})[first.name])
                trace.append(first.sign * best_so_far if math.isfinite(best_so_far) else math.nan)
                bar.update(1)
                bar.set_postfix(best=f"{trace[-1]:.4g}")
                if lines:
                    _progress_line(len(trace), budget, trial, first.name, trace[-1], time.perf_counter() - started)
    incumbent = opt.best()
    best = None
    if incumbent is not None:
        values = incumbent.values or {}
        value: float | dict[str, float] = values[first.name] if len(opt.objectives) == 1 else dict(values)
        best = Best(dict(incumbent.params), value, incumbent.id)
    return Result(best=best, history=list(opt.trials), trace=np.array(trace), optimizer=opt)


def _progress_line(done: int, budget: int, trial: Trial, name: str, best: float, elapsed_s: float) -> None:
    """One line per evaluation, for logs and non-terminal output."""
    values = trial.values or {}
    result = f"{name}={values[name]:.4g}" if name in values else f"failed ({trial.error})"
    msg = f"optimize: {done}/{budget} trial {trial.id} [{trial.source}] {result}; best {best:.4g}; {elapsed_s:.1f} s"
    if log.hasHandlers():  # logging is configured: it decides what is shown
        log.info(msg)
    else:  # logging not configured: still show progress
        print(msg, file=sys.stderr, flush=True)
