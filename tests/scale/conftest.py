"""Ray tests share one local cluster (loopback only), started once for this package and shut down after it.

The cluster's workers import ``scale_helpers`` (bench functions) and
``campaign_helpers``: both folders go on PYTHONPATH before the cluster starts.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent
HELPERS = [str(HERE), str(HERE.parent / "campaign")]
for path in HELPERS:
    if path not in sys.path:
        sys.path.insert(0, path)

#: logical CPUs of the test cluster: three benches and a spare
CLUSTER_CPUS = 4


@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[str]:
    """The address of a local Ray cluster; the test is skipped where Ray is not installed."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install 'cryoopt[ray]'); the Ray tests are skipped")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["PYTHONPATH"] = os.pathsep.join(HELPERS + [p for p in [os.environ.get("PYTHONPATH")] if p])
    from cryoopt.scale.cluster import local_cluster

    with local_cluster(num_cpus=CLUSTER_CPUS, log_to_driver=False) as address:
        yield address
