"""Campaign executor ``simulated_clem``: each trial is one simulated CLEM block.

Importing this module registers the executor in :data:`cryoopt.registry.executors`;
:func:`cryoopt.campaign.executors.make_executor` imports it when a config names it.
"""

from __future__ import annotations

from typing import Any

from cryoopt.loop.blocks import BlockRunner
from cryoopt.registry import Executor, TrialRequest, executors

__all__ = ["SimulatedCLEMExecutor"]


class SimulatedCLEMExecutor(Executor):
    """Campaign executor ``simulated_clem``: each trial is one simulated CLEM block.

    ``executor.options`` are :class:`~cryoopt.loop.BlockRunner`'s keyword arguments
    (``agent``, ``agent_kwargs``, ``agent_path``, ``env_kwargs``, ``max_sections``,
    ``learn_steps_per_block``, ``pretrain_steps``, ``instrument_pretrain_steps``); the block
    seed is ``config.seed * 100_003 + trial.id``. Idempotent unless the agent learns per block.
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

    def suspended(self) -> str | None:
        """Why the next trial should wait (a door open, a temperature drifting, a reagent out), or
        ``None``: the env's instrument bench's :meth:`~cryoopt.instruments.Bench.suspend_reason`
        on the ``instruments``/``socket`` backends; always ``None`` on ``direct`` (no instruments)."""
        chain = getattr(self.runner.env.unwrapped, "chain", None)
        bench = getattr(chain, "bench", None)
        if chain is None or chain.backend == "direct" or bench is None:
            return None
        reason = getattr(bench, "suspend_reason", None)
        return reason() if callable(reason) else None

    def close(self) -> None:
        self.runner.close()


if "simulated_clem" not in executors:
    executors.register("simulated_clem", SimulatedCLEMExecutor)
