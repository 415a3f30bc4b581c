"""Acquisition pieces BoTorch composes but does not ship: weighting by the chance a run succeeds.

A failed run (an instrument error, a block that cracked) has no objective value, so
failures are modelled apart: a GP on +1 (ran) / -1 (failed) labels whose latent
``g(x)`` says where runs succeed. :class:`FeasibilityWeighted` adds
``sum_q log P(g(x_q) > 0)`` (BoTorch's analytic
:class:`~botorch.acquisition.analytic.LogProbabilityOfFeasibility`) to any log
acquisition value, i.e. multiplies the acquisition by the probability that every
point of the batch runs (Gelbart, Snoek & Adams 2014, "Bayesian optimization with
unknown constraints").

Why not as an MC constraint of qLogNEI: BoTorch smooths MC constraint indicators
with a fat-tailed sigmoid (``fat=True``) whose log decays only like
``-2 log|g|/eta``, so a point with ``P(run) = 0.4 %`` and a large predicted gain
still outscores a point at the edge of the failing region (reproduced: 13-15 of 20
proposals failed where the optimum sits at that edge).
"""

from __future__ import annotations

import math

import torch
from botorch.acquisition.acquisition import AcquisitionFunction
from botorch.acquisition.analytic import LogProbabilityOfFeasibility
from botorch.models.model import Model
from torch import Tensor

__all__ = ["FeasibilityWeighted"]


class FeasibilityWeighted(AcquisitionFunction):
    """``log a(X) + sum_q log P(g(x_q) > 0)`` for a log acquisition ``a`` and a feasibility model ``g``.

    Args:
        acquisition: a log acquisition function (``qLogNEI``, ``qLogNEHVI``, ``LogEI``).
        feasibility_model: a single-output model of the latent ``g`` (runs succeed where ``g > 0``).

    Example:
        >>> acqf = FeasibilityWeighted(qLogNoisyExpectedImprovement(model, X_baseline=X), failure_gp)
        >>> acqf(torch.rand(16, 2, X.shape[-1])).shape  # `b x q x d` -> `b`
        torch.Size([16])
    """

    def __init__(
        self, acquisition: AcquisitionFunction, feasibility_model: Model, *, min_prob: float = 0.5,
        barrier_slope: float = 10.0,
    ) -> None:
        super().__init__(model=acquisition.model)
        self.acquisition = acquisition
        self.log_feasibility = LogProbabilityOfFeasibility(feasibility_model, constraints={0: (0.0, None)})
        self.log_min_prob = math.log(min_prob)
        self.barrier_slope = float(barrier_slope)

    # pending points belong to the wrapped acquisition (the feasibility term is per point)
    @property
    def X_pending(self) -> Tensor | None:  # noqa: N802 - BoTorch's name
        return self.acquisition.X_pending

    @X_pending.setter
    def X_pending(self, value: Tensor | None) -> None:  # noqa: N802
        if "acquisition" in self._modules:
            self.acquisition.set_X_pending(value)

    def set_X_pending(self, X_pending: Tensor | None = None) -> None:  # noqa: N803
        self.acquisition.set_X_pending(X_pending)

    @property
    def X_baseline(self) -> Tensor | None:  # noqa: N802 - read by BoTorch's initializers
        return getattr(self.acquisition, "X_baseline", None)

    def forward(self, X: Tensor) -> Tensor:  # noqa: N803
        """`b x q x d` -> `b`: the wrapped log acquisition plus the batch's log probability of running."""
        log_pof = self.log_feasibility(X.reshape(-1, 1, X.shape[-1])).reshape(X.shape[:-1])
        barrier = self.barrier_slope * (log_pof - self.log_min_prob).clamp_max(0.0)
        return self.acquisition(X) + (log_pof + barrier).sum(dim=-1)


def log_prob_success(feasibility_model: Model, X: Tensor) -> Tensor:
    """`n x d` -> `n`: log P(a run at each row succeeds) under ``feasibility_model``."""
    with torch.no_grad():
        return LogProbabilityOfFeasibility(feasibility_model, constraints={0: (0.0, None)})(X.unsqueeze(-2))
