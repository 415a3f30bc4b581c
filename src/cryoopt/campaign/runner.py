"""The campaign runner: ask -> execute -> evaluate -> tell, journaled and resumable.

:class:`Campaign` owns one campaign directory: the journal (``journal.sqlite``),
the MLflow database (``mlflow.db``, unless tracking goes elsewhere) and the report.

Order of actions (each arrow is a committed journal transaction)::

    ask n trials  -> rows 'proposed' + optimizer RNG state
    start a trial -> row 'running' (started_at)       then the executor runs it
    its result    -> row 'completed' | 'failed' (values, result, timings)
    tracking      -> row 'tracked' (after MLflow accepted it; re-sent on resume if not)

so a kill at any point loses at most the step in progress, and a resume knows what
each trial's state was. Trials running at the crash follow the executor's crash rule
(:mod:`cryoopt.campaign.executors`), and so does a trial that the executor reports cut
off during a run (:class:`~cryoopt.exceptions.TrialInterruptedError`: its worker died).

Stop conditions: budget (experiments started), active wall time, target reached,
no improvement for ``patience`` finished trials, operator stop (Ctrl-C / SIGTERM:
the trials in flight finish and are recorded; a second Ctrl-C aborts at once and
the resume rule applies).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryoopt.campaign.executors import Executor, TrialRequest, make_executor
from cryoopt.campaign.journal import FINAL, CampaignLock, Journal, TrialRecord
from cryoopt.campaign.outcomes import Outcomes, config_from_journal
from cryoopt.config import CampaignConfig, load_config
from cryoopt.exceptions import ConfigError, JournalError, ParameterError, TrialError, TrialInterruptedError

if TYPE_CHECKING:
    from cryoopt.campaign.recommendation import Recommendation
    from cryoopt.campaign.tracking import Tracker
    from cryoopt.optim import Optimizer
    from cryoopt.optim.trial import Trial

__all__ = ["Campaign", "CampaignStatus", "RunSummary"]

log = logging.getLogger(__name__)

#: stop reasons a run can end with
STOP_REASONS = ("budget", "wall_time", "target", "no_improvement", "operator", "manual")


@dataclass
class RunSummary:
    """What :meth:`Campaign.run` returns."""

    stop_reason: str
    n_trials: int
    counts: dict[str, int]
    best: TrialRecord | None
    directory: Path
    report: dict[str, Path] = field(default_factory=dict)
    recommendation: Recommendation | None = None  # the protocol to adopt (see cryoopt.campaign.recommendation)

    @property
    def interrupted(self) -> bool:
        return self.stop_reason == "operator"


@dataclass
class CampaignStatus:
    """A snapshot of a campaign for ``cryoopt status``."""

    name: str
    directory: Path
    state: str  # running (a process holds it) | stopped | finished | interrupted | new
    stop_reason: str | None
    counts: dict[str, int]
    started: int
    budget: int
    best: TrialRecord | None
    in_flight: list[TrialRecord]
    queued_requests: int
    elapsed_s: float
    objectives: dict[str, str]
    trials: list[TrialRecord]
    ratings: dict[int, float]


class _Progress:
    """Best-so-far, target and no-improvement bookkeeping, updated per finished trial (O(1) per trial)."""

    def __init__(self, campaign: Campaign) -> None:
        cfg = campaign.config
        self.campaign = campaign
        self.signs = [(n, 1.0 if d == "maximize" else -1.0) for n, d in cfg.objectives.items()]
        self.delta = cfg.stopping.min_improvement
        target = cfg.stopping.target
        self.targets = None if target is None else (
            {cfg.objective_names[0]: float(target)} if not isinstance(target, dict) else dict(target))
        self.front: list[tuple[list[float], TrialRecord]] = []  # feasible non-dominated (several objectives)
        self.best_y: float = -math.inf
        self.best_rec: TrialRecord | None = None
        self.since = 0
        self.target_hit = False

    def add(self, r: TrialRecord) -> None:
        improved = False
        if r.status == "completed" and self.campaign._feasible(r.values):
            values = r.values or {}
            y = [s * values[n] for n, s in self.signs]
            if len(y) == 1:
                improved = y[0] > self.best_y + self.delta if self.best_rec is not None else True
                if y[0] > self.best_y:
                    self.best_y, self.best_rec = y[0], r
            else:
                improved = not any(all(a >= b - self.delta for a, b in zip(z, y)) for z, _ in self.front)
                if not any(all(a >= b for a, b in zip(z, y)) and z != y for z, _ in self.front):
                    self.front = [(z, q) for z, q in self.front if not (all(a >= b for a, b in zip(y, z)) and y != z)]
                    self.front.append((y, r))
            if self.targets is not None and all(
                (values[n] >= t if self.campaign.config.objectives[n] == "maximize" else values[n] <= t)
                for n, t in self.targets.items()
            ):
                self.target_hit = True
        if r.status in ("completed", "failed"):
            self.since = 0 if improved else self.since + 1

    def best(self) -> TrialRecord | None:
        if len(self.signs) == 1 or not self.front:
            return self.best_rec
        return self.campaign.best([r for _, r in self.front])


class _ContractError(Exception):
    """The executor's result does not carry what the config asks for (stops the campaign)."""


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) or type(x).__module__ == "numpy" and hasattr(x, "item") and getattr(x, "ndim", 1) == 0


