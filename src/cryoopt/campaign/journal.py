"""The campaign journal: an embedded SQLite database (WAL mode), one per campaign directory.

It holds the config (and its hash), every trial (params, status, results, timings),
the optimizer state without its trials (RNG, Sobol position, settings), operator
feedback, queued operator requests, results that arrived from the executor and wait to
be evaluated (``arrivals``), and an event log (starts, stops, crash recoveries, pauses
and resumes of a suspended bench, ...). The trials table is the source of truth: the
optimizer is rebuilt from it on every start.

Every state change is one transaction committed before the campaign takes its next
action (fsynced, ``synchronous=FULL``, when the executor has effects in the world;
WAL ``NORMAL``, safe against a killed process, for idempotent executors), so a process killed at any moment leaves a journal
that describes exactly what happened up to the last commit:

* ``proposed``: asked from the optimizer, never started -> run on resume;
* ``running``: handed to the executor -> if its result had arrived (an ``arrivals``
  row, written by the worker the moment the executor returned) it is recorded from
  that; otherwise the executor's crash rule decides (re-check, re-run if idempotent,
  else ``abandoned``; see :mod:`.executors`);
* ``completed`` / ``failed`` / ``abandoned``: final.

Other processes (``cryoopt status``, ``feedback``, ``inject``) may read and append
while a campaign runs; writes that change trials need the campaign lock
(:class:`CampaignLock`), which the kernel releases when its holder dies.

Schema versions: 1 (no ``arrivals`` table) is read as is and upgraded in place the
first time a campaign opens it for writing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryoopt.exceptions import JournalError

__all__ = ["JOURNAL_FILE", "STATUSES", "Arrival", "CampaignLock", "FeedbackRecord", "Journal", "TrialRecord"]

JOURNAL_FILE = "journal.sqlite"
LOCK_FILE = "campaign.lock"
SCHEMA_VERSION = 2
#: versions this code reads (older ones are upgraded when opened for writing)
READABLE_VERSIONS = (1, 2)
#: trial ids are SQLite integers
MAX_TRIAL_ID = 2**63 - 1
STATUSES = ("proposed", "running", "completed", "failed", "abandoned")
FINAL = ("completed", "failed", "abandoned")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    params_json TEXT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN {STATUSES!r}),
    values_json TEXT,
    result_json TEXT,
    error TEXT,
    proposed_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    duration_s REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    tracked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS optimizer (
    id INTEGER PRIMARY KEY CHECK (id = 1), state_json TEXT NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trial_id INTEGER NOT NULL REFERENCES trials(id),
    rating INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    note TEXT,
    author TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    created_at REAL NOT NULL,
    consumed_at REAL,
    trial_id INTEGER
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS arrivals (
    trial_id INTEGER PRIMARY KEY REFERENCES trials(id),
    attempt INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('value', 'failure', 'error')),
    payload_json TEXT,
    duration_s REAL NOT NULL,
    arrived_at REAL NOT NULL
);
"""


def _dumps(x: Any) -> str | None:
    return None if x is None else json.dumps(x, sort_keys=True, default=_json_default)


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):  # numpy scalars
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def _loads(s: str | None) -> Any:
    return None if s is None else json.loads(s)


@dataclass
class TrialRecord:
    """One row of the trials table."""

    id: int
    params: dict[str, Any]
    source: str
    status: str
    values: dict[str, float] | None
    result: Any
    error: str | None
    proposed_at: float
    started_at: float | None
    finished_at: float | None
    duration_s: float | None
    attempts: int
    tracked: bool

    @property
    def started(self) -> bool:
        return self.started_at is not None


@dataclass
class Arrival:
    """An executor's result stored the moment it returned, before the runner evaluated it.

    ``kind`` is ``value`` (``payload`` is the JSON result), ``failure`` (``payload`` is
    ``{"reason", "measured"}``) or ``error`` (``payload`` is the exception's text).
    """

    trial_id: int
    attempt: int
    kind: str
    payload: Any
    duration_s: float
    arrived_at: float


