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

Ties are broken by the flat index ``i * E + j`` (deterministic; ``seed`` is unused).
The walk sorts only the top of the pairs: a chunk of the best ``chunk`` candidates is
selected in O(NE) with :func:`numpy.partition`, sorted, and scanned by a compiled
kernel; the next chunk is taken only while some client and some expert have room.

Guarantee: without lower bounds and load penalty, the assignment is maximal among
non-negative pairs and at least half the optimum (greedy on the intersection of two
partition matroids), so ``bound = 2 * objective`` is reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..feasibility import find_feasible
from ..problem import Problem
from . import SolverResult, check_options
from ._greedy_kernels import penalised_greedy, scan_lower, scan_pairs

__all__ = ["run_greedy", "solve"]


def _chunks(values: np.ndarray, index: np.ndarray, first: int) -> Iterator[np.ndarray]:
    """Yield ``index`` in decreasing ``values`` (ties: increasing index), a chunk at a time.

    Each chunk holds every candidate at or above the chunk's threshold; chunk sizes
    double so that the total work stays O(K log K) even when many are needed.
    """
    size = max(int(first), 1024)
    while values.size:
        if values.size > size:
            kth = values.size - size
            threshold = np.partition(values, kth)[kth]
            top = values >= threshold
            sel_v, sel_i = values[top], index[top]
            values, index = values[~top], index[~top]
        else:
            sel_v, sel_i = values, index
            values, index = values[:0], index[:0]
        yield sel_i[np.argsort(-sel_v, kind="stable")]
        size *= 2


def run_greedy(problem: Problem, priority: np.ndarray, *, skip_negative: bool, use_penalty: bool,
               chunk: int | None = None) -> tuple[np.ndarray | None, dict[str, Any], str]:
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
    flat_priority = priority.reshape(-1)

    if problem.has_lower_bounds:
        mask = allowed & ((cmin > 0)[:, None] | (emin > 0)[None, :])
        idx = np.flatnonzero(mask)
        deficit = int(cmin.sum() + emin.sum())
        for order in _chunks(flat_priority[idx], idx, first):
            stats["chunks"] += 1
            took, deficit = scan_lower(order, e, x, counts, loads, cap, emax, cmin, emin)
            stats["lower_bound_pairs"] += int(took)
            if deficit == 0:
                break
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

    if use_penalty and problem.load_penalty > 0:
        cand = allowed & ~x.reshape(n, e) & (priority > 0)
        ci, cj = np.nonzero(cand)
        cv = priority[ci, cj]
        order = np.lexsort((ci, -cv, cj))
        ptr = np.zeros(e + 1, np.int64)
        np.cumsum(np.bincount(cj, minlength=e), out=ptr[1:])
        took = penalised_greedy(ptr, ci[order].astype(np.int64), cv[order], e, x, counts, loads, cap, emax,
                                float(problem.load_penalty))
        stats["fill_pairs"] = int(took)
    else:
        cand = allowed.reshape(-1) & ~x
        if skip_negative:
            cand &= flat_priority >= 0
        idx = np.flatnonzero(cand)
        took_total = 0
        for order in _chunks(flat_priority[idx], idx, first):
            stats["chunks"] += 1
            took, exhausted = scan_pairs(order, e, x, counts, loads, cap, emax)
            took_total += int(took)
            if exhausted:
                break
        stats["fill_pairs"] = took_total
    return x.reshape(n, e), stats, ""


def solve(problem: Problem, *, time_limit: float | None = None, seed: int | None = None,
          **options: Any) -> SolverResult:
    check_options("greedy", options, ("chunk",))
    x, stats, message = run_greedy(problem, problem.fitness, skip_negative=True, use_penalty=True,
                                   chunk=options.get("chunk"))
    if x is None:
        return SolverResult("infeasible", None, message, stats=stats)
    bound = None
    if not problem.has_lower_bounds and problem.load_penalty == 0:
        bound = 2.0 * problem.objective(x)
        stats["bound_kind"] = "1/2-approximation: optimum <= 2 * greedy"
    return SolverResult("feasible", x, "feasible (greedy)", bound=bound, stats=stats)
