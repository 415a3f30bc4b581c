"""Where a benchmark writes: ``benchmarks/results/local/`` (untracked) unless told otherwise.

The tracked tables in ``benchmarks/results/`` change only on purpose: pass
``--out benchmarks/results`` to a script that takes it, or set
``CRYOOPT_BENCH_OUT=benchmarks/results`` (``make bench-update``).
"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRACKED = HERE / "results"


def results_dir() -> Path:
    """``$CRYOOPT_BENCH_OUT`` if set, else ``benchmarks/results/local`` (made if needed)."""
    out = Path(os.environ.get("CRYOOPT_BENCH_OUT") or TRACKED / "local")
    out.mkdir(parents=True, exist_ok=True)
    return out
