"""Bayesian optimization with BoTorch: GP models, log-EI/log-EHVI acquisition, mixed spaces.

Modelling choices (all BoTorch/GPyTorch, nothing hand-written):

* One GP per modelled outcome in a :class:`~botorch.models.ModelListGP`:
  :class:`~botorch.models.SingleTaskGP` (dimension-scaled log-normal lengthscale
  prior, Hvarfner et al. 2024, BoTorch's default) or
  :class:`~botorch.models.MixedSingleTaskGP` when the space has categorical
  parameters (categorical kernel on the choice index, never a float between
  choices). Inputs are already in the unit cube; outcomes are standardized.
* One objective: :class:`~botorch.acquisition.logei.qLogNoisyExpectedImprovement`;
  several: :class:`~botorch.acquisition.multi_objective.logei.qLogNoisyExpectedHypervolumeImprovement`
  with a reference point inferred from the data. Pending trials enter as ``X_pending``.
* Outcome constraints (``metric <= bound``) are modelled outcomes weighted into the
  acquisition by their probability of feasibility.
* Failed trials are never regressed on as a number. Once any trial has failed,
  a feasibility GP is fitted on all finished trials with label +1 (ran) / -1
  (failed), and the acquisition is weighted by the probability that this latent
  is positive, so regions that keep failing stop being proposed.
* Categorical dimensions are optimized as discrete variables: every combination
  with :func:`~botorch.optim.optimize_acqf_mixed` when there are few, else
  :func:`~botorch.optim.optimize_mixed.optimize_acqf_mixed_alternating`. Integers
  are optimized relaxed and rounded (feasibility re-checked after rounding). Linear
  parameter constraints go to the acquisition optimizer as inequality constraints.

Every random choice draws from the optimizer's seeded generator, whose state is
serialized, so a restored optimizer proposes exactly what the original would have.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
from botorch.acquisition.multi_objective.objective import IdentityMCMultiOutputObjective
from botorch.acquisition.objective import GenericMCObjective
from botorch.fit import fit_gpytorch_mll
from botorch.models import MixedSingleTaskGP, ModelListGP, SingleTaskGP
from botorch.models.model import Model
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf, optimize_acqf_mixed
from botorch.optim.optimize_mixed import optimize_acqf_mixed_alternating
from botorch.sampling.normal import SobolQMCNormalSampler
from botorch.utils.multi_objective.hypervolume import infer_reference_point
from botorch.utils.sampling import manual_seed
from gpytorch.constraints import GreaterThan
from gpytorch.mlls import ExactMarginalLogLikelihood

from cryoopt.exceptions import OptimizerError
from cryoopt.optim.base import Optimizer, register_strategy
from cryoopt.optim.trial import Trial, TrialStatus
from cryoopt.space import Params, SearchSpace

DTYPE = torch.double
#: above this many category combinations, use the alternating mixed optimizer
MAX_ENUMERATED_CATEGORIES = 16
#: L-BFGS iterations when fitting GP hyperparameters
FIT_MAXITER = 150


@register_strategy("bo")
class BayesianOptimizer(Optimizer):
    """GP-based Bayesian optimization with ask/tell, batches, pending trials and failures.

    Args:
        space: the search space.
        seed: seeds the Sobol design, the acquisition optimizer and the MC sampler.
        objectives: see :class:`~cryoopt.optim.base.Optimizer`.
        outcome_constraints: see :class:`~cryoopt.optim.base.Optimizer`.
        n_initial: size of the Sobol initial design (default ``max(5, d + 1)``).
        num_restarts: acquisition optimizer restarts.
        raw_samples: raw samples to pick the restarts from.
        mc_samples: quasi-MC samples of the acquisition function.
        noise_floor: least observation-noise variance of each outcome's GP, as a fraction
            of that outcome's variance (outcomes are standardized); 0 lets the GP infer
            any noise from 1e-4 up. With few, noisy runs (samples that vary as much as
            protocols do) the GP otherwise tends to explain a lucky result as signal.

    Example:
        >>> opt = BayesianOptimizer(space, seed=0)
        >>> for _ in range(20):
        ...     (trial,) = opt.ask()
        ...     opt.tell(trial, run_experiment(trial.params))
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int = 0,
        objectives: Any = None,
        outcome_constraints: Any = None,
        n_initial: int | None = None,
        num_restarts: int = 8,
        raw_samples: int = 256,
        mc_samples: int = 128,
        noise_floor: float = 0.0,
    ) -> None:
        super().__init__(space, seed=seed, objectives=objectives, outcome_constraints=outcome_constraints)
        if not 0.0 <= noise_floor < 1.0:
            raise ValueError(f"noise_floor must be in [0, 1) (a fraction of each outcome's variance), got {noise_floor}")
        self.noise_floor = float(noise_floor)
        self.n_initial = int(n_initial) if n_initial is not None else max(5, space.dim + 1)
        self.num_restarts = int(num_restarts)
        self.raw_samples = int(raw_samples)
        self.mc_samples = int(mc_samples)
        self._bounds = torch.tensor(space.encoded_bounds(), dtype=DTYPE)
        self._model_cache: tuple[tuple[int, ...], Model] | None = None

    def _settings(self) -> dict[str, Any]:
        return {
            "n_initial": self.n_initial,
            "num_restarts": self.num_restarts,
            "raw_samples": self.raw_samples,
            "mc_samples": self.mc_samples,
            "noise_floor": self.noise_floor,
        }

    def _data_changed(self) -> None:
        self._model_cache = None

    # ------------------------------------------------------------------ proposal
    def _propose(self, n: int) -> list[tuple[Params, str]]:
        started = [t for t in self.trials if t.status is not TrialStatus.ABANDONED]
        n_sobol = min(n, max(self.n_initial - len(started), 0))
        if len(self.completed) < 2:  # nothing to model yet: keep filling the space
            n_sobol = n
        out = [(p, "sobol") for p in self._sobol_points(n_sobol)]
        if n - n_sobol > 0:
            out += self._propose_bo(n - n_sobol, extra_pending=[p for p, _ in out])
        return out

    def _propose_bo(self, q: int, extra_pending: list[Params]) -> list[tuple[Params, str]]:
        seed = int(self._rng.integers(2**31 - 1))
        with manual_seed(seed), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            acqf = self._acquisition(extra_pending, seed)
            candidates = self._optimize(acqf, q)
        out: list[tuple[Params, str]] = []
        for x in candidates.detach().cpu().numpy():
            params = self.space.decode(x)
            if not self.space.is_feasible(params) or self._is_duplicate(params, [p for p, _ in out] + extra_pending):
                # rounding broke a constraint or collided: fall back to a fresh random point
                (params,) = self._random_points(1)
                out.append((params, "random"))
            else:
                out.append((params, "bo"))
        return out

    def _optimize(self, acqf: Any, q: int) -> torch.Tensor:
        ineq = [
            (torch.tensor(idx, dtype=torch.long), torch.tensor(coef, dtype=DTYPE), float(rhs))
            for idx, coef, rhs in self.space.encoded_constraints()
        ] or None
        cat_dims = self.space.categorical_dims
        n_combos = int(np.prod([len(v) for v in cat_dims.values()])) if cat_dims else 1
        opts = {"batch_limit": 8, "maxiter": 200}
        if not cat_dims:
            # integers are optimized relaxed and rounded on decode (cheap and near-optimal
            # for ordinal ranges); rounding that breaks feasibility falls back in _propose_bo
            x, _ = optimize_acqf(
                acqf, bounds=self._bounds, q=q, num_restarts=self.num_restarts,
                raw_samples=self.raw_samples, inequality_constraints=ineq, options=opts,
            )
        elif n_combos <= MAX_ENUMERATED_CATEGORIES:
            # few category combinations: optimize the continuous part for each, keep the best
            combos = [dict(zip(cat_dims, values)) for values in itertools.product(*cat_dims.values())]
            x, _ = optimize_acqf_mixed(
                acqf, bounds=self._bounds, q=q, num_restarts=self.num_restarts,
                raw_samples=self.raw_samples, fixed_features_list=combos,
                inequality_constraints=ineq, options=opts,
            )
        else:
            x, _ = optimize_acqf_mixed_alternating(
                acqf, bounds=self._bounds, cat_dims=cat_dims, q=q, num_restarts=self.num_restarts,
                raw_samples=self.raw_samples, inequality_constraints=ineq,
            )
        return x.reshape(q, -1)

    def _acquisition(self, extra_pending: list[Params], seed: int) -> Any:
        X, Y = self._training_data()
        model, has_failure_model = self._fit(X, Y)
        pending = [t.params for t in self.pending] + extra_pending
        X_pending = self._encode(pending) if pending else None
        constraints = self._constraint_callables(has_failure_model)
        sampler = SobolQMCNormalSampler(torch.Size([self.mc_samples]), seed=seed)
        m = len(self.objectives)
        if m == 1:
            return qLogNoisyExpectedImprovement(
                model,
                X_baseline=X,
                objective=GenericMCObjective(lambda Z, X=None: Z[..., 0]),
                constraints=constraints or None,
                X_pending=X_pending,
                sampler=sampler,
                prune_baseline=True,
                cache_root=False,
            )
        feasible = self._feasible_mask()
        ref = infer_reference_point(Y[feasible][:, :m] if feasible.any() else Y[:, :m])
        return qLogNoisyExpectedHypervolumeImprovement(
            model,
            ref_point=ref.tolist(),
            X_baseline=X,
            objective=IdentityMCMultiOutputObjective(outcomes=list(range(m))),
            constraints=constraints or None,
            X_pending=X_pending,
            sampler=sampler,
            prune_baseline=True,
            cache_root=False,
        )

    def _constraint_callables(self, has_failure_model: bool) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """BoTorch constraints (feasible when ``<= 0``) on the model-list outputs."""
        m = len(self.objectives)
        out: list[Callable[[torch.Tensor], torch.Tensor]] = []
        for j, c in enumerate(self.outcome_constraints):
            col, bound = m + j, c.bound
            if c.op == "<=":
                out.append(lambda Z, col=col, bound=bound: Z[..., col] - bound)
            else:
                out.append(lambda Z, col=col, bound=bound: bound - Z[..., col])
        if has_failure_model:
            col = m + len(self.outcome_constraints)
            out.append(lambda Z, col=col: -Z[..., col])
        return out

    # ------------------------------------------------------------------ modelling
    def _encode(self, params_list: list[Params]) -> torch.Tensor:
        return torch.tensor(np.array([self.space.encode(p) for p in params_list]), dtype=DTYPE)

    def _training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoded X of completed trials and their outcomes (objectives signed to maximize, then constraints)."""
        done = self.completed
        X = self._encode([t.params for t in done])
        rows = [
            list(self.utility(t.values or {})) + [(t.values or {})[c.name] for c in self.outcome_constraints]
            for t in done
        ]
        return X, torch.tensor(rows, dtype=DTYPE)

    def _feasible_mask(self) -> torch.Tensor:
        return torch.tensor([self.is_feasible(t) for t in self.completed], dtype=torch.bool)

    def _gp(self, X: torch.Tensor, y: torch.Tensor, noise_floor: float = 0.0) -> Model:
        cat = list(self.space.categorical_dims)
        if cat:
            model = MixedSingleTaskGP(X, y, cat_dims=cat, outcome_transform=Standardize(m=1))
        else:
            model = SingleTaskGP(X, y, outcome_transform=Standardize(m=1))
        if noise_floor > 0:  # outcomes are standardized: the floor is a fraction of their variance
            model.likelihood.noise_covar.register_constraint("raw_noise", GreaterThan(noise_floor))
        return model

    def _fit(self, X: torch.Tensor, Y: torch.Tensor) -> tuple[Model, bool]:
        finished = [t for t in self.trials if t.status in (TrialStatus.COMPLETED, TrialStatus.FAILED)]
        key = tuple(t.id for t in finished)
        has_failures = any(t.status is TrialStatus.FAILED for t in finished)
        if self._model_cache is not None and self._model_cache[0] == key:
            return self._model_cache[1], has_failures
        models = [self._gp(X, Y[:, j : j + 1], self.noise_floor) for j in range(Y.shape[1])]
        if has_failures:
            Xf = self._encode([t.params for t in finished])
            labels = torch.tensor(
                [[1.0 if t.status is TrialStatus.COMPLETED else -1.0] for t in finished], dtype=DTYPE
            )
            models.append(self._gp(Xf, labels))
        for model in models:
            mll = ExactMarginalLogLikelihood(model.likelihood, model)
            try:
                # capped L-BFGS: the mixed kernel otherwise takes ~800 steps for a
                # marginal-likelihood gain of ~1%
                fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": FIT_MAXITER}})
            except Exception as err:  # botorch raises ModelFittingError after its own retries
                raise OptimizerError(f"GP fit failed on {X.shape[0]} observations: {err}") from err
        model = ModelListGP(*models)
        self._model_cache = (key, model)
        return model, has_failures

    # ------------------------------------------------------------------ incumbent
    def best(self) -> Trial | None:
        """Noise-aware incumbent: the feasible observed trial with the highest posterior mean.

        With one objective, picking the luckiest noisy draw overstates quality; the GP
        mean at the observed points averages the noise out. Several objectives fall
        back to the Pareto compromise of :meth:`Optimizer.best`.
        """
        feasible = [t for t in self.completed if self.is_feasible(t)]
        if len(self.objectives) > 1 or len(self.completed) < 3 or not feasible:
            return super().best()
        X, Y = self._training_data()
        with manual_seed(self.seed), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            model, _ = self._fit(X, Y)
            Xf = self._encode([t.params for t in feasible])
            mean = model.posterior(Xf).mean[..., 0].detach().numpy()
        return feasible[int(np.argmax(mean))]

    def predict(self, params_list: list[Params]) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of each objective (original sign) at ``params_list``.

        Returns arrays of shape ``n x m`` (m objectives).
        """
        if len(self.completed) < 2:
            raise OptimizerError("predict needs at least 2 completed trials")
        X, Y = self._training_data()
        model, _ = self._fit(X, Y)
        with torch.no_grad():
            post = model.posterior(self._encode([self.space.validate(p, check_constraints=False) for p in params_list]))
        m = len(self.objectives)
        signs = np.array([o.sign for o in self.objectives])
        mean = post.mean.numpy()[:, :m] * signs
        std = post.variance.clamp_min(0).sqrt().numpy()[:, :m]
        return mean, std
