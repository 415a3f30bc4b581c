"""Environment for test subprocesses: helpers importable, one thread, no telemetry."""

from __future__ import annotations

import os
from pathlib import Path

HERE = str(Path(__file__).parent)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, env.get("PYTHONPATH")) if p)
    env.update(OMP_NUM_THREADS="1", MLFLOW_DISABLE_TELEMETRY="true", MPLBACKEND="Agg")
    return env
