"""Fast method: the greedy fitness-score rule, with augmenting-path repair.

1. **Lower bounds first.** Pairs are walked in decreasing fitness; a pair is taken
   when both sides have room and it reduces a client's or an expert's unmet minimum.
2. **Repair.** If some minimum is still unmet, a max-flow on the residual network
   (:func:`alignsolve.feasibility.find_feasible`) moves pairs along augmenting paths
   until every minimum holds, or proves the problem infeasible. So the method returns
   a feasible assignment whenever one exists.
3. **Fill.** Pairs of non-negative fitness are walked in decreasing fitness and taken
   while both sides have room. With a load penalty the walk is by marginal gain
   ``F_ij - lambda * (2 load_j + 1)`` and stops when no gain is non-negative.

The walk sorts only the top of the pairs: a chunk of the best ``chunk`` candidates is
selected in O(NE) with :func:`numpy.argpartition`, sorted, and scanned by a compiled
kernel; the next chunk is taken only while some client and some expert have room.
Ties are broken in a fixed order that depends only on the input (``seed`` is unused).

Guarantee: without lower bounds and load penalty, the assignment is maximal among
non-negative pairs and at least half the optimum (greedy on the intersection of two
partition matroids), so ``bound = 2 * objective`` is reported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..feasibility import find_feasible
from ..problem import Problem
from . import SolverResult, check_options
from ._greedy_kernels import collect_pairs, penalised_greedy, scan_lower, scan_pairs

__all__ = ["run_greedy", "solve"]


class _PairOrder:
    """Candidate pairs in decreasing priority, produced a chunk at a time and cached.

    Chunk k holds the candidates with priority in ``[lo_k, lo_{k-1})``; ``lo_k`` is a
    quantile of a fixed-seed sample of the priorities, chosen so that the chunk holds
    about ``first * 2**k`` pairs. A compiled pass collects the chunk (skipping full
    clients and experts) and only the chunk is sorted, so when the first chunk
    suffices the cost is O(NE) plus the sort of a few times the total capacity.
    Value ranges are disjoint, so the concatenated chunks are in decreasing order;
    ties inside a chunk fall in a fixed, input-determined order.
    """

    _SAMPLE = 65536

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
        self.chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def _next_threshold(self) -> float:
        below = self._sample[: np.searchsorted(self._sample, self._hi, side="left")]
        want = int(np.ceil(self._size / self._per_sample))
        if below.size <= want:
            return -np.inf
        return float(below[below.size - want])

    def get(self, k: int, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Chunk ``k`` as (rows, cols, priorities) sorted by decreasing priority, or None."""
        while len(self.chunks) <= k:
            if self._done:
                return None
            lo = self._next_threshold()
            rows, cols, vals = collect_pairs(self._priority, self._allowed, lo, self._hi, self._nonneg, *state)
            self._hi = lo
            self._done = lo == -np.inf
            self._size *= 2
            if vals.size == 0:
                continue
            order = np.argsort(-vals)
            self.chunks.append((rows[order], cols[order], vals[order]))
        return self.chunks[k]


def run_greedy(
    problem: Problem, priority: np.ndarray, *, skip_negative: bool, use_penalty: bool, chunk: int | None = None
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
    x = np.zeros(n * e, dtype=bool)
    counts = np.zeros(n, np.int64)
    loads = np.zeros(e, np.int64)
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
            took, deficit = scan_lower(chunk_[0], chunk_[1], e, x, counts, loads, cap, emax, cmin, emin)
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
            rows, cols, vals = chunk_
            if skip_negative and vals.size and vals[-1] < 0:
                keep = int(np.searchsorted(-vals, 0.0, side="right"))
                rows, cols = rows[:keep], cols[:keep]
            took, exhausted = scan_pairs(rows, cols, e, x, counts, loads, cap, emax)
            took_total += int(took)
            if exhausted or rows.size < vals.size:
                break
            k += 1
        stats["fill_pairs"] = took_total
    stats["chunks"] += len(pool.chunks)
    return x.reshape(n, e), stats, ""


def solve(
    problem: Problem, *, time_limit: float | None = None, seed: int | None = None, **options: Any
) -> SolverResult:
    check_options("greedy", options, ("chunk",))
    x, stats, message = run_greedy(
        problem, problem.fitness, skip_negative=True, use_penalty=True, chunk=options.get("chunk")
    )
    if x is None:
        return SolverResult("infeasible", None, message, stats=stats)
    objective = problem.objective(x)
    bound = None
    if not problem.has_lower_bounds and problem.load_penalty == 0:
        bound = 2.0 * objective
        stats["bound_kind"] = "1/2-approximation: optimum <= 2 * greedy"
    return SolverResult("feasible", x, "feasible (greedy)", bound=bound, stats=stats, objective=objective)
