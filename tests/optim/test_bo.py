"""BayesianOptimizer: determinism, failures, constraints, batches, state, and finding optima.

Acquisition optimization is shortened (few restarts and raw samples), as BoTorch's
own test kit does, so these run in seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryoopt.optim import BayesianOptimizer, Failure, Optimizer, TrialStatus, optimize
from cryoopt.optim.problems import Branin
from cryoopt.space import SearchSpace

FAST = {"num_restarts": 2, "raw_samples": 32, "mc_samples": 64}

MIXED = SearchSpace.from_dict(
    {
        "a": {"type": "float", "low": 0, "high": 1},
        "b": {"type": "float", "low": 0, "high": 1},
        "n": {"type": "int", "low": 1, "high": 6},
        "c": {"type": "categorical", "choices": ["x", "y", "z"]},
    },
    constraints=["a + b <= 1.5"],
)


def mixed_objective(p: dict) -> float:
    return -((p["a"] - 0.7) ** 2) - (p["b"] - 0.2) ** 2 - 0.05 * abs(p["n"] - 4) + {"x": 0, "y": 0.3, "z": -0.2}[p["c"]]


CONTINUOUS = SearchSpace.from_dict(
    {"a": {"type": "float", "low": 0, "high": 1}, "b": {"type": "float", "low": 0, "high": 1},
     "n": {"type": "int", "low": 1, "high": 6}},
    constraints=["a + b <= 1.5"],
)


def continuous_objective(p: dict) -> float:
    return -((p["a"] - 0.7) ** 2) - (p["b"] - 0.2) ** 2 - 0.05 * abs(p["n"] - 4)


def run(opt: BayesianOptimizer, n_batches: int, q: int = 1, f=mixed_objective) -> None:
    for _ in range(n_batches):
        for t in opt.ask(q):
            opt.tell(t, f(t.params))


def test_same_seed_same_proposals() -> None:
    a, b = BayesianOptimizer(CONTINUOUS, seed=1, **FAST), BayesianOptimizer(CONTINUOUS, seed=1, **FAST)
    run(a, 6, f=continuous_objective), run(b, 6, f=continuous_objective)  # 5 initial points, then BO
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert any(t.source == "bo" for t in a.trials)


def test_proposals_respect_space_and_constraints() -> None:
    opt = BayesianOptimizer(MIXED, seed=0, n_initial=4, **FAST)
    run(opt, 4, q=2)
    for t in opt.trials:
        assert MIXED.is_feasible(t.params), t.params
        assert t.params["c"] in ("x", "y", "z") and isinstance(t.params["n"], int)


def test_batch_and_pending_proposals_distinct() -> None:
    opt = BayesianOptimizer(CONTINUOUS, seed=2, **FAST)
    run(opt, 5, f=continuous_objective)  # the initial design: the GP proposes the batches below
    batch = opt.ask(3)
    more = opt.ask(2)  # the 3 above are pending: must not be proposed again
    keys = [tuple(sorted(t.params.items())) for t in batch + more]
    assert len(set(keys)) == 5
    assert all(t.source in ("bo", "random") for t in batch + more)


def test_failed_trials_never_modelled_and_region_avoided() -> None:
    """Objective fails for a < 0.5: BO should learn to stay out once it has seen failures."""
    space = SearchSpace.from_dict({"a": {"type": "float", "low": 0, "high": 1}, "b": {"type": "float", "low": 0, "high": 1}})

    def f(p: dict) -> float:
        return math.nan if p["a"] < 0.5 else -((p["b"] - 0.5) ** 2) + 0.1 * p["a"]

    opt = BayesianOptimizer(space, seed=0, n_initial=6, **FAST)
    run(opt, 14, f=f)  # 8 BO proposals: none failed on seeds 0-3 (the 3 failures are initial-design points)
    X, Y = opt._training_data()
    assert X.shape[0] == len(opt.completed) and bool(np.isfinite(Y.numpy()).all())
    bo_trials = [t for t in opt.trials if t.source == "bo"]
    fail_rate = np.mean([t.status is TrialStatus.FAILED for t in bo_trials])
    assert len(opt.failed) >= 1 and fail_rate <= 0.2, fail_rate  # random search fails 50% here


def test_state_round_trip_continues_identically() -> None:
    opt = BayesianOptimizer(CONTINUOUS, seed=4, **FAST)
    run(opt, 5, f=continuous_objective)  # the initial design: the failed and pending trials are the GP's
    (t,) = opt.ask()
    opt.tell(t, Failure("jam"))
    opt.ask()  # pending
    restored = Optimizer.from_json(opt.to_json())
    assert isinstance(restored, BayesianOptimizer) and restored.num_restarts == 2
    assert [x.params for x in restored.ask(2)] == [x.params for x in opt.ask(2)]


def test_multi_objective_with_outcome_constraint() -> None:
    space = SearchSpace.from_dict({"x": {"type": "float", "low": 0, "high": 1}})

    def f(p: dict) -> dict:
        x = p["x"]
        return {"quality": x, "prep_time_h": 1 + 4 * x**2, "cost": x}

    opt = BayesianOptimizer(space, seed=0, objectives={"quality": "maximize", "prep_time_h": "minimize"},
                            outcome_constraints=["cost <= 0.8"], n_initial=4, **FAST)
    run(opt, 6, f=f)
    assert any(t.source == "bo" for t in opt.trials)
    front = opt.pareto_front()
    assert front and all(t.values["cost"] <= 0.8 for t in front)
    best = opt.best()
    assert best is not None and opt.is_feasible(best)


def test_noise_aware_best_prefers_model_mean() -> None:
    """With noise, best() picks by posterior mean: a lucky draw at a bad point does not win."""
    space = SearchSpace.from_dict({"x": {"type": "float", "low": 0, "high": 1}})
    opt = BayesianOptimizer(space, seed=0, **FAST)
    rng = np.random.default_rng(0)
    xs = np.linspace(0, 1, 21)
    for x in xs:
        t = opt.add_trial({"x": float(x)})
        opt.tell(t, -((x - 0.5) ** 2) + rng.normal(0, 0.01))
    lucky = opt.add_trial({"x": 0.02})
    opt.tell(lucky, 0.05)  # an outlier far above the true -0.23
    assert abs(opt.best().params["x"] - 0.5) <= 0.1
    mean, std = opt.predict([{"x": 0.5}])
    assert mean.shape == (1, 1) and abs(mean[0, 0]) < 0.02 and std[0, 0] > 0


def test_noise_floor_keeps_the_gp_from_interpolating_a_lucky_run() -> None:
    """8 runs in 4-D where only x0 matters and one run is +1 lucky: the default GP
    explains it with the three idle dimensions (noise ~0.01 of the variance); with a
    floor of half the variance it must believe clearly less of it. The floor is kept
    in the optimizer's state."""
    space = SearchSpace.from_dict({f"x{i}": {"type": "float", "low": 0, "high": 1} for i in range(4)})
    pts = space.sample(8, rng=0, method="sobol")
    lucky = 3

    def fit(noise_floor: float) -> float:
        opt = BayesianOptimizer(space, seed=0, noise_floor=noise_floor, **FAST)
        for i, p in enumerate(pts):
            opt.tell(opt.add_trial(p), p["x0"] + (1.0 if i == lucky else 0.0))
        mean, _ = opt.predict([pts[lucky]])
        if noise_floor:
            assert Optimizer.from_state_dict(opt.state_dict()).noise_floor == noise_floor
        return float(mean[0, 0]) - pts[lucky]["x0"]  # how much of the +1 the GP believes

    believed = fit(0.0)
    assert believed > 0.9
    assert fit(0.5) < believed - 0.1
    with pytest.raises(ValueError, match="noise_floor"):
        BayesianOptimizer(space, noise_floor=1.0)


