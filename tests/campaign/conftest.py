"""Campaign tests: make ``campaign_helpers`` importable (subprocesses get it via ``child_env``)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def child_env() -> dict[str, str]:
    """Environment for subprocesses: helpers importable, one thread, no telemetry."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, env.get("PYTHONPATH")) if p)
    env.update(OMP_NUM_THREADS="1", MLFLOW_DISABLE_TELEMETRY="true", MPLBACKEND="Agg")
    return env

# MLflow's pristine store is migrated once per test session into a private cache, not the user's
os.environ.setdefault("CRYOOPT_CACHE_DIR", tempfile.mkdtemp(prefix="cryoopt-cache-"))
