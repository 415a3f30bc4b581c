"""Demo objectives that configs can reference until the simulated-CLEM executor lands.

``cryoopt.campaign.demo:staining_quality`` wraps
:class:`cryoopt.optim.problems.StainingLandscape` (a mixed 5-D immunostaining-quality
landscape, quality in ``[0, 1]``) and adds a prep-time estimate, so a config can use
one objective, two objectives, or an outcome constraint on prep time.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

__all__ = ["prep_time_h", "staining_quality", "zero_cost"]


@functools.lru_cache(maxsize=8)
def _landscape(noise_frac: float, seed: int) -> Any:
    from cryoopt.optim.problems import StainingLandscape

    return StainingLandscape(noise_frac=noise_frac, seed=seed)


def prep_time_h(params: Mapping[str, Any]) -> float:
    """Hands-on + incubation time of a protocol, in hours (sectioning time grows as cutting slows)."""
    sectioning_h = 0.5 + 0.3 / float(params["cutting_speed_mm_s"]) ** 0.5
    return sectioning_h + float(params["incubation_min"]) / 60.0 + 0.5


def staining_quality(params: Mapping[str, Any], *, noise_frac: float = 0.03, seed: int = 0) -> dict[str, float]:
    """Noisy staining quality (maximize) and prep time (hours) of the staining protocol ``params``."""
    problem = _landscape(float(noise_frac), int(seed))
    return {
        "quality": float(problem(dict(params))),
        "quality_true": float(problem.evaluate_true(dict(params))),
        "prep_time_h": prep_time_h(params),
    }


def zero_cost(params: Mapping[str, Any]) -> float:
    """A free deterministic objective (benchmarks and tests of the engine itself)."""
    return -sum((float(v) - 0.5) ** 2 for v in params.values() if isinstance(v, (int, float)))
