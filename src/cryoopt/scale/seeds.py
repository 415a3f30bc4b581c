"""Run one function over many seeds, in this process, in local processes or on a Ray cluster.

:func:`map_seeds` is how benchmarks and sweeps spread their seeds: the results come
back in seed order and each call starts from a state fixed by its seed alone (global
RNGs seeded, torch held to a fixed thread count), so the numbers do not depend on the
backend, the number of workers or the order in which tasks happen to run.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar

__all__ = ["BACKENDS", "map_seeds"]

T = TypeVar("T")
Backend = Literal["local", "processes", "ray"]
BACKENDS: tuple[str, ...] = ("local", "processes", "ray")


def _seeded_call(fn: Callable[[int], T], seed: int, threads: int) -> T:
    """``fn(seed)`` from a state fixed by ``seed``: Python's, NumPy's and torch's global RNGs, torch threads."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    return fn(seed)


def _local_call(fn: Callable[[int], T], seed: int, threads: int) -> T:
    """:func:`_seeded_call` in this process, leaving the caller's RNG states and thread count as they were."""
    import numpy as np
    import torch

    saved = random.getstate(), np.random.get_state(), torch.get_rng_state(), torch.get_num_threads()
    try:
        return _seeded_call(fn, seed, threads)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])
        torch.set_num_threads(saved[3])


def _annotate(err: BaseException, seed: int) -> BaseException:
    if hasattr(err, "add_note"):
        err.add_note(f"(map_seeds: in the task of seed {seed})")
    return err


def map_seeds(
    fn: Callable[[int], T],
    seeds: Iterable[int],
    *,
    backend: Backend = "local",
    address: str | None = None,
    workers: int | None = None,
    threads: int = 1,
    progress: bool | None = None,
    label: str | None = None,
) -> list[T]:
    """``[fn(seed) for seed in seeds]``, run on ``backend``; results in seed order.

    Each call starts from the same state on every backend: Python's, NumPy's and torch's
    global RNGs seeded from its seed, and torch held to ``threads`` threads (results of
    parallel reductions can change with the thread count). So the same seeds give the
    same numbers locally, in processes and on Ray, whatever the scheduling.

    Args:
        fn: a function of the seed. For ``processes`` it must be importable (defined at
            module level, or a :func:`functools.partial` of one); Ray also ships functions
            defined in a script.
        seeds: the seeds (integers).
        backend: ``local`` (one after the other, in this process), ``processes`` (a pool
            of ``workers`` local processes) or ``ray`` (one task per seed on a cluster).
        address: ``ray``: the cluster to join (``auto``, ``host:port``, ``ray://...``); default:
            the cluster this process is connected to, else a new local one.
        workers: at most this many seeds at once (``processes``: default the CPU count;
            ``ray``: default all, the cluster's free CPUs decide).
        threads: torch threads per call (and CPUs each Ray task reserves).
        progress: show a progress bar (default: when stderr is a terminal).
        label: the progress bar's label.

    Raises:
        ValueError: an unknown backend, a non-integer seed or a bad count.
        BackendUnavailableError: ``ray`` without Ray installed.
        Exception: the first failing call's exception, noted with its seed.

    Example:
        >>> def regret(seed):
        ...     return run_benchmark(problem, seed=seed)
        >>> map_seeds(regret, range(10), backend="ray")   # == map_seeds(regret, range(10))
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    seed_list = list(seeds)
    for s in seed_list:
        if isinstance(s, bool) or not isinstance(s, int) and type(s).__module__ != "numpy":
            raise ValueError(f"seeds must be integers, got {s!r}")
    seed_list = [int(s) for s in seed_list]
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if address is not None and backend != "ray":
        raise ValueError(f"address is for backend 'ray', not {backend!r}")
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=len(seed_list), desc=label or f"seeds ({backend})", disable=not show, leave=False)
    try:
        if backend == "local":
            out = []
            for s in seed_list:
                try:
                    out.append(_local_call(fn, s, threads))
                except Exception as err:
                    raise _annotate(err, s)
                bar.update()
            return out
        if backend == "processes":
            return _run_processes(fn, seed_list, workers, threads, bar)
        return _run_ray(fn, seed_list, address, workers, threads, bar)
    finally:
        bar.close()


def _run_processes(fn: Callable[[int], T], seeds: list[int], workers: int | None, threads: int, bar: Any) -> list[T]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # spawn, not fork: a forked child of a process that ran torch's thread pool may hang
    ctx = multiprocessing.get_context("spawn")
    n = min(workers or os.cpu_count() or 1, max(len(seeds), 1))
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        futures = [pool.submit(_seeded_call, fn, s, threads) for s in seeds]
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    if fut.exception() is not None:
                        raise _annotate(fut.exception(), seeds[futures.index(fut)])  # type: ignore[arg-type]
                    bar.update()
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
        return [f.result() for f in futures]


def _run_ray(fn: Callable[[int], T], seeds: list[int], address: str | None, workers: int | None, threads: int,
             bar: Any) -> list[T]:
    from cryoopt.scale.cluster import connect, require_ray

    ray = require_ray()
    connect(address)
    task = ray.remote(num_cpus=threads)(_seeded_call)
    fn_ref = ray.put(fn)  # shipped once, not once per seed
    limit = workers or len(seeds)
    refs: list[Any] = []
    index: dict[Any, int] = {}
    running: list[Any] = []
    try:
        for i, s in enumerate(seeds):
            while len(running) >= limit:
                _collect(ray, running, index, seeds, bar)
            ref = task.remote(fn_ref, s, threads)
            refs.append(ref)
            index[ref] = i
            running.append(ref)
        while running:
            _collect(ray, running, index, seeds, bar)
    except BaseException:
        for ref in running:  # only tasks not yet seen to finish (see _collect)
            ray.cancel(ref)
        raise
    return ray.get(refs)


def _collect(ray: Any, running: list[Any], index: dict[Any, int], seeds: list[int], bar: Any) -> None:
    """Wait for one task to finish and take it off ``running``; raise its error (the original
    exception, noted with its seed). It leaves ``running`` before its error is raised: cancelling
    a task Ray has just finished races with Ray's own bookkeeping of it and can abort the driver
    (a failed internal check, "Tried to complete task that was not pending")."""
    done, rest = ray.wait(running, num_returns=1)
    running[:] = rest
    for ref in done:
        try:
            ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            cause = err.cause if isinstance(getattr(err, "cause", None), BaseException) else err
            raise _annotate(cause, seeds[index[ref]]) from None
        bar.update()