class Campaign:
    """A resumable optimization campaign in one directory.

    Args:
        config: a :class:`~cryoopt.config.CampaignConfig` or a path to its YAML.
        directory: campaign directory (default ``runs/<name>``); created if needed.
        executor: an :class:`Executor` instance to use instead of building the one the
            config names (scripts that hold a live object).
        progress: print a line per trial with the best so far (default: when stdout is a tty).

    Example:
        >>> campaign = Campaign(load_config("configs/sim_quick.yaml"), "runs/quick")
        >>> summary = campaign.run()          # a second run() continues the journal
        >>> summary.best.params
    """

    def __init__(
        self,
        config: CampaignConfig | str | Path,
        directory: str | Path | None = None,
        *,
        executor: Executor | None = None,
        progress: bool | None = None,
        output: Callable[[str], None] | None = None,
    ) -> None:
        if not isinstance(config, CampaignConfig):
            config = load_config(config)
        self.config = config
        self.directory = Path(directory) if directory is not None else Path("runs") / config.name
        self._executor = executor
        self.progress = sys.stdout.isatty() if progress is None else progress
        self._output = output or (lambda line: print(line, flush=True))
        self._stop_requested = False
        self._journal: Journal | None = None
        self._opt: Optimizer | None = None
        self._outcomes = Outcomes(config)

    # ------------------------------------------------------------------ construction
    @classmethod
    def open(cls, directory: str | Path, **kwargs: Any) -> Campaign:
        """The campaign stored in ``directory`` (its config comes from the journal)."""
        return cls(config_from_journal(directory), directory, **kwargs)

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            self._journal = self._open_journal(create=False)
        return self._journal

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _open_journal(self, *, create: bool) -> Journal:
        """Open (or create) the journal, refusing another campaign's or an incompatible one."""
        cfg = self.config
        if Journal.exists(self.directory):
            j = Journal.open(self.directory)
            try:
                self._check_compatible(j)
            except BaseException:
                j.close()
                raise
            stored = j.meta("config")
            if stored != cfg.model_dump(mode="json"):
                old = CampaignConfig.from_dict(stored)
                changes = [k for k in ("budget", "batch_size", "max_in_flight", "stopping", "tracking", "report", "description")
                           if getattr(old, k) != getattr(cfg, k)]
                j.set_meta(config=cfg.model_dump(mode="json"))
                j.event("config", f"run settings changed: {', '.join(changes) or 'formatting'}")
            return j
        if not create:
            raise JournalError(f"{self.directory} has no campaign journal; start it with `cryoopt run CONFIG --dir {self.directory}`")
        import cryoopt

        return Journal.create(
            self.directory,
            meta={
                "campaign": cfg.name,
                "config_hash": cfg.config_hash(),
                "config": cfg.model_dump(mode="json"),
                "cryoopt_version": getattr(cryoopt, "__version__", "unknown"),
                "state": "new",
                "elapsed_s": 0.0,
            },
        )

    def _check_compatible(self, j: Journal) -> None:
        cfg = self.config
        name = j.meta("campaign")
        if name != cfg.name:
            raise JournalError(
                f"{self.directory} holds the journal of campaign {name!r}, not {cfg.name!r}; "
                "choose another --dir (each campaign needs its own directory)"
            )
        if j.meta("config_hash") != cfg.config_hash():
            stored = CampaignConfig.from_dict(j.meta("config"), source="journal")
            fields = cfg.incompatibilities(stored)
            raise JournalError(
                f"{self.directory}: the config differs from the journal's in {', '.join(fields)}; "
                "those fields fix what the recorded trials mean, so the campaign cannot continue with them changed. "
                "Restore them, or start a new campaign in another --dir (budget, stopping, batch_size, "
                "max_in_flight, tracking and report may change between runs)"
            )

    # ------------------------------------------------------------------ optimizer <-> journal
    def _optimizer(self) -> Optimizer:
        """Build the optimizer from the journal: stored RNG/settings + the trials table."""
        from cryoopt.optim import Optimizer, make_optimizer

        j, cfg = self.journal, self.config
        state = j.optimizer_state()
        if state is None:
            try:
                opt = make_optimizer(
                    cfg.optimizer.strategy, cfg.search_space(), seed=cfg.seed, objectives=dict(cfg.objectives),
                    outcome_constraints=list(cfg.outcome_constraints), **cfg.optimizer.options,
                )
            except (TypeError, ParameterError, LookupError) as err:
                raise ConfigError(f"optimizer: {err}") from err
            j.save_optimizer_state(_state_without_trials(opt))
            return opt
        state["trials"] = [self._trial_dict(r) for r in j.trials()]
        return Optimizer.from_state_dict(state)

    @staticmethod
    def _trial_dict(r: TrialRecord) -> dict[str, Any]:
        status = {"proposed": "pending", "running": "pending"}.get(r.status, r.status)
        return {"id": r.id, "params": r.params, "status": status,
                "values": r.values if r.status == "completed" else None,
                "error": r.error, "source": r.source, "metadata": {}}

    # ------------------------------------------------------------------ evaluation of a result
    def _evaluate(self, raw: Any, rating: float | None) -> tuple[dict[str, float] | None, str | None]:
        """Executor result -> (values told to the optimizer, None) or (None, failure reason)."""
        cfg = self.config
        names = cfg.objective_names
        if isinstance(raw, BaseException):
            return None, f"{type(raw).__name__}: {raw}"
        if raw is None:
            return None, "executor returned None"
        if type(raw).__name__ == "Failure" and hasattr(raw, "reason"):
            return None, str(raw.reason)
        if _is_number(raw):
            f = float(raw)
            if not math.isfinite(f):
                return None, f"objective is {f}"
            if len(names) != 1:
                raise _ContractError(f"the executor returned one number but there are {len(names)} objectives {names}; return a dict")
            raw = {names[0]: f}
        if not isinstance(raw, Mapping):
            raise _ContractError(f"the executor returned {type(raw).__name__}; return a float, a dict or Failure(reason)")
        flat: dict[str, Any] = {}
        for k, v in raw.items():
            if isinstance(v, Mapping):
                flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
            else:
                flat[str(k)] = v
        for name, key in cfg.evaluation.metrics.items():
            if key not in flat:
                raise _ContractError(f"evaluation.metrics maps {name!r} to result key {key!r}, which the result lacks; keys: {sorted(flat)}")
            flat[name] = flat[key]
        required = names + [c[0] for c in self._outcomes.constraints]
        missing = [n for n in required if n not in flat]
        if missing:
            raise _ContractError(f"the result lacks {missing}; it has keys {sorted(flat)} (map them with evaluation.metrics)")
        values: dict[str, float] = {}
        for k, v in flat.items():
            if _is_number(v):
                f = float(v)
                if math.isfinite(f):
                    values[k] = f
                elif k in required:
                    return None, f"result {k!r} is {f}"
            elif k in required:
                return None, f"result {k!r} = {v!r} is not a number"
        if rating is not None and cfg.feedback.mode == "blend":
            obj = cfg.feedback.objective or names[0]
            w, r01 = cfg.feedback.weight, (rating - 1.0) / 4.0
            if cfg.objectives[obj] == "minimize":
                r01 = 1.0 - r01
            values[f"{obj}.unrated"] = values[obj]
            values[obj] = (1 - w) * values[obj] + w * r01
        return values, None

    def _feasible(self, values: Mapping[str, float] | None) -> bool:
        return self._outcomes.feasible(values)

    # ------------------------------------------------------------------ queries
    def best(self, records: Sequence[TrialRecord] | None = None) -> TrialRecord | None:
        """The best feasible completed trial as observed (one objective; the balanced Pareto compromise for several)."""
        return self._outcomes.best(self.journal.trials(status="completed") if records is None else records)

    def status(self) -> CampaignStatus:
        j = Journal.open(self.directory, readonly=True)
        try:
            trials = j.trials()
            meta = j.all_meta()
            ratings = j.mean_ratings()
            queued = len(j.pending_requests())
        finally:
            j.close()
        counts = {s: 0 for s in ("proposed", "running", "completed", "failed", "abandoned")}
        for r in trials:
            counts[r.status] += 1
        held = CampaignLock(self.directory).held_by_other()
        state = "running" if held else meta.get("state", "new")
        if meta.get("state") == "running" and not held:
            state = "interrupted"  # the process died mid-run
        return CampaignStatus(
            name=self.config.name, directory=self.directory, state=state, stop_reason=meta.get("stop_reason"),
            counts=counts, started=sum(r.started for r in trials), budget=self.config.budget.experiments,
            best=self.best(trials), in_flight=[r for r in trials if r.status == "running"], queued_requests=queued,
            elapsed_s=float(meta.get("elapsed_s") or 0.0), objectives=dict(self.config.objectives), trials=trials,
            ratings=ratings,
        )

    # ------------------------------------------------------------------ human in the loop
    def feedback(self, trial_id: int, rating: int, note: str | None = None, *, author: str | None = None) -> int:
        """Store an operator rating (1-5) and note for a trial; allowed while the campaign runs."""
        if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
            raise TrialError(f"rating must be an integer from 1 to 5, got {rating!r}")
        j = self.journal
        if j.trial(trial_id) is None:
            raise TrialError(f"unknown trial {trial_id}; the journal has trials 0..{j.count() - 1}")
        return j.add_feedback(trial_id, rating, note, author or os.environ.get("USER"))

    def inject(self, params: Mapping[str, Any]) -> int:
        """Queue a trial with the operator's own params; the runner starts it next.

        Returns the request id. The params are validated now (bad values raise
        :class:`~cryoopt.exceptions.ParameterError` and nothing is stored).
        """
        clean = self.config.search_space().validate(params)
        return self.journal.add_request("inject", {"params": clean})

    def _queue_start_protocols(self) -> None:
        """On a fresh campaign, queue ``config.start_protocols`` to run before any proposal (once)."""
        j, protocols = self.journal, self.config.start_protocols
        if not protocols or j.meta("start_protocols_queued", False):
            return
        space = self.config.search_space()
        with j.transaction():
            for protocol in protocols:
                j.add_request("inject", {"params": space.validate(protocol), "source": "start"})
            j.set_meta(start_protocols_queued=True)

    def _drain_inbox(self) -> None:
        j, opt = self.journal, self._opt
        assert opt is not None
        for req_id, kind, payload in j.pending_requests():
            if kind != "inject":
                j.consume_request(req_id, None)
                continue
            try:
                source = str(payload.get("source", "manual"))
                trial = opt.add_trial(payload["params"], source=source)
            except ParameterError as err:  # e.g. the space's constraints refuse it
                j.event("inject", f"request {req_id} refused: {err}")
                j.consume_request(req_id, None)
                continue
            with j.transaction():
                j.add_trials([{"id": trial.id, "params": trial.params, "source": source}])
                j.consume_request(req_id, trial.id)
            who = "a start protocol" if source == "start" else "injected by the operator"
            self._say(f"trial {trial.id:4d} {who}: {trial.params}")

    def _apply_feedback(self) -> None:
        """With feedback mode 'blend', re-derive rated trials' values and update the optimizer."""
        j = self.journal
        last = j.last_feedback_id()
        if last == self._feedback_seen:
            return
        self._feedback_seen = last
        if self.config.feedback.mode != "blend":
            return
        ratings = j.mean_ratings()
        changed = False
        with j.transaction():
            for r in j.trials(status="completed"):
                if r.id not in ratings:
                    continue
                values, error = self._evaluate(r.result, ratings[r.id])
                if values is not None and values != r.values:
                    j.update_trial(r.id, values=values)
                    self._opt.update_values(r.id, values)
                    changed = True
        if changed:
            if hasattr(self, "_progress"):
                self._progress = self._new_progress()
            self._say(f"operator ratings applied to {len(ratings)} trial(s)")

    # ------------------------------------------------------------------ manual loop
    def suggest(self, n: int = 1) -> list[TrialRecord]:
        """Hand ``n`` trials to the operator (``running``) for a manual loop; [] when the budget is spent."""
        with CampaignLock(self.directory):
            self._journal = self._open_journal(create=True)
            self._opt = self._optimizer()
            self._feedback_seen = -1
            self._apply_feedback()
            self._drain_inbox()
            out = []
            for _ in range(n):
                if self.journal.count(started=True) >= self.config.budget.experiments:
                    break
                rec = self._next_trial()
                if rec is None:
                    break
                self.journal.update_trial(rec.id, status="running", started_at=time.time(), attempts=rec.attempts + 1)
                out.append(self.journal.trial(rec.id))
            return out  # type: ignore[return-value]

    def tell(self, trial_id: int, value: Any) -> TrialRecord:
        """Enter the result of a trial run by hand (a number, a dict, or a Failure)."""
        with CampaignLock(self.directory):
            j = self.journal
            rec = j.trial(trial_id)
            if rec is None:
                n = j.count()
                raise TrialError(f"unknown trial {trial_id}; " + (f"trials are numbered 0..{n - 1}" if n else "the campaign has no trials yet (use suggest)"))
            if rec.status in FINAL:
                raise TrialError(f"trial {trial_id} is already {rec.status}; each trial is told once")
            self._opt = self._optimizer()
            if rec.started_at is None:
                j.update_trial(rec.id, status="running", started_at=time.time(), attempts=rec.attempts + 1)
            try:
                self._record(rec.id, value, time.time() - (rec.started_at or time.time()))
            except _ContractError as err:
                raise TrialError(str(err)) from None
            return j.trial(rec.id)  # type: ignore[return-value]

    # ------------------------------------------------------------------ the run
    def run(self) -> RunSummary:
        """Run (or continue) the campaign until a stop condition; see the module doc."""
        from cryoopt.progress import report_to

        with report_to(self._output if self.progress else None):  # long steps report to the same output
            return self._run()

    def _run(self) -> RunSummary:
        cfg = self.config
        lock = CampaignLock(self.directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise JournalError(f"cannot create campaign directory {self.directory}: {err.strerror or err}; choose a writable --dir") from None
        lock.acquire()
        tracker: Tracker | None = None
        executor: Executor | None = None
        handlers: dict[int, Any] = {}
        stop_reason: str | None = None
        report: dict[str, Path] = {}
        try:
            j = self._journal = self._open_journal(create=True)
            if cfg.executor.type == "manual":
                self._opt = self._optimizer()
                j.set_meta(state="manual")
                self._say(f"manual campaign {cfg.name!r} in {self.directory}: run experiments with "
                          f"`cryoopt suggest {self.directory}` and `cryoopt tell {self.directory} TRIAL VALUE`")
                return self._summary("manual", report)
            executor = self._executor or make_executor(cfg)
            # real-world effects need power-loss durability; idempotent executors only a killed process
            j.set_durable(not executor.idempotent)
            executor.prepare(self.directory)
            self._recover(executor)
            self._opt = self._optimizer()
            self._queue_start_protocols()
            self._feedback_seen = -1
            self._progress = self._new_progress()
            tracker = self._make_tracker()
            tracker.sync()
            j.set_meta(state="running", stop_reason=None, pid=os.getpid())
            j.event("start", f"session started (pid {os.getpid()})")
            self._session_t0 = time.monotonic()
            self._elapsed0 = float(j.meta("elapsed_s") or 0.0)
            handlers = self._install_signal_handlers()
            stop_reason = self._loop(executor, tracker)
            j.set_meta(state="stopped" if stop_reason == "operator" else "finished", stop_reason=stop_reason,
                       elapsed_s=self._elapsed())
            j.event("stop", f"stopped: {stop_reason}")
            self._say(f"campaign {cfg.name!r} stopped: {_REASON_TEXT[stop_reason]}")
        except _ContractError as err:
            if self._journal is not None:
                self._journal.set_meta(state="stopped", stop_reason="error")
                self._journal.event("error", str(err))
            raise ConfigError(f"executor result does not match the config: {err}") from None
        except TrialInterruptedError as err:  # the executor lost every worker (e.g. every Ray bench)
            if self._journal is not None:
                self._journal.set_meta(state="interrupted", stop_reason="executor_lost", elapsed_s=self._elapsed())
                self._journal.event("abort", f"the executor cannot run trials any more ({err}); resume when it is back")
            raise
        except KeyboardInterrupt:
            if self._journal is not None:
                self._journal.set_meta(state="interrupted", stop_reason="aborted", elapsed_s=self._elapsed())
                self._journal.event("abort", "aborted by a second Ctrl-C; trials in flight stay 'running' until resume")
            raise
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)
            if executor is not None and executor is not self._executor:
                with contextlib.suppress(Exception):
                    executor.close()
            try:
                if stop_reason is not None and stop_reason != "manual" and cfg.report.on_finish:
                    report = self._write_report(tracker)
            finally:
                if tracker is not None:
                    if stop_reason is not None:
                        tracker.log_recommendation(self._recommendation_or_none())
                    tracker.finish("KILLED" if stop_reason in (None, "operator") else "FINISHED")
                lock.release()
        return self._summary(stop_reason, report)

    def _summary(self, stop_reason: str, report: dict[str, Path]) -> RunSummary:
        j = self.journal
        return RunSummary(stop_reason, j.count(), j.status_counts(), self.best(), self.directory, report,
                          self.recommendation())

    def _progress_recommendation(self) -> Recommendation | None:
        """The recommendation for a progress line, refreshed once per batch of finished trials: the
        next proposal fits the GP on the same trials, so BO pays for no extra fit (other strategies
        get observed means, which cost nothing)."""
        finished = sum(n for s, n in self.journal.status_counts().items() if s in FINAL)
        if getattr(self, "_rec_cache", None) is None or finished % self.config.batch_size == 0:
            self._rec_cache = self.recommendation(fit=False)
        return self._rec_cache

    def _recommendation_or_none(self) -> Recommendation | None:
        try:
            return self.recommendation()
        except Exception as err:  # noqa: BLE001 - a failed GP fit must not lose the run's outcome
            log.warning("no recommendation: %s: %s", type(err).__name__, err)
            return None

    def recommendation(self, *, fit: bool = True) -> Recommendation | None:
        """The protocol to adopt now (:func:`cryoopt.campaign.recommendation.recommend`), from the journal.

        ``fit=False``: observed means only, unless the campaign's own optimizer has a GP
        (its fitted model is reused, so that costs nothing extra).
        """
        from cryoopt.campaign.recommendation import fit_model, recommend

        trials = self.journal.trials()
        model = fit_model(self.config, trials, optimizer=self._opt) if fit or hasattr(self._opt, "predict") else None
        return recommend(self.config, trials, model=model, fit=False)

    def _new_progress(self) -> _Progress:
        progress = _Progress(self)
        finished = [r for r in self.journal.trials(status=("completed", "failed")) if r.finished_at is not None]
        for r in sorted(finished, key=lambda r: (r.finished_at or 0.0, r.id)):
            progress.add(r)
        return progress

    def _make_tracker(self) -> Tracker:
        from cryoopt.campaign.tracking import NullTracker, make_tracker

        if not self.config.tracking.enabled:
            return NullTracker()
        return make_tracker(self.config, self.directory, self.journal)

    def _write_report(self, tracker: Tracker | None) -> dict[str, Path]:
        from cryoopt.campaign.report import write_report

        try:
            paths = write_report(self.directory, config=self.config, optimizer=self._opt)
        except Exception as err:  # a report failure must not lose the run's outcome
            warnings.warn(f"could not write the report: {type(err).__name__}: {err}", RuntimeWarning, stacklevel=2)
            return {}
        if tracker is not None:
            tracker.log_artifacts(paths.values())
        return paths

    def _elapsed(self) -> float:
        return self._elapsed0 + (time.monotonic() - self._session_t0)

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum: int, frame: Any) -> None:
            if self._stop_requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_requested = True
            print("\ncryoopt: stopping after the trials in flight (Ctrl-C again to abort now; "
                  "the journal stays resumable)", file=sys.stderr, flush=True)

        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, on_signal)
        return old

    # ------------------------------------------------------------------ pause (journal flag)
    def pause(self, reason: str = "") -> None:
        """Ask the campaign to start no new trial (trials in flight finish); it waits, resumable at any time.

        A journal flag, so any process may set it (``cryoopt serve``, a script) while
        another runs the campaign; :meth:`unpause` lets it go on.
        """
        self.journal.set_meta(operator_paused=True)
        self.journal.event("pause", "paused by the operator" + (f": {reason}" if reason else ""))

    def unpause(self) -> None:
        """Let a paused campaign start trials again."""
        self.journal.set_meta(operator_paused=False)
        self.journal.event("pause", "unpaused by the operator")

    def _paused(self) -> bool:
        """Whether the journal says paused (says so once when the pause begins)."""
        paused = bool(self.journal.meta("operator_paused", False))
        if paused != getattr(self, "_paused_said", False):
            self._paused_said = paused
            self._say("paused by the operator: no new trial starts until unpaused (the trials in flight finish)"
                      if paused else "unpaused: the campaign goes on")
        return paused

    def request_stop(self) -> None:
        """Ask a running campaign (from another thread) to stop after the trials in flight."""
        self._stop_requested = True

    # ------------------------------------------------------------------ crash recovery
    def _recover(self, executor: Executor) -> None:
        """Apply the crash rule to trials left 'running' by a process that died."""
        for r in self.journal.trials(status="running"):
            self._apply_crash_rule(executor, r)
        self._opt = None

    def _apply_crash_rule(self, executor: Executor, r: TrialRecord, cause: str | None = None,
                          tracker: Tracker | None = None) -> None:
        """An interrupted trial: re-checked by the executor, else run again if idempotent, else abandoned.

        ``cause`` is None for a trial left running by a process that died (on resume), or
        what cut it off during this run (its bench died); ``tracker`` is given during a run.
        """
        j = self.journal
        when = "at the crash" if cause is None else f"when {cause}"
        req = TrialRequest(r.id, r.params, r.source)
        try:
            found = executor.recover(req)
        except Exception as err:  # noqa: BLE001 - a failed re-check falls through to the rule
            log.warning("re-checking trial %d failed: %s", r.id, err)
            found = None
        if found is not None:
            if self._opt is None:
                self._opt = self._optimizer()
            duration = (r.finished_at or time.time()) - (r.started_at or time.time())
            if tracker is None:
                self._record(r.id, found, duration)
            else:
                self._finish(r.id, found, duration, tracker)
            j.event("recover", f"trial {r.id} was running {when}; re-checked by the executor")
            self._say(f"trial {r.id:4d} was running {when}: re-checked, result recovered")
        elif executor.idempotent:
            j.update_trial(r.id, status="proposed", started_at=None)
            j.event("recover", f"trial {r.id} was running {when}; the executor is idempotent, so it runs again")
            self._say(f"trial {r.id:4d} was running {when}: runs again (idempotent executor)")
        else:
            ended = "the process ended" if cause is None else cause
            reason = (f"interrupted: {ended} while this trial ran on a non-idempotent executor; "
                      "not re-run (inject its params again to repeat it on purpose)")
            j.update_trial(r.id, status="abandoned", error=reason, finished_at=time.time())
            if self._opt is not None:
                self._opt.abandon(r.id, reason)
            j.event("recover", f"trial {r.id} was running {when}; abandoned (executor not idempotent)")
            self._say(f"trial {r.id:4d} was running {when}: abandoned, not re-run (executor not idempotent)")

    # ------------------------------------------------------------------ main loop
    def _next_trial(self) -> TrialRecord | None:
        """The next trial to start: operator-injected first, then proposed ones, else a new ask."""
        j, cfg, opt = self.journal, self.config, self._opt
        assert opt is not None
        proposed = j.trials(status="proposed")
        if proposed:
            proposed.sort(key=lambda r: (r.source != "manual", r.id))
            return proposed[0]
        remaining = cfg.budget.experiments - j.count(started=True)
        if remaining <= 0:
            return None
        n = min(cfg.batch_size, remaining)
        trials = self._replicate(n)
        if n > len(trials):
            from cryoopt.progress import Heartbeat

            with Heartbeat(f"proposing {n - len(trials)} trial(s) ({cfg.optimizer.strategy})", key="ask"):
                trials += opt.ask(n - len(trials))
        with j.transaction():
            j.add_trials([{"id": t.id, "params": t.params, "source": t.source} for t in trials])
            j.save_optimizer_state(_state_without_trials(opt))
        return j.trial(trials[0].id)

    def _replicate(self, batch: int) -> list[Trial]:
        """The replicate of the incumbent due in the next ``batch`` trials (``config.replicate_every``), or none."""
        from cryoopt.optim.base import replicate_due

        j, opt = self.journal, self._opt
        if not self.config.replicate_every:
            return []
        replicated = sum(r.source == "replicate" for r in j.trials())
        due = replicate_due(j.count(started=True), batch, self.config.replicate_every, replicated)
        recommended = self.recommendation() if due else None  # the protocol the campaign would adopt now
        incumbent = opt.best() if due and recommended is None else recommended
        return [opt.add_trial(incumbent.params, source="replicate")] if incumbent is not None else []

    def _start_next(self) -> TrialRecord | None:
        """Pick (or ask for) the next trial and mark it running, in one committed transaction."""
        j = self.journal
        with j.transaction():
            rec = self._next_trial()
            if rec is not None:
                rec.started_at, rec.attempts, rec.status = time.time(), rec.attempts + 1, "running"
                j.update_trial(rec.id, status="running", started_at=rec.started_at, attempts=rec.attempts)
        return rec

    def _check_stop(self) -> str | None:
        cfg, j = self.config, self.journal
        if self._stop_requested:
            return "operator"
        if cfg.budget.wall_time_s is not None and self._elapsed() >= cfg.budget.wall_time_s:
            return "wall_time"
        if self._progress.target_hit:
            return "target"
        if cfg.stopping.patience is not None and self._progress.since >= cfg.stopping.patience:
            return "no_improvement"
        if j.count(started=True) >= cfg.budget.experiments and j.count(status="running") == 0:
            return "budget"
        return None

    def _loop(self, executor: Executor, tracker: Tracker) -> str:
        cfg, j = self.config, self.journal
        pool = ThreadPoolExecutor(cfg.max_in_flight, thread_name_prefix="cryoopt-trial") if cfg.max_in_flight > 1 else None
        in_flight: dict[Future[Any], tuple[int, float]] = {}
        try:
            while True:
                self._drain_inbox()
                self._apply_feedback()
                reason = self._check_stop()
                launched = False
                paused = reason is None and self._paused()
                if reason is None and not paused:
                    while len(in_flight) < cfg.max_in_flight and j.count(started=True) < cfg.budget.experiments:
                        rec = self._start_next()
                        if rec is None:
                            break
                        req = TrialRequest(rec.id, rec.params, rec.source)
                        launched = True
                        if pool is None:
                            t0 = time.monotonic()
                            raw = _call(executor, req)
                            self._settle(executor, rec.id, raw, time.monotonic() - t0, tracker)
                            break
                        in_flight[pool.submit(_call, executor, req)] = (rec.id, time.monotonic())
                        if self._stop_requested:
                            break
                if in_flight:
                    done, _ = wait(list(in_flight), timeout=0.5, return_when=FIRST_COMPLETED)
                    for fut in sorted(done, key=lambda f: in_flight[f][0]):
                        trial_id, t0 = in_flight.pop(fut)
                        self._settle(executor, trial_id, fut.result(), time.monotonic() - t0, tracker)
                    continue
                if paused:
                    time.sleep(0.5)
                    continue
                if reason is not None:
                    return reason
                if not launched:  # nothing left to start and nothing running
                    return "budget"
        finally:
            if pool is not None:
                pool.shutdown(wait=not in_flight, cancel_futures=True)

    def _settle(self, executor: Executor, trial_id: int, raw: Any, duration: float, tracker: Tracker) -> None:
        """A trial's run returned: record its result, or apply the crash rule if it was cut off."""
        if not isinstance(raw, TrialInterruptedError):
            self._finish(trial_id, raw, duration, tracker)
            return
        self._apply_crash_rule(executor, self.journal.trial(trial_id), str(raw), tracker)  # type: ignore[arg-type]
        if raw.executor_lost:
            raise raw

    def _finish(self, trial_id: int, raw: Any, duration: float, tracker: Tracker) -> None:
        rec = self._record(trial_id, raw, duration)
        self._progress.add(rec)
        if tracker.log_trial(rec, self.journal.mean_ratings().get(rec.id)):
            self.journal.update_trial(rec.id, tracked=1)
        best = self._progress.best()
        tracker.log_progress(self.journal.count(started=True), best)
        if self.progress:
            self._say(self._line(rec, best))
            recommended = self._progress_recommendation()
            if recommended is not None:
                self._say("       recommended: " + recommended.summary(self.config.objective_names))

    def _record(self, trial_id: int, raw: Any, duration: float) -> TrialRecord:
        """Evaluate a result, tell the optimizer and commit the trial's final state."""
        j, opt = self.journal, self._opt
        assert opt is not None
        rating = j.mean_ratings().get(trial_id)
        result_json = _jsonable(raw)
        try:
            values, error = self._evaluate(raw, rating)
        except _ContractError as err:
            from cryoopt.optim import Failure

            opt.tell(trial_id, Failure(str(err)))
            j.update_trial(trial_id, status="failed", error=str(err), result=result_json,
                           finished_at=time.time(), duration_s=duration)
            raise
        from cryoopt.optim import Failure

        with j.transaction():
            if values is not None:
                opt.tell(trial_id, values)
                j.update_trial(trial_id, status="completed", values=values, result=result_json, error=None,
                               finished_at=time.time(), duration_s=duration)
            else:
                opt.tell(trial_id, Failure(error or "failed"))
                j.update_trial(trial_id, status="failed", error=error, result=result_json,
                               finished_at=time.time(), duration_s=duration)
            if hasattr(self, "_session_t0"):
                j.set_meta(elapsed_s=self._elapsed())
        return j.trial(trial_id)  # type: ignore[return-value]

    # ------------------------------------------------------------------ output
    def _say(self, line: str) -> None:
        if self.progress:
            self._output(line)

    def _line(self, rec: TrialRecord, best: TrialRecord | None) -> str:
        names = self.config.objective_names
        started = self.journal.count(started=True)
        if rec.status == "completed":
            what = "  ".join(f"{n}={rec.values[n]:.4g}" for n in names)  # type: ignore[index]
        else:
            what = f"({rec.error})"
        label = "best observed" if len(names) == 1 else "Pareto compromise"  # one run each: not the recommendation
        best_txt = f"{label} -" if best is None else f"{label} " + "  ".join(f"{n}={best.values[n]:.4g}" for n in names) + f" (trial {best.id})"  # type: ignore[index]
        return (f"[{started:>3}/{self.config.budget.experiments}] trial {rec.id:4d} {rec.status:<9} {what}  "
                f"({rec.duration_s or 0:.2f} s)  {best_txt}")


