"""Bench functions for the Ray tests (imported by the cluster's workers, so kept in their own module)."""

from __future__ import annotations

import json
import os
import time
from typing import Any


def value_of(params: dict[str, Any]) -> float:
    return -((params["x"] - 0.3) ** 2) - 0.01 * (params["y"] - 4) ** 2


class Logged:
    """A bench that appends every trial's params to a log when it *starts* (to count executions on the
    instrument), takes ``sleep_s`` of instrument time, and reports the bench process and its time window."""

    def __init__(self, log: str, sleep_s: float = 0.2) -> None:
        self.log = log
        self.sleep_s = sleep_s

    def __call__(self, params: dict[str, Any]) -> dict[str, float]:
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(params, sort_keys=True) + "\n").encode())
        finally:
            os.close(fd)
        t0 = time.time()
        time.sleep(self.sleep_s)
        return {"objective": value_of(params), "pid": float(os.getpid()), "t0": t0, "t1": time.time()}


def starts(log: str) -> list[str]:
    """The params (as JSON lines) of every trial start in a :class:`Logged` log."""
    try:
        with open(log) as fh:
            return [line for line in fh.read().splitlines() if line]
    except FileNotFoundError:
        return []
