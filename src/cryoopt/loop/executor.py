"""Campaign executor ``simulated_clem``: each trial is one simulated CLEM block.

Importing this module registers the executor in :data:`cryoopt.registry.executors`;
:func:`cryoopt.campaign.executors.make_executor` imports it when a config names it.
"""

from __future__ import annotations

from typing import Any

from cryoopt.loop.blocks import RESULT_KEYS, BlockFailure, BlockRunner
from cryoopt.registry import Executor, Problem, TrialRequest, executors, option_problems

__all__ = ["SimulatedCLEMExecutor"]


class SimulatedCLEMExecutor(Executor):
    """Campaign executor ``simulated_clem``: each trial is one simulated CLEM block.

    ``executor.options`` are :class:`~cryoopt.loop.BlockRunner`'s keyword arguments
    (``agent``, ``agent_kwargs``, ``agent_path``, ``env_kwargs``, ``max_sections``,
    ``learn_steps_per_block``, ``pretrain_steps``, ``instrument_pretrain_steps``); the block
    seed is ``config.seed * 100_003 + trial.id``. Idempotent unless the agent learns per block.
    """

    idempotent = True
    result_keys = RESULT_KEYS

    @classmethod
    def check_config(cls, config: Any) -> list[Problem]:
        """``executor.options`` are BlockRunner's keywords, of the right types, naming a known agent."""
        options = config.executor.options
        problems = option_problems(BlockRunner, options, "executor.options")
        agent = options.get("agent", "hrl")
        if isinstance(agent, str) and ":" not in agent and not any(p[0] == "executor.options.agent" for p in problems):
            from cryoopt.agents import available_agents

            if agent not in available_agents():
                problems.append(("executor.options.agent",
                                 f"unknown agent {agent!r}; available: {', '.join(available_agents())} (or module:Class)"))
        return problems

    def __init__(self, config: Any) -> None:
        opts = dict(config.executor.options)
        self.seed = int(config.seed)
        self.runner = BlockRunner(**opts)
        self.idempotent = bool(config.executor.idempotent if config.executor.idempotent is not None
                               else self.runner.learn_steps_per_block == 0)

    def run(self, trial: TrialRequest) -> dict[str, Any] | BlockFailure:
        return self.runner.run(trial.params, self.seed * 100_003 + trial.id)

    def close(self) -> None:
        self.runner.close()


if "simulated_clem" not in executors:
    executors.register("simulated_clem", SimulatedCLEMExecutor)