@pytest.mark.slow
def test_finds_branin_optimum_region_within_16_evaluations() -> None:
    """Branin's maxima (of -f): (-pi, 12.275), (pi, 2.275), (9.42478, 2.475) (Dixon & Szego 1978).

    Measured: each of seeds 0-2 first observes a hit at evaluation 10, 11 and 13, and recommends one
    after 16 and after 30; after 20, seed 1 recommends a point just outside (a posterior-mean belief,
    not the best observation), which is why 2 of 3 seeds are asked."""
    optima = np.array([[-math.pi, 12.275], [math.pi, 2.275], [9.42478, 2.475]])
    hits = 0
    for seed in range(3):
        problem = Branin(noise_frac=0.01, seed=seed)
        result = optimize(problem, problem.space, budget=16, seed=seed, num_restarts=2, raw_samples=64, progress=False)
        x = np.array([result.best.params["x1"], result.best.params["x2"]])
        regret = problem.normalized_regret(result.best.params)
        hits += bool(np.min(np.linalg.norm(optima - x, axis=1)) < 1.0 and regret < 0.01)
        if hits >= 2:  # 2 of 3 seeds: a third run cannot change the verdict
            break
    assert hits >= 2


def test_integer_batch_is_distinct_and_comes_from_the_model() -> None:
    """ask(4) on a 24-point integer space: four different points, none a random fill-in for a rounded duplicate."""
    space = SearchSpace.from_dict({"n": {"type": "int", "low": 1, "high": 6}, "m": {"type": "int", "low": 1, "high": 4}})
    opt = BayesianOptimizer(space, seed=0, n_initial=6, **FAST)
    for t in opt.ask(6):
        opt.tell(t, -((t.params["n"] - 4) ** 2) - (t.params["m"] - 2) ** 2)
    for _ in range(2):
        batch = opt.ask(4)
        keys = {tuple(sorted(t.params.items())) for t in batch}
        assert len(keys) == 4 and all(isinstance(t.params["n"], int) for t in batch)
        assert sum(t.source == "bo" for t in batch) >= 3, [t.source for t in batch]
        for t in batch:
            opt.tell(t, -((t.params["n"] - 4) ** 2) - (t.params["m"] - 2) ** 2)


