"""Connecting to a Ray cluster: join one by address, or start one on this machine.

Ray is an optional dependency (``pip install 'cryoopt[ray]'``); nothing here imports it
until a function is called.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from cryoopt.exceptions import BackendUnavailableError

__all__ = ["connect", "local_cluster", "ray_available", "require_ray"]

log = logging.getLogger(__name__)

#: set while Ray is first imported and a local cluster starts: Ray then binds that cluster to
#: the loopback address (nothing outside this machine can join it, none of its traffic leaves it)
_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def ray_available() -> bool:
    """Whether Ray can be imported here."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def require_ray() -> ModuleType:
    """The ``ray`` module, or an error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise BackendUnavailableError(
            "Ray is not installed; install the extra: pip install 'cryoopt[ray]' "
            "(or run without Ray: executor types other than ray, map_seeds backend 'local' or 'processes')"
        ) from None
    return ray


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if k not in os.environ})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def connect(address: str | None = None, *, num_cpus: int | None = None, runtime_env: dict[str, Any] | None = None,
            **init_kwargs: Any) -> bool:
    """Connect this process to a Ray cluster; True if this call started (or joined) it.

    If the process is already connected (a script or a test called ``ray.init``), that
    cluster is used as it is. Otherwise ``address`` ``None`` starts a cluster on this
    machine (loopback only, ``num_cpus`` CPUs, default all), and ``"auto"``,
    ``"host:port"`` or ``"ray://host:10001"`` join a running one (a loopback address
    such as ``127.0.0.1:6379``, a local cluster's, is joined over loopback).

    Raises:
        BackendUnavailableError: Ray is not installed.
        ConnectionError: the cluster at ``address`` cannot be reached.
    """
    loopback = address is None or _is_loopback(address)
    with _env(_LOOPBACK_ENV if loopback else {}):  # read by Ray when first imported
        ray = require_ray()
    if ray.is_initialized():
        if address is not None:
            log.debug("already connected to a Ray cluster; address %r is not used", address)
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "configure_logging": False, **init_kwargs}
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    try:
        if address is None:
            with _env(_LOOPBACK_ENV):
                ray.init(num_cpus=num_cpus, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except ConnectionError as err:
        raise ConnectionError(
            f"cannot reach the Ray cluster at {address!r} ({err}); start it with `ray start --head` "
            "on the head node, or omit the address to run on a local cluster"
        ) from None
    return True


def _is_loopback(address: str) -> bool:
    """Whether ``address`` (``host:port``, ``ray://host:port``) names this machine's loopback interface."""
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


@contextlib.contextmanager
def local_cluster(num_cpus: int | None = None, **init_kwargs: Any) -> Iterator[str]:
    """A Ray cluster on this machine (loopback only), for tests, benchmarks and demos.

    Yields its address (``host:port``), which other processes on this machine can join
    with :func:`connect`; shuts it down on exit if this call started it.

    Example:
        >>> with local_cluster(num_cpus=4) as address:
        ...     results = map_seeds(run_one, range(8), backend="ray")
    """
    started = connect(None, num_cpus=num_cpus, **init_kwargs)
    ray = require_ray()
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        if started:
            ray.shutdown()
