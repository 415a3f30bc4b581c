"""Analytic Hierarchy Process: priority weights from pairwise comparisons.

Saaty's method: the priorities are the principal (Perron) eigenvector ``w`` of the
positive reciprocal comparison matrix ``A`` (``a_ij`` = how much more important
``i`` is than ``j``, ``a_ji = 1/a_ij``), normalised to sum to one. Consistency:

.. math::

    \\mathrm{CI} = \\frac{\\lambda_{max} - n}{n - 1}, \\qquad
    \\mathrm{CR} = \\frac{\\mathrm{CI}}{\\mathrm{RI}_n}

with Saaty's random indices ``RI_n`` (Saaty 1980, *The Analytic Hierarchy
Process*, McGraw-Hill; Saaty 2012 for n = 11..15). A matrix with CR > 0.1 is
refused with :class:`~cryoopt.exceptions.InconsistentJudgmentError`, naming the
judgments that deviate most from the ratios the weights imply
(``e_ij = a_ij w_j / w_i``, ranked by ``|ln e_ij|``), unless
``allow_inconsistent=True``.

Example:
    >>> res = ahp_weights([[1, 3], [1 / 3, 1]], names=["logic", "novelty"])
    >>> [round(w, 3) for w in res.weights], res.cr
    ([0.75, 0.25], 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from cryoopt.exceptions import EvaluationError, InconsistentJudgmentError

__all__ = ["SAATY_RANDOM_INDEX", "AHPResult", "Judgment", "ahp_weights"]

#: Saaty's random consistency index RI by matrix order n.
SAATY_RANDOM_INDEX = MappingProxyType(
    {1: 0.0, 2: 0.0, 3: 0.58, 4: 0.90, 5: 1.12, 6: 1.24, 7: 1.32, 8: 1.41, 9: 1.45, 10: 1.49,
     11: 1.51, 12: 1.48, 13: 1.56, 14: 1.57, 15: 1.59}
)


@dataclass(frozen=True)
class Judgment:
    """One pairwise judgment ``a_ij`` and the ratio ``w_i / w_j`` the weights imply."""

    first: str
    second: str
    judgment: float
    implied: float

    @property
    def log_error(self) -> float:
        """``|ln(a_ij / (w_i/w_j))|``: 0 for a judgment the weights reproduce."""
        return abs(math.log(self.judgment / self.implied))

    def __str__(self) -> str:
        return f"{self.first} vs {self.second}: judged {self.judgment:.3g}, weights imply {self.implied:.3g}"


@dataclass(frozen=True)
class AHPResult:
    """Priorities and consistency of a comparison matrix.

    Attributes:
        names: criterion names, in matrix order.
        weights: priorities (principal eigenvector), sum to 1.
        lambda_max: principal eigenvalue.
        ci: consistency index ``(lambda_max - n) / (n - 1)`` (0 for n <= 2).
        cr: consistency ratio ``ci / RI_n`` (0 for n <= 2).
        conflicts: all judgments ranked by ``log_error``, worst first.
    """

    names: tuple[str, ...]
    weights: tuple[float, ...]
    lambda_max: float
    ci: float
    cr: float
    conflicts: tuple[Judgment, ...]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.weights))


def _check_matrix(matrix: object, rtol: float) -> np.ndarray:
    a = np.asarray(matrix, dtype=float)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise EvaluationError(f"comparison matrix must be square and non-empty, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise EvaluationError("comparison matrix entries must be finite and > 0 (Saaty scale 1/9 .. 9)")
    if not np.allclose(np.diag(a), 1.0):
        raise EvaluationError("comparison matrix diagonal must be 1 (each criterion equals itself)")
    bad = np.argwhere(~np.isclose(a * a.T, 1.0, rtol=rtol))
    if bad.size:
        i, j = bad[0]
        raise EvaluationError(
            f"comparison matrix is not reciprocal: a[{i},{j}] = {a[i, j]:.4g} but a[{j},{i}] = {a[j, i]:.4g}; "
            "set the lower triangle to 1 / the upper triangle"
        )
    # exact reciprocity from the upper triangle (tolerates 0.333 for 1/3)
    return np.triu(a) + np.tril(1.0 / a.T, -1)


def ahp_weights(
    matrix: Sequence[Sequence[float]] | np.ndarray,
    *,
    names: Sequence[str] | None = None,
    allow_inconsistent: bool = False,
    max_cr: float = 0.1,
    reciprocal_rtol: float = 2e-3,
) -> AHPResult:
    """Priority weights of a pairwise comparison matrix (principal eigenvector).

    Args:
        matrix: `n x n` positive reciprocal matrix, ``a_ij`` = importance of i over j.
        names: criterion names (default ``"c0".."c{n-1}"``).
        allow_inconsistent: return the weights even if CR > ``max_cr``.
        max_cr: consistency ratio above which the matrix is refused (Saaty: 0.1).
        reciprocal_rtol: tolerance for ``a_ij * a_ji == 1`` (rounded entries like 0.333).

    Returns:
        :class:`AHPResult`.

    Raises:
        EvaluationError: matrix not square, not positive or not reciprocal; n > 15.
        InconsistentJudgmentError: CR > ``max_cr`` and not ``allow_inconsistent``;
            the message names the most conflicting judgments.
    """
    a = _check_matrix(matrix, reciprocal_rtol)
    n = a.shape[0]
    names = tuple(f"c{i}" for i in range(n)) if names is None else tuple(str(x) for x in names)
    if len(names) != n or len(set(names)) != n:
        raise EvaluationError(f"need {n} distinct names, got {names}")
    if n not in SAATY_RANDOM_INDEX:
        raise EvaluationError(f"AHP with {n} criteria: Saaty's random index is tabulated up to 15; group criteria into a hierarchy")
    vals, vecs = np.linalg.eig(a)
    k = int(np.argmax(vals.real))
    lam = float(vals[k].real)
    w = np.abs(vecs[:, k].real)
    w = w / w.sum()
    ci = 0.0 if n <= 2 else max(0.0, (lam - n) / (n - 1))
    cr = 0.0 if n <= 2 else ci / SAATY_RANDOM_INDEX[n]
    judgments = [
        Judgment(names[i], names[j], float(a[i, j]), float(w[i] / w[j])) for i in range(n) for j in range(i + 1, n)
    ]
    judgments.sort(key=lambda jd: jd.log_error, reverse=True)
    result = AHPResult(names, tuple(float(x) for x in w), lam, ci, cr, tuple(judgments))
    if cr > max_cr and not allow_inconsistent:
        worst = "; ".join(str(jd) for jd in judgments[:3])
        raise InconsistentJudgmentError(
            f"comparison matrix is inconsistent: CR = {cr:.3f} > {max_cr} (lambda_max = {lam:.3f}, CI = {ci:.3f}). "
            f"Most conflicting judgments: {worst}. Revise these, or pass allow_inconsistent=True"
        )
    return result
