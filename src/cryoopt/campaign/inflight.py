"""Trials in flight and a suspended bench: the runner's moving parts between "start a trial"
and "record its result".

Each trial runs on its own daemon thread (:class:`TrialWorker`). The moment the executor
returns, the worker stores the result in the journal's ``arrivals`` table over its own
connection, so a result is durable when it arrives, not when the runner gets round to
it (which may be seconds later, while the optimizer builds the next proposal). Its
duration is measured on that thread: the executor's time, not the time a result spent
waiting. A worker past ``executor.timeout_s`` is given up: its trial follows the crash
rule, its thread is left to finish (or hang) on its own, and a late result is dropped.

:class:`PauseClock` keeps the pauses of a suspended bench (:meth:`Executor.suspended
<cryoopt.registry.Executor.suspended>`): it logs each pause and resume in the journal,
shows the reason in ``cryoopt status`` and counts the paused time, which the wall-time
budget does not include.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryoopt.campaign.journal import Arrival, Journal
from cryoopt.exceptions import TrialInterruptedError
from cryoopt.registry import Executor, TrialRequest

__all__ = ["PauseClock", "TrialWorker", "call_executor", "decode_result", "encode_result"]

log = logging.getLogger(__name__)


def call_executor(executor: Executor, req: TrialRequest) -> Any:
    """Run one trial; an exception is a failed experiment (data), not a crash."""
    try:
        return executor.run(req)
    except Exception as err:  # noqa: BLE001
        log.warning("trial %d failed: %s: %s", req.id, type(err).__name__, err)
        return err


def _is_failure(raw: Any) -> bool:
    from cryoopt.optim.trial import Failure

    return isinstance(raw, Failure)


def encode_result(raw: Any) -> tuple[str, Any]:
    """An executor's result as ``(kind, JSON payload)`` for the ``arrivals`` table."""
    if isinstance(raw, BaseException):
        return "error", f"{type(raw).__name__}: {raw}"
    if _is_failure(raw):
        return "failure", {"reason": raw.reason, "measured": dict(getattr(raw, "measured", {}) or {})}
    if hasattr(raw, "to_dict") and not isinstance(raw, Mapping):
        try:
            raw = raw.to_dict()
        except Exception:  # noqa: BLE001, S110 - stored as it is
            pass
    return "value", raw


def decode_result(arrival: Arrival) -> Any:
    """The result :func:`encode_result` stored, as the runner evaluates it."""
    from cryoopt.optim.trial import Failure

    if arrival.kind == "value":
        return arrival.payload
    if arrival.kind == "failure":
        return Failure(str((arrival.payload or {}).get("reason", "failed")))
    return Failure(str(arrival.payload))


