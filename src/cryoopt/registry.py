"""Small shared protocols at the bottom of the package: name -> object registries,
``"module:attr"`` resolution and the executor protocol.

Agents, optimizer strategies, evaluators, reward terms, transports, simulator
backends and campaign executors are all found by name. A registry refuses a
duplicate name (two plugins silently shadowing each other is a bug) and lists the
known names when asked for a missing one.

The executor protocol (:class:`Executor`, :class:`TrialRequest`, :data:`executors`)
lives here rather than in :mod:`cryoopt.campaign` so that layers below the campaign
(the closed loop in :mod:`cryoopt.loop`, agents) can provide executors without
importing the layer above them. :func:`option_problems` checks keyword options against
the callable they are meant for, for the config checks of executors and strategies.

Example:
    >>> strategies = Registry("optimizer strategy")
    >>> @strategies.register("random")
    ... class RandomSearch: ...
    >>> strategies.get("random") is RandomSearch
    True
"""

from __future__ import annotations

import importlib
import inspect
import math
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from cryoopt.exceptions import ConfigError, RegistryError

__all__ = [
    "Executor", "Problem", "Registry", "TrialRequest", "executors", "option_problems", "register_executor", "resolve_target",
]

#: what is wrong with a config: (dotted field path, message), e.g. ("executor.options.agent", "unknown agent 'x'")
Problem = tuple[str, str]

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

    The crash rule (what happens to a trial that was *running* when the process died,
    or that ran past ``executor.timeout_s``) is decided by the executor, never silently:
    :meth:`recover` may return the result; otherwise an ``idempotent`` executor's trial
    is run again, any other is abandoned. The same rule applies during a run when
    ``run`` raises :class:`~cryoopt.exceptions.TrialInterruptedError` (the worker running
    the trial died: the trial was cut off, it did not fail).

    Optional hooks: :meth:`prepare` (one-time set-up in the campaign directory before
    the first trial, e.g. pre-training an agent or loading the one saved there),
    :meth:`check_config` (what ``cryoopt validate`` can check without building the
    executor), :meth:`suspended` (the bench may not start a trial now: the campaign
    pauses, and resumes by itself once it may), :attr:`result_keys`.

    Attributes:
        idempotent: re-running an interrupted trial is harmless (pure functions, simulators).
        result_keys: the keys every successful result carries, when known before running
            (lets ``cryoopt validate`` check that each objective can be read); ``None``:
            known only once results arrive.
    """

    idempotent: ClassVar[bool] = False
    result_keys: ClassVar[Collection[str] | None] = None

    @classmethod
    def check_config(cls, config: Any) -> list[Problem]:
        """What is wrong with ``config`` (a :class:`~cryoopt.config.CampaignConfig`) for this
        executor, as ``(field path, message)`` pairs, found without building it (no
        instrument is touched). Default: nothing to check."""
        return []

    def suspended(self) -> str | None:
        """Why the bench must not start a trial now (``"door open"``, ``"temperature drifting"``,
        ``"reagent out"``), or ``None`` when it may.

        The runner asks before starting each trial and, while suspended, every
        ``executor.suspend_poll_s`` seconds; it logs the pause and the resume in the
        journal and resumes by itself. Trials already running are not interrupted by it.
        Keep it quick (a readback, not a measurement); it may be called from the
        campaign's thread while trials run on others. Default: never suspended.
        """
        return None

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


def option_problems(target: Callable[..., Any], options: Mapping[str, Any], path: str, *,
                    reserved: Mapping[str, str] | None = None, skip: int = 0) -> list[Problem]:
    """Check keyword ``options`` against ``target``'s signature without calling it.

    Refused: a keyword ``target`` does not take (unless it takes ``**kwargs``), one in
    ``reserved`` (name -> why it is set elsewhere), a value of the wrong type for the
    parameter's annotation (read strictly: ``"3"`` is not an int, ``true`` not a number)
    and a non-finite number. ``skip`` leading positional parameters are filled by the
    caller (the params dict of a function executor).
    """
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    params = list(sig.parameters.values())[skip:]
    named = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    try:
        hints = typing.get_type_hints(target.__init__ if isinstance(target, type) else target)
    except Exception:  # noqa: BLE001 - unresolvable annotations: the type check is skipped
        hints = {}
    out: list[Problem] = []
    for key, value in options.items():
        where = f"{path}.{key}"
        if reserved and key in reserved:
            out.append((where, reserved[key]))
        elif key not in named and not takes_any:
            allowed = ", ".join(sorted(k for k in named if not (reserved and k in reserved))) or "no options"
            out.append((where, f"unknown option for {getattr(target, '__qualname__', target)}; it takes: {allowed}"))
        elif isinstance(value, float) and not math.isfinite(value):
            out.append((where, f"must be a finite number, got {value}"))
        elif key in hints:
            from pydantic import ConfigDict, TypeAdapter, ValidationError

            try:
                TypeAdapter(hints[key], config=ConfigDict(strict=True)).validate_python(value)
            except ValidationError as err:
                out.append((where, f"{err.errors()[0]['msg']} (expects {_type_name(hints[key])}), got {value!r}"))
            except Exception:  # noqa: BLE001, S110 - an annotation pydantic cannot check
                pass
    missing = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               and p.default is p.empty and p.name not in options and not (reserved and p.name in reserved)]
    if missing:
        out.append((path, f"{getattr(target, '__qualname__', target)} needs option(s) {missing}"))
    return out


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


#: Campaign executors by name: factories ``(config: CampaignConfig) -> Executor``.
executors: Registry[Callable[..., Executor]] = Registry("campaign executor")


def register_executor(name: str) -> Callable[[Callable[..., Executor]], Callable[..., Executor]]:
    """Register a factory ``(config: CampaignConfig) -> Executor`` (or an Executor class taking it)."""

    def _wrap(factory: Callable[..., Executor]) -> Callable[..., Executor]:
        executors.register(name, factory)
        return factory

    return _wrap
