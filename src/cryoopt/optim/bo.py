"""Bayesian optimization with BoTorch: GP models, log-EI/log-EHVI acquisition, mixed spaces, contexts.

Modelling choices (all BoTorch/GPyTorch, nothing hand-written):

* One GP per modelled outcome in a :class:`~botorch.models.ModelListGP`:
  :class:`~botorch.models.SingleTaskGP` (dimension-scaled log-normal lengthscale
  prior, Hvarfner et al. 2024, BoTorch's default). Categorical parameters enter it
  one-hot (:class:`~botorch.models.transforms.input.NumericToCategoricalEncoding`):
  one lengthscale per choice, never a float between choices. Inputs are already in
  the unit cube; outcomes are standardized. Observation noise is learned (with an
  optional floor), so replicates at the same parameters are pooled, not interpolated.
* Contexts (``contexts=``: measurements known before a trial is committed, e.g. a
  specimen's screening score) are extra GP inputs: the GP models ``f(x, c)`` and the
  acquisition is optimized over ``x`` with ``c`` fixed to the trial's context
  (``fixed_features``), against the best tried protocols *at that context*.
* One objective: :class:`~botorch.acquisition.logei.qLogNoisyExpectedImprovement`;
  several: :class:`~botorch.acquisition.multi_objective.logei.qLogNoisyExpectedHypervolumeImprovement`
  with a reference point inferred from the data (its fused C++ kernel only from the
  set-up build, never compiled during a run: :mod:`cryoopt.optim.fused_kernel`).
  Pending trials enter as ``X_pending``.
* Outcome constraints (``metric <= bound``) are modelled outcomes weighted into the
  acquisition by their probability of feasibility.
* Failed trials are never regressed on as a number. Once any trial has failed, a
  feasibility GP is fitted on all finished trials with label +1 (ran) / -1 (failed)
  and the acquisition is multiplied by the analytic probability that a run succeeds
  (:class:`~cryoopt.optim.acquisition.FeasibilityWeighted`).
* Integer and categorical dimensions are optimized as discrete variables with
  :func:`~botorch.optim.optimize_mixed.optimize_acqf_mixed_alternating` (one run
  over all categories; a batch is built point by point with the earlier ones
  pending, so rounding never collapses two proposals); continuous spaces with
  :func:`~botorch.optim.optimize_acqf`. Linear parameter constraints go to the
  acquisition optimizer as inequality constraints.
* Fidelities (``fidelities=``: e.g. an LM quick look and the EM series, with their costs) are
  one more GP input, modelled by a :class:`~botorch.models.SingleTaskMultiFidelityGP`; each
  ``ask`` picks the point *and* the fidelity of largest cost-aware multi-fidelity max-value
  entropy or knowledge gradient (:mod:`cryoopt.optim.multifidelity`), and beliefs (``recommend``, ``predict``)
  are at the target fidelity.
* :meth:`BayesianOptimizer.recommend` is the posterior belief (best posterior mean
  among the protocols that ran, with 95 % intervals), and
  :meth:`BayesianOptimizer.replicate_value` decides when rerunning it pays.

Every random choice draws from the optimizer's seeded generator, whose state is
serialized, so a restored optimizer proposes exactly what the original would have.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from botorch.acquisition.analytic import LogExpectedImprovement
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
from botorch.acquisition.multi_objective.objective import IdentityMCMultiOutputObjective
from botorch.acquisition.objective import GenericMCObjective
from botorch.fit import fit_gpytorch_mll
from botorch.models import ModelListGP, SingleTaskGP
from botorch.models.model import Model
from botorch.models.transforms.input import NumericToCategoricalEncoding
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf, optimize_acqf_discrete, optimize_acqf_discrete_local_search
from botorch.optim.optimize_mixed import optimize_acqf_mixed_alternating
from botorch.sampling.normal import SobolQMCNormalSampler
from botorch.utils.multi_objective.hypervolume import infer_reference_point
from botorch.utils.sampling import manual_seed
from gpytorch.constraints import GreaterThan
from gpytorch.mlls import ExactMarginalLogLikelihood

from cryoopt.exceptions import OptimizerError, ParameterError
from cryoopt.optim import fused_kernel
from cryoopt.optim.acquisition import FeasibilityWeighted, log_prob_success
from cryoopt.optim.base import Context, OptionError, Optimizer, register_strategy
from cryoopt.optim.multifidelity import (
    FIDELITY_ACQUISITIONS,
    Fidelities,
    check_fidelities,
    multi_fidelity_gp,
    next_fidelity_point,
)
from cryoopt.optim.recommendation import Recommendation, ReplicateDecision, choose_recommendation, parse_target
from cryoopt.optim.trial import Trial, TrialStatus
from cryoopt.space import Params, SearchSpace

DTYPE = torch.double
#: L-BFGS iterations when fitting GP hyperparameters
FIT_MAXITER = 150
#: relative change of the marginal likelihood that ends a GP fit (scipy's default, 2e-9, spends
#: most of a categorical fit's 150 steps on gains below 1e-6)
FIT_FTOL = 1e-6
#: a GP fit starts from BoTorch's defaults again once the data have grown by this factor
WARM_START_GROWTH = 1.25
#: all-discrete spaces up to this many points are searched exhaustively, larger ones by local search
MAX_ENUMERATED_CHOICES = 4096
#: z for a two-sided 95 % normal interval
Z95 = 1.959963984540054

Row = tuple[Params, Context | None]


def _positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise OptionError(name, f"must be an integer >= {minimum}, got {value!r}")
    return int(value)


def replicate_noise_floor(X: torch.Tensor, y: torch.Tensor, *, confidence: float = 0.95) -> float:
    """Least noise variance the replicates allow, as a fraction of ``y``'s variance (``Standardize``'s scale).

    Runs at identical inputs differ only by noise (the specimen, as a random effect), so
    their pooled within-group variance ``s^2`` (``sum (n_g - 1)`` degrees of freedom) is a
    model-free estimate of the noise. The floor is its one-sided lower ``confidence``
    bound ``s^2 dof / chi2_confidence(dof)``, so the GP can still learn more noise but not
    interpolate what the replicates show to be noise. 0 without replicates.
    """
    from scipy.stats import chi2

    groups: dict[tuple[float, ...], list[float]] = {}
    for row, value in zip(X.tolist(), y.tolist()):
        groups.setdefault(tuple(row), []).append(value)
    dof = sum(len(g) - 1 for g in groups.values())
    if dof < 1 or y.numel() < 3:
        return 0.0
    within = sum(float(np.sum((np.array(g) - np.mean(g)) ** 2)) for g in groups.values()) / dof
    total = float(y.var())  # unbiased, as Standardize scales
    if total <= 0:
        return 0.0
    lower = within * dof / float(chi2.ppf(confidence, dof))
    return float(min(lower / total, 0.9))


@register_strategy("bo")
class BayesianOptimizer(Optimizer):
    """GP-based Bayesian optimization with ask/tell, batches, pending trials, failures and contexts.

    Args:
        space: the search space.
        seed: seeds the Sobol design, the acquisition optimizer and the MC sampler.
        objectives: see :class:`~cryoopt.optim.base.Optimizer`.
        outcome_constraints: see :class:`~cryoopt.optim.base.Optimizer`.
        contexts: measured, not chosen, inputs of the GP (e.g. ``{"screening_score": (0, 1)}``);
            see :class:`~cryoopt.optim.base.Optimizer`.
        n_initial: size of the Sobol initial design, ``>= 1`` (default ``max(5, d + 1)``).
        num_restarts: acquisition optimizer restarts, ``>= 1``.
        raw_samples: raw samples to pick the restarts from, ``>= 1``.
        mc_samples: quasi-MC samples of the acquisition function, ``>= 1``.
        noise_floor: least observation-noise variance of each outcome's GP, as a fraction
            of that outcome's variance, in ``[0, 1)`` (outcomes are standardized); 0 lets
            the GP infer any noise from 1e-4 up. With few, noisy runs (samples that vary
            as much as protocols do) the GP otherwise tends to explain a lucky result as signal.
        fidelities: ``{name: cost}`` of the ways a trial can be measured (>= 2, costs > 0 in one
            unit, e.g. instrument hours); the most expensive is the target fidelity. Each asked
            trial then says which to run (``trial.metadata["fidelity"]``, :meth:`fidelity_of`);
            a trial added by hand runs at the target unless its metadata says otherwise. The
            initial design measures every third point at the target, the rest at the cheapest
            fidelity; then a cost-aware multi-fidelity acquisition chooses both (one
            point at a time; ``num_restarts``/``raw_samples`` as for any ask). Beliefs
            (:meth:`recommend`, :meth:`predict`) are at the target fidelity. Needs one
            objective, no outcome constraints or contexts, and a continuous space; failed
            trials are kept out of the model but do not weight the acquisition.
        fidelity_acquisition: the cost-aware multi-fidelity acquisition: ``"mes"`` (max-value
            entropy search, default: a few CPU-seconds per ask in 9 dimensions) or ``"kg"``
            (knowledge gradient, one-shot: about 4x as long).

    Example:
        >>> opt = BayesianOptimizer(space, seed=0, contexts={"screening_score": (0, 1)})
        >>> for specimen in specimens:
        ...     (trial,) = opt.ask(context={"screening_score": screen(specimen)})
        ...     opt.tell(trial, run_block(specimen, trial.params))
        >>> rec = opt.recommend()          # best posterior mean, averaged over specimens seen
        >>> rec.params, rec.mean, rec.ci95

        Multi-fidelity (an LM quick look costs 0.5 h, the EM series 4 h):

        >>> opt = BayesianOptimizer(space, fidelities={"lm_quick_look": 0.5, "em_series": 4.0})
        >>> (trial,) = opt.ask()
        >>> opt.tell(trial, run(trial.params, opt.fidelity_of(trial)))
        >>> opt.recommend()                # at the EM series
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int = 0,
        objectives: Any = None,
        outcome_constraints: Any = None,
        contexts: Any = None,
        n_initial: int | None = None,
        num_restarts: int = 8,
        raw_samples: int = 256,
        mc_samples: int = 128,
        noise_floor: float = 0.0,
        fidelities: Mapping[str, float] | None = None,
        fidelity_acquisition: str = "mes",
    ) -> None:
        super().__init__(
            space, seed=seed, objectives=objectives, outcome_constraints=outcome_constraints, contexts=contexts
        )
        options = self._check_options(
            {"n_initial": n_initial, "num_restarts": num_restarts, "raw_samples": raw_samples,
             "mc_samples": mc_samples, "noise_floor": noise_floor, "fidelities": fidelities,
             "fidelity_acquisition": fidelity_acquisition}
        )
        self.fidelity_acquisition = options["fidelity_acquisition"]
        self.fidelities: Fidelities | None = check_fidelities(options["fidelities"])
        self._asked_fidelities: list[str] = []  # the fidelities of the trials an ask is proposing
        self._forced_fidelity: str | None = None  # ask(fidelity=...)
        if self.fidelities is not None:
            self._check_fidelity_support()
        self.noise_floor = float(options["noise_floor"])
        self.n_initial = max(5, space.dim + 1) if options["n_initial"] is None else options["n_initial"]
        self.num_restarts = options["num_restarts"]
        self.raw_samples = options["raw_samples"]
        self.mc_samples = options["mc_samples"]
        self._d = space.dim
        bounds = space.encoded_bounds()
        if self.contexts is not None:
            bounds = np.concatenate([bounds, self.contexts.encoded_bounds()], axis=1)
        #: the GP's fidelity column (multi-fidelity only): cost / target cost, the target at 1
        self._fid_col = bounds.shape[1] if self.fidelities is not None else None
        if self.fidelities is not None:
            low = min(self.fidelities.level(n) for n in self.fidelities.names)
            bounds = np.concatenate([bounds, [[low], [1.0]]], axis=1)
        self._bounds = torch.tensor(bounds, dtype=DTYPE)
        self._model_cache: tuple[tuple[Any, ...], tuple[Model, Model | None]] | None = None
        # GP hyperparameters of the last fit, per model slot: the next fit starts from them
        self._warm: dict[str, dict[str, list[Any]]] = {}
        self._warm_key: list[list[Any]] | None = None  # the data those hyperparameters were fitted to
        self._cold_at = 0  # finished trials at the last fit from BoTorch's defaults

    @classmethod
    def _check_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Counts are integers >= 1 (``n_initial`` may be ``None``: the default), ``raw_samples >=
        num_restarts`` (the restarts are picked from the raw samples), ``noise_floor`` in [0, 1)."""
        out = dict(options)
        for name in ("num_restarts", "raw_samples", "mc_samples"):
            if name in out:
                out[name] = _positive_int(name, out[name])
        if out.get("n_initial") is not None:
            out["n_initial"] = _positive_int("n_initial", out["n_initial"])
        restarts = out.get("num_restarts", 8)
        if out.get("raw_samples", 256) < restarts:
            raise OptionError(
                "raw_samples", f"must be >= num_restarts ({restarts}): the restarts are picked from the raw samples, "
                f"got {out.get('raw_samples', 256)}"
            )
        if "noise_floor" in out:
            floor = out["noise_floor"]
            if isinstance(floor, bool) or not isinstance(floor, (int, float, np.number)) or not 0.0 <= floor < 1.0:
                raise OptionError(
                    "noise_floor", f"must be a number in [0, 1) (a fraction of each outcome's variance), got {floor!r}"
                )
            out["noise_floor"] = float(floor)
        if out.get("fidelities") is not None:
            out["fidelities"] = dict(check_fidelities(out["fidelities"]).costs)  # type: ignore[union-attr]
        if "fidelity_acquisition" in out and out["fidelity_acquisition"] not in FIDELITY_ACQUISITIONS:
            raise OptionError("fidelity_acquisition", f"must be one of {FIDELITY_ACQUISITIONS}, got {out['fidelity_acquisition']!r}")
        return out

    def _check_fidelity_support(self) -> None:
        """Multi-fidelity BO here models one objective over a continuous space, nothing else."""
        why = []
        if len(self.objectives) != 1:
            why.append(f"one objective (got {self.objective_names})")
        if self.outcome_constraints:
            why.append("no outcome constraints")
        if self.contexts is not None:
            why.append("no contexts")
        if self.space.categorical_dims or self.space.integer_dims:
            why.append("a continuous space (no integer or categorical parameters)")
        if why:
            raise OptionError("fidelities", "multi-fidelity BO needs " + ", ".join(why))

    def fidelity_of(self, trial: Trial | int) -> str | None:
        """The fidelity ``trial`` runs at (``None`` without ``fidelities``); a trial that does not say runs at the target."""
        if self.fidelities is None:
            return None
        t = self.trial(trial.id if isinstance(trial, Trial) else trial)
        name = t.metadata.get("fidelity", self.fidelities.target)
        if name not in self.fidelities.costs:
            raise OptimizerError(f"trial {t.id} names fidelity {name!r}; known: {self.fidelities.names}")
        return str(name)

    def ask(self, n: int = 1, *, context: Any = None, fidelity: str | None = None) -> list[Trial]:
        """See :meth:`Optimizer.ask`; with ``fidelities`` each trial's ``metadata["fidelity"]`` says which to run.

        ``fidelity``: propose points to run at this fidelity only (e.g. the target, to confirm before
        recommending); by default the acquisition chooses (and the initial design alternates).
        """
        if fidelity is not None and (self.fidelities is None or fidelity not in self.fidelities.costs):
            known = self.fidelities.names if self.fidelities is not None else "none (build with fidelities=)"
            raise ParameterError(f"fidelity must be one of this optimizer's fidelities, {known}; got {fidelity!r}")
        self._asked_fidelities, self._forced_fidelity = [], fidelity
        trials = super().ask(n, context=context)
        if self.fidelities is not None:
            for t, name in zip(trials, self._asked_fidelities):
                t.metadata["fidelity"] = name
        return trials

    def _settings(self) -> dict[str, Any]:
        return {
            "n_initial": self.n_initial,
            "num_restarts": self.num_restarts,
            "raw_samples": self.raw_samples,
            "mc_samples": self.mc_samples,
            "noise_floor": self.noise_floor,
            **({"fidelities": dict(self.fidelities.costs), "fidelity_acquisition": self.fidelity_acquisition}
               if self.fidelities is not None else {}),
        }

    def _data_changed(self) -> None:
        self._model_cache = None
        self._warm_key = None  # same trials, new values: refit

    def _strategy_state(self) -> dict[str, Any]:
        if not self._warm:
            return {}
        return {"gp_hyperparameters": self._warm, "fitted_to": self._warm_key, "cold_fit_at": self._cold_at}

    def _load_strategy_state(self, state: Mapping[str, Any]) -> None:
        self._warm = {k: dict(v) for k, v in (state.get("gp_hyperparameters") or {}).items()}
        self._warm_key = state.get("fitted_to")
        self._cold_at = int(state.get("cold_fit_at", 0))

    # ------------------------------------------------------------------ encoding
    @property
    def _spaces(self) -> list[tuple[int, SearchSpace]]:
        """(column offset, space) of the parameters and, if declared, the contexts."""
        return [(0, self.space)] + ([(self._d, self.contexts)] if self.contexts is not None else [])

    def _categorical_dims(self) -> dict[int, list[float]]:
        return {off + i: v for off, sp in self._spaces for i, v in sp.categorical_dims.items()}

    def _integer_dims(self) -> dict[int, list[float]]:
        return {off + i: v for off, sp in self._spaces for i, v in sp.integer_dims.items()}

    def _encode_rows(self, rows: Sequence[Row]) -> torch.Tensor:
        """Parameters (and contexts) -> `n x (d + k)` encoded inputs of the GP."""
        out = []
        for params, ctx in rows:
            x = self.space.encode(params)
            if self.contexts is not None:
                if ctx is None:
                    raise OptimizerError(
                        f"a trial with parameters {params} has no context, but this optimizer models the "
                        f"contexts {self.contexts.names}; give every trial its context"
                    )
                x = np.concatenate([x, self.contexts.encode(ctx)])
            if self._fid_col is not None:
                x = np.concatenate([x, [1.0]])  # beliefs are at the target fidelity
            out.append(x)
        return torch.tensor(np.array(out), dtype=DTYPE).reshape(len(out), self._bounds.shape[1])

    def _encode_trials(self, trials: Sequence[Trial]) -> torch.Tensor:
        """Encoded inputs of ``trials`` as they ran: parameters, contexts and (multi-fidelity) their fidelity."""
        X = self._encode_rows([(t.params, t.context) for t in trials])
        if self._fid_col is not None and self.fidelities is not None:
            for i, t in enumerate(trials):
                X[i, self._fid_col] = self.fidelities.level(self.fidelity_of(t) or self.fidelities.target)
        return X

    def _encode(self, params_list: list[Params]) -> torch.Tensor:
        """Encoded parameters only (context-free optimizers), kept for callers of the old helper."""
        return self._encode_rows([(p, None) for p in params_list])

    def _context_features(self, context: Context | None) -> dict[int, float]:
        """``fixed_features`` that pin the context columns to ``context``."""
        if self.contexts is None or context is None:
            return {}
        return {self._d + i: float(v) for i, v in enumerate(self.contexts.encode(context))}

    # ------------------------------------------------------------------ proposal
    def _propose(self, n: int) -> list[tuple[Params, str]]:
        return self._propose_in_context(n, None)

    def _propose_in_context(self, n: int, contexts: list[Context] | None) -> list[tuple[Params, str]]:
        started = [t for t in self.trials if t.status is not TrialStatus.ABANDONED]
        n_sobol = min(n, max(self.n_initial - len(started), 0))
        if len(self.completed) < 2:  # nothing to model yet: keep filling the space
            n_sobol = n
        sobol = self._sobol_points(n_sobol)
        out = [(p, "sobol") for p in sobol]
        if self.fidelities is not None:
            f = self.fidelities
            forced = self._forced_fidelity
            self._asked_fidelities = [forced or (f.target if (len(started) + k) % 3 == 0 else f.cheapest)
                                      for k in range(n_sobol)]
            if n - n_sobol > 0:
                out += self._propose_fidelity(n - n_sobol, sobol)
            return out
        if n - n_sobol > 0:
            ctx = contexts or [None] * n
            extra = [(p, ctx[i]) for i, p in enumerate(sobol)]
            out += self._propose_bo(n - n_sobol, ctx[n_sobol:], extra_pending=extra)
        return out

    def _propose_bo(self, q: int, contexts: list[Context | None], extra_pending: list[Row]) -> list[tuple[Params, str]]:
        """``q`` proposals; the points of one context are optimized together, contexts one after another."""
        seed = int(self._rng.integers(2**31 - 1))
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, ctx in enumerate(contexts):
            groups.setdefault(tuple(sorted(ctx.items())) if ctx else (), []).append(i)
        chosen: dict[int, tuple[Params, str]] = {}
        batch: list[Row] = list(extra_pending)
        with manual_seed(seed), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            for idx in groups.values():
                ctx = contexts[idx[0]]
                acqf = self._acquisition(ctx, pending=batch, seed=seed)
                avoid = [(p, c) for p, c in [*batch, *((t.params, t.context) for t in self.pending)] if c == ctx]
                candidates = self._optimize(
                    acqf, len(idx), fixed=self._context_features(ctx), avoid=self._encode_rows(avoid) if avoid else None
                )
                for i, x in zip(idx, candidates.detach().cpu().numpy()):
                    params = self.space.decode(x[: self._d])
                    source = "bo"
                    if not self.space.is_feasible(params) or self._collides(params, ctx, batch):
                        # rounding broke a constraint or collided: fall back to a fresh random point
                        (params,) = self._random_points(1, avoid=[p for p, c in batch if c == ctx])
                        source = "random"
                    chosen[i] = (params, source)
                    batch.append((params, ctx))
        return [chosen[i] for i in range(q)]

    def _propose_fidelity(self, q: int, design: list[Params]) -> list[tuple[Params, str]]:
        """``q`` points and fidelities by the cost-aware multi-fidelity acquisition, one at a time
        with the pending trials (and the earlier points of this batch) as ``X_pending``."""
        if self.fidelities is None or self._fid_col is None:
            raise OptimizerError("this optimizer has no fidelities; build it with fidelities={name: cost}")
        seed = int(self._rng.integers(2**31 - 1))
        X, Y = self._training_data()
        model, _ = self._fit(X, Y)
        gp = model.models[0]
        pending = self._encode_trials(self.pending)
        batch = [(p, self._asked_fidelities[i]) for i, p in enumerate(design)]
        out: list[tuple[Params, str]] = []
        with manual_seed(seed), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            for _ in range(q):
                rows = [pending] + [self._encode_at(p, name) for p, name in batch]
                X_pending = torch.cat(rows) if sum(len(r) for r in rows) else None
                try:
                    x, name, _ = next_fidelity_point(
                        gp, self._bounds, self._fid_col, self.fidelities, num_restarts=self.num_restarts,
                        raw_samples=self.raw_samples, X_pending=X_pending, method=self.fidelity_acquisition, seed=seed,
                        only=self._forced_fidelity,
                    )
                except Exception as err:  # BoTorch's candidate generation: say where, keep the cause
                    raise OptimizerError(f"multi-fidelity acquisition failed on {X.shape[0]} observations: {err}") from err
                params, source = self.space.decode(x[0, : self._d].detach().numpy()), "bo"
                if not self.space.is_feasible(params) or self._collides(params, None, [(p, None) for p, _ in batch]):
                    (params,) = self._random_points(1, avoid=[p for p, _ in batch])
                    source = "random"
                batch.append((params, name))
                self._asked_fidelities.append(name)
                out.append((params, source))
        return out

    def _encode_at(self, params: Params, fidelity: str) -> torch.Tensor:
        x = self._encode_rows([(params, None)])
        if self._fid_col is not None and self.fidelities is not None:
            x[0, self._fid_col] = self.fidelities.level(fidelity)
        return x

    def _collides(self, params: Params, context: Context | None, batch: Sequence[Row]) -> bool:
        """Same parameters in the same context as a point of this batch or a pending trial."""
        rows = [*batch, *((t.params, t.context) for t in self.pending)]
        return any(p == params and c == context for p, c in rows)

    def _optimize(
        self, acqf: Any, q: int, *, fixed: Mapping[int, float] | None = None, avoid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Maximize ``acqf`` over the space (``fixed``: columns held at a value, e.g. the context;
        ``avoid``: encoded points an all-discrete search must not return, e.g. pending ones)."""
        fixed = dict(fixed or {})
        if self._fid_col is not None:
            fixed.setdefault(self._fid_col, 1.0)  # a belief or improvement at the target fidelity
        ineq = [
            (torch.tensor(idx, dtype=torch.long), torch.tensor(coef, dtype=DTYPE), float(rhs))
            for idx, coef, rhs in self.space.encoded_constraints()
        ] or None
        cat_dims = {i: v for i, v in self._categorical_dims().items() if i not in fixed}
        fixed |= {i: v[0] for i, v in cat_dims.items() if len(v) == 1}  # a single choice is no choice
        cat_dims = {i: v for i, v in cat_dims.items() if i not in fixed}
        int_dims = {i: v for i, v in self._integer_dims().items() if i not in fixed}
        discrete = cat_dims | int_dims
        if discrete and len(discrete) + len(fixed) == self._bounds.shape[1]:
            return self._optimize_discrete(acqf, q, {**{i: [v] for i, v in fixed.items()}, **discrete}, ineq, avoid)
        if not cat_dims and not int_dims:
            x, _ = optimize_acqf(
                acqf, bounds=self._bounds, q=q, num_restarts=self.num_restarts, raw_samples=self.raw_samples,
                inequality_constraints=ineq, fixed_features=fixed or None,
                options={"batch_limit": 8, "maxiter": 200, "sample_around_best": True},
            )
        else:
            # one alternating discrete/continuous search over every category and integer (BoTorch's
            # mixed optimizer); q points are chosen one by one with the earlier ones pending
            x, _ = optimize_acqf_mixed_alternating(
                acqf, bounds=self._bounds, discrete_dims=int_dims or None, cat_dims=cat_dims or None, q=q,
                num_restarts=self.num_restarts, raw_samples=self.raw_samples, fixed_features=fixed or None,
                inequality_constraints=ineq,
            )
        return x.reshape(q, -1)

    def _optimize_discrete(
        self, acqf: Any, q: int, values: Mapping[int, list[float]], ineq: Any, avoid: torch.Tensor | None
    ) -> torch.Tensor:
        """Every column discrete: the best ``q`` distinct points (none in ``avoid``), exhaustively when the
        space is small, else by BoTorch's discrete local search. Rows repeat when fewer remain."""
        columns = [torch.tensor(values[i], dtype=DTYPE) for i in range(self._bounds.shape[1])]
        size = math.prod(len(c) for c in columns)
        if size <= MAX_ENUMERATED_CHOICES:
            choices = torch.cartesian_prod(*columns).reshape(size, len(columns))
            if avoid is not None:
                choices = choices[~(choices.unsqueeze(1) == avoid.unsqueeze(0)).all(-1).any(-1)]
            for idx, coef, rhs in ineq or []:
                choices = choices[(choices[:, idx] * coef).sum(-1) >= rhs - 1e-9]
            if len(choices) == 0:
                return self._bounds[0].expand(q, -1).clone()  # nothing left: the caller falls back to random
            x, _ = optimize_acqf_discrete(acqf, q=min(q, len(choices)), choices=choices, unique=True)
        else:
            x, _ = optimize_acqf_discrete_local_search(
                acqf, discrete_choices=columns, q=q, num_restarts=self.num_restarts, raw_samples=self.raw_samples,
                inequality_constraints=ineq, X_avoid=avoid,
            )
        x = x.reshape(-1, len(columns))
        return torch.cat([x, x[-1:].expand(q - len(x), -1)]) if len(x) < q else x

    def _baseline(self, context: Context | None, X: torch.Tensor) -> torch.Tensor:
        """What a candidate must improve on: the tried protocols, at ``context`` when contexts are modelled."""
        if self.contexts is None or context is None:
            return X
        protocols = list({tuple(sorted(t.params.items())): t.params for t in self.completed}.values())
        return self._encode_rows([(p, context) for p in protocols])

    def _acquisition(self, context: Context | None, *, pending: Sequence[Row], seed: int) -> Any:
        X, Y = self._training_data()
        model, feasibility = self._fit(X, Y)
        rows = [(t.params, t.context) for t in self.pending] + list(pending)
        X_pending = self._encode_rows(rows) if rows else None
        X_baseline = self._baseline(context, X)
        constraints = self._constraint_callables()
        sampler = SobolQMCNormalSampler(torch.Size([self.mc_samples]), seed=seed)
        m = len(self.objectives)
        if m == 1:
            acqf: Any = qLogNoisyExpectedImprovement(
                model,
                X_baseline=X_baseline,
                objective=GenericMCObjective(lambda Z, X=None: Z[..., 0]),
                constraints=constraints or None,
                X_pending=X_pending,
                sampler=sampler,
                prune_baseline=True,
                cache_root=True,  # low-rank updates of the baseline's Cholesky: ~20% of an ask
            )
        else:
            fused_kernel.prepare()  # never let BoTorch compile (or wait on a build lock) mid-run
            feasible = self._feasible_mask()
            ref = infer_reference_point(Y[feasible][:, :m] if feasible.any() else Y[:, :m])
            acqf = qLogNoisyExpectedHypervolumeImprovement(
                model,
                ref_point=ref.tolist(),
                X_baseline=X_baseline,
                objective=IdentityMCMultiOutputObjective(outcomes=list(range(m))),
                constraints=constraints or None,
                X_pending=X_pending,
                sampler=sampler,
                prune_baseline=True,
                cache_root=False,
            )
        return FeasibilityWeighted(acqf, feasibility) if feasibility is not None else acqf

    def _constraint_callables(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """BoTorch outcome constraints (feasible when ``<= 0``) on the model-list outputs."""
        m = len(self.objectives)
        out: list[Callable[[torch.Tensor], torch.Tensor]] = []
        for j, c in enumerate(self.outcome_constraints):
            col, bound = m + j, c.bound
            if c.op == "<=":
                out.append(lambda Z, col=col, bound=bound: Z[..., col] - bound)
            else:
                out.append(lambda Z, col=col, bound=bound: bound - Z[..., col])
        return out

    # ------------------------------------------------------------------ modelling
    def _training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoded X (with contexts) of completed trials and their outcomes (objectives signed to
        maximize, then constraint metrics)."""
        done = self.completed
        X = self._encode_trials(done)
        rows = [
            list(self.utility(t.values or {})) + [(t.values or {})[c.name] for c in self.outcome_constraints]
            for t in done
        ]
        return X, torch.tensor(rows, dtype=DTYPE).reshape(len(done), len(self.objectives) + len(self.outcome_constraints))

    def _feasible_mask(self) -> torch.Tensor:
        return torch.tensor([self.is_feasible(t) for t in self.completed], dtype=torch.bool)

    def _gp(self, X: torch.Tensor, y: torch.Tensor, noise_floor: float = 0.0) -> Model:
        cat = {i: len(v) for i, v in self._categorical_dims().items() if len(v) > 1}
        transform = None
        if cat:  # one-hot inside the model; the optimizer keeps working on choice indices
            transform = NumericToCategoricalEncoding(
                dim=X.shape[-1], categorical_features=cat,
                encoders={i: partial(torch.nn.functional.one_hot, num_classes=k) for i, k in cat.items()},
            )
        model = SingleTaskGP(X, y, input_transform=transform, outcome_transform=Standardize(m=1))
        if noise_floor > 0:  # outcomes are standardized: the floor is a fraction of their variance
            model.likelihood.noise_covar.register_constraint("raw_noise", GreaterThan(noise_floor))
        return model

    def _fit(self, X: torch.Tensor, Y: torch.Tensor) -> tuple[Model, Model | None]:
        """The outcomes' ModelListGP and, once a trial has failed, the feasibility GP (cached)."""
        finished = [t for t in self.trials if t.status in (TrialStatus.COMPLETED, TrialStatus.FAILED)]
        key = tuple((t.id, t.status.value) for t in finished)
        if self._model_cache is not None and self._model_cache[0] == key:
            return self._model_cache[1]
        if self._fid_col is not None:
            models = [multi_fidelity_gp(X, Y[:, :1], self._fid_col, max(self.noise_floor, replicate_noise_floor(X, Y[:, 0])))]
        else:
            models = [
                self._gp(X, Y[:, j : j + 1], max(self.noise_floor, replicate_noise_floor(X, Y[:, j])))
                for j in range(Y.shape[1])
            ]
        slots = [f"outcome:{j}" for j in range(Y.shape[1])]
        feasibility = None
        if any(t.status is TrialStatus.FAILED for t in finished):
            Xf = self._encode_trials(finished)
            labels = torch.tensor([[1.0 if t.status is TrialStatus.COMPLETED else -1.0] for t in finished], dtype=DTYPE)
            feasibility = self._gp(Xf, labels)
        if feasibility is not None:
            models, slots = [*models, feasibility], [*slots, "feasibility"]
        if self._warm_key == [list(k) for k in key] and all(slot in self._warm for slot in slots):
            # a restored optimizer: these data were fitted before it was saved, take that fit as it was
            for slot, model in zip(slots, models):
                _load_hyperparameters(model, self._warm[slot])
                model.eval()
            out = (ModelListGP(*models[: Y.shape[1]]), feasibility)
            self._model_cache = (key, out)
            return out
        # warm start: a fit starts from the last fit's hyperparameters (a few L-BFGS steps instead of
        # ~100), except each time the data have grown by a quarter, when it starts from the defaults
        warm = len(finished) < WARM_START_GROWTH * self._cold_at
        if not warm:
            self._cold_at = len(finished)
        # the same seed whoever asks first (ask, recommend, predict): BoTorch's retries draw from it
        with manual_seed(self.seed + len(finished)):
            for slot, model in zip(slots, models):
                if warm and slot in self._warm:
                    _load_hyperparameters(model, self._warm[slot])
                mll = ExactMarginalLogLikelihood(model.likelihood, model)
                try:
                    # capped L-BFGS: a categorical kernel otherwise takes hundreds of steps for a
                    # marginal-likelihood gain of ~1%
                    fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": FIT_MAXITER, "ftol": FIT_FTOL}})
                except Exception as err:  # botorch raises ModelFittingError after its own retries
                    raise OptimizerError(f"GP fit failed on {X.shape[0]} observations: {err}") from err
                self._warm[slot] = {k: v.detach().tolist() for k, v in model.named_parameters()}
        self._warm_key = [list(k) for k in key]
        models = models[: Y.shape[1]]
        out = (ModelListGP(*models), feasibility)
        self._model_cache = (key, out)
        return out

    def _model(self) -> tuple[Model, Model | None]:
        X, Y = self._training_data()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            return self._fit(X, Y)

    # ------------------------------------------------------------------ beliefs
    def _observed_contexts(self) -> list[Context]:
        """Distinct contexts of completed trials: the context distribution seen so far."""
        seen: dict[tuple[Any, ...], Context] = {}
        for t in self.completed:
            if t.context is not None:
                seen.setdefault(tuple(sorted(t.context.items())), t.context)
        return list(seen.values())

    def _belief(
        self, params_list: Sequence[Params], context: Context | None, outputs: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Posterior mean, sd of that mean, and sd of one new run, per point and output (utility sign).

        With contexts modelled and ``context`` None, the belief is about the average over the
        contexts seen so far: mean of the means, sd from the joint posterior of the averaged
        points, and the new run's sd from the mixture over those contexts.
        """
        model, _ = self._model()
        if self.contexts is None or context is not None:
            contexts: list[Context | None] = [context]
        else:
            contexts = list(self._observed_contexts())
        n, c = len(params_list), len(contexts)
        X = self._encode_rows([(p, ctx) for p in params_list for ctx in contexts]).reshape(n, c, -1)
        mean = np.zeros((n, len(outputs)))
        sd, pred = np.zeros_like(mean), np.zeros_like(mean)
        with torch.no_grad():
            for k, j in enumerate(outputs):
                sub = model.models[j]
                post = sub.posterior(X)
                mu = post.mean[..., 0]  # n x c
                cov = post.distribution.covariance_matrix  # n x c x c
                noisy = sub.posterior(X, observation_noise=True).variance[..., 0]  # n x c
                mean[:, k] = mu.mean(-1).numpy()
                sd[:, k] = (cov.sum((-1, -2)).clamp_min(0) / c**2).sqrt().numpy()
                pred[:, k] = (noisy.mean(-1) + mu.var(-1, unbiased=False)).clamp_min(0).sqrt().numpy()
        return mean, sd, pred

    def predict(
        self, params_list: list[Params], *, context: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of each objective (original sign) at ``params_list``.

        With contexts modelled: at ``context``, or averaged over the contexts seen so far
        when it is ``None``. Returns arrays of shape ``n x m`` (m objectives).
        """
        if len(self.completed) < 2:
            raise OptimizerError("predict needs at least 2 completed trials")
        ctx = self.validate_context(context) if context is not None else None
        clean = [self.space.validate(p, check_constraints=False) for p in params_list]
        m = len(self.objectives)
        mean, sd, _ = self._belief(clean, ctx, range(m))
        signs = np.array([o.sign for o in self.objectives])
        return mean * signs, sd

    def best(self) -> Trial | None:
        """Noise-aware incumbent: a feasible observed trial whose parameters have the best posterior mean.

        With one objective, picking the luckiest noisy draw overstates quality; the GP
        mean at the observed points averages the noise out (and, with contexts, over the
        contexts seen). Several objectives fall back to the Pareto compromise of
        :meth:`Optimizer.best`.
        """
        if len(self.objectives) > 1 or len(self.completed) < 3:
            return super().best()
        rec = self.recommend()
        if rec is None:
            return super().best()
        return self.trial(rec.trial_ids[0])

    def recommend(
        self,
        *,
        context: Mapping[str, Any] | None = None,
        target: Mapping[str, float] | None = None,
        objective: str | None = None,
    ) -> Recommendation | None:
        """The protocol to adopt: best posterior mean among the parameter sets that ran.

        Args:
            context: the context to recommend for; ``None`` averages over the contexts
                seen so far (ignored when no contexts are modelled).
            target: e.g. ``{"quality": 0.6}``: among protocols expected to reach every
                level (``>=`` for maximized, ``<=`` for minimized objectives), the best
                ``objective``; e.g. the fastest expected to reach a quality.
            objective: what to rank by (default: the first objective without a target).

        With ``fidelities``, the belief is at the target fidelity and only protocols that ran at it
        are candidates (any protocol until one has).

        Replicates of a protocol are pooled by the GP (learned noise), and the returned
        intervals are the 95 % posterior interval of its expected value and of one more
        run. Before 3 results, the model-free :meth:`Optimizer.recommend`.

        Example:
            >>> rec = opt.recommend(context={"screening_score": 0.4})
            >>> rec.params, rec.mean["quality"], rec.ci95["quality"], rec.n_runs
        """
        goal = parse_target(target, self.objectives)
        if len(self.completed) < 3:
            return super().recommend(context=context, target=target, objective=objective)
        ctx = self.validate_context(context) if context is not None and self.contexts is not None else None
        groups = self._feasible_groups()
        if self.fidelities is not None:  # adopt only what was seen at the target fidelity (e.g. in EM)
            target = self.fidelities.target
            groups = [g for g in groups if any(self.fidelity_of(t) == target for t in g)] or groups
        if not groups:
            return None
        names = self.objective_names
        params = [g[0].params for g in groups]
        mean, sd, pred = self._belief(params, ctx, range(len(names)))
        signs = np.array([o.sign for o in self.objectives])
        mean = mean * signs
        i, meets, _ = choose_recommendation(mean, self.objectives, objective=objective, target=goal)
        ci = {n: (float(mean[i, j] - Z95 * sd[i, j]), float(mean[i, j] + Z95 * sd[i, j])) for j, n in enumerate(names)}
        pi = {n: (float(mean[i, j] - Z95 * pred[i, j]), float(mean[i, j] + Z95 * pred[i, j])) for j, n in enumerate(names)}
        return Recommendation(
            params=dict(params[i]), mean={n: float(mean[i, j]) for j, n in enumerate(names)}, ci95=ci,
            predictive95=pi, n_runs=len(groups[i]), trial_ids=tuple(t.id for t in groups[i]), context=ctx,
            meets_target=meets, p_success=self._p_success(params[i], ctx), basis="posterior",
        )

    def _p_success(self, params: Params, context: Context | None) -> float | None:
        _, feasibility = self._model()
        if feasibility is None:
            return None
        contexts = [context] if self.contexts is None or context is not None else self._observed_contexts()
        X = self._encode_rows([(params, c) for c in contexts])
        return float(log_prob_success(feasibility, X).exp().mean())

    def replicate_value(
        self, *, context: Mapping[str, Any] | None = None, objective: str | None = None
    ) -> ReplicateDecision:
        """Rerun the incumbent, or explore? Whichever one more run is expected to improve the recommendation more.

        Both options are valued by the knowledge gradient over the protocols that ran
        (Frazier, Powell & Dayanik 2009): the expected rise of the best posterior mean
        among them after one more run, from BoTorch ``fantasize`` (64 quasi-MC
        fantasies). A replicate runs :meth:`recommend`'s protocol again; exploring runs
        the point of largest expected improvement over its expected value (analytic
        log-EI, times the probability of running once a trial has failed), which then
        joins the protocols that can be recommended. Before any protocol has run twice
        (after the initial design) the answer is yes: only replicates tell specimen noise
        from a protocol's effect, and a GP that has seen none tends to believe every run.
        With contexts modelled, ``context`` is the next trial's measured context
        (required). Does not advance the optimizer's RNG.

        Example:
            >>> decision = opt.replicate_value(context=ctx)
            >>> if decision.replicate:
            ...     trial = opt.add_trial(decision.params, source="replicate", context=ctx)
        """
        names = self.objective_names
        objective = objective or names[0]
        if objective not in names:
            raise ParameterError(f"objective {objective!r} is not one of {names}")
        if self.contexts is not None and context is None:
            raise ParameterError(
                f"replicate_value needs the next trial's context (this optimizer models {self.contexts.names})"
            )
        ctx = self.validate_context(context) if context is not None else None
        nan = math.nan
        if len(self.completed) < 3:
            return ReplicateDecision(False, None, nan, nan, nan, nan, objective, "fewer than 3 results: no belief yet", ctx)
        rec = self.recommend(context=ctx, objective=objective)
        if rec is None:
            return ReplicateDecision(False, None, nan, nan, nan, nan, objective, "no feasible result yet", ctx)
        j = names.index(objective)
        _, sd, _ = self._belief([rec.params], ctx, [j])
        if len(self.completed) >= self.n_initial and not any(len(g) > 1 for g in self._feasible_groups()):
            return ReplicateDecision(
                True, dict(rec.params), float(sd[0, 0]), nan, nan, nan, objective,
                "no protocol has run twice: the specimen-to-specimen noise is unidentified until one does", ctx,
            )
        model, feasibility = self._model()
        gp = model.models[j]
        tried = self._encode_rows([(g[0].params, ctx) for g in self._feasible_groups()])
        incumbent = self._encode_rows([(rec.params, ctx)])
        acqf: Any = LogExpectedImprovement(gp, best_f=self.objectives[j].sign * rec.mean[objective])
        if feasibility is not None:
            acqf = FeasibilityWeighted(acqf, feasibility)
        seed = self.seed + len(self.trials)
        with manual_seed(seed), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            new = self._optimize(acqf, 1, fixed=self._context_features(ctx)).detach()
            with torch.no_grad():
                ei = float(acqf(new.unsqueeze(0)).exp())
            if self.space.decode(new[0, : self._d].numpy()) == rec.params:
                reason = f"the point of largest expected improvement ({ei:.3g}) is the incumbent itself"
                return ReplicateDecision(True, dict(rec.params), float(sd[0, 0]), ei, nan, nan, objective, reason, ctx)
            value_replicate = _knowledge_gradient(gp, incumbent, tried, seed=seed)
            value_explore = _knowledge_gradient(gp, new, torch.cat([tried, new]), seed=seed)
        replicate = value_replicate > value_explore
        reason = (
            f"one more run of the incumbent is expected to raise the best expected {objective} by "
            f"{value_replicate:.3g}, a run at the best new point by {value_explore:.3g}"
        )
        return ReplicateDecision(
            replicate, dict(rec.params), float(sd[0, 0]), ei, value_replicate, value_explore, objective, reason, ctx
        )


def _load_hyperparameters(model: Model, values: Mapping[str, Any]) -> None:
    """Set ``model``'s parameters that have a same-shaped entry in ``values`` (others keep their defaults)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in values:
                value = torch.tensor(values[name], dtype=param.dtype)
                if value.shape == param.shape:
                    param.copy_(value)


def _knowledge_gradient(gp: Model, x: torch.Tensor, candidates: torch.Tensor, *, seed: int, n_fantasies: int = 64) -> float:
    """Expected rise of ``max mean(candidates)`` after one noisy run at ``x`` (`1 x D`), in utility units."""
    with torch.no_grad():
        now = gp.posterior(candidates).mean[..., 0].max()
        fantasy = gp.fantasize(x, sampler=SobolQMCNormalSampler(torch.Size([n_fantasies]), seed=seed))
        after = fantasy.posterior(candidates).mean[..., 0].max(dim=-1).values  # n_fantasies
    return float((after - now).mean().clamp_min(0.0))
