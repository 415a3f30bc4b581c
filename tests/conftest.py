"""Test-wide settings: headless plots, few threads (CI has 2 cores), no telemetry, and a
shorter burn-in for BoTorch's polytope sampler."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

#: Hit-and-run steps before the first kept sample of a linearly constrained space (BoTorch's
#: default: 10,000, a Python loop of ~2.5 s per ask, most of a constrained test's time).
TEST_POLYTOPE_BURN_IN = 1000


@pytest.fixture(autouse=True)
def _short_polytope_burn_in() -> None:
    """Acquisition optimization in the tests is shortened (few restarts and raw samples, as
    BoTorch's own tests do); so is the burn-in of the sampler that draws its starting points in
    a space with linear constraints. The tests' spaces have at most a dozen dimensions, where
    1,000 steps mix; every drawn point is still inside the polytope, and seeded."""
    initializers = sys.modules.get("botorch.optim.initializers")
    original = getattr(initializers, "sample_q_batches_from_polytope", None)  # None: not loaded, or renamed
    if original is None or getattr(original, "_short_burn_in", False):
        return

    def sample_q_batches_from_polytope(*args, n_burnin: int, **kwargs):
        return original(*args, n_burnin=min(n_burnin, TEST_POLYTOPE_BURN_IN), **kwargs)

    sample_q_batches_from_polytope._short_burn_in = True  # type: ignore[attr-defined]
    initializers.sample_q_batches_from_polytope = sample_q_batches_from_polytope
