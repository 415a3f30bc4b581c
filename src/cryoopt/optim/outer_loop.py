"""The outer loop: BoTorch proposes each sample block's starting protocol, an agent adapts within it.

One *block* is one episode of ``cryoopt/CLEMProtocol-v0`` (one step per serial section,
at most ``max_sections`` sections). For every block:

1. the optimizer proposes its starting protocol (``ask(batch_size)``: ``q >= 1`` blocks
   prepared in parallel; knobs outside the space start at
   :data:`~cryoopt.agents.EXPERT_PROTOCOL`);
2. the agent (any :mod:`cryoopt.agents` agent) runs the block, adapting setpoints per
   section, and may stop it early;
3. the block's ``quality`` (maximized): the mean fused score of its good sections times
   the fraction of the section budget that gave good sections (failed ribbons, failed
   evaluations and sections never cut count 0) and its prep time (``prep_time_h``,
   minimized) go back to the GP (``tell``): multi-objective, the Pareto front is
   :meth:`OuterLoop.pareto_front`;
4. optionally the agent keeps learning (``learn_steps_per_block``).

Specimens vary about as much as protocols do, so the GP gets a noise floor
(:data:`FAST_BO`), every ``replicate_every``-th block may rerun the current
recommendation on a fresh specimen, and :meth:`OuterLoop.recommend` picks the
protocol to adopt by the GP's expected quality rather than the luckiest block.

The GP sees every earlier block; blocks get seeds ``seed * 100_003 + index``, so two
strategies with the same ``seed`` face the same specimens and knife wear in the same
order. :meth:`OuterLoop.state_dict` / :meth:`OuterLoop.from_state_dict` resume a
loop mid-campaign (pending blocks are re-run first).

Inside the campaign engine the same block runs as the executor ``simulated_clem``
(:class:`SimulatedCLEMExecutor`) or, from a config's ``function`` executor, as
``cryoopt.optim.outer_loop:SimulatedCLEMBlock``; see ``configs/sim_clem.yaml``.

The manual baseline is the strategy ``manual_ofat`` (:class:`ManualOFAT`): a simulated
operator tuning one factor at a time from the expert protocol.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cryoopt.optim.base import Optimizer, make_optimizer, register_strategy, replicate_due
from cryoopt.optim.trial import Trial, TrialStatus
from cryoopt.space import Params, SearchSpace

__all__ = [
    "DEFAULT_BLOCK_SPACE",
    "BlockRunner",
    "ManualOFAT",
    "OuterLoop",
    "SimulatedCLEMBlock",
    "SimulatedCLEMExecutor",
    "block_space",
]

#: The starting-protocol knobs the GP searches by default (names as the env's setpoints).
DEFAULT_BLOCK_SPACE: dict[str, dict[str, Any]] = {
    "section_thickness_nm": {"type": "float", "low": 60.0, "high": 200.0, "unit": "nm"},
    "cutting_speed_mm_s": {"type": "float", "low": 0.3, "high": 3.0, "log": True, "unit": "mm/s"},
    "dilution": {"type": "float", "low": 50.0, "high": 2000.0, "log": True, "description": "antibody 1:N"},
    "time_min": {"type": "float", "low": 5.0, "high": 120.0, "log": True, "unit": "min"},
    "temperature_c": {"type": "float", "low": 15.0, "high": 37.0, "unit": "C"},
    "exposure_ms": {"type": "float", "low": 10.0, "high": 200.0, "log": True, "unit": "ms"},
    "gain": {"type": "float", "low": 1.0, "high": 8.0, "log": True},
    "focus_um": {"type": "float", "low": -2.0, "high": 2.0, "unit": "um"},
}

OBJECTIVES = {"quality": "maximize", "prep_time_h": "minimize"}
#: small acquisition settings (a block costs seconds in simulation, the GP should not cost
#: more) and a noise floor: specimens vary about as much as protocols do, and without one
#: the GP interpolates lucky blocks (headline benchmark, bo_only over 20 seeds: held-out
#: quality of the recommended protocol 0.278 with a floor of 0.3, 0.245 without)
FAST_BO = {"num_restarts": 2, "raw_samples": 64, "mc_samples": 64, "noise_floor": 0.3}


def block_space(parameters: Mapping[str, Mapping[str, Any]] | None = None) -> SearchSpace:
    """The search space over a block's starting protocol (default :data:`DEFAULT_BLOCK_SPACE`)."""
    return SearchSpace.from_dict(dict(parameters or DEFAULT_BLOCK_SPACE))


