"""Campaign executor ``ray``: every bench is a Ray actor; each trial goes to an idle bench.

A *bench* is one instrument set (ultramicrotome, staining platform, microscope; real or
simulated). A lab with several of them, or a researcher with a cluster, runs one
campaign over all of them:

- The campaign process keeps the one journal and the optimizer. It runs
  ``max_in_flight`` trials at once, one per bench. Whenever a bench finishes, its result
  is recorded and the optimizer is asked for the next trial *with the others still
  pending* (``X_pending``), so benches are fed asynchronously: none waits for a batch.
- Each bench is a named, detached actor ``<namespace>/<bench name>`` that builds the
  bench executor (``executor.bench``, any other type) from the campaign config and runs
  one trial at a time. Ray never re-sends a trial (``max_task_retries=0``).

Crash rules (see :mod:`cryoopt.campaign.executors`):

- A bench dies mid-trial (its worker process, or its node): the trial is cut off
  (:class:`~cryoopt.exceptions.TrialInterruptedError`) and the campaign's crash rule
  applies: :meth:`RayExecutor.recover` asks the bench executor (an instrument may know
  whether the sample finished), then an idempotent trial runs again, any other is
  abandoned. It is never silently repeated on an instrument. The dead bench is replaced by
  a fresh actor, at most ``max_restarts`` times; a campaign left with no bench stops,
  resumable.
- The campaign process dies: on a cluster that outlives it (``address`` given) the
  benches keep running. A resume reconnects to them by name, and :meth:`recover` collects
  the result of a trial that was still running at the crash, waiting for it if needed:
  the trial is neither lost nor repeated. On a local cluster (no ``address``) the cluster
  ends with the process; the resume starts fresh benches and the crash rule applies as
  for threads.
- No idle bench outlives the run that made it: :meth:`RayExecutor.close` (called at the
  end of every run, finished or stopped) releases them. Only a campaign process that was
  killed, or aborted with trials in flight, leaves benches alive, for its resume;
  :func:`release_benches` releases them if the campaign is never resumed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryoopt.exceptions import ConfigError, TrialInterruptedError
from cryoopt.registry import Executor, TrialRequest, register_executor
from cryoopt.scale.cluster import connect, require_ray
from cryoopt.scale.options import RayExecutorOptions, ResolvedBench

if TYPE_CHECKING:
    from cryoopt.config import CampaignConfig

__all__ = ["RayExecutor", "bench_namespace", "release_benches"]

log = logging.getLogger(__name__)

#: finished trials each bench remembers (one trial runs at a time: the last few are enough for a resume)
REMEMBERED_TRIALS = 32
#: seconds to wait for a bench to answer a short question (its description, a lookup without wait)
ANSWER_S = 60.0
#: a bench's actor name is its bench name, then ``~<generation>`` for replacements
_GENERATION = "~"


def bench_namespace(config: CampaignConfig) -> str:
    """The Ray namespace of a campaign's benches: ``executor.options.namespace`` or one from its name and identity."""
    opts = RayExecutorOptions.model_validate(config.executor.options)
    return opts.namespace or f"cryoopt-{config.name}-{config.config_hash()[:12]}"