_REASON_TEXT = {
    "budget": "experiment budget spent",
    "wall_time": "wall-time budget spent",
    "target": "target reached",
    "no_improvement": "no improvement within the patience",
    "operator": "stopped by the operator; resume with `cryoopt resume DIR`",
    "manual": "manual campaign",
}


def _state_without_trials(opt: Optimizer) -> dict[str, Any]:
    """``opt.state_dict()`` minus the trials: the journal holds them (serializing them per ask is O(n^2))."""
    return opt.state_dict(include_trials=False)


def _call(executor: Executor, req: TrialRequest) -> Any:
    """Run one trial; an exception is a failed experiment (data), not a crash."""
    try:
        return executor.run(req)
    except TrialInterruptedError as err:  # cut off, not failed: the crash rule applies (Campaign._settle)
        log.warning("trial %d interrupted: %s", req.id, err)
        return err
    except Exception as err:  # noqa: BLE001
        log.warning("trial %d failed: %s: %s", req.id, type(err).__name__, err)
        return err


def _jsonable(raw: Any) -> Any:
    if isinstance(raw, BaseException):
        return {"error": f"{type(raw).__name__}: {raw}"}
    if type(raw).__name__ == "Failure":
        return {"failure": getattr(raw, "reason", str(raw))}
    if hasattr(raw, "to_dict") and not isinstance(raw, Mapping):
        with contextlib.suppress(Exception):
            return raw.to_dict()
    if _is_number(raw):
        return float(raw)
    return raw