def _json_seed(params: Mapping[str, Any], seed: int) -> int:
    text = json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True, default=str)
    return (int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) + 7919 * int(seed)) % (2**31 - 1)


class BlockRunner:
    """Runs sample blocks: one env (``env_id``, ``env_kwargs``) and one agent.

    Args:
        agent: an agent, a registered agent name, or a class (see :func:`cryoopt.agents.make_agent`).
        agent_kwargs: arguments when ``agent`` is a name or class.
        agent_path: load a saved agent from this directory instead (``agent`` names its class).
        env_id: the composite env (default ``cryoopt/CLEMProtocol-v0``).
        env_kwargs: e.g. ``scenario``, ``backend`` (``direct`` by default), ``image_size``.
        max_sections: the block's budget of serial sections (the agent may stop earlier).
        learn_steps_per_block: after each block, train the agent this many sections.
        pretrain_steps: for agents with ``learn``: train this many sections in the
            composite env before the first block.
        instrument_pretrain_steps: for agents with ``pretrain`` (HRL): steps on each cheap
            per-instrument env (thousands per second) before that (default ``pretrain_steps``).
        min_sections: sections every block yields before the agent may stop it.
        pretrain_space: composite-env pre-training starts each episode from a random
            protocol of this space (the blocks the outer loop will hand the agent) instead
            of the scenario's start ranges; :class:`OuterLoop` passes its space.
    """

    def __init__(self, agent: Any = "hrl", *, agent_kwargs: Mapping[str, Any] | None = None, agent_path: str | None = None,
                 env_id: str = "cryoopt/CLEMProtocol-v0", env_kwargs: Mapping[str, Any] | None = None,
                 max_sections: int | None = 8, learn_steps_per_block: int = 0, pretrain_steps: int = 0,
                 instrument_pretrain_steps: int | None = None, min_sections: int = 0,
                 pretrain_space: SearchSpace | Mapping[str, Any] | None = None) -> None:
        import gymnasium as gym

        import cryoopt.envs  # noqa: F401 - registers the envs
        from cryoopt.agents import agents as agent_registry
        from cryoopt.agents import make_agent

        self.env_kwargs = {"image_size": 64, **dict(env_kwargs or {})}
        self.env = gym.make(env_id, **self.env_kwargs)
        if agent_path is not None:
            cls = agent_registry.get(agent) if isinstance(agent, str) else agent
            self.agent = cls.load(agent_path)
        else:
            self.agent = make_agent(agent, **dict(agent_kwargs or {}))
        self.max_sections, self.min_sections = max_sections, int(min_sections)
        self.pretrain_space = (pretrain_space if isinstance(pretrain_space, SearchSpace) or pretrain_space is None
                               else block_space(pretrain_space))
        self.learn_steps_per_block = int(learn_steps_per_block)
        self.blocks_run = 0
        if pretrain_steps or instrument_pretrain_steps:
            self.pretrain(pretrain_steps, instrument_pretrain_steps)

    def pretrain(self, steps: int, instrument_steps: int | None = None) -> None:
        """Pre-train the agent: HRL on the per-instrument envs (``instrument_steps``, default
        ``steps``), then any agent ``steps`` sections in the composite env."""
        n_inst = steps if instrument_steps is None else int(instrument_steps)
        if hasattr(self.agent, "pretrain") and n_inst:
            self.agent.pretrain(n_inst, **{k: v for k, v in self.env_kwargs.items() if k == "scenario"})
        if steps:
            import gymnasium as gym

            from cryoopt.agents.starts import RandomStarts

            env = self.env if self.pretrain_space is None else RandomStarts(self.env, self.pretrain_space)
            if self.max_sections:  # episodes as long as the blocks it will run: a series cut past
                env = gym.wrappers.TimeLimit(env, int(self.max_sections))  # the structure scores nothing
            self.agent.learn(env, steps)

    def run(self, params: Mapping[str, Any], seed: int) -> dict[str, Any]:
        """Run one block from the starting protocol ``params``; returns the result dict
        (``quality``, ``prep_time_h``, ``cnr``, ``frc_resolution_nm``, ``sections``, ...)."""
        from cryoopt.agents import EXPERT_PROTOCOL, run_block

        start = {**EXPERT_PROTOCOL, **dict(params)}
        out = run_block(self.agent, self.env, seed=int(seed), start=start, max_sections=self.max_sections,
                        min_sections=self.min_sections)
        self.blocks_run += 1
        if self.learn_steps_per_block > 0:
            self.agent.learn(self.env, self.learn_steps_per_block)
        result: dict[str, Any] = {}
        for k, v in out.items():
            if isinstance(v, (bool, int, float, np.integer, np.floating)) or v is None:
                result[k] = float(v) if v is not None else math.nan
            elif k == "options":
                result.update({f"option_{o}": float(c) for o, c in v.items()})
        good = out.get("sections", 0) - out.get("failed_sections", 0) - out.get("failed_evaluations", 0)
        budget = self.max_sections or max(int(out.get("sections", 0)), 1)
        result["good_sections"] = float(good)
        result["quality"] = float(out["quality"]) * max(good, 0) / budget
        result["prep_time_h"] = float(out["prep_time_h"])
        return result

    def close(self) -> None:
        self.env.close()


