from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryoopt.exceptions import ConstraintError, ParameterError
from cryoopt.space import CategoricalParameter, FloatParameter, IntParameter, LinearConstraint, SearchSpace

SPEC = {
    "section_thickness_nm": {"type": "float", "low": 50, "high": 300, "unit": "nm"},
    "cutting_speed_mm_s": {"type": "float", "low": 0.1, "high": 10, "log": True},
    "antibody_dilution": {"type": "float", "low": 50, "high": 2000, "log": True},
    "incubation_min": {"type": "int", "low": 5, "high": 240},
    "buffer": {"type": "categorical", "choices": ["PBS", "TBS", "HEPES"]},
}


@pytest.fixture
def space() -> SearchSpace:
    return SearchSpace.from_dict(SPEC)


def test_dict_round_trip(space: SearchSpace) -> None:
    again = SearchSpace.from_dict(space.to_dict())
    assert again == space
    assert again.to_dict()["parameters"]["section_thickness_nm"]["unit"] == "nm"


def test_constraints_and_safety_round_trip() -> None:
    s = SearchSpace.from_dict(
        {
            "knife_temp_c": {"type": "float", "low": -170, "high": -20, "safety": {"low": -160, "high": -30}},
            "specimen_temp_c": {"type": "float", "low": -170, "high": -20},
        },
        constraints=["knife_temp_c - specimen_temp_c <= 20"],
    )
    again = SearchSpace.from_dict(s.to_dict())
    assert again == s and again["knife_temp_c"].bounds == (-160, -30)


@settings(max_examples=60, deadline=None)
@given(
    t=st.floats(50, 300),
    v=st.floats(0.1, 10),
    d=st.floats(50, 2000),
    inc=st.integers(5, 240),
    buf=st.sampled_from(["PBS", "TBS", "HEPES"]),
)
def test_encode_decode_round_trip(t: float, v: float, d: float, inc: int, buf: str) -> None:
    space = SearchSpace.from_dict(SPEC)
    params = {"section_thickness_nm": t, "cutting_speed_mm_s": v, "antibody_dilution": d, "incubation_min": inc, "buffer": buf}
    x = space.encode(params)
    assert x.shape == (5,)
    assert np.all(x[:4] >= 0) and np.all(x[:4] <= 1)
    back = space.decode(x)
    assert back["incubation_min"] == inc and back["buffer"] == buf
    for k in ("section_thickness_nm", "cutting_speed_mm_s", "antibody_dilution"):
        assert math.isclose(back[k], params[k], rel_tol=1e-9)


def test_categorical_encoded_as_index_not_float(space: SearchSpace) -> None:
    x = space.encode({"section_thickness_nm": 80, "cutting_speed_mm_s": 1, "antibody_dilution": 500,
                      "incubation_min": 60, "buffer": "HEPES"})
    assert x[4] == 2.0
    assert space.categorical_dims == {4: [0.0, 1.0, 2.0]}
    # a value between two choices decodes to the nearest index, never a blend
    assert space.decode(np.r_[x[:4], 1.4])["buffer"] == "TBS"


def test_log_scale_midpoint_is_geometric_mean() -> None:
    p = FloatParameter("x", 1.0, 100.0, log=True)
    assert math.isclose(p.decode(0.5), 10.0)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"section_thickness_nm": 400}, r"'section_thickness_nm' = 400 nm is outside the allowed range \[50, 300\] nm"),
        ({"incubation_min": 7.5}, "must be an integer"),
        ({"buffer": "water"}, r"'buffer' = 'water' is not an allowed choice; allowed: \['PBS', 'TBS', 'HEPES'\]"),
        ({"cutting_speed_mm_s": "fast"}, "must be a number"),
        ({"cutting_speed_mm_s": float("nan")}, "must be finite"),
    ],
)
def test_bad_values_name_parameter_and_range(space: SearchSpace, params: dict, match: str) -> None:
    good = {"section_thickness_nm": 80, "cutting_speed_mm_s": 1, "antibody_dilution": 500, "incubation_min": 60, "buffer": "PBS"}
    with pytest.raises(ParameterError, match=match):
        space.validate(good | params)


def test_unknown_and_missing_keys_refused(space: SearchSpace) -> None:
    good = {"section_thickness_nm": 80, "cutting_speed_mm_s": 1, "antibody_dilution": 500, "incubation_min": 60, "buffer": "PBS"}
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) \['knife_angle'\]"):
        space.validate(good | {"knife_angle": 6})
    with pytest.raises(ParameterError, match=r"missing parameter\(s\) \['buffer'\]"):
        space.validate({k: v for k, v in good.items() if k != "buffer"})


