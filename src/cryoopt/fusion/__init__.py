"""Reward fusion: AHP priorities, Shapley attribution and the fused reward.

``R = w1*Logic + w2*Novelty + w3*log(Impact + 1) + w4*dRepro + w5*Meta`` with weights
from :class:`ShapleyAHPWeights` (AHP prior, updated by operator ratings).
"""

from cryoopt.fusion.ahp import SAATY_RANDOM_INDEX, AHPResult, Judgment, ahp_weights
from cryoopt.fusion.reward import REWARD_TERMS, RewardResult, RewardTerm, TermValue, fused_reward, reward_terms
from cryoopt.fusion.shapley import RatingsGame, ShapleyResult, shapley_values
from cryoopt.fusion.weights import Rating, ShapleyAHPWeights

__all__ = [
    "REWARD_TERMS",
    "SAATY_RANDOM_INDEX",
    "AHPResult",
    "Judgment",
    "Rating",
    "RatingsGame",
    "RewardResult",
    "RewardTerm",
    "ShapleyAHPWeights",
    "ShapleyResult",
    "TermValue",
    "ahp_weights",
    "fused_reward",
    "reward_terms",
    "shapley_values",
]
