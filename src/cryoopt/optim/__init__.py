"""Optimizers: the ask/tell interface, BoTorch Bayesian optimization and baselines.

Strategies are found by name in :data:`strategies` (``bo``, ``random``, ``sobol``);
:func:`optimize` runs one end to end.
"""

from __future__ import annotations

from cryoopt.optim.api import Best, Result, optimize
from cryoopt.optim.base import (
    Optimizer,
    RandomSearch,
    SobolSearch,
    available_strategies,
    make_optimizer,
    register_strategy,
    strategies,
)
from cryoopt.optim.bo import BayesianOptimizer
from cryoopt.optim.objectives import Objective, OutcomeConstraint
from cryoopt.optim.trial import Failure, Trial, TrialStatus

__all__ = [
    "BayesianOptimizer",
    "Best",
    "Failure",
    "Objective",
    "Optimizer",
    "OutcomeConstraint",
    "RandomSearch",
    "Result",
    "SobolSearch",
    "Trial",
    "TrialStatus",
    "available_strategies",
    "make_optimizer",
    "optimize",
    "register_strategy",
    "strategies",
]
