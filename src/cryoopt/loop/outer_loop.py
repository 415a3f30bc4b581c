"""The outer loop: BoTorch proposes each sample block's starting protocol, an agent adapts within it.

For every block:

1. optionally a cheap measurement of the block's specimen is taken before the block is
   committed (``context``: e.g. a screening score from an LM overview of a trimmed
   ribbon); an optimizer that models contexts proposes *for that specimen*;
2. the optimizer proposes its starting protocol (``ask(batch_size)``: ``q >= 1`` blocks
   prepared in parallel; knobs outside the space start at
   :data:`~cryoopt.agents.EXPERT_PROTOCOL`), or the loop reruns the current
   recommendation on a fresh specimen (a replicate, see below);
3. the agent (any :mod:`cryoopt.agents` agent) runs the block
   (:class:`~cryoopt.loop.blocks.BlockRunner`), adapting setpoints per section, and may
   stop it early;
4. the block's ``quality`` (maximized) and its prep time (``prep_time_h``, minimized) go
   back to the GP (``tell``): multi-objective, the Pareto front is
   :meth:`OuterLoop.pareto_front`;
5. optionally the agent keeps learning (``learn_steps_per_block``).

Specimens vary about as much as protocols do. So the GP gets a noise floor
(:data:`FAST_BO`); a replicate reruns the current recommendation on a fresh specimen,
every ``replicate_every``-th block or, with ``replicate_every="auto"``, when the
optimizer's own rule (``replicate_value``: the value of sharpening the incumbent against
that of exploring) says it pays; and :meth:`OuterLoop.recommend` is the optimizer's
posterior belief (replicates pooled, with a 95 % interval) rather than the luckiest block.

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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cryoopt.exceptions import ParameterError
from cryoopt.loop import manual as _manual  # noqa: F401 - registers the "manual_ofat" strategy
from cryoopt.loop.blocks import OBJECTIVES, BlockRunner, block_space
from cryoopt.optim.base import Optimizer, make_optimizer, replicate_due
from cryoopt.optim.trial import Failure, Trial
from cryoopt.space import SearchSpace

__all__ = ["FAST_BO", "ContextSource", "OuterLoop"]

#: small acquisition settings (a block costs seconds in simulation, the GP should not cost
#: more) and a noise floor: specimens vary about as much as protocols do, and without one
#: the GP interpolates lucky blocks (headline benchmark, bo_only over 20 seeds: held-out
#: quality of the recommended protocol 0.278 with a floor of 0.3, 0.245 without)
FAST_BO = {"num_restarts": 2, "raw_samples": 64, "mc_samples": 64, "noise_floor": 0.3}

#: A cheap measurement of a block's specimen before the block is committed: block seed -> {name: value}.
ContextSource = Callable[[int], Mapping[str, float]]


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
        replicate_every: when to rerun the protocol :meth:`recommend` currently picks on a
            fresh specimen instead of a new proposal: every this many blocks (``0``: never),
            or ``"auto"``: whenever the optimizer's ``replicate_value`` says sharpening the
            incumbent is worth more than exploring (at most one replicate per batch; an
            optimizer without that rule never replicates). Specimens vary about as much as
            protocols do; a replicate shows the GP how much (two results at one protocol)
            and confirms or demotes an incumbent that won on a lucky specimen. Replicates
            have ``source="replicate"``; with ``"auto"`` the block's record keeps the
            rule's ``replicate_reason``.
        context: a cheap measurement of each block's specimen, taken before the block is
            committed: ``context(block_seed) -> {name: value}`` (:data:`ContextSource`).
            The optimizer must model contexts: pass ``contexts`` (their ranges) when the
            loop builds it, or an optimizer built with them. Each block's record keeps
            its ``context``; :meth:`recommend` can answer for a given one.
        contexts: the context names and ranges (``{name: (low, high)}``) for the optimizer
            the loop builds (ignored when ``optimizer`` is an instance).

    Example:
        >>> loop = OuterLoop("hrl", seed=0, batch_size=2, runner_kwargs={"pretrain_steps": 128})
        >>> loop.run(n_blocks=8)
        >>> loop.pareto_front()
    """

    def __init__(self, agent: Any = "hrl", space: SearchSpace | Mapping[str, Any] | None = None, *,
                 optimizer: str | Optimizer = "bo", optimizer_kwargs: Mapping[str, Any] | None = None, seed: int = 0,
                 batch_size: int = 1, objectives: Mapping[str, str] | None = None,
                 runner_kwargs: Mapping[str, Any] | None = None, runner: BlockRunner | None = None,
                 start_protocols: Sequence[Mapping[str, Any]] = (), replicate_every: int | str = 0,
                 context: ContextSource | None = None, contexts: Mapping[str, Any] | None = None) -> None:
        if batch_size < 1:
            raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
        self.replicate_every = self._check_replicate_every(replicate_every)
        if context is not None and not callable(context):
            raise ParameterError(f"context must be a callable block_seed -> {{name: value}}, got {context!r}")
        self.seed, self.batch_size = int(seed), int(batch_size)
        self.context = context
        if isinstance(optimizer, Optimizer):
            self.optimizer = optimizer
        else:
            sp = space if isinstance(space, SearchSpace) else block_space(space)
            kw = dict(FAST_BO) if optimizer == "bo" else {}
            kw.update(optimizer_kwargs or {})
            if contexts is not None:
                kw["contexts"] = contexts
            try:
                self.optimizer = make_optimizer(optimizer, sp, seed=self.seed, objectives=dict(objectives or OBJECTIVES), **kw)
            except TypeError as err:
                if "contexts" in kw and "contexts" in str(err):
                    raise ParameterError(f"the {optimizer!r} optimizer does not model contexts; use one that does "
                                         "(e.g. 'bo') or leave out context/contexts") from None
                raise
        if context is not None and getattr(self.optimizer, "contexts", None) is None:
            raise ParameterError("a context source needs an optimizer that models contexts: pass contexts="
                                 "{name: (low, high)} (the measurement's names and ranges), or an optimizer built with them")
        if runner is None:
            rk = dict(runner_kwargs or {})
            rk.setdefault("pretrain_space", self.optimizer.space)
            runner = BlockRunner(agent, **rk)
        self.runner = runner
        self.history: list[dict[str, Any]] = []
        self._contexts: dict[int, dict[str, float]] = {}
        self._reasons: dict[int, str] = {}
        if not self.optimizer.trials:
            names = set(self.optimizer.space.names)
            for i, protocol in enumerate(start_protocols):
                self._add_trial({k: v for k, v in protocol.items() if k in names}, "start", self.measure(i))

    @staticmethod
    def _check_replicate_every(value: int | str) -> int | str:
        if value == "auto":
            return "auto"
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0 or value == 1:
            raise ParameterError(f"replicate_every must be 0 (off), >= 2 blocks or 'auto', got {value!r}")
        return int(value)

    @property
    def agent(self) -> Any:
        return self.runner.agent

    def block_seed(self, index: int) -> int:
        return self.seed * 100_003 + int(index)

    # -- contexts -------------------------------------------------------------------------------
    def measure(self, index: int) -> dict[str, float] | None:
        """The context of block ``index`` (``None`` without a context source); measured once."""
        if self.context is None:
            return None
        if index not in self._contexts:
            value = self.context(self.block_seed(index))
            if not isinstance(value, Mapping):
                raise ParameterError(f"the context source returned {value!r} for block {index}; it must return {{name: value}}")
            self._contexts[index] = {str(k): float(v) for k, v in value.items()}
        return dict(self._contexts[index])

    def _add_trial(self, params: Mapping[str, Any], source: str, context: Mapping[str, float] | None) -> Trial:
        if context is None:
            return self.optimizer.add_trial(params, source=source)
        return self.optimizer.add_trial(params, source=source, context=context)

    def _ask(self, n: int, contexts: list[dict[str, float]] | None) -> list[Trial]:
        return self.optimizer.ask(n) if contexts is None else self.optimizer.ask(n, context=contexts)

    # -- running --------------------------------------------------------------------------------
    def step(self) -> list[dict[str, Any]]:
        """Run one batch of blocks (pending ones from a resumed state first); returns their records."""
        trials = list(self.optimizer.pending)
        if not trials:
            first = len(self.history)
            ctxs = [self.measure(first + j) for j in range(self.batch_size)] if self.context is not None else None
            trials = self._replicates(ctxs[0] if ctxs else None)
            if len(trials) < self.batch_size:
                trials += self._ask(self.batch_size - len(trials), ctxs[len(trials):] if ctxs else None)
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
            ctx = getattr(t, "context", None)
            if ctx:
                rec["context"] = dict(ctx)
            if t.id in self._reasons:
                rec["replicate_reason"] = self._reasons[t.id]
            self.history.append(rec)
            records.append(rec)
        return records

    def _replicate_decision(self, context: Mapping[str, float] | None) -> tuple[bool, str]:
        """Whether the next batch starts with a replicate, and why."""
        replicated = sum(r["source"] == "replicate" for r in self.history)
        if self.replicate_every == "auto":
            rule = getattr(self.optimizer, "replicate_value", None)
            if rule is None:
                return False, f"the {self.optimizer.strategy_name!r} optimizer has no replicate rule"
            d = rule(context=context) if context is not None else rule()
            return bool(d.replicate), str(getattr(d, "reason", ""))
        due = replicate_due(len(self.history), self.batch_size, int(self.replicate_every), replicated)
        return due, f"every {self.replicate_every} blocks" if due else ""

    def _replicates(self, context: Mapping[str, float] | None) -> list[Trial]:
        """The replicate block due now (see ``replicate_every``), queued as a trial, or none."""
        if not self.replicate_every:
            return []
        due, reason = self._replicate_decision(context)
        if not due:
            return []
        rec = self.recommend(context=context)
        if rec is None:
            return []
        t = self._add_trial(rec["params"], "replicate", context)
        self._reasons[t.id] = reason
        return [t]

    def run(self, n_blocks: int, callback: Any = None) -> list[dict[str, Any]]:
        """Run until ``n_blocks`` blocks are done in total (batches may overshoot by < q)."""
        while len(self.history) < n_blocks:
            recs = self.step()
            if callback is not None:
                callback(self, recs)
        return self.history

    # -- results ---------------------------------------------------------------------------------
    def pareto_front(self) -> list[dict[str, Any]]:
        """The Pareto-optimal blocks (quality vs prep time), best quality first."""
        ids = {t.id for t in self.optimizer.pareto_front()}
        front = [r for r in self.history if r["trial"] in ids]
        return sorted(front, key=lambda r: -r["quality"])

    def best(self) -> dict[str, Any] | None:
        """The best *observed* block (for several objectives, the balanced Pareto compromise): one
        block, possibly a lucky specimen; :meth:`recommend` is what to adopt."""
        t = self.optimizer.best()
        return next((r for r in self.history if t is not None and r["trial"] == t.id), None)

    def recommend(self, target: float | None = None, *, context: Mapping[str, float] | None = None) -> dict[str, Any] | None:
        """The starting protocol to adopt, as a belief: the best *expected* quality among the
        protocols that ran (replicates pooled); with a quality ``target``, the fastest protocol
        expected to reach it (the best expected quality when none is).

        With an optimizer that forms beliefs (``Optimizer.recommend``: BO's posterior mean,
        averaged over the contexts seen, or for ``context``), that is its recommendation;
        otherwise the optimizer's posterior means at the blocks' protocols (``predict``), or
        the observed means of each protocol's blocks. Returns the latest block that ran the
        protocol, with ``params``, ``expected_quality``, ``expected_prep_time_h``,
        ``quality_ci95`` (``None`` when unknown), ``n_runs`` and ``basis``
        (``"posterior"``/``"observed"``); ``None`` before any block.
        """
        done = {t.id for t in self.optimizer.completed}
        blocks = [r for r in self.history if r["trial"] in done]
        if not blocks:
            return None
        belief = getattr(self.optimizer, "recommend", None)
        if callable(belief):
            r = belief(context=context, target={"quality": float(target)} if target is not None else None)
            if r is None:
                return None
            ids = set(r.trial_ids)
            block = next((b for b in reversed(blocks) if b["trial"] in ids), blocks[-1])
            ci = (r.ci95 or {}).get("quality")
            return {**block, "params": dict(r.params), "expected_quality": float(r.mean["quality"]),
                    "expected_prep_time_h": float(r.mean.get("prep_time_h", math.nan)),
                    "quality_ci95": list(ci) if ci else None, "n_runs": int(r.n_runs), "basis": str(r.basis)}
        return self._recommend_from_blocks(blocks, target)

    def _recommend_from_blocks(self, blocks: list[dict[str, Any]], target: float | None) -> dict[str, Any]:
        """:meth:`recommend` for optimizers without their own: protocols pooled over their blocks,
        expected = posterior mean (``predict``) when the optimizer has a model, observed mean otherwise."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for b in blocks:
            groups.setdefault(json.dumps(b["params"], sort_keys=True, default=str), []).append(b)
        members = list(groups.values())
        quality = np.array([np.mean([b["quality"] for b in g]) for g in members], float)
        prep = np.array([np.mean([b["prep_time_h"] for b in g]) for g in members], float)
        names = [o.name for o in self.optimizer.objectives]
        basis = "observed"
        if hasattr(self.optimizer, "predict") and len(blocks) >= 3:
            mean, _ = self.optimizer.predict([g[0]["params"] for g in members])
            quality = mean[:, names.index("quality")]
            if "prep_time_h" in names:
                prep = mean[:, names.index("prep_time_h")]
            basis = "posterior"
        ok = np.flatnonzero(quality >= target) if target is not None else np.array([], int)
        i = int(ok[np.argmin(prep[ok])]) if ok.size else int(np.argmax(quality))
        g = members[i]
        ci = None
        if basis == "observed" and len(g) >= 2:
            from scipy import stats

            q = np.array([b["quality"] for b in g])
            half = float(stats.t.ppf(0.975, len(q) - 1) * q.std(ddof=1) / np.sqrt(len(q)))
            ci = [float(q.mean() - half), float(q.mean() + half)]
        return {**g[-1], "expected_quality": float(quality[i]), "expected_prep_time_h": float(prep[i]),
                "quality_ci95": ci, "n_runs": len(g), "basis": basis}

    # -- resume -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Optimizer state (trials, RNG) + block history; the agent is saved with :meth:`save`."""
        return {"version": 1, "seed": self.seed, "batch_size": self.batch_size, "replicate_every": self.replicate_every,
                "optimizer": self.optimizer.state_dict(), "history": self.history,
                "contexts": {str(k): v for k, v in self._contexts.items()},
                "replicate_reasons": {str(k): v for k, v in self._reasons.items()}}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, agent: Any = "hrl",
                        runner_kwargs: Mapping[str, Any] | None = None, runner: BlockRunner | None = None,
                        context: ContextSource | None = None) -> OuterLoop:
        """Resume a loop from :meth:`state_dict` (pass the same ``context`` source, if it had one)."""
        loop = cls(agent, optimizer=Optimizer.from_state_dict(state["optimizer"]), seed=int(state["seed"]),
                   batch_size=int(state["batch_size"]), runner_kwargs=runner_kwargs, runner=runner,
                   replicate_every=state.get("replicate_every", 0), context=context)
        loop.history = [dict(r) for r in state["history"]]
        loop._contexts = {int(k): dict(v) for k, v in state.get("contexts", {}).items()}
        loop._reasons = {int(k): str(v) for k, v in state.get("replicate_reasons", {}).items()}
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
    def load(cls, directory: str | Path, *, agent: Any = "hrl", runner_kwargs: Mapping[str, Any] | None = None,
             context: ContextSource | None = None) -> OuterLoop:
        """Resume from :meth:`save`; ``agent`` names the saved agent's class (registry name or class)."""
        d = Path(directory)
        state = json.loads((d / "outer_loop.json").read_text())
        kw = dict(runner_kwargs or {})
        if (d / "agent" / "agent.json").exists():
            kw["agent_path"] = str(d / "agent")
        return cls.from_state_dict(state, agent=agent, runner_kwargs=kw, context=context)
