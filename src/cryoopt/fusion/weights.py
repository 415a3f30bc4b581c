"""Shapley-AHP reward weights, updated as operator ratings arrive.

The prior comes from the operator's AHP comparison of the reward terms
(:func:`~cryoopt.fusion.ahp.ahp_weights`). Each operator rating of a sample (an
overall quality judgment of a sample whose term values are known) adds one row to
a ratings table; the Shapley values of the terms in the
:class:`~cryoopt.fusion.shapley.RatingsGame` (the share of the ratings' variance
each term explains) give data-driven weights ``s``. The two are mixed

.. math:: w = (1 - \\alpha)\\, w_{AHP} + \\alpha\\, s, \\qquad \\alpha = \\frac{n}{n + n_0}

with ``n`` the number of ratings and ``n_0 = prior_strength``: the AHP judgment
dominates while ratings are few, the ratings take over as they accumulate. Until
``len(terms) + 2`` ratings exist (too few to fit a regression) ``alpha = 0``.
Negative Shapley values (a term that hurts the fit) are clipped to 0; if all are
0 the AHP weights stand.

Example:
    >>> ws = ShapleyAHPWeights(np.ones((5, 5)))
    >>> ws.weights["logic"]
    0.2
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cryoopt.exceptions import EvaluationError
from cryoopt.fusion.ahp import AHPResult, ahp_weights
from cryoopt.fusion.reward import REWARD_TERMS, term_features
from cryoopt.fusion.shapley import RatingsGame, shapley_values

__all__ = ["Rating", "ShapleyAHPWeights"]


@dataclass(frozen=True)
class Rating:
    """An operator's overall rating of one sample and that sample's term scores."""

    values: Mapping[str, float]
    rating: float


class ShapleyAHPWeights:
    """Reward weights w1..w5 from an AHP prior and Shapley attribution of ratings.

    Args:
        comparisons: `k x k` AHP pairwise comparison matrix over ``terms``.
        terms: reward term names (default the five standard ones).
        prior_strength: ``n_0``, number of ratings worth as much as the AHP prior.
        allow_inconsistent: accept an AHP matrix with CR > 0.1.
        impact_max: as in :func:`~cryoopt.fusion.reward.fused_reward` (ratings use the
            same transformed terms as the reward).
        seed: for Shapley permutation sampling (only used beyond 10 terms).
    """

    def __init__(
        self,
        comparisons: Sequence[Sequence[float]] | np.ndarray,
        *,
        terms: Sequence[str] = REWARD_TERMS,
        prior_strength: float = 10.0,
        allow_inconsistent: bool = False,
        impact_max: float = 1e3,
        seed: int = 0,
    ) -> None:
        if not (math.isfinite(prior_strength) and prior_strength > 0):
            raise EvaluationError(f"prior_strength must be > 0, got {prior_strength}")
        self.terms = tuple(terms)
        self.comparisons = np.asarray(comparisons, dtype=float)
        self.ahp: AHPResult = ahp_weights(self.comparisons, names=self.terms, allow_inconsistent=allow_inconsistent)
        self.prior_strength = float(prior_strength)
        self.allow_inconsistent = allow_inconsistent
        self.impact_max = impact_max
        self.seed = seed
        self._rows: list[list[float]] = []
        self._ratings: list[float] = []
        self.shapley: dict[str, float] | None = None
        self._weights = self.ahp.as_dict()

    @property
    def weights(self) -> dict[str, float]:
        """Current weights by term, summing to 1."""
        return dict(self._weights)

    @property
    def n_ratings(self) -> int:
        return len(self._ratings)

    @property
    def alpha(self) -> float:
        """Share of the Shapley weights in the mix."""
        if self.shapley is None:
            return 0.0
        return self.n_ratings / (self.n_ratings + self.prior_strength)

    def update(self, ratings: Iterable[Rating | tuple[Mapping[str, float], float]]) -> dict[str, float]:
        """Add operator ratings and recompute the weights; returns the new weights.

        Ratings whose terms are missing or not finite are refused (a failed
        evaluation cannot be rated into the weights).
        """
        for r in ratings:
            values, rating = (r.values, r.rating) if isinstance(r, Rating) else r
            row = term_features(values, self.terms, impact_max=self.impact_max)
            if not all(math.isfinite(x) for x in row) or not math.isfinite(float(rating)):
                raise EvaluationError(f"rating {rating!r} of {dict(values)} has missing or non-finite terms; drop it")
            self._rows.append(row)
            self._ratings.append(float(rating))
        self._refit()
        return self.weights

    def _refit(self) -> None:
        prior = np.array(self.ahp.weights)
        if self.n_ratings < len(self.terms) + 2:
            self.shapley = None
            self._weights = dict(zip(self.terms, prior.tolist()))
            return
        game = RatingsGame(np.array(self._rows), np.array(self._ratings), list(self.terms))
        phi = shapley_values(game, list(self.terms), seed=self.seed).values
        self.shapley = {k: float(v) for k, v in phi.items()}
        s = np.clip(np.array([phi[t] for t in self.terms]), 0.0, None)
        if s.sum() <= 0:
            w = prior
        else:
            a = self.alpha
            w = (1 - a) * prior + a * s / s.sum()
        self._weights = dict(zip(self.terms, (w / w.sum()).tolist()))

    # -- journal ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "terms": list(self.terms),
            "comparisons": self.comparisons.tolist(),
            "prior_strength": self.prior_strength,
            "allow_inconsistent": self.allow_inconsistent,
            "impact_max": self.impact_max,
            "seed": self.seed,
            "rows": [list(r) for r in self._rows],
            "ratings": list(self._ratings),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShapleyAHPWeights:
        obj = cls(
            data["comparisons"],
            terms=data["terms"],
            prior_strength=data["prior_strength"],
            allow_inconsistent=data["allow_inconsistent"],
            impact_max=data["impact_max"],
            seed=data["seed"],
        )
        obj._rows = [list(map(float, r)) for r in data["rows"]]
        obj._ratings = [float(x) for x in data["ratings"]]
        obj._refit()
        return obj
