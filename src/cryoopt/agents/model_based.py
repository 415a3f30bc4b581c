"""A model-based controller: a GP of the section score, a drift tracker, and a one-step lookahead.

:class:`ModelBasedAgent` (registered ``mpc``) moves the cutting temperature (the specimen
arm and the knife together, as an operator does) section by section and holds every other
setpoint at the block's starting protocol:

1. **State**: :class:`~cryoopt.agents.drift.DriftTracker` turns the readbacks of the cuts so
   far into the temperature the next cut will measure for any setpoint (the offset grows
   by its recent rate), with an uncertainty (the spread of the recent increments).
2. **Model**: a BoTorch ``SingleTaskGP`` of what a section adds to its block's quality
   (its fused score; 0 when the ribbon or the evaluation fails; sections without anything
   to measure are left out) as a function of the cut's state :data:`MODEL_INPUTS`: the
   measured specimen temperature, the feed (the best temperature depends on it) and how
   far into the block it is (edge debris and depth grow with it), *plus a random effect
   per block*: the kernel is a Matern kernel over those inputs plus a scaled "same block"
   kernel (:func:`_same_block_kernel`). The specimen effect, as large as any protocol
   effect, is thus the block's shared offset rather than something the model attributes
   to the block's settings; marginal likelihood weighs the within-block evidence (moves
   inside a block, the specimen fixed) against the between-block one. A new block's
   offset is unknown and does not change which move is best. The model is learned
   across blocks in :meth:`ModelBasedAgent.learn`: random temperature moves around the
   drift feedforward, from the starting protocols the outer loop hands out.
3. **Decision**: one-step lookahead (model-predictive control with horizon 1): among
   ``n_candidates`` temperature moves in ``[-1, 1]`` (one full move = the knob's step, 3 C)
   the one with the best expected score, the expectation taken over the uncertainty of
   the temperature the cut will see (Gauss-Hermite quadrature), plus ``beta`` posterior
   standard deviations.

Before any learning the agent is the drift feedforward: it holds the measured temperature
at the block's starting setpoint (:class:`~cryoopt.agents.baselines.DriftCompensationAgent`).
It is sample-efficient by construction: a few hundred sections fit a 3-input GP, where a
policy-gradient controller needs thousands of sections to learn the same correction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cryoopt.agents.base import BaseAgent, register_agent
from cryoopt.agents.drift import TEMPERATURE_KNOBS, DriftTracker, flat_setpoints

__all__ = ["MODEL_INPUTS", "ModelBasedAgent", "SectionScoreModel", "section_target"]

#: Inputs of the section-score model, in order, and how each is scaled.
MODEL_INPUTS = (
    "measured_specimen_temperature",  # (T + 120 C) / 10 C
    "section_thickness",              # log2(t / 70 nm)
    "sections_cut",                   # cuts before this one / 8
)
#: Gauss-Hermite nodes and weights (probabilists', 5 points) for the expectation over the
#: temperature the next cut will see
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(5)
_GH_WEIGHTS = _GH_WEIGHTS / _GH_WEIGHTS.sum()


def _sectioning_index(name: str) -> int:
    from cryoopt.envs._core import SECTIONING_KNOBS

    return [k.name for k in SECTIONING_KNOBS].index(name)


def section_target(reward: float, info: Mapping[str, Any]) -> float | None:
    """What one section adds to its block's quality: the fused score, 0 for a failed ribbon or
    evaluation, ``None`` for a section with nothing to measure (or a step without a cut)."""
    if not info.get("section") and not info.get("section_failed"):
        return None
    if info.get("no_measurement"):
        return None
    if info.get("section_failed") or info.get("evaluation_failed"):
        return 0.0
    return float(reward)


def _same_block_kernel(active_dim: int) -> Any:
    """A kernel that is 1 for two sections of the same block and 0 otherwise (the block's
    random effect), on the block id in column ``active_dim``."""
    import gpytorch

    class _SameBlock(gpytorch.kernels.Kernel):
        has_lengthscale = False

        def forward(self, x1: Any, x2: Any, diag: bool = False, **params: Any) -> Any:
            b1, b2 = x1[..., 0], x2[..., 0]
            if diag:
                return (b1 == b2).to(x1.dtype)
            return (b1.unsqueeze(-1) == b2.unsqueeze(-2)).to(x1.dtype)

    return _SameBlock(active_dims=(active_dim,))


class SectionScoreModel:
    """A BoTorch GP of the section target over :data:`MODEL_INPUTS` with a random effect per block.

    ``fit(X, y, blocks)`` learns the hyperparameters (Matern lengthscales with BoTorch's
    dimension-scaled prior, the two kernel scales and the noise) by marginal likelihood
    (``fit_gpytorch_mll``), or takes them from ``state`` (a saved model); ``predict(X)``
    gives the posterior mean and sd of a section of a *new* block (its offset unknown) in
    the target's units.
    """

    def __init__(self, max_points: int = 1500, seed: int = 0) -> None:
        self.max_points, self.seed = int(max_points), int(seed)
        self.model: Any = None
        self.X = np.zeros((0, len(MODEL_INPUTS)))
        self.y = np.zeros(0)
        self.blocks = np.zeros(0)
        self.mean, self.std = 0.0, 1.0

    def _build(self, X: np.ndarray, y: np.ndarray, blocks: np.ndarray) -> Any:
        import torch
        from botorch.models import SingleTaskGP
        from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
        from gpytorch.kernels import ScaleKernel

        d = len(MODEL_INPUTS)
        covar = ScaleKernel(get_covar_module_with_dim_scaled_prior(ard_num_dims=d, use_rbf_kernel=False,
                                                                   active_dims=list(range(d))))
        covar = covar + ScaleKernel(_same_block_kernel(d))
        tx = torch.as_tensor(np.column_stack([X, blocks]), dtype=torch.float64)
        ty = torch.as_tensor((y - self.mean) / self.std, dtype=torch.float64).unsqueeze(-1)
        return SingleTaskGP(tx, ty, covar_module=covar)

    def fit(self, X: np.ndarray, y: np.ndarray, blocks: np.ndarray, state: Mapping[str, Any] | None = None) -> SectionScoreModel:
        import torch
        from botorch.fit import fit_gpytorch_mll
        from gpytorch.mlls import ExactMarginalLogLikelihood

        X, y, blocks = np.asarray(X, float), np.asarray(y, float), np.asarray(blocks, float)
        if not len(X) == len(y) == len(blocks):
            raise ValueError(f"X, y and blocks must have one row per section, got {len(X)}, {len(y)}, {len(blocks)}")
        if len(X) > self.max_points:  # the most recent sections: an exact GP's cost grows as n^3
            X, y, blocks = X[-self.max_points:], y[-self.max_points:], blocks[-self.max_points:]
        if len(X) < 4:
            raise ValueError(f"the section-score model needs at least 4 scored sections, got {len(X)}")
        self.X, self.y, self.blocks = X, y, blocks
        self.mean, self.std = float(y.mean()), float(y.std() or 1.0)
        self.model = self._build(X, y, blocks)
        if state is not None:
            self.model.load_state_dict({k: torch.as_tensor(v, dtype=torch.float64) for k, v in state.items()})
        else:
            torch.manual_seed(self.seed)
            fit_gpytorch_mll(ExactMarginalLogLikelihood(self.model.likelihood, self.model))
        self.model.eval()
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd at ``X`` for a section of a block the model has not seen."""
        import torch

        X = np.asarray(X, float)
        new_block = np.full((len(X), 1), -1.0)  # no training block has id -1: its offset is the prior's
        with torch.no_grad():
            post = self.model.posterior(torch.as_tensor(np.column_stack([X, new_block]), dtype=torch.float64))
            mu = post.mean.squeeze(-1).numpy() * self.std + self.mean
            sd = post.variance.clamp_min(0).sqrt().squeeze(-1).numpy() * self.std
        return mu, sd

    def state(self) -> dict[str, Any]:
        return {k: v.detach().cpu().numpy().tolist() for k, v in self.model.state_dict().items()} if self.model else {}


