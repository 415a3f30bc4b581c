"""A small name -> object registry for extension points.

Agents, optimizer strategies, evaluators, reward terms, transports and simulator
backends are all found by name. A registry refuses a duplicate name (two plugins
silently shadowing each other is a bug) and lists the known names when asked for a
missing one.

Example:
    >>> strategies = Registry("optimizer strategy")
    >>> @strategies.register("random")
    ... class RandomSearch: ...
    >>> strategies.get("random") is RandomSearch
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from cryoopt.exceptions import RegistryError

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
