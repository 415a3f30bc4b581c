"""Which trials count and which one is best: feasibility under the config's outcome
constraints and the observed best, shared by the runner, the report and the CLI.

Kept apart from :mod:`cryoopt.campaign.runner` so that the report reads a campaign
from its journal without importing the runner (no import circle).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from cryoopt.campaign.journal import Journal, TrialRecord
from cryoopt.config import _OUTCOME, CampaignConfig
from cryoopt.exceptions import JournalError

__all__ = ["Outcomes", "config_from_journal"]


def config_from_journal(directory: str | Path) -> CampaignConfig:
    """The config a campaign directory's journal was started with.

    Raises:
        JournalError: the journal holds no config.
    """
    j = Journal.open(directory, readonly=True)
    try:
        data = j.meta("config")
    finally:
        j.close()
    if data is None:
        raise JournalError(f"{directory}: the journal holds no config")
    return CampaignConfig.from_dict(data, source=f"{directory} journal")


class Outcomes:
    """Feasibility and the observed best for one config's objectives and outcome constraints."""

    def __init__(self, config: CampaignConfig) -> None:
        self.config = config
        self.constraints: list[tuple[str, str, float]] = []
        for text in config.outcome_constraints:
            m = _OUTCOME.fullmatch(text)
            if m is None:  # the config validates these; a journal edited by hand may not
                raise JournalError(f"outcome constraint {text!r} must look like 'name <= number'")
            self.constraints.append((m.group(1), m.group(2), float(m.group(3))))

    def feasible(self, values: Mapping[str, float] | None) -> bool:
        """Whether a completed trial's values meet every outcome constraint."""
        if not values:
            return False
        for name, op, bound in self.constraints:
            v = values.get(name)
            if v is None or not (v <= bound if op == "<=" else v >= bound):
                return False
        return True

    def best(self, records: Sequence[TrialRecord]) -> TrialRecord | None:
        """The best feasible completed trial as observed (one objective; the balanced Pareto
        compromise for several)."""
        feas = [r for r in records if r.status == "completed" and self.feasible(r.values)]
        if not feas:
            return None
        signs = {n: (1.0 if d == "maximize" else -1.0) for n, d in self.config.objectives.items()}
        if len(signs) == 1:
            (n, s), = signs.items()
            return max(feas, key=lambda r: s * r.values[n])  # type: ignore[index]
        from cryoopt.optim.pareto import balanced_compromise, pareto_indices

        ys = [[s * r.values[n] for n, s in signs.items()] for r in feas]  # type: ignore[index]
        front = pareto_indices(ys)
        return feas[front[balanced_compromise([ys[i] for i in front])]]
