"""Small shared protocols at the bottom of the package: name -> object registries,
``"module:attr"`` resolution and the executor protocol.

Agents, optimizer strategies, evaluators, reward terms, transports, simulator
backends and campaign executors are all found by name. A registry refuses a
duplicate name (two plugins silently shadowing each other is a bug) and lists the
known names when asked for a missing one.

The executor protocol (:class:`Executor`, :class:`TrialRequest`, :data:`executors`)
lives here rather than in :mod:`cryoopt.campaign` so that layers below the campaign
(the closed loop in :mod:`cryoopt.loop`, agents) can provide executors without
importing the layer above them.

Example:
    >>> strategies = Registry("optimizer strategy")
    >>> @strategies.register("random")
    ... class RandomSearch: ...
    >>> strategies.get("random") is RandomSearch
    True
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from cryoopt.exceptions import ConfigError, RegistryError

__all__ = ["Executor", "Registry", "TrialRequest", "executors", "register_executor", "resolve_target"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects of one kind (classes or factories)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, replace: bool = False) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted.

        Raises:
            RegistryError: ``name`` is already taken and ``replace`` is False.
        """

        def _add(item: T) -> T:
            if not replace and name in self._items and self._items[name] is not item:
                raise RegistryError(
                    f"{self.kind} {name!r} is already registered ({self._items[name]!r}); "
                    "pick another name or pass replace=True"
                )
            self._items[name] = item
            return item

        return _add if obj is None else _add(obj)

    def get(self, name: str) -> T:
        """Return the object registered as ``name``."""
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self._items)) or '(none)'}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def resolve_target(target: str) -> Any:
    """Import ``"package.module:attr.path"`` and return the object.

    Raises:
        ConfigError: the module cannot be imported or has no such attribute.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"target {target!r} must look like 'package.module:attribute'")
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


# ---------------------------------------------------------------------------- executors
class TrialRequest(Mapping[str, Any]):
    """What an executor gets: the trial id and its params (reads like the params dict)."""

    __slots__ = ("id", "params", "source")

    def __init__(self, id: int, params: Mapping[str, Any], source: str = "") -> None:  # noqa: A002
        self.id = int(id)
        self.params = dict(params)
        self.source = source

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    def __iter__(self) -> Iterator[str]:
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

    The crash rule (what happens to a trial that was *running* when the process died)
    is decided by the executor, never silently: :meth:`recover` may return the result;
    otherwise an ``idempotent`` executor's trial is run again, any other is abandoned.
    The same rule applies during a run when ``run`` raises
    :class:`~cryoopt.exceptions.TrialInterruptedError` (the worker running the trial
    died: the trial was cut off, it did not fail).

    Attributes:
        idempotent: re-running an interrupted trial is harmless (pure functions, simulators).
    """

    idempotent: ClassVar[bool] = False

    @abstractmethod
    def run(self, trial: TrialRequest) -> Any:
        """Run ``trial`` (``trial.params``, ``trial.id``) and return its result."""

    def prepare(self, directory: Path) -> None:
        """Called once by a campaign, before any trial runs or is recovered, with its directory.

        Do here what is slow or belongs to the campaign (pre-train an agent and keep it in
        ``directory`` for the next session, connect instruments, keep section images
        there), so that no trial's duration includes it. Default: nothing.
        """

    def recover(self, trial: TrialRequest) -> Any | None:
        """Re-check a trial that was running when the process died; ``None`` if unknown."""
        return None

    def close(self) -> None:
        """Release resources (instrument connections) at the end of a run."""


#: Campaign executors by name: factories ``(config: CampaignConfig) -> Executor``.
executors: Registry[Callable[..., Executor]] = Registry("campaign executor")


def register_executor(name: str) -> Callable[[Callable[..., Executor]], Callable[..., Executor]]:
    """Register a factory ``(config: CampaignConfig) -> Executor`` (or an Executor class taking it)."""

    def _wrap(factory: Callable[..., Executor]) -> Callable[..., Executor]:
        executors.register(name, factory)
        return factory

    return _wrap