# ---------------------------------------------------------------------------- the bench actor
class BenchActor:
    """One bench: builds the bench executor from the campaign config and runs one trial at a time.

    A threaded actor: :meth:`run` holds the bench (one trial at a time), while
    :meth:`describe` and :meth:`lookup` answer at once, e.g. a resumed campaign asking
    whether a trial started before the crash has finished.
    """

    def __init__(self, config_json: str, name: str, fingerprint: str) -> None:
        from cryoopt.campaign.executors import make_executor
        from cryoopt.config import CampaignConfig

        self.name = name
        self.fingerprint = fingerprint
        self.executor = make_executor(CampaignConfig.model_validate_json(config_json))
        self._bench = threading.Lock()
        self._changed = threading.Condition()
        self._running: tuple[int, dict[str, Any]] | None = None
        self._finished: OrderedDict[int, tuple[dict[str, Any], str, Any]] = OrderedDict()

    def describe(self) -> dict[str, Any]:
        """Who this bench is and what it is doing."""
        import ray

        with self._changed:
            running = None if self._running is None else self._running[0]
        return {"name": self.name, "fingerprint": self.fingerprint, "idempotent": bool(self.executor.idempotent),
                "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "running": running}

    def run(self, trial_id: int, params: dict[str, Any], source: str) -> Any:
        """Run one trial on this bench's executor (raises what it raises: a failed experiment)."""
        with self._bench:
            with self._changed:
                self._running = (trial_id, params)
            try:
                result = self.executor.run(TrialRequest(trial_id, params, source))
            except Exception as err:
                self._remember(trial_id, params, "error", err)
                raise
            self._remember(trial_id, params, "result", result)
            return result

    def _remember(self, trial_id: int, params: dict[str, Any], kind: str, value: Any) -> None:
        with self._changed:
            self._finished[trial_id] = (params, kind, value)
            while len(self._finished) > REMEMBERED_TRIALS:
                self._finished.popitem(last=False)
            self._running = None
            self._changed.notify_all()

    def lookup(self, trial_id: int, params: dict[str, Any], wait_s: float | None) -> tuple[str, Any]:
        """``("result", value)`` / ``("error", exception)`` if this bench ran the trial, waiting up to
        ``wait_s`` (None: no limit) while it still runs it; ``("running", None)`` after that; else ``("unknown", None)``."""
        deadline = None if wait_s is None else time.monotonic() + wait_s
        with self._changed:
            while self._running is not None and self._running == (trial_id, params):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return "running", None
                self._changed.wait(left if left is None else min(left, 5.0))
            found = self._finished.get(trial_id)
        if found is not None and found[0] == params:
            return found[1], found[2]
        return "unknown", None

    def recover(self, trial_id: int, params: dict[str, Any], source: str) -> Any:
        """The bench executor's own re-check of an interrupted trial (holds the bench)."""
        with self._bench:
            return self.executor.recover(TrialRequest(trial_id, params, source))

    def close(self) -> None:
        with self._bench:
            self.executor.close()


_REMOTE_BENCH: Any = None


def _remote_bench() -> Any:
    global _REMOTE_BENCH
    if _REMOTE_BENCH is None:
        # max_concurrency > 1: describe/lookup answer while run holds the bench (its own lock)
        _REMOTE_BENCH = require_ray().remote(max_concurrency=4)(BenchActor)
    return _REMOTE_BENCH


# ---------------------------------------------------------------------------- the executor
@dataclass
class _Bench:
    """The campaign's handle on one bench."""

    spec: ResolvedBench
    actor: Any
    generation: int
    fingerprint: str
    restarts: int = 0
    stale: bool = False  # left by a previous session with other settings: replaced once it is idle

    @property
    def actor_name(self) -> str:
        return _actor_name(self.spec.name, self.generation)


def _actor_name(name: str, generation: int) -> str:
    return name if generation == 0 else f"{name}{_GENERATION}{generation}"


def _split_name(actor_name: str) -> tuple[str, int]:
    base, sep, gen = actor_name.rpartition(_GENERATION)
    return (base, int(gen)) if sep and gen.isdigit() else (actor_name, 0)


@register_executor("ray")
class RayExecutor(Executor):
    """Campaign executor ``ray``: trials run on benches, Ray actors of a cluster (see the module doc).

    Args:
        config: the campaign config; ``executor.bench`` is what each bench runs,
            ``executor.address`` the cluster, ``executor.options`` the
            :class:`~cryoopt.scale.options.RayExecutorOptions`.

    Raises:
        ConfigError: ``max_in_flight`` differs from the number of benches.
        BackendUnavailableError: Ray is not installed.

    Attributes:
        idempotent: the bench executor's (every bench's) declaration.
    """

    @classmethod
    def check_config(cls, config: CampaignConfig) -> list[tuple[str, str]]:
        """What a run would refuse, without starting Ray: the number of benches against
        ``max_in_flight``, and each bench's options (``executor.bench.options`` with the bench's
        own ``options`` merged over them) as the bench's executor type checks them."""
        from cryoopt.campaign.executors import executor_factory

        ex = config.executor
        if ex.bench is None:
            return []  # the config model refuses it
        opts = RayExecutorOptions.model_validate(ex.options)
        n = opts.count(config.max_in_flight)
        if n != config.max_in_flight:
            return [("max_in_flight", f"executor.options.benches gives {n} bench(es) but max_in_flight is "
                                      f"{config.max_in_flight}; each bench runs one trial at a time, so set "
                                      f"max_in_flight: {n}")]
        try:
            check = getattr(executor_factory(ex.bench.type), "check_config", None)
        except ConfigError as err:
            return [("executor.bench.type", str(err))]
        if not callable(check):
            return []
        out: list[tuple[str, str]] = []
        for spec in opts.resolve(config.max_in_flight):
            bench = ex.bench.model_copy(update={"options": {**ex.bench.options, **spec.options}})
            for path, msg in check(config.model_copy(update={"executor": bench})):
                key = path.removeprefix("executor.options.").split(".")[0] if path.startswith("executor.options.") else None
                where = (f"executor.options.benches.{spec.index}.options.{path.removeprefix('executor.options.')}"
                         if key is not None and key in spec.options else path.replace("executor.", "executor.bench.", 1))
                if (where, msg) not in out:
                    out.append((where, msg))
        return out

    def __init__(self, config: CampaignConfig) -> None:
        ex = config.executor
        if ex.type != "ray" or ex.bench is None:
            raise ConfigError("RayExecutor needs executor.type: ray and executor.bench (the executor each bench runs)")
        self.options = RayExecutorOptions.model_validate(ex.options)
        n = self.options.count(config.max_in_flight)
        if n != config.max_in_flight:
            raise ConfigError(
                f"executor.options.benches gives {n} bench(es) but max_in_flight is {config.max_in_flight}; "
                f"each bench runs one trial at a time, so set max_in_flight: {n}"
            )
        self.config = config
        self.namespace = bench_namespace(config)
        self._owns_cluster = connect(ex.address, runtime_env=self.options.runtime_env)
        self._ray = require_ray()
        self._lock = threading.Lock()
        self._idle: queue.Queue[_Bench] = queue.Queue()
        self._busy: set[int] = set()  # id() of the benches running a trial now
        self._closed = False
        self.benches: list[_Bench] = []
        self._previous: list[Any] = []  # actors of a previous session not reused: asked on recover, then released
        try:
            self._start_benches()
        except BaseException:
            self.close()
            raise
        for bench in self.benches:
            self._idle.put(bench)

    # ------------------------------------------------------------------ benches
    def _bench_config(self, spec: ResolvedBench) -> str:
        bench = self.config.executor.bench
        if bench is None:  # checked in __init__; keeps the type checker informed
            raise ConfigError("executor.bench is missing")
        bench = bench.model_copy(update={"options": {**bench.options, **spec.options}})
        return self.config.model_copy(update={"executor": bench}).model_dump_json()

    def _fingerprint(self, spec: ResolvedBench, config_json: str) -> str:
        """What makes a bench what it is: its config's identity (not the budget, tracking, ...) and its settings."""
        from cryoopt.config import CampaignConfig

        identity = CampaignConfig.model_validate_json(config_json).identity()
        text = json.dumps([identity, spec.model_dump(mode="json")], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _existing_actors(self) -> dict[str, list[tuple[int, str]]]:
        """Named actors in this campaign's namespace (a previous session's benches): base name -> [(generation, name)]."""
        out: dict[str, list[tuple[int, str]]] = {}
        for entry in self._ray.util.list_named_actors(all_namespaces=True):
            if entry.get("namespace") != self.namespace:
                continue
            base, gen = _split_name(entry["name"])
            out.setdefault(base, []).append((gen, entry["name"]))
        return out

    def _start_benches(self) -> None:
        ray = self._ray
        existing = self._existing_actors()
        specs = self.options.resolve(self.config.max_in_flight)
        wanted = {s.name for s in specs}
        for base, found in existing.items():  # benches of a previous session that this one does not have
            if base not in wanted:
                self._previous += [self._get_actor(name) for _, name in found]
        for spec in specs:
            config_json = self._bench_config(spec)
            fingerprint = self._fingerprint(spec, config_json)
            found = sorted(existing.get(spec.name, []))
            reused = None
            for gen, name in found:  # the newest live one of a previous session is reused if its settings match
                actor = self._get_actor(name)
                info = self._describe(actor)
                if info is None:
                    continue
                if reused is not None:
                    self._previous.append(reused.actor)
                reused = _Bench(spec, actor, gen, fingerprint, stale=info["fingerprint"] != fingerprint)
            if reused is not None:
                self.benches.append(reused)
                log.info("bench %s: reconnected to %s/%s", spec.name, self.namespace, reused.actor_name)
                continue
            generation = max((g for g, _ in found), default=-1) + 1
            self.benches.append(_Bench(spec, self._create(spec, config_json, fingerprint, generation), generation,
                                       fingerprint))
        infos = []
        for bench in self.benches:
            try:
                infos.append(ray.get(bench.actor.describe.remote()))
            except ray.exceptions.RayError as err:
                raise ConfigError(f"bench {bench.spec.name} could not start its executor "
                                  f"({config_summary(self.config.executor.bench)}): {err}") from None
        self.idempotent = all(info["idempotent"] for info in infos)  # type: ignore[misc]

    def _get_actor(self, name: str) -> Any:
        return self._ray.get_actor(name, namespace=self.namespace)

    def _describe(self, actor: Any) -> dict[str, Any] | None:
        try:
            return self._ray.get(actor.describe.remote(), timeout=ANSWER_S)
        except self._ray.exceptions.RayError:
            return None

    def _create(self, spec: ResolvedBench, config_json: str, fingerprint: str, generation: int) -> Any:
        name = _actor_name(spec.name, generation)
        return _remote_bench().options(
            name=name, namespace=self.namespace, lifetime="detached", get_if_exists=True,
            max_restarts=0, max_task_retries=0,  # a trial is never re-sent by Ray: the crash rule decides
            num_cpus=spec.num_cpus, num_gpus=spec.num_gpus, resources=spec.resources or None,
        ).remote(config_json, name, fingerprint)

    def _replace(self, bench: _Bench) -> bool:
        """Put a fresh actor in place of a dead or stale bench; False if the bench is given up."""
        ray = self._ray
        with contextlib.suppress(Exception):
            ray.kill(bench.actor, no_restart=True)
        if not bench.stale:
            bench.restarts += 1
            if bench.restarts > self.options.max_restarts:
                log.warning("bench %s died %d times; giving it up (executor.options.max_restarts=%d)",
                            bench.spec.name, bench.restarts, self.options.max_restarts)
                self.benches = [b for b in self.benches if b is not bench]
                return False
        bench.generation += 1
        bench.stale = False
        config_json = self._bench_config(bench.spec)
        bench.actor = self._create(bench.spec, config_json, bench.fingerprint, bench.generation)
        return True

    def _acquire(self) -> _Bench | None:
        """An idle bench (waits while all are busy); None once no bench is left."""
        while True:
            with self._lock:
                if not self.benches or self._closed:
                    return None
            try:
                bench = self._idle.get(timeout=1.0)
            except queue.Empty:
                continue
            if bench not in self.benches:
                continue
            if bench.stale:
                self._retire_previous()
                with self._lock:
                    self._replace(bench)
            with self._lock:
                self._busy.add(id(bench))
            return bench

    def _release(self, bench: _Bench) -> None:
        with self._lock:
            self._busy.discard(id(bench))
        if bench in self.benches:
            self._idle.put(bench)

    def _retire_previous(self) -> None:
        """Release a previous session's benches that this session does not use (after recovery)."""
        previous, self._previous = self._previous, []
        for actor in previous:
            with contextlib.suppress(Exception):
                self._ray.kill(actor, no_restart=True)

    # ------------------------------------------------------------------ Executor
    def run(self, trial: TrialRequest) -> Any:
        ray = self._ray
        if self._previous:
            self._retire_previous()  # recovery is over once trials start
        bench = self._acquire()
        if bench is None:
            raise TrialInterruptedError("no bench is left to run it", executor_lost=True)
        try:
            ref = bench.actor.run.remote(trial.id, dict(trial.params), trial.source)
            try:
                return ray.get(ref)
            except ray.exceptions.RayTaskError as err:  # the bench executor raised: a failed experiment
                cause = getattr(err, "cause", None)
                raise cause if isinstance(cause, Exception) else RuntimeError(str(err)) from None
            except ray.exceptions.RayError as err:  # the bench's worker or node died: cut off
                what = f"its bench {bench.spec.name} died ({type(err).__name__})"
                with self._lock:
                    kept = self._replace(bench)
                    lost = not self.benches
                log.warning("trial %d: %s; %s", trial.id, what,
                            "the bench is replaced" if kept else "the bench is given up")
                raise TrialInterruptedError(what, executor_lost=lost) from None
        finally:
            self._release(bench)

    def recover(self, trial: TrialRequest) -> Any | None:
        """The result of an interrupted trial if a bench ran it (waiting while one still does), else the
        bench executor's own re-check; None if neither knows."""
        ray = self._ray
        params = dict(trial.params)
        for actor in [b.actor for b in self.benches] + self._previous:
            try:
                kind, value = ray.get(actor.lookup.remote(trial.id, params, self.options.recover_wait_s))
            except ray.exceptions.RayError:
                continue
            if kind in ("result", "error"):
                log.info("trial %d: result collected from its bench", trial.id)
                return value
            if kind == "running":
                log.warning("trial %d still runs on a bench after %s s (executor.options.recover_wait_s); "
                            "the crash rule decides", trial.id, self.options.recover_wait_s)
                return None
        bench = self._acquire()
        if bench is None:
            return None
        try:
            return ray.get(bench.actor.recover.remote(trial.id, params, trial.source))
        finally:
            self._release(bench)

    def close(self) -> None:
        """Release the benches (their executors close first); shut down a cluster this executor started.

        A bench still running a trial (the run was aborted with trials in flight) is left
        to finish it, for the resume to collect, as after a crash.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            busy = [b for b in self.benches if id(b) in self._busy]
        ray = self._ray
        for bench in busy:
            log.warning("bench %s still runs a trial: left to finish it for the resume to collect "
                        "(release_benches() frees it if the campaign will not be resumed)", bench.spec.name)
        actors = [b.actor for b in self.benches if b not in busy] + self._previous
        closing = []
        for actor in actors:
            with contextlib.suppress(Exception):
                closing.append(actor.close.remote())
        with contextlib.suppress(Exception):
            ray.wait(closing, num_returns=len(closing), timeout=ANSWER_S)
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self.benches, self._previous = busy, []
        if self._owns_cluster:
            ray.shutdown()


def config_summary(executor: Any) -> str:
    """``type target`` of an executor config, for messages."""
    return " ".join(str(x) for x in (getattr(executor, "type", None), getattr(executor, "target", None)) if x)


def release_benches(config: CampaignConfig, *, address: str | None = "auto") -> list[str]:
    """Release the benches a killed campaign left on a cluster (when it will not be resumed).

    Returns the names of the actors released.
    """
    ray = require_ray()
    connect(address)
    namespace = bench_namespace(config)
    names = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry.get("namespace") == namespace:
            with contextlib.suppress(Exception):
                ray.kill(ray.get_actor(entry["name"], namespace=namespace), no_restart=True)
                names.append(entry["name"])
    return names
