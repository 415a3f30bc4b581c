"""The closed loop: BO over sample blocks (:class:`OuterLoop`), one agent episode per block
(:class:`BlockRunner`), the block search space, the manual baseline and the campaign
executor ``simulated_clem``.

:class:`OuterLoop` takes an optional pre-block measurement of each specimen
(``context=``, a :data:`ContextSource`: block seed -> ``{name: value}``) for an optimizer
that models contexts, reruns the current recommendation every ``replicate_every`` blocks
or when the optimizer's rule says it pays (``replicate_every="auto"``), and recommends
the optimizer's posterior belief (:meth:`OuterLoop.recommend`). :class:`ScreeningContext`
is such a measurement on the simulated bench: the screened LM overview of the block's trim
ribbon.

This layer sits between :mod:`cryoopt.campaign` (above) and :mod:`cryoopt.optim` /
:mod:`cryoopt.agents` (below), so the optimizer stays a pure ask/tell library usable
without agents or envs.

Example:
    >>> from cryoopt.loop import OuterLoop
    >>> loop = OuterLoop("hrl", seed=0, batch_size=2, runner_kwargs={"pretrain_steps": 128})
    >>> history = loop.run(n_blocks=8)
    >>> loop.recommend()["params"]
"""

from __future__ import annotations

from cryoopt.loop.blocks import DEFAULT_BLOCK_SPACE, OBJECTIVES, BlockRunner, SimulatedCLEMBlock, block_space
from cryoopt.loop.executor import SimulatedCLEMExecutor
from cryoopt.loop.fidelity import QuickLook
from cryoopt.loop.manual import ManualOFAT
from cryoopt.loop.outer_loop import FAST_BO, ContextSource, OuterLoop
from cryoopt.loop.screening import ScreeningContext

__all__ = [
    "DEFAULT_BLOCK_SPACE",
    "FAST_BO",
    "OBJECTIVES",
    "BlockRunner",
    "ContextSource",
    "ManualOFAT",
    "OuterLoop",
    "QuickLook",
    "ScreeningContext",
    "SimulatedCLEMBlock",
    "SimulatedCLEMExecutor",
    "block_space",
]
