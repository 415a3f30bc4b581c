"""Deprecated location of the closed loop: use :mod:`cryoopt.loop`.

``OuterLoop``, ``BlockRunner``, ``block_space`` and the rest moved to
:mod:`cryoopt.loop` so that :mod:`cryoopt.optim` is a pure ask/tell optimizer. This
module re-exports them with a :class:`DeprecationWarning` for one release.
"""

from __future__ import annotations

import warnings

warnings.warn(
    "cryoopt.optim.outer_loop is deprecated and will be removed in the next release; "
    "import OuterLoop, BlockRunner, block_space, ManualOFAT, SimulatedCLEMBlock from cryoopt.loop",
    DeprecationWarning,
    stacklevel=2,
)

from cryoopt.loop import (  # noqa: E402
    DEFAULT_BLOCK_SPACE,
    FAST_BO,
    OBJECTIVES,
    BlockRunner,
    ManualOFAT,
    OuterLoop,
    SimulatedCLEMBlock,
    SimulatedCLEMExecutor,
    block_space,
)

__all__ = [
    "DEFAULT_BLOCK_SPACE",
    "FAST_BO",
    "OBJECTIVES",
    "BlockRunner",
    "ManualOFAT",
    "OuterLoop",
    "SimulatedCLEMBlock",
    "SimulatedCLEMExecutor",
    "block_space",
]
