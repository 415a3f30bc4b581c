"""Progress lines with an ETA for long steps (agent pre-training, GP proposals, reports, training).

A step that ends within ``quiet_s`` (2 s) prints nothing; a longer one prints a line
after 2 s, then one every ``every_s`` (10 s), and a closing line with its duration.
Lines go to the process-wide *sink*: by default standard error when it is a terminal
(silence in scripts and tests), and whatever :func:`report_to` installs otherwise
(``cryoopt run`` sends them to its output, ``-q`` silences them). Lines, not a
redrawn bar, so that a log file or ``make run | tee`` reads as well as a terminal.

Example:
    >>> with report_to(print):
    ...     with Progress("pre-training", total=4096, unit="steps") as p:
    ...         for _ in range(4096):
    ...             p.update()
    >>> with report_to(print), Heartbeat("proposing 2 trials"):
    ...     opt.ask(2)                     # one opaque call: ETA from the last one
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Heartbeat", "Progress", "current_sink", "format_duration", "report_to"]

Sink = Callable[[str], None]

_UNSET: Any = object()
_sink: Sink | None | Any = _UNSET
_lock = threading.Lock()
#: how long the last opaque step of each label took (a :class:`Heartbeat`'s ETA)
_last_duration: dict[str, float] = {}


def _stderr_if_tty(line: str) -> None:
    if sys.stderr.isatty():
        print(line, file=sys.stderr, flush=True)


def current_sink() -> Sink | None:
    """Where progress lines go now (``None``: nowhere)."""
    return _stderr_if_tty if _sink is _UNSET else _sink


@contextlib.contextmanager
def report_to(sink: Sink | None) -> Iterator[None]:
    """Send progress lines to ``sink`` (``None``: silence) inside the ``with`` block, from any thread."""
    global _sink
    with _lock:
        old, _sink = _sink, sink
    try:
        yield
    finally:
        with _lock:
            _sink = old


def format_duration(seconds: float) -> str:
    """``4.2 s``, ``3 min 05 s``, ``1 h 02 min``."""
    s = max(0.0, float(seconds))
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


class Progress:
    """Progress of a step with a known amount of work (``total`` units), with an ETA.

    Args:
        label: what is running, e.g. ``"pre-training hrl: staining controller"``.
        total: units of work (``None``: unknown, no ETA).
        unit: what a unit is (``"steps"``, ``"sections"``, ``"plots"``).
        quiet_s: print nothing if the step ends sooner.
        every_s: seconds between lines.
        sink: where lines go (default: :func:`current_sink` at creation).
    """

    def __init__(self, label: str, total: float | None = None, unit: str = "steps", *, quiet_s: float = 2.0,
                 every_s: float = 10.0, sink: Sink | None | Any = _UNSET) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.quiet_s, self.every_s = float(quiet_s), float(every_s)
        self.sink = current_sink() if sink is _UNSET else sink
        self.done = 0.0
        self.t0 = time.monotonic()
        self._next = self.t0 + self.quiet_s
        self._printed = False
        self._first: tuple[float, float] | None = None  # (time, done) at the first update: the rate leaves set-up out

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(failed=exc_type is not None)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def eta(self) -> float | None:
        """Seconds left at the rate since the first update (``None`` without a total or a rate yet)."""
        if not self.total or self._first is None or self.done <= self._first[1]:
            return None
        t1, d1 = self._first
        return (time.monotonic() - t1) / (self.done - d1) * max(self.total - self.done, 0.0)

    def update(self, n: float = 1.0) -> None:
        """``n`` more units done."""
        self.set(self.done + n)

    def set(self, done: float) -> None:
        """``done`` units done in all."""
        self.done = float(done)
        now = time.monotonic()
        if self._first is None:
            self._first = (now, self.done)
        if now >= self._next:
            self._next = now + self.every_s
            self._emit(self.line())

    def line(self) -> str:
        """The current progress line."""
        done = f"{self.done:.0f}" + (f"/{self.total:.0f}" if self.total else "")
        pct = f" ({100.0 * self.done / self.total:.0f} %)" if self.total else ""
        eta = self.eta()
        tail = f", ETA {format_duration(eta)}" if eta is not None else ""
        return f"{self.label}: {done} {self.unit}{pct}, {format_duration(self.elapsed)}{tail}"

    def close(self, *, failed: bool = False) -> None:
        """Print the closing line (only if the step took longer than ``quiet_s``)."""
        if self.elapsed >= self.quiet_s or self._printed:
            what = "stopped" if failed else "done"
            amount = f"{self.done:.0f} {self.unit} " if self.done else ""
            self._emit(f"{self.label}: {what}, {amount}in {format_duration(self.elapsed)}")
        self._next = float("inf")

    def _emit(self, line: str) -> None:
        self._printed = True
        if self.sink is not None:
            self.sink(line)


class Heartbeat:
    """Progress of one opaque call (a GP fit, an acquisition optimization): a line after
    ``quiet_s`` and every ``every_s`` while it runs, with an ETA from the last call of the
    same ``label`` (kept for the process), and a closing line if it took long."""

    def __init__(self, label: str, *, quiet_s: float = 2.0, every_s: float = 10.0, sink: Sink | None | Any = _UNSET,
                 key: str | None = None) -> None:
        self.label, self.key = label, key or label
        self.quiet_s, self.every_s = float(quiet_s), float(every_s)
        self.sink = current_sink() if sink is _UNSET else sink
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0 = 0.0

    def __enter__(self) -> Heartbeat:
        self.t0 = time.monotonic()
        if self.sink is not None:
            self._thread = threading.Thread(target=self._beat, name="cryoopt-heartbeat", daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> None:
        wait = self.quiet_s
        while not self._stop.wait(wait):
            elapsed = time.monotonic() - self.t0
            last = _last_duration.get(self.key)
            if not last:
                eta = ""
            elif last > elapsed:
                eta = f", ETA {format_duration(last - elapsed)} (the last one took {format_duration(last)})"
            else:
                eta = f", longer than the last one ({format_duration(last)})"
            self._emit(f"{self.label}: running, {format_duration(elapsed)}{eta}")
            wait = self.every_s

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        elapsed = time.monotonic() - self.t0
        if exc_type is None and elapsed >= 0.5:  # an instant call (a Sobol point) says nothing of a GP's
            _last_duration[self.key] = elapsed
        if elapsed >= self.quiet_s:
            self._emit(f"{self.label}: {'stopped' if exc_type else 'done'} in {format_duration(elapsed)}")

    def _emit(self, line: str) -> None:
        if self.sink is not None:
            self.sink(line)
