"""Executors: what runs one trial (a function, a simulator, instruments).

An executor subclasses :class:`~cryoopt.registry.Executor` and writes one method,
:meth:`~cryoopt.registry.Executor.run`. It is registered by name in
:data:`~cryoopt.registry.executors`; the config's ``executor.type`` picks it. The
protocol itself lives in :mod:`cryoopt.registry` (below every layer that provides
executors); this module builds the campaign's executor from its config and holds the
campaign-level ones (``function``, ``manual``).

The crash rule (what happens to a trial that was *running* when the process died)
is decided by the executor, never silently:

1. :meth:`Executor.recover` may re-check the trial (e.g. ask an instrument whether the
   sample finished) and return its result: the trial is completed from that result.
2. Otherwise, if the executor is ``idempotent`` (pure functions, simulators), the trial
   is run again: re-running it cannot change the world, and gives the same answer.
3. Otherwise (real instruments), the trial is marked ``abandoned`` with the reason;
   it is never re-run. An operator may inject the same parameters again on purpose.

The same rule applies to a trial still running after ``executor.timeout_s`` (a hung
instrument), except that an idempotent executor's trial is started at most twice.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryoopt.exceptions import ConfigError
from cryoopt.registry import (
    Executor,
    Problem,
    TrialRequest,
    executors,
    option_problems,
    register_executor,
    resolve_target,
)

if TYPE_CHECKING:
    from cryoopt.config import CampaignConfig

__all__ = [
    "Executor", "FunctionExecutor", "ManualExecutor", "TrialRequest", "executor_factory", "executors", "make_executor",
    "register_executor", "resolve_target",
]


#: built-in executors of the layers below (heavy: agents, envs), imported only when a config names them
_LAZY_EXECUTORS = {
    "simulated_clem": "cryoopt.loop.executor",
    "ray": "cryoopt.campaign.ray_executor",
    "latency_bench": "cryoopt.scale.bench",
}


def executor_factory(name: str) -> Callable[..., Executor]:
    """The registered factory (or Executor class) for ``executor.type`` ``name``.

    Raises:
        ConfigError: no executor of that name (the message lists the known ones).
    """
    from cryoopt.exceptions import RegistryError

    module = _LAZY_EXECUTORS.get(name)
    if module is not None and name not in executors:
        importlib.import_module(module)  # registers itself; heavy (agents, envs), so only on use
    try:
        return executors.get(name)
    except RegistryError as err:
        known = sorted(set(executors.names()) | set(_LAZY_EXECUTORS))
        raise ConfigError(f"unknown campaign executor {name!r}; available: {', '.join(known)}") from err


def make_executor(config: CampaignConfig) -> Executor:
    """Build the executor a config names.

    Raises:
        ConfigError: unknown type, or building it failed with an error that is not one
            of cryoopt's own (those, e.g. an instrument that does not answer, pass as they are).
    """
    from cryoopt.exceptions import CryoOptError

    try:
        factory = executor_factory(config.executor.type)
    except ConfigError as err:
        raise ConfigError(f"executor.type: {err}") from None
    try:
        return factory(config)
    except CryoOptError:
        raise
    except Exception as err:  # a target or plugin that raised while being built
        raise ConfigError(f"executor: building the {config.executor.type!r} executor failed: "
                          f"{type(err).__name__}: {err}") from err


@register_executor("function")
class FunctionExecutor(Executor):
    """Calls a Python function ``module:callable`` with the params dict (and ``options`` as kwargs).

    If the target is a class it is instantiated once with ``options`` and the
    instance is called with the params. Pure functions are idempotent (default).
    """

    idempotent = True

    @classmethod
    def check_config(cls, config: CampaignConfig) -> list[Problem]:
        """The target imports and is callable, takes ``options``, and returns what the objectives need."""
        try:
            target = resolve_target(str(config.executor.target))
        except ConfigError as err:
            return [("executor.target", str(err).removeprefix(f"executor.target {config.executor.target!r}: "))]
        options = config.executor.options
        if isinstance(target, type):
            problems = option_problems(target, options, "executor.options")
            call = getattr(target, "__call__", None)  # noqa: B004 - instances are called, not the class
            if call is None or call is object.__call__:
                problems.append(("executor.target", f"{config.executor.target} is a class whose instances are not callable"))
            return problems
        if not callable(target):
            return [("executor.target", f"{config.executor.target} is not callable")]
        problems = option_problems(target, options, "executor.options", skip=1)
        try:
            returns = typing.get_type_hints(target).get("return")
        except Exception:  # noqa: BLE001 - unresolvable annotations: nothing to check
            returns = None
        needed = config.required_metrics
        if returns in (float, int) and len(needed) > 1 and not config.evaluation.metrics:
            problems.append(("objectives", f"{config.executor.target} returns one number (-> {returns.__name__}) but "
                                           f"the campaign reads {needed} from each result; return a dict"))
        return problems

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