class TrialWorker:
    """One trial running on its own thread.

    Args:
        executor: runs the trial.
        request: the trial.
        attempt: the trial's attempt number (a re-run after a crash or timeout is the next one).
        journal_path: where to store the result the moment it arrives (``None``: not stored;
            with one trial in flight the runner, idle until then, records it at once).
        durable: fsync that write (executors with effects in the world).
        timeout_s: give the trial up after this long (``None``: never).
        on_done: called (from the worker's thread) once the result is stored.
    """

    def __init__(self, executor: Executor, request: TrialRequest, *, attempt: int, journal_path: Path | None,
                 durable: bool, timeout_s: float | None, on_done: Callable[[], None]) -> None:
        self.executor, self.request, self.attempt = executor, request, int(attempt)
        self.trial_id = request.id
        self.journal_path, self.durable = journal_path, durable
        self.started = time.monotonic()
        self.deadline = None if timeout_s is None else self.started + float(timeout_s)
        self.outcome: tuple[Any, float] | None = None
        self._on_done = on_done
        self._lock = threading.Lock()
        self._given_up = False
        self.thread = threading.Thread(target=self._work, name=f"cryoopt-trial-{self.trial_id}", daemon=True)

    def start(self) -> TrialWorker:
        self.thread.start()
        return self

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def overdue(self, now: float | None = None) -> bool:
        """Past its deadline without a result."""
        return self.deadline is not None and not self.done and (now or time.monotonic()) >= self.deadline

    def give_up(self) -> bool:
        """Stop waiting for this trial; False if its result arrived first (then record it instead)."""
        with self._lock:
            if self.outcome is not None:
                return False
            self._given_up = True
            return True

    def _work(self) -> None:
        t0 = time.monotonic()
        raw = call_executor(self.executor, self.request)
        duration = time.monotonic() - t0
        with self._lock:
            if self._given_up:
                log.warning("trial %d returned after %.1f s, after it was given up (timeout); result ignored",
                            self.trial_id, duration)
                return
            self._store(raw, duration)
            self.outcome = (raw, duration)
        self._on_done()

    def _store(self, raw: Any, duration: float) -> None:
        if self.journal_path is None or isinstance(raw, TrialInterruptedError):
            return  # an interrupted trial is no result: on resume the crash rule applies to it
        try:
            j = Journal(self.journal_path)
        except Exception as err:  # noqa: BLE001 - the runner still records it from memory
            log.warning("trial %d: could not store its result on arrival: %s", self.trial_id, err)
            return
        try:
            j.set_durable(self.durable)
            kind, payload = encode_result(raw)
            j.add_arrival(self.trial_id, self.attempt, kind, payload, duration)
        except Exception as err:  # noqa: BLE001
            log.warning("trial %d: could not store its result on arrival: %s", self.trial_id, err)
        finally:
            j.close()


class PauseClock:
    """Pauses of a suspended bench: when, why, and for how long in total.

    Args:
        journal: where pause/resume events and the current reason (meta ``paused``) go.
        poll_s: how often to ask a suspended executor again.
        say: prints a progress line.
    """

    def __init__(self, journal: Journal, poll_s: float, say: Callable[[str], None]) -> None:
        self.journal, self.poll_s, self.say = journal, float(poll_s), say
        self.reason: str | None = None
        self._since = 0.0  # monotonic start of the current pause
        self._total = 0.0
        self._next_poll = 0.0

    @property
    def paused(self) -> bool:
        return self.reason is not None

    def paused_s(self) -> float:
        """Paused time of this session so far (the current pause included)."""
        return self._total + (time.monotonic() - self._since if self.paused else 0.0)

    def check(self, executor: Executor) -> str | None:
        """Ask ``executor`` whether it may start a trial (at most every ``poll_s`` while paused);
        returns the reason it may not, or ``None``; logs each change."""
        now = time.monotonic()
        if self.paused and now < self._next_poll:
            return self.reason
        self._next_poll = now + self.poll_s
        reason = _suspension(executor)
        if reason is not None and reason != self.reason:
            if not self.paused:
                self._since = now
            self.reason = reason
            self.journal.set_meta(paused=reason, paused_since=time.time())
            self.journal.event("pause", f"paused: {reason}")
            self.say(f"paused: {reason} (checking again every {self.poll_s:g} s)")
        elif reason is None and self.paused:
            self._resume(f"resumed after {now - self._since:.1f} s: the bench may start trials again")
        return self.reason

    def seconds_to_next_poll(self) -> float:
        return max(self._next_poll - time.monotonic(), 0.0)

    def end(self) -> None:
        """The session ends; a pause still on is closed in the journal."""
        if self.paused:
            self._resume(f"session ended while paused ({time.monotonic() - self._since:.1f} s)")

    def _resume(self, message: str) -> None:
        self._total += time.monotonic() - self._since
        self.reason = None
        self.journal.set_meta(paused=None, paused_since=None)
        self.journal.event("resume", message)
        self.say(message)


def _suspension(executor: Executor) -> str | None:
    """``executor.suspended()``, as a reason or ``None``; a check that fails is a suspension
    (the bench's state is unknown, so no trial may start)."""
    try:
        reason = executor.suspended()
    except Exception as err:  # noqa: BLE001
        return f"cannot tell whether the bench may start a trial ({type(err).__name__}: {err})"
    if reason is None or reason is False:
        return None
    return str(reason) if str(reason).strip() else "suspended"