@dataclass
class FeedbackRecord:
    id: int
    trial_id: int
    rating: int
    note: str | None
    author: str | None
    created_at: float


class Journal:
    """Access to one campaign directory's journal database.

    Use :meth:`create` for a new campaign and :meth:`open` for an existing one.
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        try:
            if readonly:
                # not mode=ro: after a killed writer, SQLite must rebuild the WAL index (-shm) to
                # read, which a read-only connection cannot do; query_only forbids any change
                self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
                self._db.execute("PRAGMA query_only=ON")
            else:
                self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as err:
            raise JournalError(f"cannot open journal {self.path}: {err}") from None
        self._in_txn = False
        self.schema_version = SCHEMA_VERSION

    # ------------------------------------------------------------------ open / create
    @classmethod
    def create(cls, directory: str | Path, *, meta: Mapping[str, Any]) -> Journal:
        """Create a new journal in ``directory`` (made if needed) with the given metadata."""
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise JournalError(
                f"cannot write campaign directory {directory}: {err.strerror or err}; choose a writable --dir"
            ) from None
        path = directory / JOURNAL_FILE
        if path.exists():
            raise JournalError(f"{directory} already has a journal; open it instead of creating one")
        # build it under a temporary name and rename it into place, so that a process killed
        # while creating leaves either no journal or a complete one
        tmp = directory / (JOURNAL_FILE + ".creating")
        for stale in (tmp, Path(f"{tmp}-journal")):
            stale.unlink(missing_ok=True)
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                           [(k, json.dumps(v)) for k, v in
                            {"schema_version": SCHEMA_VERSION, "created_at": time.time(), **meta}.items()])
            db.execute("COMMIT")
        finally:
            db.close()
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # make the rename durable
            fd = os.open(directory, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        return cls(path)

    @classmethod
    def open(cls, directory: str | Path, *, readonly: bool = False) -> Journal:
        """Open the journal of an existing campaign directory."""
        directory = Path(directory)
        path = directory / JOURNAL_FILE
        if not path.is_file():
            if not directory.exists():
                raise JournalError(f"no campaign directory {directory}; check the path, or start a campaign there "
                                   f"with `cryoopt run CONFIG --dir {directory}`")
            raise JournalError(f"{directory} has no campaign journal ({JOURNAL_FILE}); start one with `cryoopt run CONFIG --dir {directory}`")
        j = cls(path, readonly=readonly)
        try:
            version = j.meta("schema_version")
        except sqlite3.DatabaseError as err:
            j.close()
            raise JournalError(f"{path} is not a cryoopt journal ({err})") from None
        if version not in READABLE_VERSIONS:
            j.close()
            raise JournalError(f"{path}: journal schema version {version!r}; this cryoopt reads "
                               f"{', '.join(map(str, READABLE_VERSIONS))} (a newer cryoopt wrote it: upgrade)")
        if version != SCHEMA_VERSION and not readonly:
            j._migrate(version)
        j.schema_version = SCHEMA_VERSION if not readonly else int(version)
        return j

    def _migrate(self, version: int) -> None:
        """Upgrade an older journal in place (one transaction): v1 -> v2 adds ``arrivals``."""
        with self.transaction() as db:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)  # CREATE TABLE IF NOT EXISTS: only the new tables are made
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (json.dumps(SCHEMA_VERSION),))
            db.execute("INSERT INTO events(at, kind, message) VALUES (?, 'migrate', ?)",
                       (time.time(), f"journal schema upgraded from version {version} to {SCHEMA_VERSION}"))

    def set_durable(self, durable: bool) -> None:
        """``True``: fsync every commit (``synchronous=FULL``), surviving power loss; ``False``:
        WAL ``synchronous=NORMAL``, which survives a killed process but may lose the last
        commits on power loss (about 10x cheaper per commit)."""
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")

    @staticmethod
    def exists(directory: str | Path) -> bool:
        return (Path(directory) / JOURNAL_FILE).is_file()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    # ------------------------------------------------------------------ transactions
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable change (``BEGIN IMMEDIATE`` ... ``COMMIT``); nests as a no-op."""
        if self.readonly:
            raise JournalError("journal opened read-only")
        if self._in_txn:
            yield self._db
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._in_txn = True
        try:
            yield self._db
        except BaseException:
            self._in_txn = False
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        self._in_txn = False
        self._db.execute("COMMIT")

    # ------------------------------------------------------------------ meta
    def _set_meta(self, items: Mapping[str, Any]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [(k, json.dumps(v)) for k, v in items.items()],
            )

    def set_meta(self, **items: Any) -> None:
        self._set_meta(items)

    def meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def all_meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    # ------------------------------------------------------------------ trials
    def add_trials(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert new ``proposed`` trials: dicts with id, params, source."""
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO trials(id, params_json, source, status, proposed_at) VALUES (?, ?, ?, 'proposed', ?)",
                [(int(r["id"]), _dumps(r["params"]), str(r["source"]), now) for r in rows],
            )

    def update_trial(self, trial_id: int, **fields: Any) -> None:
        """Set columns of one trial (``params``, ``values`` and ``result`` are JSON-encoded)."""
        cols, args = [], []
        for k, v in fields.items():
            if k in ("params", "values", "result"):
                k, v = f"{k}_json", _dumps(v)
            if k == "status" and v not in STATUSES:
                raise JournalError(f"unknown trial status {v!r}")
            cols.append(f"{k} = ?")
            args.append(v)
        with self.transaction() as db:
            cur = db.execute(f"UPDATE trials SET {', '.join(cols)} WHERE id = ?", (*args, int(trial_id)))
            if cur.rowcount != 1:
                raise JournalError(f"trial {trial_id} is not in the journal")

    def trials(self, *, status: str | Sequence[str] | None = None) -> list[TrialRecord]:
        sql = "SELECT * FROM trials"
        args: tuple[Any, ...] = ()
        if status is not None:
            statuses = (status,) if isinstance(status, str) else tuple(status)
            sql += f" WHERE status IN ({','.join('?' * len(statuses))})"
            args = statuses
        return [self._record(r) for r in self._db.execute(sql + " ORDER BY id", args)]

    def trial(self, trial_id: int) -> TrialRecord | None:
        """The trial with this id, or ``None`` (also for ids no SQLite integer can hold)."""
        if not 0 <= int(trial_id) <= MAX_TRIAL_ID:
            return None
        row = self._db.execute("SELECT * FROM trials WHERE id = ?", (int(trial_id),)).fetchone()
        return None if row is None else self._record(row)

    def count(self, *, status: str | None = None, started: bool | None = None) -> int:
        sql, args = "SELECT count(*) FROM trials WHERE 1", []
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        if started is not None:
            sql += " AND started_at IS NOT NULL" if started else " AND started_at IS NULL"
        return int(self._db.execute(sql, args).fetchone()[0])

    def status_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({s: n for s, n in self._db.execute("SELECT status, count(*) FROM trials GROUP BY status")})
        return counts

    @staticmethod
    def _record(r: Sequence[Any]) -> TrialRecord:
        (id_, params, source, status, values, result, error, proposed_at, started_at, finished_at, duration_s,
         attempts, tracked) = r
        return TrialRecord(int(id_), _loads(params), source, status, _loads(values), _loads(result), error,
                           proposed_at, started_at, finished_at, duration_s, int(attempts), bool(tracked))

    # ------------------------------------------------------------------ optimizer state
    def save_optimizer_state(self, state: Mapping[str, Any]) -> None:
        """Store the optimizer state without its trials (those live in the trials table)."""
        state = {k: v for k, v in state.items() if k != "trials"}
        with self.transaction() as db:
            db.execute(
                "INSERT INTO optimizer(id, state_json, updated_at) VALUES (1, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET state_json = excluded.state_json, updated_at = excluded.updated_at",
                (_dumps(state), time.time()),
            )

    def optimizer_state(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT state_json FROM optimizer WHERE id = 1").fetchone()
        return None if row is None else json.loads(row[0])

    # ------------------------------------------------------------------ feedback
    def add_feedback(self, trial_id: int, rating: int, note: str | None = None, author: str | None = None) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO feedback(trial_id, rating, note, author, created_at) VALUES (?, ?, ?, ?, ?)",
                (int(trial_id), int(rating), note, author, time.time()),
            )
            return int(cur.lastrowid)

    def feedback(self, trial_id: int | None = None) -> list[FeedbackRecord]:
        sql, args = "SELECT id, trial_id, rating, note, author, created_at FROM feedback", ()
        if trial_id is not None:
            sql, args = sql + " WHERE trial_id = ?", (int(trial_id),)
        return [FeedbackRecord(*r) for r in self._db.execute(sql + " ORDER BY id", args)]

    def mean_ratings(self) -> dict[int, float]:
        return {int(t): float(r) for t, r in self._db.execute("SELECT trial_id, avg(rating) FROM feedback GROUP BY trial_id")}

    def last_feedback_id(self) -> int:
        return int(self._db.execute("SELECT coalesce(max(id), 0) FROM feedback").fetchone()[0])

    # ------------------------------------------------------------------ inbox (operator requests)
    def add_request(self, kind: str, payload: Mapping[str, Any]) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO inbox(kind, payload_json, created_at) VALUES (?, ?, ?)", (kind, _dumps(payload), time.time())
            )
            return int(cur.lastrowid)

    def pending_requests(self) -> list[tuple[int, str, dict[str, Any]]]:
        return [(int(i), k, json.loads(p)) for i, k, p in
                self._db.execute("SELECT id, kind, payload_json FROM inbox WHERE consumed_at IS NULL ORDER BY id")]

    def consume_request(self, request_id: int, trial_id: int | None) -> None:
        with self.transaction() as db:
            db.execute("UPDATE inbox SET consumed_at = ?, trial_id = ? WHERE id = ?", (time.time(), trial_id, request_id))

    # ------------------------------------------------------------------ arrivals
    def add_arrival(self, trial_id: int, attempt: int, kind: str, payload: Any, duration_s: float) -> None:
        """Store an executor's result the moment it returned (replacing an older attempt's)."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO arrivals(trial_id, attempt, kind, payload_json, duration_s, arrived_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(trial_id) DO UPDATE SET attempt = excluded.attempt, "
                "kind = excluded.kind, payload_json = excluded.payload_json, duration_s = excluded.duration_s, "
                "arrived_at = excluded.arrived_at",
                (int(trial_id), int(attempt), kind, _dumps(payload), float(duration_s), time.time()),
            )

    def arrivals(self) -> dict[int, Arrival]:
        """Results stored by :meth:`add_arrival` and not yet recorded, by trial id."""
        if self.schema_version < 2:
            return {}
        return {int(r[0]): Arrival(int(r[0]), int(r[1]), r[2], _loads(r[3]), float(r[4]), float(r[5])) for r in
                self._db.execute("SELECT trial_id, attempt, kind, payload_json, duration_s, arrived_at FROM arrivals")}

    def drop_arrival(self, trial_id: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM arrivals WHERE trial_id = ?", (int(trial_id),))

    # ------------------------------------------------------------------ events
    def event(self, kind: str, message: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO events(at, kind, message) VALUES (?, ?, ?)", (time.time(), kind, message))

    def events(self, kind: str | None = None) -> list[tuple[float, str, str]]:
        if kind is not None:
            return list(self._db.execute("SELECT at, kind, message FROM events WHERE kind = ? ORDER BY id", (kind,)))
        return list(self._db.execute("SELECT at, kind, message FROM events ORDER BY id"))


def finite_or_none(x: Any) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class CampaignLock:
    """An exclusive lock on a campaign directory (``flock``; released when the holder dies)."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> CampaignLock:
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise JournalError(
                f"cannot write campaign directory {self.path.parent}: {err.strerror or err}; choose a writable --dir"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise JournalError(
                f"campaign {self.path.parent} is in use (pid {holder}); wait for it to finish or stop it with Ctrl-C"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def held_by_other(self) -> bool:
        """True if another live process holds the lock (for ``cryoopt status``)."""
        import fcntl

        if not self.path.exists():
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def __enter__(self) -> CampaignLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
