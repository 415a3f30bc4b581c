"""Multi-fidelity BO: a cheap, biased measurement and an expensive target one.

Synthetic problems with a known answer: the cheap fidelity reads the target plus a known
offset, so a belief "at the target" must not carry the offset, and a protocol seen only
cheaply must not be adopted over one seen at the target.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cryoopt.exceptions import ParameterError
from cryoopt.optim import BayesianOptimizer, OptionError, validate_options
from cryoopt.space import SearchSpace

FAST = {"num_restarts": 1, "raw_samples": 16, "mc_samples": 32}
SPACE = SearchSpace.from_dict({"x": {"type": "float", "low": 0, "high": 1}, "y": {"type": "float", "low": 0, "high": 1}})
COSTS = {"lm_quick_look": 1.0, "em_series": 4.0}
#: what the cheap fidelity adds to the target's value
OFFSET = 0.5


def target(p: dict) -> float:
    return 1.0 - 2.0 * ((p["x"] - 0.6) ** 2 + (p["y"] - 0.4) ** 2)


def measure(p: dict, fidelity: str) -> float:
    return target(p) + (OFFSET if fidelity == "lm_quick_look" else 0.0)


def run(opt: BayesianOptimizer, params: dict, fidelity: str) -> None:
    t = opt.add_trial(params, source="manual")
    t.metadata["fidelity"] = fidelity
    opt.tell(t, measure(params, fidelity))


@pytest.mark.parametrize(("spec", "match"), [
    ({"em": 1.0}, ">= 2 fidelity names"),
    ([1.0, 2.0], ">= 2 fidelity names"),
    ({"lm": 1.0, "em": -4.0}, "cost of 'em' must be a finite number > 0"),
    ({"lm": 1.0, "em": float("inf")}, "finite number > 0"),
    ({"lm": 2.0, "em": 2.0}, "strictly most"),
    ({"": 1.0, "em": 2.0}, "non-empty strings"),
])
def test_validate_options_rejects_bad_fidelities_naming_the_option(spec: object, match: str) -> None:
    with pytest.raises(OptionError, match=match) as err:
        validate_options("bo", {"fidelities": spec})
    assert err.value.option == "fidelities"


def test_validate_options_accepts_fidelities_and_checks_the_acquisition() -> None:
    clean = validate_options("bo", {"fidelities": COSTS, "fidelity_acquisition": "kg"})
    assert clean["fidelities"] == COSTS and clean["fidelity_acquisition"] == "kg"
    assert json.loads(json.dumps(clean)) == clean  # as a config would keep them
    with pytest.raises(OptionError, match=r"one of \('mes', 'kg'\)") as err:
        validate_options("bo", {"fidelity_acquisition": "ucb"})
    assert err.value.option == "fidelity_acquisition"


@pytest.mark.parametrize("kwargs", [
    {"objectives": {"quality": "maximize", "prep_time_h": "minimize"}},
    {"contexts": {"screening_score": (0.0, 1.0)}},
    {"outcome_constraints": ["prep_time_h <= 4"]},
])
def test_what_multi_fidelity_does_not_model_is_refused(kwargs: dict) -> None:
    with pytest.raises(OptionError, match="multi-fidelity BO needs") as err:
        BayesianOptimizer(SPACE, fidelities=COSTS, **kwargs)
    assert err.value.option == "fidelities"
    mixed = SearchSpace.from_dict({"x": {"type": "float", "low": 0, "high": 1}, "n": {"type": "int", "low": 1, "high": 5}})
    with pytest.raises(OptionError, match="continuous space"):
        BayesianOptimizer(mixed, fidelities=COSTS)


def test_initial_design_runs_every_third_point_at_the_target() -> None:
    opt = BayesianOptimizer(SPACE, seed=0, n_initial=6, fidelities=COSTS, **FAST)
    trials = opt.ask(6)
    assert [opt.fidelity_of(t) for t in trials] == ["em_series", "lm_quick_look", "lm_quick_look"] * 2
    assert all(t.metadata["fidelity"] == opt.fidelity_of(t) for t in trials)
    manual = opt.add_trial({"x": 0.5, "y": 0.5})
    assert opt.fidelity_of(manual) == "em_series"  # a trial that does not say runs at the target
    assert BayesianOptimizer(SPACE, **FAST).fidelity_of(BayesianOptimizer(SPACE).add_trial({"x": 0.1, "y": 0.1})) is None
    with pytest.raises(ParameterError, match="fidelity must be one of"):
        opt.ask(fidelity="sem")
    (forced,) = opt.ask(fidelity="lm_quick_look")
    assert opt.fidelity_of(forced) == "lm_quick_look"


def _observed() -> BayesianOptimizer:
    """Cheap looks all over the square, target runs at three points (none at the optimum)."""
    opt = BayesianOptimizer(SPACE, seed=0, fidelities=COSTS, **FAST)
    rng = np.random.default_rng(0)
    for x, y in rng.uniform(0, 1, (10, 2)):
        run(opt, {"x": float(x), "y": float(y)}, "lm_quick_look")
    for p in ({"x": 0.1, "y": 0.9}, {"x": 0.5, "y": 0.5}, {"x": 0.9, "y": 0.1}):
        run(opt, p, "em_series")
    run(opt, {"x": 0.6, "y": 0.4}, "lm_quick_look")  # the optimum, seen only cheaply
    return opt


def test_beliefs_are_at_the_target_fidelity_and_adopt_only_what_ran_there() -> None:
    opt = _observed()
    mean, _ = opt.predict([{"x": 0.5, "y": 0.5}, {"x": 0.1, "y": 0.9}])
    truth = [target({"x": 0.5, "y": 0.5}), target({"x": 0.1, "y": 0.9})]
    # the target's values, not the cheap fidelity's (which read 0.5 higher)
    assert np.allclose(mean[:, 0], truth, atol=0.15)
    rec = opt.recommend()
    assert rec.params == {"x": 0.5, "y": 0.5}  # best of the protocols seen at the target
    assert rec.mean["objective"] == pytest.approx(target(rec.params), abs=0.15)


def test_ask_chooses_a_point_and_a_fidelity_and_the_state_round_trips_exactly() -> None:
    opt = _observed()
    state = opt.to_json()
    assert json.loads(state)["settings"]["fidelities"] == COSTS
    restored = BayesianOptimizer.from_json(state)
    assert restored.to_json() == state
    (a,) = opt.ask()
    (b,) = restored.ask()
    assert a.params == b.params and opt.fidelity_of(a) == restored.fidelity_of(b)
    assert opt.fidelity_of(a) in COSTS and a.source in ("bo", "random")
    assert 0.0 <= a.params["x"] <= 1.0 and 0.0 <= a.params["y"] <= 1.0
    opt.tell(a, measure(a.params, opt.fidelity_of(a)))
    assert BayesianOptimizer.from_json(opt.to_json()).trials[-1].metadata["fidelity"] == opt.fidelity_of(a)


def test_a_failed_measurement_is_recorded_and_kept_out_of_the_model() -> None:
    opt = _observed()
    t = opt.add_trial({"x": 0.3, "y": 0.3})
    t.metadata["fidelity"] = "lm_quick_look"
    opt.tell(t, float("nan"))
    assert t in opt.failed
    X, Y = opt._training_data()
    assert X.shape == (len(opt.completed), 3) and np.isfinite(Y.numpy()).all()


def test_the_knowledge_gradient_also_chooses_a_point_and_a_fidelity(monkeypatch: pytest.MonkeyPatch) -> None:
    from cryoopt.optim import multifidelity

    monkeypatch.setattr(multifidelity, "NUM_FANTASIES", 4)  # the one-shot problem's size: (1 + fantasies) x d
    monkeypatch.setattr(multifidelity, "KG_MAXITER", 20)
    opt = BayesianOptimizer(SPACE, seed=1, n_initial=4, fidelities=COSTS, fidelity_acquisition="kg", **FAST)
    for p, fid in (({"x": 0.2, "y": 0.2}, "em_series"), ({"x": 0.8, "y": 0.7}, "em_series"),
                   ({"x": 0.5, "y": 0.5}, "lm_quick_look"), ({"x": 0.3, "y": 0.8}, "lm_quick_look")):
        run(opt, p, fid)
    (t,) = opt.ask()
    assert opt.fidelity_of(t) in COSTS and t.source in ("bo", "random")
    assert json.loads(opt.to_json())["settings"]["fidelity_acquisition"] == "kg"
