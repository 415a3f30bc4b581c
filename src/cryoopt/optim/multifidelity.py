"""Multi-fidelity pieces of :class:`~cryoopt.optim.BayesianOptimizer` (``fidelities=``), all BoTorch's.

A trial can be measured at several fidelities of different cost, e.g. an LM quick look of a
protocol (minutes to an hour) before its EM series (hours). The fidelity enters the GP as
one more input column ``s = cost / target cost`` in ``(0, 1]`` (the target, most expensive
fidelity at ``s = 1``), modelled by :class:`~botorch.models.SingleTaskMultiFidelityGP`
(a linear-truncated fidelity kernel: the cheaper a fidelity, the more it may differ from the
target). Where and at which fidelity to measure next is chosen by a cost-aware multi-fidelity
acquisition, each value divided by the fidelity's cost
(:class:`~botorch.models.cost.AffineFidelityCostModel`,
:class:`~botorch.acquisition.cost_aware.InverseCostWeightedUtility`) and judged at the target
fidelity (:func:`~botorch.acquisition.utils.project_to_target_fidelity`):
:class:`~botorch.acquisition.max_value_entropy_search.qMultiFidelityMaxValueEntropy` (the
information a measurement gives about the best value at the target; default) or
:class:`~botorch.acquisition.qMultiFidelityKnowledgeGradient` (the expected rise of the best
posterior mean at the target; one-shot, about 4x the time). Both are optimized over the
parameters for each fidelity in turn (:func:`~botorch.optim.optimize_acqf_mixed`), as in
BoTorch's discrete multi-fidelity tutorial.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from botorch.acquisition import PosteriorMean, qMultiFidelityKnowledgeGradient, qMultiFidelityMaxValueEntropy
from botorch.acquisition.cost_aware import InverseCostWeightedUtility
from botorch.acquisition.fixed_feature import FixedFeatureAcquisitionFunction
from botorch.acquisition.utils import project_to_target_fidelity
from botorch.models import SingleTaskMultiFidelityGP
from botorch.models.cost import AffineFidelityCostModel
from botorch.models.model import Model
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf, optimize_acqf_mixed
from gpytorch.constraints import GreaterThan

from cryoopt.optim.base import OptionError

__all__ = ["FIDELITY_ACQUISITIONS", "Fidelities", "check_fidelities", "multi_fidelity_gp", "next_fidelity_point"]

#: fantasies of the knowledge gradient (BoTorch's tutorials use 64-128; fewer keep an ask to seconds)
NUM_FANTASIES = 16
#: L-BFGS iterations of the one-shot knowledge-gradient optimization (its dimension is (1 + fantasies) x d)
KG_MAXITER = 100
#: the cost-aware acquisitions: max-value entropy search, knowledge gradient
FIDELITY_ACQUISITIONS = ("mes", "kg")
#: the default of :func:`next_fidelity_point`
METHOD = "mes"
#: target-fidelity points max-value entropy search draws the maximum's samples over
MES_CANDIDATES = 1000


@dataclass(frozen=True)
class Fidelities:
    """Named fidelities and their costs (any unit, e.g. instrument hours); the most expensive is the target."""

    costs: dict[str, float]

    @property
    def names(self) -> list[str]:
        return list(self.costs)

    @property
    def target(self) -> str:
        return max(self.costs, key=self.costs.__getitem__)

    @property
    def cheapest(self) -> str:
        return min(self.costs, key=self.costs.__getitem__)

    def level(self, name: str) -> float:
        """The GP's fidelity input of ``name``: its cost over the target's, in (0, 1]."""
        return self.costs[name] / self.costs[self.target]

    def name_of(self, level: float) -> str:
        """The fidelity whose :meth:`level` is nearest ``level``."""
        return min(self.costs, key=lambda n: abs(self.level(n) - level))


def check_fidelities(spec: Any) -> Fidelities | None:
    """``None``, or ``{name: cost}`` with >= 2 names and finite costs > 0, one of them strictly the most
    expensive (the target fidelity); :class:`OptionError` naming ``fidelities`` otherwise."""
    if spec is None:
        return None
    if isinstance(spec, Fidelities):
        return spec
    if not isinstance(spec, Mapping) or len(spec) < 2:
        raise OptionError("fidelities", "must map >= 2 fidelity names to their costs, e.g. "
                          f"{{'lm_quick_look': 0.5, 'em_series': 4.0}}, got {spec!r}")
    costs: dict[str, float] = {}
    for name, cost in spec.items():
        if not isinstance(name, str) or not name:
            raise OptionError("fidelities", f"fidelity names are non-empty strings, got {name!r}")
        if isinstance(cost, bool) or not isinstance(cost, (int, float, np.number)) or not (0 < float(cost) < math.inf):
            raise OptionError("fidelities", f"cost of {name!r} must be a finite number > 0, got {cost!r}")
        costs[name] = float(cost)
    top = max(costs.values())
    if sum(c == top for c in costs.values()) > 1:
        raise OptionError("fidelities", f"one fidelity must cost strictly most (the target the optimizer recommends "
                          f"for), got {costs}")
    return Fidelities(costs)


def multi_fidelity_gp(X: torch.Tensor, y: torch.Tensor, column: int, noise_floor: float = 0.0) -> Model:
    """A :class:`SingleTaskMultiFidelityGP` with the fidelity in ``column`` (outcome standardized, optional
    noise floor as a fraction of its variance)."""
    model = SingleTaskMultiFidelityGP(X, y, data_fidelities=[column], outcome_transform=Standardize(m=1))
    if noise_floor > 0:
        model.likelihood.noise_covar.register_constraint("raw_noise", GreaterThan(noise_floor))
    return model


def next_fidelity_point(
    model: Model,
    bounds: torch.Tensor,
    column: int,
    fidelities: Fidelities,
    *,
    num_restarts: int,
    raw_samples: int,
    X_pending: torch.Tensor | None = None,
    num_fantasies: int | None = None,
    method: str | None = None,
    seed: int = 0,
    only: str | None = None,
) -> tuple[torch.Tensor, str, float]:
    """Where, and at which fidelity, to measure next: the point of largest cost-aware multi-fidelity
    acquisition (``method``: ``"mes"`` or ``"kg"``, default :data:`METHOD`), at the fidelity ``only``
    if given. Returns the encoded point (fidelity column set), the fidelity's name and the
    acquisition value (expected gain at the target fidelity per unit cost)."""
    d = bounds.shape[1]
    target = {column: 1.0}
    project = partial(project_to_target_fidelity, target_fidelities=target, d=d)
    top = fidelities.costs[fidelities.target]
    cost = AffineFidelityCostModel(fidelity_weights={column: top}, fixed_cost=0.0)  # cost(s) = s * target cost
    utility = InverseCostWeightedUtility(cost_model=cost)
    if (method or METHOD) == "mes":
        from torch.quasirandom import SobolEngine

        u = SobolEngine(d, scramble=True, seed=seed).draw(MES_CANDIDATES).to(bounds)
        candidates = bounds[0] + (bounds[1] - bounds[0]) * u
        candidates[:, column] = 1.0
        acqf: Any = qMultiFidelityMaxValueEntropy(model, candidates, num_fantasies=num_fantasies or NUM_FANTASIES,
                                                  X_pending=X_pending, cost_aware_utility=utility, project=project)
    else:
        keep = [i for i in range(d) if i != column]
        # today's best expected value at the target fidelity: what a measurement must improve on
        mean_at_target = FixedFeatureAcquisitionFunction(PosteriorMean(model), d=d, columns=[column], values=[1.0])
        _, current = optimize_acqf(mean_at_target, bounds=bounds[:, keep], q=1, num_restarts=num_restarts,
                                   raw_samples=raw_samples, options={"batch_limit": 8, "maxiter": 100})
        acqf = qMultiFidelityKnowledgeGradient(
            model, num_fantasies=num_fantasies or NUM_FANTASIES, current_value=current.detach(), X_pending=X_pending,
            cost_aware_utility=utility, project=project,
        )
    x, value = optimize_acqf_mixed(
        acqf, bounds=bounds, q=1, num_restarts=num_restarts, raw_samples=raw_samples,
        fixed_features_list=[{column: fidelities.level(n)} for n in ([only] if only else fidelities.names)],
        options={"batch_limit": 4, "maxiter": KG_MAXITER},
    )
    x = x.reshape(1, d)
    return x, fidelities.name_of(float(x[0, column])), float(value)