@register_agent("mpc")
class ModelBasedAgent(BaseAgent):
    """GP model-predictive control of the cutting temperature against drift (see the module docstring).

    Args:
        seed: seeds exploration and the GP fit.
        n_candidates: temperature moves evaluated per section (evenly over ``[-1, 1]``).
        beta: posterior sd added to the expected score when choosing (0: the best expected section).
        explore: in :meth:`learn`, the spread of the random temperature moves (uniform, in units
            of a full move) around the feedforward.
        max_points: most sections the GP keeps (the latest).
        prior_rate_c: the drift rate assumed before a block has shown its own (``None``: the
            mean rate seen in :meth:`learn`, 0 before).
    """

    def __init__(self, seed: int | None = 0, n_candidates: int = 25, beta: float = 0.0, explore: float = 0.8,
                 max_points: int = 1500, prior_rate_c: float | None = None) -> None:
        super().__init__(seed=seed, n_candidates=n_candidates, beta=beta, explore=explore, max_points=max_points,
                         prior_rate_c=prior_rate_c)
        if n_candidates < 2:
            raise ValueError(f"n_candidates must be >= 2, got {n_candidates}")
        if explore < 0:
            raise ValueError(f"explore must be >= 0, got {explore}")
        self.n_candidates, self.beta = int(n_candidates), float(beta)
        self.explore, self.max_points = float(explore), int(max_points)
        self.prior_rate_c = prior_rate_c
        self.learned_rate_c, self.rate_blocks, self.blocks_seen = 0.0, 0, 0
        self.model = SectionScoreModel(max_points=max_points, seed=seed or 0)
        self.tracker = DriftTracker()
        self._setpoints: dict[str, float] = {}
        self._pending: np.ndarray | None = None
        self._idx = {k: _sectioning_index(k) for k in TEMPERATURE_KNOBS}

    # -- state and model inputs -----------------------------------------------------------
    def _rate(self) -> float:
        return float(self.prior_rate_c if self.prior_rate_c is not None else self.learned_rate_c)

    def inputs(self, temperatures_c: np.ndarray) -> np.ndarray:
        """Model inputs of the next cut if it measures each of ``temperatures_c``."""
        t = np.asarray(temperatures_c, float).reshape(-1)
        thick = self._setpoints.get("section_thickness_nm", 70.0)
        return np.column_stack([(t + 120.0) / 10.0, np.full(t.size, math.log2(max(thick, 1.0) / 70.0)),
                                np.full(t.size, self.tracker.cuts / 8.0)])

    def _next_measured(self, move: float) -> float:
        spec = self.tracker.setpoints.get("specimen_temperature_c", -120.0)
        return float(self.tracker.next_measured("specimen_temperature_c", spec + move * self.tracker.step_c))

    def _start_block(self, info: Mapping[str, Any] | None) -> None:
        self.tracker = DriftTracker(prior_rate_c=self._rate())
        self.tracker.reset(info)
        self._setpoints = flat_setpoints(info)
        self._pending = None

    # -- Agent protocol -----------------------------------------------------------------------
    def reset(self) -> None:
        self.tracker = DriftTracker(prior_rate_c=self._rate())
        self._setpoints, self._pending = {}, None

    def expected_scores(self, moves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expected section score (of a new block) and its posterior sd for each move,
        averaged over the uncertainty of the temperature the next cut will measure."""
        sd_t = self.tracker.next_offset_sd()
        centres = np.array([self._next_measured(m) for m in moves])
        temps = centres[:, None] + sd_t * _GH_NODES[None, :]
        mu, sd = self.model.predict(self.inputs(temps.ravel()))
        return (mu.reshape(temps.shape) @ _GH_WEIGHTS), (sd.reshape(temps.shape) @ _GH_WEIGHTS)

    def choose_move(self) -> float:
        """The normalized temperature move for the next cut (the feedforward before any learning)."""
        if self.model.model is None:
            return float(self.tracker.feedforward().get("specimen_temperature_c", 0.0))
        moves = np.linspace(-1.0, 1.0, self.n_candidates)
        mu, sd = self.expected_scores(moves)
        return float(moves[int(np.argmax(mu + self.beta * sd))])

    def _action(self, move: float) -> np.ndarray:
        a = self.zero_action()
        for knob in TEMPERATURE_KNOBS:
            a[self._idx[knob]] = move
        return a

    def act(self, obs: Any, info: Mapping[str, Any] | None = None) -> np.ndarray:
        if not self.tracker.started and info is not None:
            self._start_block(info)
        return self._action(self.choose_move())

    def observe(self, obs: Any, reward: float, terminated: bool, truncated: bool, info: Mapping[str, Any]) -> None:
        cuts = self.tracker.cuts
        self.tracker.update(info)
        self._setpoints.update(flat_setpoints(info))
        measured = (info.get("section") or {}).get("measured_specimen_temperature_c")
        if measured is None:
            measured = self._setpoints.get("specimen_temperature_c")
        self._pending = None
        if measured is not None and self.tracker.cuts > cuts:
            x = self.inputs(np.array([float(measured)]))[0]
            x[2] = cuts / 8.0
            self._pending = x  # the cut as it happened (what learn() records)

    # -- learning -------------------------------------------------------------------------------
    def collect(self, env: Any, sections: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float]]:
        """Run ``sections`` sections on ``env`` with random temperature moves around the feedforward
        (other setpoints held). Returns the model inputs of the scored sections, their targets,
        their block ids (numbered on from the blocks learned before) and each block's drift rate."""
        rng = np.random.default_rng(self.rng.integers(2**31))
        X: list[np.ndarray] = []
        y: list[float] = []
        ids: list[int] = []
        rates: list[float] = []
        done = 0
        while done < sections:
            obs, info = env.reset(seed=int(rng.integers(2**31)))
            self._start_block(info)
            while True:
                ff = self.tracker.feedforward().get("specimen_temperature_c", 0.0)
                move = float(np.clip(ff + self.explore * rng.uniform(-1.0, 1.0), -1.0, 1.0))
                obs, r, te, tr, info = env.step(self._action(move))
                self.observe(obs, float(r), te, tr, info)
                target = section_target(float(r), info)
                if target is not None and self._pending is not None:
                    X.append(self._pending)
                    y.append(target)
                    ids.append(self.blocks_seen)
                done += 1
                if te or tr or done >= sections:
                    break
            self.blocks_seen += 1
            if len(self.tracker.offsets["specimen_temperature_c"]) >= 2:
                rates.append(self.tracker.rate())
        return np.array(X, float).reshape(-1, len(MODEL_INPUTS)), np.array(y, float), np.array(ids, float), rates

    def learn(self, env: Any, total_timesteps: int) -> ModelBasedAgent:
        """Explore ``total_timesteps`` sections on ``env`` and fit the section-score model on them
        (and on every section learned from before)."""
        X, y, ids, rates = self.collect(env, int(total_timesteps))
        if rates:
            n = self.rate_blocks + len(rates)
            self.learned_rate_c = (self.learned_rate_c * self.rate_blocks + float(np.sum(rates))) / n
            self.rate_blocks = n
        m = self.model
        allX = np.vstack([m.X, X]) if len(m.X) else X
        ally = np.concatenate([m.y, y]) if len(m.y) else y
        allb = np.concatenate([m.blocks, ids]) if len(m.blocks) else ids
        if len(allX) >= 4:
            m.fit(allX, ally, allb)
        self.reset()
        return self

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """``agent.json`` (settings, learned drift rate), ``model.npz`` (the GP's data) and
        ``model_state.json`` (its hyperparameters)."""
        path = super().save(path)
        cfg = json.loads((path / "agent.json").read_text())
        cfg.update(learned_rate_c=self.learned_rate_c, rate_blocks=self.rate_blocks, blocks_seen=self.blocks_seen)
        (path / "agent.json").write_text(json.dumps(cfg, indent=2, default=float))
        if self.model.model is not None:
            np.savez(path / "model.npz", X=self.model.X, y=self.model.y, blocks=self.model.blocks)
            (path / "model_state.json").write_text(json.dumps(self.model.state()))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ModelBasedAgent:
        path = Path(path)
        cfg = json.loads((path / "agent.json").read_text())
        agent = cls(seed=cfg.get("seed"), **cfg.get("kwargs", {}))
        agent.learned_rate_c = float(cfg.get("learned_rate_c", 0.0))
        agent.rate_blocks = int(cfg.get("rate_blocks", 0))
        agent.blocks_seen = int(cfg.get("blocks_seen", 0))
        if (path / "model.npz").exists():
            data = np.load(path / "model.npz")
            state = json.loads((path / "model_state.json").read_text())
            agent.model.fit(data["X"], data["y"], data["blocks"], state=state)
        agent.reset()
        return agent
