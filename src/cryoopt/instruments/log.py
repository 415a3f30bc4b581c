"""Command/reply log: every byte a driver writes or reads, with a timestamp.

Drivers append an :class:`Exchange` per write and per read to their
:class:`ExchangeLog`; the campaign journal subscribes with
``driver.exchange_log.subscribe(callback)`` or copies ``driver.exchange_log.records``.
Binary payloads (images) are recorded with their length and the first
``ExchangeLog.binary_preview`` bytes, so a long campaign does not keep every image in
memory twice.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = ["Exchange", "ExchangeLog"]


@dataclass(frozen=True)
class Exchange:
    """One write or read. ``data`` excludes terminations; ``nbytes`` is the full length."""

    timestamp: float
    device: str
    direction: Literal["write", "read", "event"]
    data: bytes
    nbytes: int

    def to_dict(self) -> dict[str, object]:
        return {
            "timestamp": self.timestamp,
            "device": self.device,
            "direction": self.direction,
            "data": self.data.decode("latin-1"),
            "nbytes": self.nbytes,
        }


class ExchangeLog:
    """A bounded list of :class:`Exchange` records plus callbacks called on each one."""

    binary_preview = 64

    def __init__(self, device: str, *, maxlen: int | None = 100_000, enabled: bool = True) -> None:
        self.device = device
        self.enabled = enabled
        self.records: deque[Exchange] = deque(maxlen=maxlen)
        self._callbacks: list[Callable[[Exchange], None]] = []

    def subscribe(self, callback: Callable[[Exchange], None]) -> Callable[[], None]:
        """Call ``callback(exchange)`` on every record; returns a function that unsubscribes."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback)

    def record(self, direction: Literal["write", "read", "event"], data: bytes | str, *, binary: bool = False) -> None:
        if not self.enabled and not self._callbacks:
            return
        raw = data.encode("latin-1", "replace") if isinstance(data, str) else bytes(data)
        kept = raw[: self.binary_preview] if binary else raw
        ex = Exchange(time.time(), self.device, direction, kept, len(raw))
        if self.enabled:
            self.records.append(ex)
        for cb in list(self._callbacks):
            cb(ex)

    def writes(self) -> list[str]:
        """The commands written, decoded, oldest first (handy in tests)."""
        return [r.data.decode("latin-1") for r in self.records if r.direction == "write"]

    def clear(self) -> None:
        self.records.clear()

    def __iter__(self) -> Iterator[Exchange]:
        return iter(list(self.records))

    def __len__(self) -> int:
        return len(self.records)
