"""Rounding shared by the methods: greedy walks, trimming, local search, and the sparse walk.

Every method that turns scores (fitness, reduced costs, a fractional plan) into an
assignment uses these, so that the rules below are written once:

* :func:`run_greedy` - the unit variant's walk: lower bounds first, an augmenting-path
  repair when a minimum stays unmet, then pairs in decreasing priority while both sides
  have room (with a load penalty, by marginal gain). ``greedy`` walks the fitness,
  ``sinkhorn`` its reduced scores, ``random`` a random priority.
* :func:`trim` - a warm start or a plan made feasible: pairs over a client's capacity,
  an expert's cap or a client's budget dropped, worst first.
* :func:`local_search` - swaps and moves that raise the objective while every
  constraint still holds (``greedy`` from a warm start, ``lp``'s budget rounding).
* :func:`budget_priority` and :func:`run_budget_greedy` - the budget variant's walk.
* :func:`walk_sparse`, :func:`descending_order` and :func:`flow_repair` - the same walk on
  candidate lists, and ``flow`` as its exact repair.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import budget_slack
from ..feasibility import budget_relaxation, diagnose_generalised, find_feasible
from ..problem import Problem
from . import SolverResult
from ._greedy_kernels import (
    collect_pairs,
    local_swaps,
    penalised_greedy,
    refine_runs,
    scan_budget,
    scan_entries,
    scan_lower_entries,
)

__all__ = [
    "budget_priority",
    "descending_order",
    "flow_repair",
    "local_search",
    "run_budget_greedy",
    "run_greedy",
    "trim",
    "walk_sparse",
]


class _PairOrder:
    """Candidate pairs in decreasing priority, produced a chunk at a time and cached.

    Chunk k holds the candidates with priority in ``[lo_k, lo_{k-1})``; ``lo_k`` is a
    quantile of a fixed-seed sample of the priorities, chosen so that the chunk holds
    about ``first * 2**k`` pairs. A compiled pass collects the chunk (skipping full
    clients and experts) and only the chunk is sorted, so when the first chunk
    suffices the cost is O(NE) plus the sort of a few times the total capacity.
    Value ranges are disjoint, so the concatenated chunks are in decreasing order;
    ties inside a chunk keep their row-major order (:func:`descending_order` is a stable sort).
    """

    _SAMPLE = 16384

    def __init__(self, priority: np.ndarray, allowed: np.ndarray, *, nonneg_only: bool, first: int) -> None:
        self._priority = priority
        self._allowed = allowed
        self._nonneg = nonneg_only
        self._size = max(int(first), 1024)
        self._hi = np.inf
        self._done = False
        n, e = priority.shape
        pos = np.random.default_rng(0).integers(0, n * e, size=min(self._SAMPLE, n * e))
        sample = priority.reshape(-1)[pos]
        ok = allowed.reshape(-1)[pos]
        if nonneg_only:
            ok &= sample >= 0
        self._sample = np.sort(sample[ok])
        self._per_sample = n * e / pos.size  # pairs represented by one sample point
        self.chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def _next_threshold(self) -> float:
        below = self._sample[: np.searchsorted(self._sample, self._hi, side="left")]
        want = int(np.ceil(self._size / self._per_sample))
        if below.size <= want:
            return -np.inf
        return float(below[below.size - want])

    def _expected(self, lo: float) -> float:
        """Pairs with priority in ``[lo, hi)`` the sample predicts (before skipping full clients and experts)."""
        inside = np.searchsorted(self._sample, self._hi, side="left") - np.searchsorted(self._sample, lo, side="left")
        return float(inside) * self._per_sample

    def get(
        self, k: int, state: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """Chunk ``k`` as (flat ids ``rows * E + cols``, rows, cols, priorities) by decreasing priority, or None.

        The ids are computed once per chunk: with lower bounds a chunk is walked twice.
        """
        while len(self.chunks) <= k:
            if self._done:
                return None
            lo = self._next_threshold()
            hint = int(1.25 * self._expected(lo)) + 1024
            rows, cols, vals = collect_pairs(self._priority, self._allowed, lo, self._hi, self._nonneg, *state, hint)
            self._hi = lo
            self._done = lo == -np.inf
            self._size *= 2
            if vals.size == 0:
                continue
            order = descending_order(vals)
            rows, cols = rows[order], cols[order]
            self.chunks.append((rows.astype(np.int64) * self._priority.shape[1] + cols, rows, cols, vals[order]))
        return self.chunks[k]


def run_greedy(
    problem: Problem,
    priority: np.ndarray,
    *,
    skip_negative: bool,
    use_penalty: bool,
    chunk: int | None = None,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray | None, dict[str, Any], str]:
    """The three phases on an arbitrary priority matrix (fitness for greedy, noise for random).

    Parameters
    ----------
    problem : Problem
    priority : ndarray of float, shape (N, E)
        Walk order: higher first.
    skip_negative : bool
        Phase 3 ignores pairs of negative priority.
    use_penalty : bool
        Phase 3 walks by marginal gain under ``problem.load_penalty``.
    chunk : int, optional
        First chunk size (default: four times the total capacity).
    start : ndarray of bool, shape (N, E), optional
        Pairs taken before the walk; must respect every upper bound and the mask
        (see :func:`trim`).

    Returns
    -------
    matrix : ndarray of bool, shape (N, E), or None when infeasible
    stats : dict
    message : str
        The infeasibility certificate's message, or "".
    """
    n, e = problem.shape
    cap, emax = problem.client_capacity, problem.expert_max
    cmin, emin = problem.client_min, problem.expert_min
    allowed = problem.allowed
    if start is None:
        x = np.zeros(n * e, dtype=bool)
        counts, loads = np.zeros(n, np.int64), np.zeros(e, np.int64)
    else:
        x = start.reshape(-1).copy()
        counts = start.sum(axis=1, dtype=np.int64)
        loads = start.sum(axis=0, dtype=np.int64)
    room = int(min(cap.sum(), emax.sum()))
    first = chunk if chunk is not None else 4 * room + 1024
    stats: dict[str, Any] = {"lower_bound_pairs": 0, "repaired": False, "chunks": 0}

    pool = _PairOrder(priority, allowed, nonneg_only=skip_negative and not problem.has_lower_bounds, first=first)
    state = (x, counts, loads, cap, emax)

    if problem.has_lower_bounds:
        deficit = int(cmin.sum() + emin.sum())
        k = 0
        while deficit > 0:
            chunk_ = pool.get(k, state)
            if chunk_ is None:
                break
            ids, rows, cols = chunk_[:3]
            # The lower-bound walk is the first over each chunk, and a chunk is collected untaken.
            took, deficit = scan_lower_entries(ids, rows, cols, x, counts, loads, cap, emax, cmin, emin, False)
            stats["lower_bound_pairs"] += int(took)
            k += 1
        if deficit > 0:
            fixed, cert = find_feasible(problem, x.reshape(n, e))
            if fixed is None:
                assert cert is not None
                stats["certificate"] = cert.to_dict()
                return None, stats, cert.message
            stats["repaired"] = True
            stats["repair_changed_pairs"] = int((fixed.reshape(-1) != x).sum())
            x = fixed.reshape(-1).copy()
            counts = fixed.sum(axis=1, dtype=np.int64)
            loads = fixed.sum(axis=0, dtype=np.int64)
            # Augmenting paths may free slots that the pool's filtering assumed full.
            stats["chunks"] += len(pool.chunks)
            pool = _PairOrder(priority, allowed, nonneg_only=skip_negative, first=first)
            state = (x, counts, loads, cap, emax)

    if use_penalty and problem.load_penalty > 0:
        cand = allowed & ~x.reshape(n, e) & (priority > 0)
        ci, cj = np.nonzero(cand)
        cv = priority[ci, cj]
        order = np.lexsort((ci, -cv, cj))
        ptr = np.zeros(e + 1, np.int64)
        np.cumsum(np.bincount(cj, minlength=e), out=ptr[1:])
        took = penalised_greedy(
            ptr, ci[order].astype(np.int64), cv[order], e, x, counts, loads, cap, emax, float(problem.load_penalty)
        )
        stats["fill_pairs"] = int(took)
    else:
        took_total = 0
        k = 0
        while True:
            chunk_ = pool.get(k, state)
            if chunk_ is None:
                break
            ids, rows, cols, vals = chunk_
            if skip_negative and vals.size and vals[-1] < 0:
                keep = int(np.searchsorted(-vals, 0.0, side="right"))
                ids, rows, cols = ids[:keep], rows[:keep], cols[:keep]
            # A chunk holds each pair once, collected while untaken; only the lower-bound phase's
            # chunks are walked twice.
            took, exhausted = scan_entries(ids, rows, cols, x, counts, loads, cap, emax, problem.has_lower_bounds)
            took_total += int(took)
            if exhausted or rows.size < vals.size:
                break
            k += 1
        stats["fill_pairs"] = took_total
    stats["chunks"] += len(pool.chunks)
    return x.reshape(n, e), stats, ""


def trim(problem: Problem, matrix: np.ndarray) -> np.ndarray:
    """Drop pairs of ``matrix`` until the mask, every upper bound and every budget hold.

    The worst pairs (lowest fitness) go first. Used to turn a previous round's
    assignment into a starting point (``warm_start``).

    Parameters
    ----------
    problem : Problem
    matrix : ndarray of bool, shape (N, E)

    Returns
    -------
    ndarray of bool, shape (N, E)
    """
    x = np.asarray(matrix, dtype=bool) & problem.allowed
    fit = problem.fitness
    rows, cols = np.nonzero(x)
    order = np.argsort(fit[rows, cols], kind="stable")[::-1]  # best first, kept first
    keep = np.zeros(rows.size, bool)
    counts = np.zeros(problem.n_clients, np.int64)
    loads = np.zeros(problem.n_experts, np.int64)
    spent = np.zeros(problem.n_clients)
    cost, budget = problem.cost, problem.budget
    for k in order:
        i, j = rows[k], cols[k]
        if counts[i] >= problem.client_capacity[i] or loads[j] >= problem.expert_max[j]:
            continue
        if cost is not None and budget is not None and spent[i] + cost[i, j] > budget[i]:
            continue
        keep[k] = True
        counts[i] += 1
        loads[j] += 1
        if cost is not None:
            spent[i] += cost[i, j]
    out = np.zeros(problem.shape, bool)
    out[rows[keep], cols[keep]] = True
    return out


def local_search(problem: Problem, x: np.ndarray, max_passes: int) -> int:
    """Local search in place: single client moves between experts (:func:`local_swaps`)."""
    loads = x.sum(axis=0, dtype=np.int64)
    if problem.is_generalised:
        cost = problem.cost
        left = problem.budget - (cost * x).sum(axis=1)  # type: ignore[operator]
    else:
        cost, left = np.zeros((0, 0)), np.zeros(0)
    return int(
        local_swaps(
            problem.fitness,
            problem.allowed,
            x,
            loads,
            problem.expert_min,
            problem.expert_max,
            cost,
            left,
            float(problem.load_penalty),
            int(max_passes),
        )
    )


def budget_priority(problem: Problem) -> np.ndarray:
    """Fitness per share of the client's budget: ``F / s`` for ``F >= 0``, ``F * s`` below 0.

    ``s = cost_ij / budget_i`` (clipped below at 1e-12). Cheaper is better on both
    sides of zero: a positive pair is worth more per unit of budget, a negative one
    hurts less.
    """
    cost, budget = problem.cost, problem.budget
    assert cost is not None and budget is not None
    share = np.maximum(cost / np.maximum(budget, 1e-300)[:, None], 1e-12)
    fit = problem.fitness
    return np.where(fit >= 0, fit / share, fit * share)


def run_budget_greedy(
    problem: Problem, priority: np.ndarray, *, start: np.ndarray | None = None
) -> tuple[np.ndarray | None, dict[str, Any], str]:
    """Greedy for the generalised variant: lower bounds, repair, then fill, within budgets.

    Pairs are walked in decreasing ``priority`` (full sort). The repair is the unit
    variant's max-flow on :func:`~alignsolve.feasibility.budget_relaxation`; its
    answer is kept only if it also fits the budgets.

    Returns
    -------
    matrix : ndarray of bool, shape (N, E), or None
    stats : dict
    message : str
        Why there is no matrix (a certificate's message when infeasibility is proven;
        ``stats["proven_infeasible"]`` says which).
    """
    n, e = problem.shape
    relaxed = budget_relaxation(problem)
    cost, budget = problem.cost, problem.budget
    assert cost is not None and budget is not None
    stats: dict[str, Any] = {"lower_bound_pairs": 0, "repaired": False}
    cert = diagnose_generalised(problem, quick=True)
    if cert is not None:
        stats["certificate"] = cert.to_dict()
        stats["proven_infeasible"] = True
        return None, stats, cert.message
    x = np.zeros((n, e), bool) if start is None else trim(problem, start) & relaxed.allowed
    rows, cols = np.nonzero(relaxed.allowed & ~x)
    order = np.argsort(-priority[rows, cols], kind="stable")
    rows, cols = rows[order].astype(np.int64), cols[order].astype(np.int64)
    costs = cost[rows, cols]
    gains = problem.fitness[rows, cols]
    counts = x.sum(axis=1, dtype=np.int64)
    loads = x.sum(axis=0, dtype=np.int64)
    left = budget - (cost * x).sum(axis=1)
    cheapest = np.where(relaxed.allowed, cost, np.inf).min(axis=1, initial=np.inf)
    cheapest[~np.isfinite(cheapest)] = 0.0
    flat = x.reshape(-1)  # a view: the kernel updates x
    args = (problem.client_capacity, problem.expert_max, problem.client_min, problem.expert_min, left, cheapest)
    lam = float(problem.load_penalty)
    if problem.has_lower_bounds:
        took, deficit = scan_budget(rows, cols, costs, gains, e, flat, counts, loads, *args, lam, True)
        stats["lower_bound_pairs"] = int(took)
        if deficit > 0:
            fixed, cert = find_feasible(relaxed, x)
            if fixed is None:
                assert cert is not None
                stats["certificate"] = cert.to_dict()
                stats["proven_infeasible"] = True
                return None, stats, cert.message
            over = (cost * fixed).sum(axis=1) > budget + budget_slack(budget)
            if over.any():
                stats["proven_infeasible"] = False
                return (
                    None,
                    stats,
                    f"greedy met the minimums only by exceeding the budget of {int(over.sum())} client(s); the "
                    "generalised variant is NP-hard to decide: use method='cpsat' or 'milp'",
                )
            stats["repaired"] = True
            x = fixed.copy()
            flat = x.reshape(-1)
            counts = x.sum(axis=1, dtype=np.int64)
            loads = x.sum(axis=0, dtype=np.int64)
            left[:] = budget - (cost * x).sum(axis=1)
    took, _ = scan_budget(rows, cols, costs, gains, e, flat, counts, loads, *args, lam, False)
    stats["fill_pairs"] = int(took)
    return x, stats, ""


def flow_repair(problem: Any, stats: dict[str, Any], why: str) -> SolverResult:
    """The answer of ``flow`` on a sparse problem whose lower bounds a walk could not meet."""
    from . import flow

    result = flow.solve_sparse(problem)
    result.stats = {**stats, **(result.stats or {}), "repair": "flow"}
    if result.status == "optimal":
        result.status, result.message = "feasible", f"feasible ({why}; flow)"
    return result


def walk_sparse(
    problem: Any, priority: np.ndarray, *, chunk: int | None = None
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The greedy walk over a sparse problem's entries in decreasing ``priority`` (nnz,).

    Entries are walked a chunk at a time: a chunk is every entry above a threshold taken
    from a fixed-seed sample of the priorities, the first sized to 1.5 times the total
    capacity, the second every entry left; entries of a full client or a full expert are
    dropped before a chunk is sorted (room only shrinks), so only ``O(N k)`` entries are
    sorted, not all ``nnz``. Entries of negative priority are never taken beyond the
    lower bounds. With lower bounds a first walk takes entries that reduce an unmet
    minimum.

    Returns
    -------
    taken : ndarray of bool, shape (nnz,), or None
        None when a lower bound is still unmet after the first walk.
    stats : dict
    """
    from ._sparse_kernels import collect_entries

    n, e = problem.shape
    vals, rows, cols = priority, problem.rows, problem.indices
    cap, emax = problem.client_capacity, problem.expert_max
    taken = np.zeros(problem.nnz, dtype=bool)
    counts = np.zeros(n, np.int64)
    loads = np.zeros(e, np.int64)
    stats: dict[str, Any] = {"chunks": 0, "lower_bound_pairs": 0}
    if problem.has_lower_bounds:
        order = descending_order(vals)
        took, deficit = scan_lower_entries(
            order, rows[order], cols[order], taken, counts, loads, cap, emax, problem.client_min, problem.expert_min
        )
        stats["lower_bound_pairs"] = int(took)
        del order
        if deficit > 0:
            return None, stats
    room = int(min(cap.sum(), emax.sum()))
    size = int(chunk or room + room // 2 + 1024)
    sample = vals[np.random.default_rng(0).integers(0, vals.size, size=min(65536, vals.size))] if vals.size else vals
    hi = np.inf
    buffer = np.empty(vals.size, dtype=np.int32 if vals.size < 2**31 else np.int64)
    while True:
        frac = min(1.0, size / max(vals.size, 1))
        # The fill never takes a negative pair (as on the dense path), so the walk stops at 0.
        lo = 0.0 if frac >= 1.0 else max(0.0, float(np.quantile(sample, 1.0 - frac)))
        # Room only shrinks: entries whose client or expert is already full can never be taken.
        found = collect_entries(vals, rows, cols, lo, hi, counts, cap, loads, emax, buffer)
        sel = buffer[:found]
        order = descending_order(vals[sel], sel)  # ties keep entry order
        del sel
        stats["chunks"] += 1
        _, exhausted = scan_entries(order, rows[order], cols[order], taken, counts, loads, cap, emax)
        if exhausted or lo <= 0.0:
            break
        # After the first chunk the entries that still fit are few: take all of them at once.
        hi, size = lo, vals.size
    return taken, stats


def descending_order(vals: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
    """(m,) int64: the indices of ``vals`` (finite floats) by decreasing value, ties by index.

    Exactly ``np.argsort(-vals, kind="stable")``, two to four times as fast: each value's
    float32 image, mapped to an order-preserving unsigned integer, goes above its index in
    one uint64 key, and a direct sort of the keys (numpy's vectorised sort; an argsort is
    an indirect, slower one) orders by that image. Rounding to float32 is monotone, so
    only runs of equal images can be out of order, and for float64 values a compiled pass
    sorts those by the exact values. With ``ids`` ((m,) ascending, below 2**32) the
    answer is ``ids`` in that order (ties in ``ids`` order); for float32 values the ids
    ride in the keys themselves, saving a gather.
    """
    m = vals.size
    if m >= 2**32:
        order = np.argsort(-vals, kind="stable")
        return order if ids is None else ids[order].astype(np.int64)
    with np.errstate(over="ignore"):  # beyond float32's range the image is +-inf: still monotone
        bits = (vals.astype(np.float32, copy=False) + np.float32(0.0)).view(np.uint32)  # -0.0 becomes 0.0
    if m and vals.min() < 0:
        # Non-negative floats' bits grow with the value; a negative one's shrink: flip them.
        bits = np.where(bits >> np.uint32(31) == 1, ~bits, bits | np.uint32(0x80000000))
    exact = vals.dtype == np.float32  # the image is the value: equal keys mean equal values
    carried = ids if ids is not None and exact else np.arange(m)
    keys = (~bits).astype(np.uint64) << np.uint64(32)  # inverted: ascending keys, decreasing values
    keys |= carried.astype(np.uint64)
    keys.sort()
    order = (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
    if not exact:
        refine_runs(keys, order, vals)
    return order if ids is None or exact else ids[order].astype(np.int64)