def test_safety_range_refused_with_instrument_hint() -> None:
    p = FloatParameter("knife_temp_c", -170, -20, safety=(-160, -30), unit="C")
    assert p.validate(-100) == -100
    with pytest.raises(ParameterError, match=r"outside its safety limits \[-160, -30\] C"):
        p.validate(-165)
    # the safety range is what gets searched
    assert p.decode(0.0) == -160 and p.decode(1.0) == -30


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: FloatParameter("x", 1, 1), "low < high"),
        (lambda: FloatParameter("x", 0, 1, log=True), "log scale needs low > 0"),
        (lambda: FloatParameter("x", 0, 1, safety=(-1, 0.5)), "safety range"),
        (lambda: IntParameter("n", 0.5, 3), "must be an integer"),
        (lambda: CategoricalParameter("c", choices=("a", "a")), "duplicate"),
        (lambda: SearchSpace.from_dict({"x": {"type": "complex"}}), "'type' must be one of"),
        (lambda: SearchSpace.from_dict({"x": {"type": "float", "low": 0, "high": 1, "hgih": 2}}), r"unknown field\(s\) \['hgih'\]"),
        # a string is not a truth value, nor a list of letters; numbers must be numbers
        (lambda: SearchSpace.from_dict({"x": {"type": "float", "low": 1, "high": 2, "log": "false"}}), "log must be true or false"),
        (lambda: SearchSpace.from_dict({"b": {"type": "categorical", "choices": "PBS"}}), "choices must be a list"),
        (lambda: SearchSpace.from_dict({"b": {"type": "categorical", "choices": [["a", "b"]]}}), "string or a finite number"),
        (lambda: SearchSpace.from_dict({"x": {"type": "float", "low": "0", "high": 1}}), "low must be a number"),
        (lambda: SearchSpace.from_dict({"x": {"type": "float", "low": -1e308, "high": 1e308}}), "too wide"),
        (lambda: SearchSpace.from_dict({"x": {"type": "float", "low": 0, "high": 1, "safety": [0.5]}}), "safety must be"),
        (lambda: SearchSpace.from_dict({"": {"type": "float", "low": 0, "high": 1}}), "must not be empty"),
    ],
)
def test_bad_definitions(factory, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        factory()


def test_linear_constraint_parse_and_check() -> None:
    c = LinearConstraint.parse("knife_temp_c - specimen_temp_c <= 20")
    assert c.coefficients == {"knife_temp_c": 1.0, "specimen_temp_c": -1.0} and c.rhs == 20
    c2 = LinearConstraint.parse("2*a + 0.5 b >= 1")
    assert c2.coefficients == {"a": -2.0, "b": -0.5} and c2.rhs == -1
    assert c2.slack({"a": 1, "b": 0}) == pytest.approx(1.0)
    with pytest.raises(ParameterError, match="write it as"):
        LinearConstraint.parse("a + b")
    # products and juxtaposed names are not linear: refused, never read as a sum
    with pytest.raises(ParameterError, match="no products"):
        LinearConstraint.parse("a * b <= 1000")
    with pytest.raises(ParameterError, match="expected \\+ or - before 'b'"):
        LinearConstraint.parse("a b <= 100")
    with pytest.raises(ParameterError, match="finite"):
        LinearConstraint.parse("a + b <= 1e999")
    with pytest.raises(ParameterError, match="finite number"):
        LinearConstraint.from_spec({"coefficients": {"a": "x"}, "rhs": 1})


def test_constraint_violation_and_sampling() -> None:
    s = SearchSpace.from_dict(
        {"a": {"type": "float", "low": 0, "high": 10}, "b": {"type": "float", "low": 0, "high": 10}},
        constraints=["a + b <= 5"],
    )
    with pytest.raises(ConstraintError, match=r"'a \+ b <= 5' is violated: left side = 12"):
        s.validate({"a": 6, "b": 6})
    for method in ("random", "sobol"):
        pts = s.sample(50, rng=0, method=method)
        assert len(pts) == 50 and all(p["a"] + p["b"] <= 5 + 1e-9 for p in pts)


def test_encoded_constraints_match_original() -> None:
    s = SearchSpace.from_dict(
        {"a": {"type": "float", "low": -10, "high": 10}, "b": {"type": "int", "low": 0, "high": 20}},
        constraints=["a - 2*b <= -3"],
    )
    rng = np.random.default_rng(0)
    (idx, coef, rhs), = s.encoded_constraints()
    for _ in range(200):
        x = rng.random(2)
        p = {"a": -10 + 20 * x[0], "b": 20 * x[1]}  # relaxed int, as the GP sees it
        original_ok = p["a"] - 2 * p["b"] <= -3
        encoded_ok = sum(c * x[i] for i, c in zip(idx, coef)) >= rhs
        assert original_ok == encoded_ok


def test_constraint_on_log_or_categorical_refused() -> None:
    with pytest.raises(ParameterError, match="log-scaled"):
        SearchSpace.from_dict({"a": {"type": "float", "low": 1, "high": 10, "log": True}}, constraints=["a <= 3"])
    with pytest.raises(ParameterError, match="unknown parameter 'z'"):
        SearchSpace.from_dict({"a": {"type": "float", "low": 1, "high": 10}}, constraints=["a + z <= 3"])
