from __future__ import annotations

import json
import math

import pytest

from cryoopt.exceptions import ParameterError, RegistryError, StateError, TrialError
from cryoopt.optim import Failure, Optimizer, TrialStatus, available_strategies, make_optimizer
from cryoopt.space import SearchSpace

SPACE = SearchSpace.from_dict(
    {
        "a": {"type": "float", "low": 0, "high": 1},
        "n": {"type": "int", "low": 1, "high": 9},
        "c": {"type": "categorical", "choices": ["x", "y", "z"]},
    }
)


def test_registry_lists_strategies() -> None:
    assert {"bo", "random", "sobol"} <= set(available_strategies())
    with pytest.raises(RegistryError, match="unknown optimizer strategy 'tpe'"):
        make_optimizer("tpe", SPACE)


@pytest.mark.parametrize("strategy", ["random", "sobol"])
def test_same_seed_same_proposals(strategy: str) -> None:
    a, b = make_optimizer(strategy, SPACE, seed=3), make_optimizer(strategy, SPACE, seed=3)
    pa, pb = [t.params for t in a.ask(6)], [t.params for t in b.ask(6)]
    assert pa == pb
    assert [t.params for t in make_optimizer(strategy, SPACE, seed=4).ask(6)] != pa


@pytest.mark.parametrize("strategy", ["random", "sobol"])
def test_batch_distinct_and_valid(strategy: str) -> None:
    trials = make_optimizer(strategy, SPACE, seed=0).ask(8)
    assert [t.id for t in trials] == list(range(8))
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == 8
    assert all(SPACE.is_feasible(t.params) and t.status is TrialStatus.PENDING for t in trials)


@pytest.mark.parametrize(
    ("value", "reason"),
    [(float("nan"), "nan"), (None, "None"), (Failure("knife broke"), "knife broke"),
     (RuntimeError("jam"), "RuntimeError: jam"), ({"objective": math.inf}, "inf")],
)
def test_failures_recorded_not_numbers(value, reason: str) -> None:
    opt = make_optimizer("random", SPACE, seed=0)
    (t,) = opt.ask()
    opt.tell(t, value)
    assert t.status is TrialStatus.FAILED and t.values is None and reason in t.error
    assert opt.completed == [] and opt.failed == [t]


def test_tell_errors() -> None:
    opt = make_optimizer("random", SPACE, seed=0, objectives={"q": "maximize", "time_h": "minimize"})
    with pytest.raises(TrialError, match=r"unknown trial 0; there are no trials yet: ask\(\) for one first"):
        opt.tell(0, 1.0)  # not 'numbered 0..-1'
    (t,) = opt.ask()
    with pytest.raises(TrialError, match="one number but there are 2 objectives"):
        opt.tell(t, 1.0)
    with pytest.raises(TrialError, match=r"missing objective\(s\) \['time_h'\]"):
        opt.tell(t, {"q": 1.0})
    opt.tell(t, {"q": 1.0, "time_h": 2.0})
    with pytest.raises(TrialError, match="already completed"):
        opt.tell(t, {"q": 1.0, "time_h": 2.0})
    with pytest.raises(TrialError, match="unknown trial 7; trials are numbered 0..0"):
        opt.tell(7, 1.0)
    with pytest.raises(ParameterError, match="positive integer"):
        opt.ask(0)


def test_outcome_constraint_metric_required_and_used() -> None:
    opt = make_optimizer("random", SPACE, seed=0, outcome_constraints=["prep_time_h <= 4"])
    a, b = opt.ask(2)
    with pytest.raises(TrialError, match="lacks constraint metric"):
        opt.tell(a, 1.0)
    opt.tell(a, {"objective": 10.0, "prep_time_h": 8.0})
    opt.tell(b, {"objective": 1.0, "prep_time_h": 2.0})
    assert opt.best() is b  # the better value breaks the constraint


def test_manual_trial_and_abandon() -> None:
    opt = make_optimizer("sobol", SPACE, seed=0)
    t = opt.add_trial({"a": 0.5, "n": 3, "c": "y"})
    assert t.source == "manual" and t.status is TrialStatus.PENDING
    with pytest.raises(ParameterError, match="outside the allowed range"):
        opt.add_trial({"a": 2.0, "n": 3, "c": "y"})
    opt.abandon(t, "operator cancelled")
    assert t.status is TrialStatus.ABANDONED and opt.pending == []


def test_pareto_front_nondominated() -> None:
    opt = make_optimizer("random", SPACE, seed=0, objectives={"q": "maximize", "t": "minimize"})
    values = [(1, 5), (2, 6), (0.5, 1), (0.4, 2), (2, 7)]  # (0.4, 2) dominated by (0.5, 1); (2, 7) by (2, 6)
    for trial, (q, t) in zip(opt.ask(len(values)), values):
        opt.tell(trial, {"q": q, "t": t})
    front = sorted((tr.values["q"], tr.values["t"]) for tr in opt.pareto_front())
    assert front == [(0.5, 1), (1, 5), (2, 6)]


@pytest.mark.parametrize("strategy", ["random", "sobol"])
def test_json_state_round_trip(strategy: str) -> None:
    opt = make_optimizer(strategy, SPACE, seed=5)
    for i, t in enumerate(opt.ask(5)):
        opt.tell(t, Failure("x") if i == 2 else float(i))
    opt.ask(1)  # one left pending
    text = opt.to_json()
    restored = Optimizer.from_json(text)
    assert json.loads(restored.to_json()) == json.loads(text)
    assert [t.params for t in restored.ask(4)] == [t.params for t in opt.ask(4)]
    assert restored.failed[0].id == 2 and len(restored.pending) == 5


