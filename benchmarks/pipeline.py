"""Time per stage and for the whole evaluation pipeline on 1024^2 and 2048^2 LM+EM pairs.

Prints a table and writes JSON to benchmarks/results/pipeline.json. Target: a
2048^2 pair in under 1 s on 2 cores. Run: ``python benchmarks/pipeline.py``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from pipeline._synth import clem_pair  # noqa: E402

from cryoopt.pipeline import EvaluationContext, Pipeline  # noqa: E402
from cryoopt.pipeline.scores import PIPELINE_VERSION  # noqa: E402

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _results import results_dir  # noqa: E402  (benchmarks/results/local unless told otherwise)


def main(repeats: int = 3) -> dict:
    rows = []
    for n in (1024, 2048):
        lm, em, _, _ = clem_pair(0, n=512, lm_scale=4.0)
        # upsample the synthetic scene to the benchmark size (content scales with it)
        f = n // 512
        em_n = np.kron(em, np.ones((f, f), em.dtype))
        lm_n = np.kron(lm, np.ones((f, f)))
        ctx = EvaluationContext(lm_pixel_size_nm=40.0 / f, em_pixel_size_nm=10.0 / f)
        pipe = Pipeline()
        pipe.run(lm_n, em_n, context=ctx)  # warm-up (imports, caches)
        runs = []
        for _ in range(repeats):
            runs.append(pipe.run(lm_n, em_n, context=ctx).timings)
        best = {k: min(r[k] for r in runs) for k in runs[0]}
        rows.append({"size": f"{n}x{n}", "lm_shape": list(lm_n.shape), "em_shape": list(em_n.shape), "seconds": best})
    stages = list(rows[0]["seconds"])
    print(f"{'stage':<12}" + "".join(f"{r['size']:>14}" for r in rows))
    for s in stages:
        print(f"{s:<12}" + "".join(f"{r['seconds'][s]:>13.3f}s" for r in rows))
    out = {
        "pipeline_version": PIPELINE_VERSION,
        "machine": platform.platform(),
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "repeats": repeats,
        "statistic": "min over repeats",
        "results": rows,
    }
    path = results_dir() / "pipeline.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