class SimulatedCLEMBlock(BlockRunner):
    """A :class:`BlockRunner` callable with a params dict (for a ``function`` executor).

    The block seed comes from the params and ``seed``, so re-running a trial gives the
    same answer (idempotent) as long as the agent does not learn between blocks.
    """

    def __init__(self, seed: int = 0, **kwargs: Any) -> None:
        self.seed = int(seed)
        super().__init__(**kwargs)

    def __call__(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.run(params, _json_seed(params, self.seed))


def _register_executor() -> None:
    from cryoopt.campaign.executors import Executor, TrialRequest, executors

    class SimulatedCLEMExecutor(Executor):
        """Campaign executor ``simulated_clem``: each trial is one simulated CLEM block.

        ``executor.options`` are :class:`BlockRunner`'s keyword arguments (``agent``,
        ``agent_kwargs``, ``agent_path``, ``env_kwargs``, ``max_sections``,
        ``learn_steps_per_block``, ``pretrain_steps``, ``instrument_pretrain_steps``); the block seed is
        ``config.seed * 100_003 + trial.id``. Idempotent unless the agent learns per block.
        """

        idempotent = True

        def __init__(self, config: Any) -> None:
            opts = dict(config.executor.options)
            self.seed = int(config.seed)
            self.runner = BlockRunner(**opts)
            self.idempotent = bool(config.executor.idempotent if config.executor.idempotent is not None
                                   else self.runner.learn_steps_per_block == 0)

        def run(self, trial: TrialRequest) -> dict[str, Any]:
            return self.runner.run(trial.params, self.seed * 100_003 + trial.id)

        def close(self) -> None:
            self.runner.close()

    if "simulated_clem" not in executors:
        executors.register("simulated_clem", SimulatedCLEMExecutor)
    globals()["SimulatedCLEMExecutor"] = SimulatedCLEMExecutor


SimulatedCLEMExecutor: Any = None
_register_executor()


# ---------------------------------------------------------------------------- manual baseline
@register_strategy("manual_ofat")
class ManualOFAT(Optimizer):
    """A simulated operator tuning one factor at a time (OFAT) from the expert protocol.

    Operator model (documented, used by the headline benchmark):

    * **start**: :data:`~cryoopt.agents.EXPERT_PROTOCOL` as this operator habitually
      runs it: log-scale knobs (dilution, time, cutting speed, exposure, gain) times
      ``exp(N(0, sigma))``, thickness + ``N(0, 40 sigma)`` nm, staining temperature
      + ``N(0, 8 sigma)`` C, focus + ``N(0, 2 sigma)`` um; one draw per operator (``seed``).
    * **judgement**: the operator scores a block as ``quality - time_weight * prep_time_h``
      plus ``N(0, judgement_noise)`` (reading images by eye), per block.
    * **OFAT**: factors in :attr:`FACTORS` order; step one factor (x/÷ ``log_step``, or
      the linear step), keep it while the judged score improves, try the other direction
      once when it does not, then move to the next factor; after the last factor start
      over with half steps.

    Its state is a function of the told trials (replayed), so ``state_dict`` resumes it.
    """

    FACTORS = ("time_min", "dilution", "section_thickness_nm", "exposure_ms", "focus_um", "gain",
               "cutting_speed_mm_s", "temperature_c")
    LINEAR_STEP = {"section_thickness_nm": 20.0, "focus_um": 0.5, "temperature_c": 4.0}

    def __init__(self, space: SearchSpace, *, seed: int = 0, objectives: Any = None, outcome_constraints: Any = None,
                 sigma: float = 0.25, time_weight: float = 0.01, judgement_noise: float = 0.01, log_step: float = 1.6) -> None:
        super().__init__(space, seed=seed, objectives=objectives, outcome_constraints=outcome_constraints)
        self.sigma, self.time_weight = float(sigma), float(time_weight)
        self.judgement_noise, self.log_step = float(judgement_noise), float(log_step)

    def _settings(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "time_weight": self.time_weight, "judgement_noise": self.judgement_noise,
                "log_step": self.log_step}

    def operator_start(self) -> Params:
        from cryoopt.agents import EXPERT_PROTOCOL

        rng = np.random.default_rng([self.seed, 7])
        s = self.sigma
        p = {}
        for par in self.space:
            base = float(EXPERT_PROTOCOL.get(par.name, 0.5 * (par.low + par.high)))
            if par.name in self.LINEAR_STEP:
                scale = {"section_thickness_nm": 40.0, "focus_um": 2.0, "temperature_c": 8.0}[par.name]
                v = base + rng.normal(0.0, scale * s)
            else:
                v = base * math.exp(rng.normal(0.0, s))
            p[par.name] = self._clip(par, v)
        return self.space.validate(p)

    @staticmethod
    def _clip(par: Any, v: float) -> Any:
        v = min(max(v, par.low), par.high)
        return int(round(v)) if type(par).__name__ == "IntParameter" else float(v)

    def _judge(self, t: Trial) -> float:
        v = t.values or {}
        noise = np.random.default_rng([self.seed, 11, t.id]).normal(0.0, self.judgement_noise)
        return float(v.get("quality", 0.0)) - self.time_weight * float(v.get("prep_time_h", 0.0)) + float(noise)

    def _factors(self) -> list[str]:
        return [f for f in self.FACTORS if f in self.space.names] or self.space.names

    def _replay(self) -> tuple[Params | None, int, int, int, int]:
        """(incumbent, factor index, direction, tries in this direction, round) after the told trials."""
        base, best = None, -math.inf
        fi, direction, flipped, rnd = 0, +1, False, 0
        nf = len(self._factors())
        for t in self.trials:
            if t.status is TrialStatus.PENDING or t.status is TrialStatus.ABANDONED:
                continue
            score = self._judge(t) if t.status is TrialStatus.COMPLETED else -math.inf
            if base is None:
                base, best = t.params, score
                continue
            if score > best:
                base, best = t.params, score
                flipped = True  # this direction works: keep going, do not try the other one
            elif direction == +1 and not flipped:
                direction, flipped = -1, True
            else:
                fi, direction, flipped = fi + 1, +1, False
                if fi >= nf:
                    fi, rnd = 0, rnd + 1
        return base, fi, direction, int(flipped), rnd

    def _step(self, base: Params, name: str, direction: int, rnd: int) -> Params:
        par = self.space[name] if hasattr(self.space, "__getitem__") else next(p for p in self.space if p.name == name)
        shrink = 0.5**rnd
        v = float(base[name])
        if name in self.LINEAR_STEP:
            v += direction * self.LINEAR_STEP[name] * shrink
        else:
            v *= self.log_step ** (direction * shrink)
        return self.space.validate({**base, name: self._clip(par, v)})

    def _propose(self, n: int) -> list[tuple[Params, str]]:
        base, fi, direction, _, rnd = self._replay()
        if base is None:
            first = [] if any(t.status is TrialStatus.PENDING for t in self.trials) else [self.operator_start()]
            if first:
                base = first[0]
            out = [(p, "manual") for p in first]
        else:
            out = []
        factors = self._factors()
        base = base or self.operator_start()
        while len(out) < n:  # without feedback (batch), walk on through the plan
            cand = self._step(base, factors[fi % len(factors)], direction, rnd)
            if cand == base:  # at a bound: next factor
                fi += 1
                continue
            out.append((cand, "manual"))
            fi += 1
        return out[:n]


# ---------------------------------------------------------------------------- the loop
class OuterLoop:
    """BO over blocks' starting protocols with an agent adapting inside each block.

    Args:
        agent: agent instance, registered name or class (``"hrl"`` by default).
        space: a :class:`SearchSpace` or its dict (default :data:`DEFAULT_BLOCK_SPACE`).
        optimizer: strategy name (``"bo"``, ``"random"``, ``"sobol"``, ``"manual_ofat"``)
            or an :class:`Optimizer` (its objectives must include ``quality`` and
            ``prep_time_h``).
        optimizer_kwargs: strategy options (BO default: :data:`FAST_BO`, a noise floor of 0.3 included).
        seed: seeds the optimizer and the block sequence.
        batch_size: blocks proposed together (``q``).
        objectives: default ``{"quality": "maximize", "prep_time_h": "minimize"}``;
            ``{"quality": "maximize"}`` for a single objective.
        runner_kwargs: :class:`BlockRunner` arguments (``env_kwargs``, ``max_sections``,
            ``learn_steps_per_block``, ``pretrain_steps``, ``agent_kwargs``).
        start_protocols: known protocols (e.g. the lab's current one,
            :data:`~cryoopt.agents.EXPERT_PROTOCOL`) run as the first blocks of a fresh
            loop, before the optimizer proposes anything; keys outside the space are
            ignored. They count toward BO's initial design.
        replicate_every: every this many blocks, rerun the protocol :meth:`recommend`
            currently picks on a fresh specimen instead of a new proposal (``0``: never).
            Specimens vary about as much as protocols do; a replicate shows the GP how
            much (two results at one protocol) and confirms or demotes an incumbent that
            won on a lucky specimen. Replicates have ``source="replicate"``.

    Example:
        >>> loop = OuterLoop("hrl", seed=0, batch_size=2, runner_kwargs={"pretrain_steps": 128})
        >>> loop.run(n_blocks=8)
        >>> loop.pareto_front()
    """

    def __init__(self, agent: Any = "hrl", space: SearchSpace | Mapping[str, Any] | None = None, *,
                 optimizer: str | Optimizer = "bo", optimizer_kwargs: Mapping[str, Any] | None = None, seed: int = 0,
                 batch_size: int = 1, objectives: Mapping[str, str] | None = None,
                 runner_kwargs: Mapping[str, Any] | None = None, runner: BlockRunner | None = None,
                 start_protocols: Sequence[Mapping[str, Any]] = (), replicate_every: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if replicate_every < 0 or replicate_every == 1:
            raise ValueError(f"replicate_every must be 0 (off) or >= 2 blocks, got {replicate_every}")
        self.seed, self.batch_size, self.replicate_every = int(seed), int(batch_size), int(replicate_every)
        if isinstance(optimizer, Optimizer):
            self.optimizer = optimizer
        else:
            sp = space if isinstance(space, SearchSpace) else block_space(space)
            kw = dict(FAST_BO) if optimizer == "bo" else {}
            kw.update(optimizer_kwargs or {})
            self.optimizer = make_optimizer(optimizer, sp, seed=self.seed, objectives=dict(objectives or OBJECTIVES), **kw)
        if runner is None:
            rk = dict(runner_kwargs or {})
            rk.setdefault("pretrain_space", self.optimizer.space)
            runner = BlockRunner(agent, **rk)
        self.runner = runner
        self.history: list[dict[str, Any]] = []
        if not self.optimizer.trials:
            names = set(self.optimizer.space.names)
            for protocol in start_protocols:
                self.optimizer.add_trial({k: v for k, v in protocol.items() if k in names}, source="start")

    @property
    def agent(self) -> Any:
        return self.runner.agent

    def block_seed(self, index: int) -> int:
        return self.seed * 100_003 + int(index)

    def step(self) -> list[dict[str, Any]]:
        """Run one batch of blocks (pending ones from a resumed state first); returns their records."""
        trials = list(self.optimizer.pending)
        if not trials:
            trials = self._replicates()
            trials += self.optimizer.ask(self.batch_size - len(trials)) if len(trials) < self.batch_size else []
        records = []
        for t in trials:
            index = len(self.history)
            result = self.runner.run(t.params, self.block_seed(index))
            self.optimizer.tell(t, {k: v for k, v in result.items() if math.isfinite(v)})
            rec = {"block": index, "trial": t.id, "source": t.source, "params": dict(t.params), **result}
            self.history.append(rec)
            records.append(rec)
        return records

    def _replicates(self) -> list[Trial]:
        """The replicate block due now (see ``replicate_every``), queued as a trial, or none."""
        replicated = sum(r["source"] == "replicate" for r in self.history)
        if not replicate_due(len(self.history), self.batch_size, self.replicate_every, replicated):
            return []
        rec = self.recommend()
        return [self.optimizer.add_trial(rec["params"], source="replicate")] if rec is not None else []

    def run(self, n_blocks: int, callback: Any = None) -> list[dict[str, Any]]:
        """Run until ``n_blocks`` blocks are done in total (batches may overshoot by < q)."""
        while len(self.history) < n_blocks:
            recs = self.step()
            if callback is not None:
                callback(self, recs)
        return self.history

    def pareto_front(self) -> list[dict[str, Any]]:
        """The Pareto-optimal blocks (quality vs prep time), best quality first."""
        ids = {t.id for t in self.optimizer.pareto_front()}
        front = [r for r in self.history if r["trial"] in ids]
        return sorted(front, key=lambda r: -r["quality"])

    def best(self) -> dict[str, Any] | None:
        t = self.optimizer.best()
        return next((r for r in self.history if t is not None and r["trial"] == t.id), None)

    def recommend(self, target: float | None = None) -> dict[str, Any] | None:
        """The block whose starting protocol to adopt: with a quality ``target``, the fastest
        block expected to reach it, else (or with no target) the best expected quality.

        Expected values are the optimizer's posterior means at the blocks' protocols when
        it has a model (BO: specimen noise averaged out, so a lucky block does not win
        on luck alone), the observed values otherwise. The returned record adds
        ``expected_quality`` and ``expected_prep_time_h``; ``None`` before any block.
        """
        done = {t.id for t in self.optimizer.completed}
        blocks = [r for r in self.history if r["trial"] in done]
        if not blocks:
            return None
        quality = np.array([r["quality"] for r in blocks], float)
        prep = np.array([r["prep_time_h"] for r in blocks], float)
        names = [o.name for o in self.optimizer.objectives]
        if hasattr(self.optimizer, "predict") and len(blocks) >= 3:
            mean, _ = self.optimizer.predict([r["params"] for r in blocks])
            quality = mean[:, names.index("quality")]
            if "prep_time_h" in names:
                prep = mean[:, names.index("prep_time_h")]
        ok = np.flatnonzero(quality >= target) if target is not None else np.array([], int)
        i = int(ok[np.argmin(prep[ok])]) if ok.size else int(np.argmax(quality))
        return {**blocks[i], "expected_quality": float(quality[i]), "expected_prep_time_h": float(prep[i])}

    # -- resume -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Optimizer state (trials, RNG) + block history; the agent is saved with :meth:`save`."""
        return {"version": 1, "seed": self.seed, "batch_size": self.batch_size, "replicate_every": self.replicate_every,
                "optimizer": self.optimizer.state_dict(), "history": self.history}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, agent: Any = "hrl",
                        runner_kwargs: Mapping[str, Any] | None = None, runner: BlockRunner | None = None) -> OuterLoop:
        loop = cls(agent, optimizer=Optimizer.from_state_dict(state["optimizer"]), seed=int(state["seed"]),
                   batch_size=int(state["batch_size"]), runner_kwargs=runner_kwargs, runner=runner,
                   replicate_every=int(state.get("replicate_every", 0)))
        loop.history = [dict(r) for r in state["history"]]
        return loop

    def save(self, directory: str | Path) -> Path:
        """``directory/outer_loop.json`` and the agent in ``directory/agent/``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "outer_loop.json").write_text(json.dumps(self.state_dict(), default=float))
        if hasattr(self.agent, "save"):
            self.agent.save(d / "agent")
        return d

    @classmethod
    def load(cls, directory: str | Path, *, agent: Any = "hrl", runner_kwargs: Mapping[str, Any] | None = None) -> OuterLoop:
        """Resume from :meth:`save`; ``agent`` names the saved agent's class (registry name or class)."""
        d = Path(directory)
        state = json.loads((d / "outer_loop.json").read_text())
        kw = dict(runner_kwargs or {})
        if (d / "agent" / "agent.json").exists():
            kw["agent_path"] = str(d / "agent")
        return cls.from_state_dict(state, agent=agent, runner_kwargs=kw)
