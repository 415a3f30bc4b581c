"""Optimizers: the ask/tell interface, BoTorch Bayesian optimization and baselines.

Strategies are found by name in :data:`strategies` (``bo``, ``random``, ``sobol``);
:func:`optimize` runs one end to end. Every optimizer takes measured ``contexts``
(``ask(n, context=...)``), recommends what to adopt (:meth:`Optimizer.recommend`,
a :class:`Recommendation` with 95 % intervals) and says when a replicate of it pays
(:meth:`Optimizer.replicate_value`); :class:`BayesianOptimizer` does all three from
its GP. :mod:`cryoopt.optim.fused_kernel` builds BoTorch's compiled qLogNEHVI kernel
at set-up (``python -m cryoopt.optim.fused_kernel build``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryoopt.optim.api import Best, Result, optimize
from cryoopt.optim.base import (
    OptionError,
    Optimizer,
    RandomSearch,
    SobolSearch,
    available_strategies,
    make_optimizer,
    register_strategy,
    strategies,
    strategy_class,
    validate_options,
)
from cryoopt.optim.objectives import Objective, OutcomeConstraint
from cryoopt.optim.recommendation import Recommendation, ReplicateDecision
from cryoopt.optim.trial import Failure, Trial, TrialStatus

if TYPE_CHECKING:
    from cryoopt.optim.bo import BayesianOptimizer


def __getattr__(name: str):  # noqa: ANN202 - lazy: BoTorch takes seconds to import
    if name == "BayesianOptimizer":
        from cryoopt.optim.bo import BayesianOptimizer

        return BayesianOptimizer
    raise AttributeError(f"module 'cryoopt.optim' has no attribute {name!r}")


__all__ = [
    "BayesianOptimizer",
    "Best",
    "Failure",
    "Objective",
    "OptionError",
    "Optimizer",
    "OutcomeConstraint",
    "RandomSearch",
    "Recommendation",
    "ReplicateDecision",
    "Result",
    "SobolSearch",
    "Trial",
    "TrialStatus",
    "available_strategies",
    "make_optimizer",
    "optimize",
    "register_strategy",
    "strategies",
    "strategy_class",
    "validate_options",
]