def test_random_fallback_never_repeats_the_batch() -> None:
    """The replacement for a colliding proposal is checked against the batch (it used to repeat points)."""
    space = SearchSpace.from_dict({"n": {"type": "int", "low": 1, "high": 3}, "m": {"type": "int", "low": 1, "high": 2}})
    opt = BayesianOptimizer(space, seed=0)
    taken = [{"n": n, "m": m} for n in (1, 2, 3) for m in (1, 2)][:5]
    points = opt._random_points(1, avoid=taken)
    assert points == [{"n": 3, "m": 2}]  # the only point left


def test_optimize_shows_a_line_per_evaluation_without_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="cryoopt.optim.api")
    optimize(lambda p: p["a"], CONTINUOUS, budget=3, seed=0, strategy="random")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("optimize:")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"] and "best" in lines[-1]
    caplog.clear()
    optimize(lambda p: p["a"], CONTINUOUS, budget=2, seed=0, strategy="random", progress=False)
    assert not [r for r in caplog.records if r.getMessage().startswith("optimize:")]


def test_no_proposal_deep_inside_a_mapped_failing_region_next_to_the_optimum() -> None:
    """Quality rises up to x = 0.7, every run beyond it failed: the next batch stays out of x > 0.75.

    As a smoothed MC constraint of qLogNEI the failures were outweighed by the gain the GP
    extrapolates past the edge (13 of 20 proposals failed there); weighted by the analytic
    probability of running, a batch goes to the edge, not past it.
    """
    space = SearchSpace.from_dict({"x": {"type": "float", "low": 0, "high": 1}, "y": {"type": "float", "low": 0, "high": 1}})
    opt = BayesianOptimizer(space, seed=0, **FAST)
    rng = np.random.default_rng(0)
    for x, y in rng.random((24, 2)):
        value = math.nan if x > 0.7 else x - 0.5 * (y - 0.4) ** 2
        opt.tell(opt.add_trial({"x": float(x), "y": float(y)}), value)
    assert len(opt.failed) >= 5
    batch = opt.ask(3)
    assert all(t.source == "bo" for t in batch)
    xs = [t.params["x"] for t in batch]
    assert max(xs) <= 0.75 and any(x >= 0.6 for x in xs), xs  # at the edge, where the quality is, not past it
