"""Pareto fronts and the balanced compromise on them (utilities: larger is better)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pareto_indices(utilities: Sequence[Sequence[float]] | np.ndarray) -> list[int]:
    """Indices of the rows no other row dominates (``>=`` everywhere, ``>`` somewhere)."""
    ys = np.asarray(utilities, dtype=float)
    return [i for i, y in enumerate(ys) if not any(np.all(z >= y) and np.any(z > y) for z in ys)]


def balanced_compromise(utilities: Sequence[Sequence[float]] | np.ndarray) -> int:
    """Index of the balanced compromise among Pareto-optimal rows.

    Objectives are min-max normalized over the rows; the row whose *worst*
    normalized objective is best wins, ties broken by the larger sum. An extreme
    row (say the fastest block with zero quality) is never chosen while a row that
    is fair on every objective exists.
    """
    ys = np.asarray(utilities, dtype=float)
    span = np.ptp(ys, axis=0)
    normalized = (ys - ys.min(axis=0)) / np.where(span > 0, span, 1.0)
    order = np.lexsort((normalized.sum(axis=1), normalized.min(axis=1)))  # the last key is primary
    return int(order[-1])
