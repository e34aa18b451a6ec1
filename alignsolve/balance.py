"""Load balance measures shared by the result type and the load monitor: Gini and coefficient of variation."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["coefficient_of_variation", "gini"]


def gini(values: Any) -> float:
    """Gini coefficient of non-negative loads, ``sum_ij |x_i - x_j| / (2 n^2 mean)``; 0 when all are 0.

    0 is perfect balance; ``1 - 1/n`` is everything on one expert.
    """
    x = np.sort(np.asarray(values, dtype=float).ravel())
    n = x.size
    total = float(x.sum())
    if n == 0 or total <= 0:
        return 0.0
    # Sorted form of the mean absolute difference: sum_i (2i - n - 1) x_(i) / (n * total).
    ranks = np.arange(1, n + 1)
    return float(np.sum((2 * ranks - n - 1) * x) / (n * total))


def coefficient_of_variation(values: Any) -> float:
    """``std / mean`` of non-negative loads (population std); 0 when the mean is 0."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean()) if x.size else 0.0
    return float(x.std() / mean) if mean > 0 else 0.0
