"""MLflow tracking of a campaign: one parent run, one child run per trial.

The default backend is a local SQLite database in the campaign directory
(``sqlite:///<dir>/mlflow.db``, artifacts in ``<dir>/mlartifacts``); set
``tracking.uri`` to use a team's MLflow server instead.

Tracking never stops a campaign: the first failure warns, tracking is switched off
for the rest of the session, and the journal (the source of truth) keeps going.
Trials the tracker did not confirm stay ``tracked = 0`` in the journal and are sent
on the next resume (:meth:`Tracker.sync`), so a crash loses nothing in MLflow either.

MLflow calls run on one background thread, in order, so the campaign loop never
waits on the tracking store (a local SQLite store commits several times per trial,
~100 ms); :meth:`Tracker.finish` waits for the queue to drain. Trials are marked
tracked in the journal from the campaign's own thread once MLflow has them.

Browse with ``mlflow ui --backend-store-uri sqlite:///runs/<name>/mlflow.db``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from cryoopt.campaign.journal import Journal, TrialRecord
    from cryoopt.campaign.recommendation import Recommendation
    from cryoopt.config import CampaignConfig

__all__ = ["MlflowTracker", "NullTracker", "Tracker", "default_uri", "make_tracker"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_PARENT_KEY = "mlflow_parent_run_id"


def default_uri(directory: str | Path) -> str:
    return f"sqlite:///{Path(directory).resolve() / 'mlflow.db'}"


class Tracker:
    """No-op tracker (tracking disabled); the interface the runner calls."""

    def sync(self) -> None:
        """Send trials that finished but were never confirmed as tracked."""

    def log_trial(self, record: TrialRecord, rating: float | None = None) -> bool:
        """Log one finished trial; True once the backend has it."""
        return False

    def log_progress(self, step: int, best: TrialRecord | None) -> None:
        """Campaign-level metrics after ``step`` experiments."""

    def log_artifacts(self, paths: Iterable[Path]) -> None:
        """Upload files (report plots) to the parent run."""

    def log_recommendation(self, recommendation: Recommendation | None) -> None:
        """The protocol to adopt (``recommended.*`` metrics, params as tags, ``recommendation.json``)."""

    def finish(self, status: str = "FINISHED") -> None:
        """End the parent run (``FINISHED`` or ``KILLED`` when stopped early)."""


NullTracker = Tracker


class MlflowTracker(Tracker):
    """Tracks to MLflow through :class:`mlflow.tracking.MlflowClient` (no global active run).

    Every MLflow call is queued to one worker thread; ``drain_timeout_s`` bounds how
    long :meth:`finish` waits for it (what is not sent by then is sent on resume).
    """

    def __init__(self, config: CampaignConfig, directory: Path, journal: Journal, *,
                 drain_timeout_s: float = 120.0) -> None:
        self.config = config
        self.directory = Path(directory)
        self.journal = journal
        self.uri = config.tracking.uri or default_uri(directory)
        self.enabled = True
        self.client: Any = None
        self.parent_id: str | None = None
        self.experiment_id: str | None = None
        self.drain_timeout_s = drain_timeout_s
        self._jobs: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue()
        self._confirmed: list[int] = []
        self._confirmed_lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="cryoopt-mlflow", daemon=True)
        self._worker.start()
        self._new_meta: dict[str, str] = {}
        # import MLflow here, not in the worker: concurrent first imports of mlflow deadlock/break
        import mlflow.entities  # noqa: F401
        import mlflow.tracking  # noqa: F401

        self._submit(self._start, journal.meta(_PARENT_KEY))

    # ------------------------------------------------------------------ background worker
    def _submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.enabled:
            self._jobs.put((fn, args))

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args = job
            self._safe(fn, *args)
            self._jobs.task_done()
        self._jobs.task_done()

    def _confirm(self, trial_id: int) -> None:
        with self._confirmed_lock:
            self._confirmed.append(trial_id)

    def _mark_confirmed(self) -> None:
        """Record in the journal (from the caller's thread) the trials MLflow has accepted."""
        with self._confirmed_lock:
            done, self._confirmed = self._confirmed, []
            meta, self._new_meta = self._new_meta, {}
        if meta:
            self.journal.set_meta(**meta)
        if done:
            with self.journal.transaction():
                for i in done:
                    self.journal.update_trial(i, tracked=1)

    def _drain(self) -> None:
        """Wait (bounded) until every queued MLflow call has run."""
        deadline = time.monotonic() + self.drain_timeout_s
        while self._jobs.unfinished_tasks and time.monotonic() < deadline and self._worker.is_alive():
            time.sleep(0.01)

    # ------------------------------------------------------------------ failure policy
    def _safe(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        if not self.enabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - tracking must never stop a campaign
            self.enabled = False
            msg = (f"MLflow tracking to {self.uri} failed ({type(err).__name__}: {err}); "
                   "tracking is off for this session, the journal keeps every result and "
                   "untracked trials are sent on the next resume")
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            log.warning(msg)
            return None

    def _start(self, parent: str | None) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        if self.uri.startswith(("http://", "https://")):
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # after the import: mlflow sets its own level on import
            logging.getLogger(name).setLevel(logging.WARNING)

        self.client = MlflowClient(tracking_uri=self.uri)
        name = self.config.tracking.experiment or self.config.name
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            location = None
            if self.uri.startswith("sqlite:///") and self.config.tracking.uri is None:
                location = (self.directory.resolve() / "mlartifacts").as_uri()
            self.experiment_id = self.client.create_experiment(name, artifact_location=location)
        else:
            self.experiment_id = exp.experiment_id
        if parent is not None:
            try:
                self.client.get_run(parent)
                self.client.update_run(parent, status="RUNNING")
                self.parent_id = parent
                return
            except Exception:  # noqa: BLE001 - run gone (other backend): start a new parent
                log.info("parent run %s not found in %s; starting a new one", parent, self.uri)
        cfg = self.config
        run = self.client.create_run(
            self.experiment_id, run_name=cfg.name,
            tags={"cryoopt.campaign": cfg.name, "cryoopt.config_hash": cfg.config_hash(),
                  "cryoopt.directory": str(self.directory.resolve()), "mlflow.note.content": cfg.description},
        )
        self.parent_id = run.info.run_id
        with self._confirmed_lock:  # the journal is written from the campaign's thread only
            self._new_meta = {_PARENT_KEY: self.parent_id, "mlflow_uri": self.uri}
        from mlflow.entities import Param

        params = {
            "strategy": cfg.optimizer.strategy, "seed": cfg.seed, "batch_size": cfg.batch_size,
            "max_in_flight": cfg.max_in_flight, "budget_experiments": cfg.budget.experiments,
            "executor": cfg.executor.type, "executor_target": cfg.executor.target,
            "objectives": ",".join(f"{k}:{v}" for k, v in cfg.objectives.items()),
            "outcome_constraints": ";".join(cfg.outcome_constraints), "feedback_mode": cfg.feedback.mode,
            **{f"optimizer.{k}": v for k, v in cfg.optimizer.options.items()},
        }
        self.client.log_batch(self.parent_id, params=[Param(k, str(v)[:500]) for k, v in params.items()])
        self.client.log_dict(self.parent_id, cfg.model_dump(mode="json"), "config.json")
        self.client.log_text(self.parent_id, cfg.to_yaml(), "config.yaml")

    # ------------------------------------------------------------------ trials
    def sync(self) -> None:
        todo = [r for r in self.journal.trials(status=("completed", "failed", "abandoned")) if not r.tracked]
        if not todo or not self.enabled:
            return
        ratings = self.journal.mean_ratings()
        for r in todo:
            self.log_trial(r, ratings.get(r.id))

    def log_trial(self, record: TrialRecord, rating: float | None = None) -> bool:
        """Queue the trial for MLflow; returns False: it is marked tracked once MLflow has it."""
        self._mark_confirmed()
        if self.config.tracking.log_trials:
            self._submit(self._log_trial, record, rating)
        return False

    def _log_trial(self, r: TrialRecord, rating: float | None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        status = {"completed": "FINISHED", "failed": "FAILED", "abandoned": "KILLED"}[r.status]
        start_ms = int((r.started_at or r.proposed_at) * 1000)
        run = self.client.create_run(
            self.experiment_id, run_name=f"trial-{r.id:04d}", start_time=start_ms,
            tags={"mlflow.parentRunId": self.parent_id, "cryoopt.trial_id": str(r.id),
                  "cryoopt.status": r.status, "cryoopt.source": r.source},
        )
        now = int((r.finished_at or time.time()) * 1000)
        metrics = [Metric(k, float(v), now, r.id) for k, v in (r.values or {}).items()]
        if r.duration_s is not None:
            metrics.append(Metric("duration_s", float(r.duration_s), now, r.id))
        if rating is not None:
            metrics.append(Metric("operator_rating", float(rating), now, r.id))
        tags = [RunTag("cryoopt.error", r.error[:5000])] if r.error else []
        self.client.log_batch(run.info.run_id, metrics=metrics,
                              params=[Param(k, str(v)[:500]) for k, v in r.params.items()], tags=tags)
        self.client.set_terminated(run.info.run_id, status=status, end_time=now)
        self._confirm(r.id)

    def log_progress(self, step: int, best: TrialRecord | None) -> None:
        if best is None or not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"best.{k}", float(v), now, step) for k, v in (best.values or {}).items()
                   if k in self.config.objectives]
        self._submit(lambda: self.client.log_batch(self.parent_id, metrics=metrics))

    def log_recommendation(self, recommendation: Recommendation | None) -> None:
        if recommendation is None or not self.enabled:
            return
        from mlflow.entities import Metric, RunTag

        rec, now = recommendation, int(time.time() * 1000)
        metrics = [Metric("recommended.trial", float(rec.trial_id), now, 0),
                   Metric("recommended.n_replicates", float(rec.n_replicates), now, 0)]
        for name, value in rec.expected.items():
            metrics.append(Metric(f"recommended.{name}", float(value), now, 0))
            interval = rec.interval.get(name)
            if interval:
                metrics += [Metric(f"recommended.{name}.ci95_low", float(interval[0]), now, 0),
                            Metric(f"recommended.{name}.ci95_high", float(interval[1]), now, 0)]
        tags = [RunTag(f"cryoopt.recommended.{k}", str(v)[:500]) for k, v in rec.params.items()]
        tags.append(RunTag("cryoopt.recommended.basis", rec.basis))

        def _log() -> None:
            self.client.log_batch(self.parent_id, metrics=metrics, tags=tags)
            self.client.log_dict(self.parent_id, rec.to_dict(), "recommendation.json")

        self._submit(_log)

    def log_artifacts(self, paths: Iterable[Path]) -> None:
        for p in paths:
            self._submit(lambda p=p: self.client.log_artifact(self.parent_id, str(p), "report"))

    def finish(self, status: str = "FINISHED") -> None:
        from mlflow.entities import Metric

        counts: Mapping[str, int] = self.journal.status_counts()
        now = int(time.time() * 1000)
        metrics = [Metric(f"n_{k}", float(v), now, 0) for k, v in counts.items()]

        def _end() -> None:
            if self.parent_id is not None:
                self.client.log_batch(self.parent_id, metrics=metrics)
                self.client.set_terminated(self.parent_id, status=status)

        self._submit(_end)
        self._drain()
        self._jobs.put(None)  # stop the worker
        self._mark_confirmed()


def make_tracker(config: CampaignConfig, directory: Path, journal: Journal) -> Tracker:
    """The tracker a config asks for (:class:`NullTracker` when disabled)."""
    if not config.tracking.enabled:
        return NullTracker()
    return MlflowTracker(config, directory, journal)
