"""Campaigns: the runner, its crash-safe journal, executors, MLflow tracking, reports.

Example:
    >>> from cryoopt.campaign import Campaign
    >>> from cryoopt.config import load_config
    >>> summary = Campaign(load_config("configs/sim_quick.yaml"), "runs/sim_quick").run()
"""

from __future__ import annotations

from cryoopt.campaign.executors import (
    Executor,
    FunctionExecutor,
    ManualExecutor,
    TrialRequest,
    executors,
    make_executor,
    register_executor,
)
from cryoopt.campaign.journal import CampaignLock, Journal, TrialRecord
from cryoopt.campaign.runner import Campaign, CampaignStatus, RunSummary

__all__ = [
    "Campaign",
    "CampaignLock",
    "CampaignStatus",
    "Executor",
    "FunctionExecutor",
    "Journal",
    "ManualExecutor",
    "RunSummary",
    "TrialRequest",
    "TrialRecord",
    "executors",
    "make_executor",
    "register_executor",
]
