"""Baseline agents: ``random``, ``fixed`` (the expert manual protocol), ``bo_only`` (hold),
``compensate`` (hold, with the cutting temperature held against drift by feedforward)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cryoopt.agents.base import ACTION_DIM, EXPERT_PROTOCOL, STOP_INDEX, BaseAgent, register_agent
from cryoopt.agents.drift import DriftTracker

__all__ = ["DriftCompensationAgent", "FixedAgent", "HoldAgent", "RandomAgent"]


@register_agent("random")
class RandomAgent(BaseAgent):
    """Uniform random setpoint deltas scaled by ``scale`` each section; never stops a block."""

    def __init__(self, seed: int | None = 0, scale: float = 0.3) -> None:
        super().__init__(seed=seed, scale=scale)
        self.scale = float(scale)

    def act(self, obs: Any, info: Mapping[str, Any] | None = None) -> np.ndarray:
        a = self.rng.uniform(-self.scale, self.scale, ACTION_DIM).astype(np.float32)
        a[STOP_INDEX] = -1.0
        return a


@register_agent("bo_only")
class HoldAgent(BaseAgent):
    """No within-block adaptation: holds the block's starting protocol (the outer loop's
    proposal) for every section. With BO as the outer loop this is the ``BO-only`` strategy."""

    def __init__(self, seed: int | None = 0) -> None:
        super().__init__(seed=seed)

    def act(self, obs: Any, info: Mapping[str, Any] | None = None) -> np.ndarray:
        return self.zero_action()


@register_agent("fixed")
class FixedAgent(HoldAgent):
    """The documented expert manual protocol (:data:`~cryoopt.agents.base.EXPERT_PROTOCOL`),
    or ``protocol=`` overrides, held for the whole block.

    :func:`~cryoopt.agents.base.run_block` starts a block from ``start_protocol`` when
    the caller gives no starting protocol.
    """

    def __init__(self, seed: int | None = 0, protocol: Mapping[str, float] | None = None) -> None:
        BaseAgent.__init__(self, seed=seed, protocol=dict(protocol) if protocol else None)
        self.start_protocol = {**EXPERT_PROTOCOL, **(protocol or {})}


@register_agent("compensate")
class DriftCompensationAgent(HoldAgent):
    """Holds the starting protocol, except that the specimen and knife temperature setpoints
    move against the drift the readbacks show, so the temperatures the cuts *measure* stay at
    the starting setpoints (:meth:`~cryoopt.agents.drift.DriftTracker.feedforward`).

    A classical disturbance feedforward with no learning: the baseline that tells how much of
    a learning agent's within-block gain a few lines of control engineering already give.
    """

    def __init__(self, seed: int | None = 0, window: int = 4) -> None:
        BaseAgent.__init__(self, seed=seed, window=window)
        self.window = int(window)
        self.tracker = DriftTracker(window=self.window)
        from cryoopt.envs._core import SECTIONING_KNOBS

        self._index = {k.name: i for i, k in enumerate(SECTIONING_KNOBS)}

    def reset(self) -> None:
        self.tracker = DriftTracker(window=self.window)

    def act(self, obs: Any, info: Mapping[str, Any] | None = None) -> np.ndarray:
        if not self.tracker.started and info is not None:
            self.tracker.reset(info)
        a = self.zero_action()
        for knob, move in self.tracker.feedforward().items():
            a[self._index[knob]] = move
        return a

    def observe(self, obs: Any, reward: float, terminated: bool, truncated: bool, info: Mapping[str, Any]) -> None:
        self.tracker.update(info)
