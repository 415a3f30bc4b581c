"""map_seeds: same seeds, same numbers, whatever the backend; results in seed order; errors name their seed."""

from __future__ import annotations

import functools
import random
import time

import numpy as np
import pytest
import torch

from cryoopt.scale.seeds import map_seeds


def global_draws(seed: int) -> tuple[float, float, float]:
    """Uses the global RNGs only: equal across backends only if each task is seeded the same way."""
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def draws_out_of_order(seed: int) -> tuple[float, float, float]:
    time.sleep(0.1 * (3 - seed))  # later seeds finish first
    return global_draws(seed)


def fails_on(seed: int, bad: int) -> int:
    if seed == bad:
        raise ValueError(f"diverged at seed {seed}")
    return seed


def short_bo(seed: int) -> list[float]:
    """A short BO run on noisy Branin (GP fit, acquisition optimization: torch all the way)."""
    from cryoopt.optim import BayesianOptimizer
    from cryoopt.optim.problems import Branin

    problem = Branin(seed=1000 + seed)
    opt = BayesianOptimizer(problem.space, seed=seed, n_initial=3, num_restarts=2, raw_samples=32, mc_samples=32)
    values = []
    for _ in range(5):
        (trial,) = opt.ask()
        values.append(problem(trial.params))
        opt.tell(trial, values[-1])
    values.append(problem.normalized_regret(opt.best().params))
    return values


def test_local_backend_seeds_each_call_and_leaves_the_callers_rngs_alone() -> None:
    random.seed(123)
    before = random.random()
    random.seed(123)
    first = map_seeds(global_draws, [5, 6])
    assert random.random() == before, "the caller's RNG state is restored"
    assert first == map_seeds(global_draws, [5, 6]) and first[0] != first[1]
    assert map_seeds(global_draws, [6, 5]) == first[::-1], "a seed's result does not depend on its position"


def test_processes_backend_gives_the_local_numbers_in_seed_order() -> None:
    seeds = [0, 1, 2, 3]
    assert map_seeds(draws_out_of_order, seeds, backend="processes", workers=2) == map_seeds(global_draws, seeds)


def test_ray_backend_gives_the_local_numbers_in_seed_order(ray_cluster: str) -> None:
    seeds = [0, 1, 2, 3]
    # two workers: each fresh worker imports torch, which a 2-core CI machine pays for in seconds
    assert map_seeds(draws_out_of_order, seeds, backend="ray", workers=2) == map_seeds(global_draws, seeds)


def test_same_seeds_same_bo_numbers_locally_and_on_ray(ray_cluster: str) -> None:
    local = map_seeds(short_bo, [0, 1])
    remote = map_seeds(short_bo, [0, 1], backend="ray", workers=2)
    assert remote == local  # bit for bit: trials, noise and the recommendation's regret
    assert local[0] != local[1]


@pytest.mark.parametrize("backend", ["local", "processes", "ray"])
def test_a_failing_seed_raises_its_own_error_naming_the_seed(backend: str, request: pytest.FixtureRequest,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cancelled: list[object] = []
    if backend == "ray":
        request.getfixturevalue("ray_cluster")
        import ray

        # one worker: nothing else runs when seed 2 fails, so nothing is cancelled (cancelling the
        # task Ray has just finished can abort the driver)
        monkeypatch.setattr(ray, "cancel", lambda ref, **kw: cancelled.append(ref))
    with pytest.raises(ValueError, match="diverged at seed 2") as info:
        map_seeds(functools.partial(fails_on, bad=2), [0, 1, 2, 3], backend=backend, workers=1)
    assert any("seed 2" in note for note in getattr(info.value, "__notes__", []))
    assert cancelled == []


def test_bad_arguments_are_refused_with_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="backend must be one of local, processes, ray"):
        map_seeds(global_draws, [0], backend="threads")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seeds must be integers"):
        map_seeds(global_draws, [0.5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="address is for backend 'ray'"):
        map_seeds(global_draws, [0], address="auto")
