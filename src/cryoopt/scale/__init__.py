"""Scale out: a campaign's trials on several benches of a Ray cluster, and seed sweeps anywhere.

- :func:`map_seeds`: one function over many seeds, locally, in processes or on Ray, with
  the same numbers on every backend (:mod:`cryoopt.scale.seeds`).
- :func:`connect`, :func:`local_cluster`: join a Ray cluster, or start one on this
  machine (:mod:`cryoopt.scale.cluster`).
- :class:`RayExecutorOptions`: the settings of the ``ray`` campaign executor
  (:mod:`cryoopt.scale.options`; the executor is :mod:`cryoopt.campaign.ray_executor`).
- ``latency_bench``: a simulated bench whose sections take instrument time
  (:mod:`cryoopt.scale.bench`), for measuring how campaigns scale.

Ray is optional (``pip install 'cryoopt[ray]'``); nothing here imports it until used.
"""

from __future__ import annotations

from cryoopt.scale.cluster import connect, local_cluster, ray_available
from cryoopt.scale.options import BenchSpec, RayExecutorOptions
from cryoopt.scale.seeds import BACKENDS, map_seeds

__all__ = ["BACKENDS", "BenchSpec", "RayExecutorOptions", "connect", "local_cluster", "map_seeds", "ray_available"]
