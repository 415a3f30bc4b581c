"""Campaign executor ``latency_bench``: a simulated bench whose sections take wall time.

For measuring how a campaign scales with benches (``benchmarks/scale.py``), and for
demos of several benches on one machine. A real section takes minutes of instrument
time (cutting, staining, imaging) and almost no computation on the campaign's side; this
bench keeps that shape at a smaller time scale: each trial is one sample block of
``sections`` serial sections, each of which takes ``section_s`` seconds of (sleeping)
instrument time, varying from section to section, and the block's quality is a noisy
value of a benchmark problem of :mod:`cryoopt.optim.problems` at the trial's params.

The noise and the section times come from ``(config.seed, trial.id)`` alone, so a trial
gives the same result on any bench, at any time, however often it runs: the bench is
idempotent, and asynchronous runs can be compared trial for trial.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from cryoopt.exceptions import ConfigError
from cryoopt.registry import Executor, TrialRequest, executors

if TYPE_CHECKING:
    from cryoopt.config import CampaignConfig

__all__ = ["LatencyBench"]


class LatencyBench(Executor):
    """Campaign executor ``latency_bench`` (see the module doc).

    ``executor.options``:
        problem: a name in :data:`cryoopt.optim.problems.PROBLEMS` (default ``hartmann6``);
            the campaign's space must be that problem's space.
        sections: serial sections per block (default 20).
        section_s: mean instrument time per section, in seconds (default 0.03: a
            2-minute section at 1/4000 scale).
        jitter: log-normal spread of a section's time (default 0.3: sections differ).
        noise_frac: observation noise, as a fraction of the problem's value range (default 0.05).

    A trial returns ``quality`` (noisy), ``true_quality`` (noise-free, for benchmarks),
    ``sections`` and ``instrument_s`` (the time it took).
    """

    idempotent = True

    def __init__(self, config: CampaignConfig) -> None:
        from cryoopt.optim.problems import PROBLEMS

        opts = dict(config.executor.options)
        known = {"problem", "sections", "section_s", "jitter", "noise_frac"}
        unknown = sorted(set(opts) - known)
        if unknown:
            raise ConfigError(f"executor.options {unknown}: unknown to latency_bench; it takes {sorted(known)}")
        name = str(opts.get("problem", "hartmann6"))
        if name not in PROBLEMS:
            raise ConfigError(f"executor.options.problem {name!r}: unknown; choose one of {sorted(PROBLEMS)}")
        self.sections = int(opts.get("sections", 20))
        self.section_s = float(opts.get("section_s", 0.03))
        self.jitter = float(opts.get("jitter", 0.3))
        noise_frac = float(opts.get("noise_frac", 0.05))
        for key, value, low in (("sections", self.sections, 1), ("section_s", self.section_s, 0.0),
                                ("jitter", self.jitter, 0.0), ("noise_frac", noise_frac, 0.0)):
            if value < low:
                raise ConfigError(f"executor.options.{key} = {value} must be >= {low}")
        self.problem = PROBLEMS[name](noise_frac=noise_frac, seed=int(config.seed))
        names = set(config.space.parameters)
        if names != set(self.problem.space.names):
            raise ConfigError(f"the space's parameters {sorted(names)} are not those of problem {name!r}: "
                              f"{sorted(self.problem.space.names)}")
        self.seed = int(config.seed)

    def block_times(self, trial_id: int) -> np.ndarray:
        """Seconds each section of trial ``trial_id``'s block takes (fixed by the seed and the id)."""
        rng = np.random.default_rng([self.seed, trial_id, 1])
        return self.section_s * rng.lognormal(-0.5 * self.jitter**2, self.jitter, self.sections)

    def outcome(self, trial_id: int, params: dict[str, Any]) -> dict[str, Any]:
        """What trial ``trial_id`` yields, without taking its time (for simulations on a virtual clock)."""
        true = float(self.problem.evaluate_true(params))
        noise = float(np.random.default_rng([self.seed, trial_id, 0]).normal(0.0, self.problem.noise_std))
        return {"quality": true + noise, "true_quality": true, "sections": self.sections,
                "instrument_s": float(self.block_times(trial_id).sum())}

    def run(self, trial: TrialRequest) -> dict[str, Any]:
        for seconds in self.block_times(trial.id):  # section by section, as an instrument (an interrupt lands mid-block)
            time.sleep(float(seconds))
        return self.outcome(trial.id, trial.params)


if "latency_bench" not in executors:
    executors.register("latency_bench", LatencyBench)
