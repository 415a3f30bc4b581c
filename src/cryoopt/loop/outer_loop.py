"""The outer loop: BoTorch proposes each sample block's starting protocol, an agent adapts within it.

For every block:

1. the optimizer proposes its starting protocol (``ask(batch_size)``: ``q >= 1`` blocks
   prepared in parallel; knobs outside the space start at
   :data:`~cryoopt.agents.EXPERT_PROTOCOL`);
2. the agent (any :mod:`cryoopt.agents` agent) runs the block
   (:class:`~cryoopt.loop.blocks.BlockRunner`), adapting setpoints per section, and may
   stop it early;
3. the block's ``quality`` (maximized) and its prep time (``prep_time_h``, minimized) go
   back to the GP (``tell``): multi-objective, the Pareto front is
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
(:mod:`cryoopt.loop.executor`) or, from a config's ``function`` executor, as
``cryoopt.loop:SimulatedCLEMBlock``; see ``configs/sim_clem.yaml``. The manual
baseline is the strategy ``manual_ofat`` (:class:`~cryoopt.loop.manual.ManualOFAT`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cryoopt.loop import manual as _manual  # noqa: F401 - registers the "manual_ofat" strategy
from cryoopt.loop.blocks import OBJECTIVES, BlockRunner, block_space
from cryoopt.optim.base import Optimizer, make_optimizer, replicate_due
from cryoopt.optim.trial import Failure, Trial
from cryoopt.space import SearchSpace

__all__ = ["FAST_BO", "OuterLoop"]

#: small acquisition settings (a block costs seconds in simulation, the GP should not cost
#: more) and a noise floor: specimens vary about as much as protocols do, and without one
#: the GP interpolates lucky blocks (headline benchmark, bo_only over 20 seeds: held-out
#: quality of the recommended protocol 0.278 with a floor of 0.3, 0.245 without)
FAST_BO = {"num_restarts": 2, "raw_samples": 64, "mc_samples": 64, "noise_floor": 0.3}


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
            if isinstance(result, Failure):  # no valid evaluation: told as a failure, never as a quality of 0
                self.optimizer.tell(t, result)
                result = {**getattr(result, "measured", {}), "failure_reason": result.reason}
            else:
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