def test_state_of_wrong_version_refused() -> None:
    state = make_optimizer("random", SPACE).state_dict() | {"version": 99}
    with pytest.raises(StateError, match="version 99"):
        Optimizer.from_state_dict(state)


def test_update_values_and_state_without_trials() -> None:
    opt = make_optimizer("random", SPACE, seed=0)
    a, b = opt.ask(2)
    opt.tell(a, 1.0)
    opt.tell(b, Failure("jam"))
    opt.update_values(a, {"objective": 2.5})
    assert opt.trial(0).values == {"objective": 2.5}
    with pytest.raises(TrialError, match="only completed trials"):
        opt.update_values(b, {"objective": 1.0})
    with pytest.raises(TrialError, match="not finite"):
        opt.update_values(a, {"objective": math.nan})
    state = opt.state_dict(include_trials=False)
    assert state["trials"] == [] and state["rng"] == opt.state_dict()["rng"]


def test_bo_strategy_is_imported_lazily() -> None:
    assert "bo" in available_strategies()
    assert make_optimizer("bo", SPACE, seed=0).strategy_name == "bo"


def test_multi_objective_best_is_the_balanced_compromise() -> None:
    """Fastest-but-useless and best-but-slowest are extremes; the fair point wins."""
    opt = make_optimizer("random", SPACE, seed=0, objectives={"quality": "maximize", "prep_time_h": "minimize"})
    values = [(0.0, 0.8), (0.19, 12.3), (0.068, 5.8), (0.048, 3.7)]
    for trial, (q, t) in zip(opt.ask(len(values)), values):
        opt.tell(trial, {"quality": q, "prep_time_h": t})
    assert opt.best().values == {"quality": 0.068, "prep_time_h": 5.8}


SMALL = SearchSpace.from_dict({"n": {"type": "int", "low": 1, "high": 3}, "buffer": {"type": "categorical", "choices": ["PBS", "TBS"]}})


def _key(params: dict) -> tuple:
    return tuple(sorted(params.items()))


def test_random_search_covers_a_small_discrete_space_before_repeating() -> None:
    """Six points: one at a time, six different ones; then batches of replicates, never twice in one batch."""
    opt = make_optimizer("random", SMALL, seed=0)
    seen = []
    for _ in range(6):
        (t,) = opt.ask()
        opt.tell(t, 0.0)
        seen.append(_key(t.params))
    assert len(set(seen)) == 6
    batch = opt.ask(4)  # every point has run: replicates now, but distinct and not pending twice
    assert len({_key(t.params) for t in batch}) == 4
    assert len({_key(t.params) for t in opt.ask(2)} | {_key(t.params) for t in batch}) == 6
    more = make_optimizer("random", SMALL, seed=1).ask(8)  # more than the space holds: repeats only then
    assert len({_key(t.params) for t in more[:6]}) == 6


@pytest.mark.parametrize(
    ("strategy", "options", "option", "match"),
    [("bo", {"raw_samples": 0}, "raw_samples", "must be an integer >= 1, got 0"),
     ("bo", {"raw_samples": 4, "num_restarts": 8}, "raw_samples", r"must be >= num_restarts \(8\)"),
     ("bo", {"mc_samples": 2.5}, "mc_samples", "must be an integer >= 1"),
     ("bo", {"n_initial": True}, "n_initial", "must be an integer >= 1"),
     ("bo", {"noise_floor": float("nan")}, "noise_floor", r"must be a number in \[0, 1\)"),
     ("bo", {"raw_sample": 64}, "raw_sample", "strategy 'bo' has no such option; its options: contexts, n_initial, num_restarts"),
     ("bo", {"seed": 3}, "seed", "is set by the caller"),
     ("bo", {"contexts": {"score": 5}}, "contexts", r"context 'score': give \(low, high\)"),
     ("random", {"n_initial": 3}, "n_initial", "strategy 'random' has no such option")],
)
def test_validate_options_names_the_option_and_the_rule(strategy: str, options: dict, option: str, match: str) -> None:
    from cryoopt.optim import OptionError, validate_options

    with pytest.raises(OptionError, match=f"^{option}: {match}") as info:
        validate_options(strategy, options)
    assert info.value.option == option and isinstance(info.value, ValueError)
    if strategy == "bo" and option not in ("seed", "contexts", "raw_sample"):  # the constructor: same rules
        with pytest.raises(OptionError, match=f"^{option}: {match}"):
            make_optimizer(strategy, SPACE, **options)


def test_validate_options_accepts_and_cleans_good_options() -> None:
    from cryoopt.optim import strategy_class, validate_options

    assert validate_options("bo", {"n_initial": 4, "raw_samples": 32, "num_restarts": 2, "noise_floor": 0}) == {
        "n_initial": 4, "raw_samples": 32, "num_restarts": 2, "noise_floor": 0.0}
    assert validate_options("sobol", {}) == {}
    assert strategy_class("bo").__name__ == "BayesianOptimizer"
    with pytest.raises(RegistryError, match="unknown optimizer strategy 'tpe'"):
        validate_options("tpe", {})
