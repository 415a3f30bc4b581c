"""Reward: formula, breakdown, bounds, NaN safety; Shapley-AHP weights updated by ratings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryoopt.exceptions import EvaluationError, InconsistentJudgmentError, RegistryError
from cryoopt.fusion import REWARD_TERMS, Rating, ShapleyAHPWeights, fused_reward
from cryoopt.pipeline.scores import Scores, score

W = {"logic": 0.3, "novelty": 0.1, "impact": 0.2, "d_repro": 0.2, "meta": 0.2}


def test_reward_formula_and_breakdown():
    v = {"logic": 0.8, "novelty": 0.4, "impact": 2.0, "d_repro": -0.5, "meta": 0.9}
    r = fused_reward(v, W)
    expected = 0.3 * 0.8 + 0.1 * 0.4 + 0.2 * math.log(3.0) + 0.2 * -0.5 + 0.2 * 0.9
    assert r.value == pytest.approx(expected)
    assert not r.failed
    assert r.reward_terms["impact"] == pytest.approx(
        {"weight": 0.2, "raw": 2.0, "value": math.log(3.0), "contribution": 0.2 * math.log(3.0)}
    )
    assert sum(t["contribution"] for t in r.reward_terms.values()) == pytest.approx(r.value)
    json.dumps(r.to_dict())


def test_reward_reads_scores_and_normalises_weights():
    s = Scores({k: score(k, 0.5) for k in REWARD_TERMS})
    a = fused_reward(s, W)
    b = fused_reward(s, {k: 10 * v for k, v in W.items()})
    assert a.value == pytest.approx(b.value)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "n/a"])
def test_nan_marks_failed_never_a_nan_reward(bad):
    v = {"logic": bad, "novelty": 0.4, "impact": 2.0, "d_repro": 0.0, "meta": 0.9}
    r = fused_reward(v, W)
    assert r.failed and r.value is None and "logic" in r.reason
    with pytest.raises(EvaluationError, match="failed"):
        float(r)
    with pytest.raises(EvaluationError, match="logic"):
        fused_reward(v, W, strict=True)


def test_missing_term_fails_unless_weight_zero():
    v = {"logic": 0.8, "novelty": 0.4, "impact": 2.0, "d_repro": 0.0}
    assert fused_reward(v, W).failed
    assert not fused_reward(v, {**W, "meta": 0.0}).failed


def test_bad_weights_are_refused():
    v = dict.fromkeys(REWARD_TERMS, 0.5)
    with pytest.raises(EvaluationError, match=">= 0"):
        fused_reward(v, {**W, "logic": -1})
    with pytest.raises(EvaluationError, match="sum to 0"):
        fused_reward(v, dict.fromkeys(REWARD_TERMS, 0.0))
    with pytest.raises(RegistryError, match="available"):
        fused_reward(v, {"nonsense": 1.0})


finite_or_wild = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=64), st.just(1e308))


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({k: finite_or_wild for k in REWARD_TERMS}))
def test_reward_is_bounded_for_any_finite_input(v):
    r = fused_reward(v, W, impact_max=100.0)
    lo, hi = r.bounds
    assert lo == pytest.approx(-0.2) and hi == pytest.approx(0.8 + 0.2 * math.log(101))
    assert lo - 1e-12 <= r.value <= hi + 1e-12


AHP_MATRIX = np.array(
    [  # logic, novelty, impact, d_repro, meta: logic most important
        [1, 3, 3, 5, 5],
        [1 / 3, 1, 1, 3, 3],
        [1 / 3, 1, 1, 3, 3],
        [1 / 5, 1 / 3, 1 / 3, 1, 1],
        [1 / 5, 1 / 3, 1 / 3, 1, 1],
    ]
)


def _ratings(n, rng):
    out = []
    for _ in range(n):
        v = {"logic": rng.uniform(), "novelty": rng.uniform(), "impact": rng.uniform(0, 5), "d_repro": rng.uniform(-1, 1), "meta": rng.uniform()}
        out.append(Rating(v, 3.0 * v["meta"] + 0.05 * rng.normal()))  # this operator only cares about meta
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weights_start_at_ahp_and_move_towards_what_operators_rate(seed):
    rng = np.random.default_rng(seed)
    ws = ShapleyAHPWeights(AHP_MATRIX, prior_strength=10)
    prior = ws.weights
    assert max(prior, key=prior.get) == "logic" and sum(prior.values()) == pytest.approx(1)
    ws.update(_ratings(3, rng))
    assert ws.weights == prior and ws.alpha == 0.0  # too few ratings to fit
    ws.update(_ratings(37, rng))
    assert ws.alpha == pytest.approx(40 / 50)
    # Shapley regression shares credit with terms that correlate with meta by chance, hence > 0.6
    assert ws.weights["meta"] > 0.6 and max(ws.weights, key=ws.weights.get) == "meta"
    assert sum(ws.weights.values()) == pytest.approx(1)
    back = ShapleyAHPWeights.from_dict(json.loads(json.dumps(ws.to_dict())))
    assert back.weights == pytest.approx(ws.weights)
    assert fused_reward(dict.fromkeys(REWARD_TERMS, 0.5), ws).value is not None


def test_weights_refuse_inconsistent_prior_and_failed_ratings():
    bad = AHP_MATRIX.copy()
    bad[0, 4], bad[4, 0] = 1 / 9, 9
    with pytest.raises(InconsistentJudgmentError, match="logic vs meta"):
        ShapleyAHPWeights(bad)
    ws = ShapleyAHPWeights(bad, allow_inconsistent=True)
    with pytest.raises(EvaluationError, match="non-finite"):
        ws.update([Rating({**dict.fromkeys(REWARD_TERMS, 0.5), "logic": math.nan}, 1.0)])
