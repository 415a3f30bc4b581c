"""Executors: what runs one trial (a function, a simulator, instruments).

An executor subclasses :class:`Executor` and writes one method, :meth:`Executor.run`.
It is registered by name in :data:`executors`; the config's ``executor.type`` picks it.

The crash rule (what happens to a trial that was *running* when the process died)
is decided by the executor, never silently:

1. :meth:`Executor.recover` may re-check the trial (e.g. ask an instrument whether the
   sample finished) and return its result: the trial is completed from that result.
2. Otherwise, if the executor is ``idempotent`` (pure functions, simulators), the trial
   is run again: re-running it cannot change the world, and gives the same answer.
3. Otherwise (real instruments), the trial is marked ``abandoned`` with the reason;
   it is never re-run. An operator may inject the same parameters again on purpose.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from cryoopt.exceptions import ConfigError
from cryoopt.registry import Registry

if TYPE_CHECKING:
    from cryoopt.config import CampaignConfig

__all__ = ["Executor", "FunctionExecutor", "ManualExecutor", "TrialRequest", "executors", "make_executor", "register_executor"]


class TrialRequest(Mapping[str, Any]):
    """What an executor gets: the trial id and its params (reads like the params dict)."""

    __slots__ = ("id", "params", "source")

    def __init__(self, id: int, params: Mapping[str, Any], source: str = "") -> None:  # noqa: A002
        self.id = int(id)
        self.params = dict(params)
        self.source = source

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    def __iter__(self):  # noqa: ANN204
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def __repr__(self) -> str:
        return f"TrialRequest(id={self.id}, params={self.params!r})"


class Executor(ABC):
    """Runs one trial and returns its result.

    ``run`` returns a float (the single objective), a dict (objectives, constraint
    metrics and any extra metrics, which the journal stores), or a failure: raise,
    return NaN, ``None`` or :class:`~cryoopt.optim.Failure`. It may be called from a
    worker thread when several trials are in flight.

    Attributes:
        idempotent: re-running an interrupted trial is harmless (see the module doc).
    """

    idempotent: ClassVar[bool] = False

    @abstractmethod
    def run(self, trial: TrialRequest) -> Any:
        """Run ``trial`` (``trial.params``, ``trial.id``) and return its result."""

    def recover(self, trial: TrialRequest) -> Any | None:
        """Re-check a trial that was running when the process died; ``None`` if unknown."""
        return None

    def close(self) -> None:
        """Release resources (instrument connections) at the end of a run."""


executors: Registry[Callable[..., Executor]] = Registry("campaign executor")


def register_executor(name: str):  # noqa: ANN201 - decorator
    """Register a factory ``(config: CampaignConfig) -> Executor`` (or an Executor class taking it)."""

    def _wrap(factory: Callable[..., Executor]) -> Callable[..., Executor]:
        executors.register(name, factory)
        return factory

    return _wrap


#: built-in executors that live above the campaign layer, imported when a config names them
_LAZY_EXECUTORS = {"simulated_clem": "cryoopt.optim.outer_loop"}


def make_executor(config: CampaignConfig) -> Executor:
    """Build the executor a config names."""
    from cryoopt.exceptions import RegistryError

    module = _LAZY_EXECUTORS.get(config.executor.type)
    if module is not None and config.executor.type not in executors:
        importlib.import_module(module)  # registers itself; heavy (agents, envs), so only on use
    try:
        factory = executors.get(config.executor.type)
    except RegistryError as err:
        raise ConfigError(f"executor.type: {err}") from None
    return factory(config)


def resolve_target(target: str) -> Any:
    """Import ``"package.module:attr.path"`` and return the object."""
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"executor.target {target!r}: cannot import module {module_name!r} ({err})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"executor.target {target!r}: module {module_name!r} has no {attr!r}") from None
    return obj


@register_executor("function")
class FunctionExecutor(Executor):
    """Calls a Python function ``module:callable`` with the params dict (and ``options`` as kwargs).

    If the target is a class it is instantiated once with ``options`` and the
    instance is called with the params. Pure functions are idempotent (default).
    """

    idempotent = True

    def __init__(self, config: CampaignConfig) -> None:
        target = resolve_target(str(config.executor.target))
        options = dict(config.executor.options)
        if isinstance(target, type):
            self._fn = target(**options)
            options = {}
        else:
            self._fn = target
        if not callable(self._fn):
            raise ConfigError(f"executor.target {config.executor.target!r} is not callable")
        self._options = options
        if config.executor.idempotent is not None:
            self.idempotent = config.executor.idempotent  # type: ignore[misc]

    def run(self, trial: TrialRequest) -> Any:
        return self._fn(dict(trial.params), **self._options)


@register_executor("manual")
class ManualExecutor(Executor):
    """The operator runs each experiment by hand: ``cryoopt suggest`` / ``cryoopt tell``.

    ``Campaign.run`` refuses it; an interrupted manual trial stays with the operator.
    """

    idempotent = False

    def __init__(self, config: CampaignConfig | None = None) -> None:
        pass

    def run(self, trial: TrialRequest) -> Any:
        raise ConfigError("a manual campaign is driven by `cryoopt suggest` and `cryoopt tell`, not `run`")
