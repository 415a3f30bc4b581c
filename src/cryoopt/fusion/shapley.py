"""Shapley attribution of an overall quality judgment to its metrics.

The Shapley value of player ``i`` in a cooperative game ``v`` over players ``N``:

.. math::

    \\phi_i = \\sum_{S \\subseteq N \\setminus \\{i\\}}
              \\frac{|S|!\\,(n - |S| - 1)!}{n!}\\,\\bigl(v(S \\cup \\{i\\}) - v(S)\\bigr)

(Shapley 1953, "A value for n-person games", Contrib. Theory of Games II). It is
the unique attribution with efficiency (``sum phi = v(N) - v(empty)``), symmetry,
null player and additivity. :func:`shapley_values` enumerates all coalitions
exactly up to ``exact_max_players`` (default 10, i.e. 1024 coalitions) and
otherwise averages marginal contributions over seeded random permutations
(Castro, Gomez & Tejada 2009, Comput. Oper. Res. 36:1726), with standard errors.

:class:`RatingsGame` is the value function for metrics: ``v(S)`` is the R^2 of the
least-squares fit of operator/expert ratings on the metrics in ``S`` (Shapley value
regression, Lipovetsky & Conklin 2001, Appl. Stoch. Models Bus. Ind. 17:319).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from cryoopt.exceptions import EvaluationError

__all__ = ["RatingsGame", "ShapleyResult", "shapley_values"]


@dataclass(frozen=True)
class ShapleyResult:
    """Shapley values by player; ``std_error`` is 0 for exact enumeration."""

    values: dict[Hashable, float]
    std_error: dict[Hashable, float]
    exact: bool
    n_evaluations: int


def shapley_values(
    value: Callable[[frozenset], float],
    players: Sequence[Hashable],
    *,
    exact_max_players: int = 10,
    n_permutations: int = 2000,
    seed: int | np.random.Generator | None = 0,
) -> ShapleyResult:
    """Shapley value of each player of the game ``value``.

    Args:
        value: coalition (``frozenset`` of players) -> worth; called once per
            coalition (results are cached). Must be finite.
        players: distinct hashable players.
        exact_max_players: enumerate all ``2^n`` coalitions up to this many players.
        n_permutations: permutations sampled beyond that.
        seed: seed or Generator for the sampling (ignored when exact).

    Returns:
        :class:`ShapleyResult`.

    Example:
        >>> glove = lambda s: float(min(len(s & {"L"}), len(s & {"R1", "R2"})))
        >>> r = shapley_values(glove, ["L", "R1", "R2"])
        >>> round(r.values["L"], 4), round(r.values["R1"], 4)
        (0.6667, 0.1667)
    """
    players = list(players)
    n = len(players)
    if n == 0:
        raise EvaluationError("shapley_values needs at least one player")
    if len(set(players)) != n:
        raise EvaluationError(f"players must be distinct, got {players}")
    cache: dict[frozenset, float] = {}

    def v(s: frozenset) -> float:
        if s not in cache:
            x = float(value(s))
            if not math.isfinite(x):
                raise EvaluationError(f"value of coalition {sorted(map(str, s))} is {x}; the game must be finite")
            cache[s] = x
        return cache[s]

    if n <= exact_max_players:
        phi = dict.fromkeys(players, 0.0)
        fact = [math.factorial(k) for k in range(n + 1)]
        for i, p in enumerate(players):
            others = players[:i] + players[i + 1 :]
            for k in range(n):
                wk = fact[k] * fact[n - k - 1] / fact[n]
                for combo in itertools.combinations(others, k):
                    s = frozenset(combo)
                    phi[p] += wk * (v(s | {p}) - v(s))
        return ShapleyResult(phi, dict.fromkeys(players, 0.0), True, len(cache))
    if n_permutations < 2:
        raise EvaluationError("n_permutations must be >= 2")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    contrib = np.zeros((n_permutations, n))
    for t in range(n_permutations):
        order = rng.permutation(n)
        s: frozenset = frozenset()
        prev = v(s)
        for idx in order:
            s = s | {players[idx]}
            cur = v(s)
            contrib[t, idx] = cur - prev
            prev = cur
    mean = contrib.mean(axis=0)
    se = contrib.std(axis=0, ddof=1) / math.sqrt(n_permutations)
    return ShapleyResult(
        {p: float(m) for p, m in zip(players, mean)}, {p: float(e) for p, e in zip(players, se)}, False, len(cache)
    )


class RatingsGame:
    """``v(S)`` = R^2 of ratings regressed (OLS with intercept) on the metrics in ``S``.

    ``v(empty) = 0`` and ``v(N)`` is the full model's R^2, so the Shapley values
    split the explained variance of the ratings among the metrics (Lipovetsky &
    Conklin 2001).

    Args:
        metrics: `n_ratings x n_metrics` metric values of the rated samples.
        ratings: `n_ratings` overall ratings.
        names: metric names (the players).
        ridge: small ridge penalty for rank-deficient designs.
    """

    def __init__(self, metrics: np.ndarray, ratings: np.ndarray, names: Sequence[str], *, ridge: float = 1e-9) -> None:
        x = np.asarray(metrics, dtype=float)
        y = np.asarray(ratings, dtype=float)
        if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[1] != len(names):
            raise EvaluationError(
                f"metrics must be n_ratings x {len(names)} and ratings n_ratings long; got {x.shape} and {y.shape}"
            )
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise EvaluationError("ratings and metrics must be finite; drop failed evaluations first")
        if x.shape[0] < 3:
            raise EvaluationError(f"need at least 3 ratings to fit a value function, got {x.shape[0]}")
        self.names = list(names)
        self._x = x - x.mean(axis=0)
        self._y = y - y.mean()
        self._sst = float(self._y @ self._y)
        self._ridge = ridge
        self._index = {n: i for i, n in enumerate(self.names)}

    def __call__(self, coalition: frozenset) -> float:
        if not coalition or self._sst == 0:
            return 0.0
        cols = [self._index[c] for c in coalition]
        xs = self._x[:, cols]
        gram = xs.T @ xs + self._ridge * np.eye(len(cols))
        beta = np.linalg.solve(gram, xs.T @ self._y)
        resid = self._y - xs @ beta
        return float(max(0.0, 1.0 - (resid @ resid) / self._sst))
