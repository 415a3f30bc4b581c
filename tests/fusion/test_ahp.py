"""AHP against Saaty's published examples."""

from __future__ import annotations

import numpy as np
import pytest

from cryoopt.exceptions import EvaluationError, InconsistentJudgmentError
from cryoopt.fusion import ahp_weights

# Saaty (2008), "Decision making with the analytic hierarchy process", Int. J. Services
# Sciences 1(1):83, Table 2 (also Saaty 2012, Notices AMS 60(2):192): relative consumption
# of drinks in the US. Published eigenvector .177 .019 .042 .116 .190 .129 .327, CR = .022.
DRINKS = [
    [1, 9, 5, 2, 1, 1, 1 / 2],
    [1 / 9, 1, 1 / 3, 1 / 9, 1 / 9, 1 / 9, 1 / 9],
    [1 / 5, 3, 1, 1 / 3, 1 / 4, 1 / 3, 1 / 9],
    [1 / 2, 9, 3, 1, 1 / 2, 1, 1 / 3],
    [1, 9, 4, 2, 1, 2, 1 / 2],
    [1, 9, 3, 1, 1 / 2, 1, 1 / 3],
    [2, 9, 9, 3, 2, 3, 1],
]
DRINKS_W = [0.177, 0.019, 0.042, 0.116, 0.190, 0.129, 0.327]

# Saaty (1977), "A scaling method for priorities in hierarchical structures", J. Math. Psych.
# 15:234, relative brightness of four chairs from a light source: eigenvector
# (.61, .24, .10, .05), lambda_max = 4.39, CI = .13, CR = .14 (> 0.1: inconsistent).
LIGHT = [[1, 5, 6, 7], [1 / 5, 1, 4, 6], [1 / 6, 1 / 4, 1, 4], [1 / 7, 1 / 6, 1 / 4, 1]]


def test_drinks_matrix_matches_published_weights_and_cr():
    res = ahp_weights(DRINKS, names=["coffee", "wine", "tea", "beer", "sodas", "milk", "water"])
    np.testing.assert_allclose(res.weights, DRINKS_W, atol=1.5e-3)
    assert res.cr == pytest.approx(0.022, abs=1e-3)
    assert sum(res.weights) == pytest.approx(1.0)


def test_light_matrix_is_refused_naming_conflicts_unless_allowed():
    with pytest.raises(InconsistentJudgmentError, match=r"CR = 0\.14\d.*Most conflicting judgments: .* vs ") as err:
        ahp_weights(LIGHT, names=["c1", "c2", "c3", "c4"])
    assert "allow_inconsistent=True" in str(err.value)
    res = ahp_weights(LIGHT, allow_inconsistent=True)
    np.testing.assert_allclose(res.weights, [0.61, 0.24, 0.10, 0.05], atol=0.011)
    assert res.lambda_max == pytest.approx(4.39, abs=0.005)
    assert res.ci == pytest.approx(0.13, abs=0.005)
    assert res.cr == pytest.approx(0.14, abs=0.006)


def test_the_most_conflicting_judgment_is_the_one_made_inconsistent():
    w = np.array([0.4, 0.3, 0.2, 0.1])
    a = w[:, None] / w[None, :]
    assert ahp_weights(a).cr == pytest.approx(0.0, abs=1e-12)  # consistent: a_ij = w_i / w_j
    np.testing.assert_allclose(ahp_weights(a).weights, w)
    a[0, 3], a[3, 0] = 1 / 4, 4  # reversed judgment
    with pytest.raises(InconsistentJudgmentError, match=r"Most conflicting judgments: c0 vs c3"):
        ahp_weights(a)


@pytest.mark.parametrize(
    "bad, match",
    [
        ([[1, 2], [2, 1]], "reciprocal"),
        ([[1, -2], [-0.5, 1]], "> 0"),
        ([[2, 1], [1, 2]], "diagonal"),
        ([[1, 2, 3]], "square"),
        ([[1, np.nan], [np.nan, 1]], "finite"),
    ],
)
def test_bad_matrices_are_refused(bad, match):
    with pytest.raises(EvaluationError, match=match):
        ahp_weights(bad)


def test_rounded_reciprocals_are_accepted():
    res = ahp_weights([[1, 3, 5], [0.333, 1, 3], [0.2, 0.333, 1]])
    assert res.weights[0] > res.weights[1] > res.weights[2]
