"""Shapley values: axioms and games with known solutions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cryoopt.exceptions import EvaluationError
from cryoopt.fusion import RatingsGame, shapley_values


def glove(s: frozenset) -> float:
    left = len(s & {"L1"})
    right = len(s & {"R1", "R2"})
    return float(min(left, right))


def test_glove_game_known_solution():
    # Glove game with one left and two right gloves: phi = (2/3, 1/6, 1/6)
    # (e.g. Maschler, Solan & Zamir, Game Theory, 2013, Example 18.7).
    r = shapley_values(glove, ["L1", "R1", "R2"])
    assert r.exact
    assert r.values["L1"] == pytest.approx(2 / 3)
    assert r.values["R1"] == pytest.approx(1 / 6)
    assert r.values["R2"] == pytest.approx(1 / 6)


def _airport(costs):
    costs = dict(costs)
    return lambda s: max((costs[p] for p in s), default=0.0)


def _littlechild_owen(costs):
    # Littlechild & Owen (1973), Management Sci. 20:370: with c_1 <= ... <= c_n,
    # phi_i = sum_{k<=i} (c_k - c_{k-1}) / (n - k + 1).
    c = [0.0] + sorted(costs)
    n = len(costs)
    return [sum((c[k] - c[k - 1]) / (n - k + 1) for k in range(1, i + 1)) for i in range(1, n + 1)]


def test_airport_game_exact():
    costs = [1.0, 2.0, 4.0, 7.0, 7.5]
    players = [f"p{i}" for i in range(len(costs))]
    r = shapley_values(_airport(zip(players, costs)), players)
    np.testing.assert_allclose([r.values[p] for p in players], _littlechild_owen(costs))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_airport_game_sampled_beyond_exact_limit(seed):
    costs = list(np.linspace(1, 12, 12))
    players = [f"p{i}" for i in range(12)]
    r = shapley_values(_airport(zip(players, costs)), players, n_permutations=3000, seed=seed)
    assert not r.exact
    ref = _littlechild_owen(costs)
    for p, v in zip(players, ref):
        assert r.values[p] == pytest.approx(v, abs=max(4 * r.std_error[p], 1e-9))
    # efficiency holds exactly per permutation
    assert sum(r.values.values()) == pytest.approx(12.0)
    again = shapley_values(_airport(zip(players, costs)), players, n_permutations=3000, seed=seed)
    assert again.values == r.values


def test_axioms_efficiency_symmetry_null_player_additivity():
    rng = np.random.default_rng(0)
    players = ["a", "b", "c", "d", "z"]
    base = {frozenset(s): float(rng.uniform()) for k in range(5) for s in itertools.combinations("abcd", k)}
    base[frozenset()] = 0.0
    # make a and b symmetric; z is a null player
    def v(s):
        core = frozenset(s - {"z"})
        key = frozenset({"a": "b", "b": "a"}.get(p, p) for p in core)
        return 0.5 * (base[core] + base[key])
    r = shapley_values(v, players)
    assert sum(r.values.values()) == pytest.approx(v(frozenset(players)) - v(frozenset()))
    assert r.values["a"] == pytest.approx(r.values["b"])
    assert r.values["z"] == pytest.approx(0.0, abs=1e-12)
    r2 = shapley_values(lambda s: 2 * v(s) + glove(s & {"L1"}), players)
    for p in players:
        assert r2.values[p] == pytest.approx(2 * r.values[p])


def test_ratings_game_efficiency_equals_full_r2():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = 2 * x[:, 0] + 0.5 * x[:, 1] + 0.1 * rng.normal(size=60)
    game = RatingsGame(x, y, ["logic", "novelty", "noise"])
    r = shapley_values(game, game.names)
    assert sum(r.values.values()) == pytest.approx(game(frozenset(game.names)))
    assert r.values["logic"] > r.values["novelty"] > r.values["noise"] >= 0
    with pytest.raises(EvaluationError, match="at least 3"):
        RatingsGame(x[:2], y[:2], game.names)


def test_bad_games_are_refused():
    with pytest.raises(EvaluationError, match="finite"):
        shapley_values(lambda s: float("nan") if s else 0.0, ["a", "b"])
    with pytest.raises(EvaluationError, match="distinct"):
        shapley_values(glove, ["L1", "L1"])
    with pytest.raises(EvaluationError, match="at least one"):
        shapley_values(glove, [])
