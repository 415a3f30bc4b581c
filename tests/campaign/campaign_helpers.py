"""Objectives and configs for campaign tests (importable as ``campaign_helpers`` by subprocesses too)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from cryoopt.config import CampaignConfig

CALLS: list[int] = []
_lock = threading.Lock()
_active = 0
MAX_ACTIVE = [0]


def quadratic(params: dict[str, Any]) -> dict[str, float]:
    """Deterministic, free: optimum at x = 0.3, y = 4; also reports a prep time."""
    return {"objective": -((params["x"] - 0.3) ** 2) - 0.01 * (params["y"] - 4) ** 2, "prep_time_h": 1.0 + params["x"]}


def flaky(params: dict[str, Any]) -> float:
    """Fails (raises) for x > 0.8 and returns NaN for x < 0.1."""
    if params["x"] > 0.8:
        raise RuntimeError("knife broke")
    if params["x"] < 0.1:
        return float("nan")
    return -((params["x"] - 0.3) ** 2)


def slow(params: dict[str, Any]) -> float:
    """Takes 50 ms and records how many calls overlap (for asynchronous execution)."""
    global _active
    with _lock:
        _active += 1
        MAX_ACTIVE[0] = max(MAX_ACTIVE[0], _active)
    time.sleep(0.05)
    with _lock:
        _active -= 1
    return -((params["x"] - 0.3) ** 2)


def make_config(**overrides: Any) -> CampaignConfig:
    data: dict[str, Any] = {
        "name": "t",
        "seed": 0,
        "space": {"parameters": {"x": {"type": "float", "low": 0, "high": 1},
                                 "y": {"type": "int", "low": 0, "high": 10}}},
        "objectives": {"objective": "maximize"},
        "optimizer": {"strategy": "sobol"},
        "budget": {"experiments": 8},
        "executor": {"type": "function", "target": "campaign_helpers:quadratic"},
        "tracking": {"enabled": False},
        "report": {"on_finish": False},
    }
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    return CampaignConfig.from_dict(data)




class LoggedObjective:
    """Free objective that appends every call's params to a log file (to count executions)."""

    def __init__(self, log: str) -> None:
        self.log = log

    def __call__(self, params: dict[str, Any]) -> float:
        import json
        import os

        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(params, sort_keys=True) + "\n").encode())
        finally:
            os.close(fd)
        return value_of(params)


def value_of(params: dict[str, Any]) -> float:
    return -((params["x"] - 0.3) ** 2) - 0.01 * (params["y"] - 4) ** 2


def sleepy(params: dict[str, Any]) -> float:
    """0.2 s per trial: slow enough to interrupt mid-campaign."""
    time.sleep(0.2)
    return value_of(params)


class Unplugged:
    """An executor target that cannot be built (an instrument that is not connected)."""

    def __init__(self) -> None:
        raise ConnectionRefusedError("no answer on /dev/ttyUSB0")

    def __call__(self, params: dict[str, Any]) -> float:  # pragma: no cover - never built
        return 0.0
