"""Statistics for policy comparisons with censoring: runs that miss a target are censored, never dropped.

A run's *time to target* is the first round (1-based count of rounds) whose accuracy
reaches the target; a run that never does within its budget of ``R`` rounds is
*censored at R*: we know only that its time exceeds R. Dropping such runs biases every
mean towards the easy seeds, so the summaries here keep them:

* :func:`kaplan_meier` and :func:`km_median`: the product-limit estimate of the fraction
  of runs still short of the target after t rounds, and the first t where it falls to
  one half (None when it never does: "not reached within R");
* :func:`restricted_mean`: the area under that curve up to the budget, the mean time to
  target with every censored run counted as R (a lower bound on the true mean, the same
  for every policy);
* :func:`paired_bootstrap`: a percentile interval of any statistic of paired samples
  (seeds shared by two policies), resampling seeds with replacement;
* :func:`rank_test`: whether k runs per seed (k draws of one policy, or k policies) are told
  apart at all: Friedman's rank statistic with a permutation p-value, censored runs ranked
  after every run that reaches the target.

Only numpy; deterministic given ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "area_under_curve",
    "final_accuracy",
    "kaplan_meier",
    "km_median",
    "paired_bootstrap",
    "rank_test",
    "relative_reduction",
    "restricted_mean",
    "rounds_to_target",
]


def rounds_to_target(accuracy: Sequence[float], target: float) -> tuple[int, bool]:
    """(rounds until ``accuracy`` first reaches ``target``, whether it did).

    A curve that never reaches it gives ``(len(accuracy), False)``: censored at the budget.
    """
    acc = np.asarray(accuracy, dtype=float)
    hit = np.flatnonzero(acc >= target)
    if hit.size:
        return int(hit[0]) + 1, True
    return int(acc.size), False


def kaplan_meier(times: Sequence[float], events: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """The product-limit survival curve: (distinct event times, S(t) just after each).

    ``events[i]`` False marks run i as censored at ``times[i]`` (still at risk up to and
    including that time, as the usual convention has it).
    """
    t = np.asarray(times, dtype=float)
    e = np.asarray(events, dtype=bool)
    if t.shape != e.shape or t.ndim != 1:
        raise ValueError(f"times, events: need two 1-D sequences of one length; got {t.shape} and {e.shape}")
    grid = np.unique(t[e])
    survival = np.empty(grid.size)
    s = 1.0
    for k, time in enumerate(grid):
        at_risk = int(np.sum(t >= time))
        died = int(np.sum((t == time) & e))
        s *= 1.0 - died / at_risk
        survival[k] = s
    return grid, survival


def km_median(times: Sequence[float], events: Sequence[bool]) -> float | None:
    """The first time at which the Kaplan-Meier curve falls to 0.5 or below; None if it never does."""
    grid, survival = kaplan_meier(times, events)
    below = np.flatnonzero(survival <= 0.5)
    return float(grid[below[0]]) if below.size else None


def restricted_mean(times: Sequence[float], events: Sequence[bool], horizon: float) -> float:
    """Restricted mean time to target: the area under the Kaplan-Meier curve from 0 to ``horizon``.

    With every run censored at the common budget ``horizon`` this is the plain mean of
    ``min(time, horizon)``.
    """
    grid, survival = kaplan_meier(times, events)
    edges = np.concatenate([[0.0], grid[grid < horizon], [horizon]])
    levels = np.concatenate([[1.0], survival[grid < horizon]])
    return float(np.sum(np.diff(edges) * levels))


def relative_reduction(
    times_a: Sequence[float],
    events_a: Sequence[bool],
    times_b: Sequence[float],
    events_b: Sequence[bool],
    horizon: float,
) -> float:
    """``1 - RMST(a) / RMST(b)``: how many fewer rounds policy a needs than b (0.5 = half as many)."""
    return 1.0 - restricted_mean(times_a, events_a, horizon) / restricted_mean(times_b, events_b, horizon)


def paired_bootstrap(
    statistic: Callable[[np.ndarray], float],
    n_pairs: int,
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(point estimate, lower, upper): a percentile interval of ``statistic(indices)`` over resampled pairs.

    ``statistic`` takes an array of pair indices (seeds), with repeats, and computes the
    figure from those pairs of both policies, so the pairing is kept in every resample.
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs: must be >= 1; got {n_pairs}")
    rng = np.random.default_rng(seed)
    point = float(statistic(np.arange(n_pairs)))
    draws = np.array([statistic(rng.integers(0, n_pairs, n_pairs)) for _ in range(resamples)], dtype=float)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return point, float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    return point, float(np.quantile(draws, tail)), float(np.quantile(draws, 1.0 - tail))


def rank_test(
    values: Sequence[Sequence[float]],
    missed: Sequence[Sequence[bool]] | None = None,
    *,
    permutations: int = 10000,
    seed: int = 0,
) -> tuple[float, float, np.ndarray]:
    """(Friedman statistic, permutation p-value, mean rank of each column): are k runs per seed told apart?

    ``values`` has shape (n seeds, k runs); smaller is better (rounds to target; pass ``-accuracy`` for
    accuracy). Within each seed the k runs are ranked 1..k, ties sharing their mean rank; ``missed[s, j]``
    True marks a run censored at ``values[s, j]`` (the budget), ranked after every run that reached the
    target there, and tied with another censored one. With mean ranks :math:`\\bar R_j` the statistic is

    .. math:: Q = \\frac{12 n}{k (k + 1)} \\sum_j \\left(\\bar R_j - \\frac{k + 1}{2}\\right)^2 .

    Under the null hypothesis that the k runs of a seed are exchangeable (draws of the same process, as runs
    that differ only in how tied optima are broken), every permutation of a seed's ranks is as likely as the
    observed one; the p-value is the share of ``permutations`` random relabellings, plus the observed, whose
    statistic is at least the observed one. Counting the observed labelling among them keeps the test valid
    (its false-positive rate at most the level) at any n and with ties, where the chi-squared approximation
    needs many seeds.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 2:
        raise ValueError(f"values: need shape (n >= 1 seeds, k >= 2 runs); got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("values: must be finite (a censored run is its budget with missed=True); got a NaN or inf")
    m = np.zeros(x.shape, dtype=bool) if missed is None else np.asarray(missed, dtype=bool)
    if m.shape != x.shape:
        raise ValueError(f"missed: need the shape of values, {x.shape}; got {m.shape}")
    if permutations < 1:
        raise ValueError(f"permutations: must be >= 1; got {permutations}")
    n, k = x.shape
    # a run that misses at the budget ranks after one that reaches the target there: order by (value, missed)
    ranks = np.empty_like(x)
    for s in range(n):
        keys = list(zip(x[s], m[s]))
        for j, key in enumerate(keys):
            below = sum(other < key for other in keys)
            equal = sum(other == key for other in keys)
            ranks[s, j] = below + (equal + 1) / 2.0

    def statistic(r: np.ndarray) -> float:
        return float(12.0 * n / (k * (k + 1)) * np.sum((r.mean(0) - (k + 1) / 2.0) ** 2))

    observed = statistic(ranks)
    rng = np.random.default_rng(seed)
    hits = 1
    for _ in range(permutations):
        hits += statistic(rng.permuted(ranks, axis=1)) >= observed - 1e-12  # each seed's ranks relabelled
    return observed, hits / (permutations + 1), ranks.mean(0)


def area_under_curve(accuracy: Sequence[float]) -> float:
    """Mean accuracy over the rounds (the normalised area under the accuracy curve)."""
    return float(np.mean(np.asarray(accuracy, dtype=float)))


def final_accuracy(accuracy: Sequence[float], last: int = 10) -> float:
    """Mean accuracy of the last ``last`` rounds (less noisy than the last round alone)."""
    acc = np.asarray(accuracy, dtype=float)
    return float(np.mean(acc[-last:]))
