"""Pre-train agents on the blocks the outer loop will hand them."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from cryoopt.agents.base import EXPERT_PROTOCOL, start_setpoints
from cryoopt.space import SearchSpace

__all__ = ["RandomStarts"]


class RandomStarts(gym.Wrapper):
    """Every reset starts the wrapped block env from a random protocol of ``space``.

    Knobs outside ``space`` keep :data:`~cryoopt.agents.EXPERT_PROTOCOL`'s values; a reset
    that passes its own ``options["setpoints"]`` is left alone. Seeded (``seed`` here, or
    the ``reset(seed=...)`` of an episode), so pre-training is reproducible. Without it an
    agent pre-trains from the scenario's start ranges, whose failing ribbons teach it to
    stop blocks that the outer loop would have started well.
    """

    def __init__(self, env: gym.Env, space: SearchSpace, *, seed: int = 0) -> None:
        super().__init__(env)
        self.space = space
        self._rng = np.random.default_rng(seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        opts = dict(options or {})
        if "setpoints" not in opts:
            (params,) = self.space.sample(1, rng=self._rng)
            opts["setpoints"] = start_setpoints({**EXPERT_PROTOCOL, **params})
        return self.env.reset(seed=seed, options=opts)
