"""Entropic relaxation: log-domain Bregman projections with an epsilon schedule, then rounding.

The relaxation adds ``eps`` times the entropy to the LP of the unit variant::

    max_x  sum F x - lambda sum_j load_j**2 - eps sum x (log x - 1)
    s.t.   client_min <= rows <= client_capacity,  expert_min <= columns <= expert_max,
           0 <= x <= 1,  x = 0 where not allowed.

Its solution has the form ``x_ij = min(1, exp((F_ij + f_i + g_j) / eps))`` with one
dual per client ``f`` and per expert ``g``: the box multiplier of Dykstra's
algorithm, ``max(0, F + f + g)``, is carried in closed form instead of being stored,
so no (N, E) correction array exists. Each sweep projects (in KL divergence) onto the
client rows with the box, then onto the expert columns with the box: block
coordinate ascent on the dual, where each block is one monotone equation per line,
``R(d) = target(d)``, ``R(d) = sum min(1, exp((A + d) / eps))``, solved to a
tolerance by bracketed Newton steps. The target is the violated bound (rows and
columns with slack keep their dual at 0) or, with a load penalty, the load whose
marginal penalty balances the dual, ``clip(-g / (2 lambda), expert_min, expert_max)``.
``eps`` decreases geometrically (the schedule) with the duals carried over.

Any duals give a **valid upper bound** (weak Lagrangian duality)::

    sum_ij max(0, F_ij + f_i + g_j) + sum_i max(-f_i lo_i, -f_i hi_i)
        + sum_j max_{c in [lo_j, hi_j]} (-g_j c - lambda c**2)

reported as ``bound``. The plan is rounded by the greedy's phases (lower bounds,
augmenting-path repair, fill) walking pairs in decreasing ``F + f + g``, so the answer
is feasible whenever the problem is. Without a load penalty pairs of negative fitness
are never added beyond the lower bounds.

One implementation serves numpy arrays and torch tensors (CPU or CUDA): the few
operations it needs go through :class:`.ops._Numpy` or :class:`.ops._Torch`, every line in
lockstep. On numpy the pairs are entries grouped by line, and the block update is the
compiled per-line form of the same equations (:mod:`.kernels`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ...errors import InvalidProblemError
from ...problem import Problem
from .. import SolverResult, check_options
from ..rounding import run_greedy
from .duals import entropic_duals, entropic_duals_sparse, lagrangian_bound

__all__ = ["entropic_duals", "entropic_duals_sparse", "lagrangian_bound", "solve", "solve_sparse"]


def _priority(fitness: np.ndarray, reduced: np.ndarray) -> np.ndarray:
    """The rounding order: non-negative-fitness pairs by reduced score (all >= 0), then the
    others (all < 0), so the fill phase, which skips negative priorities, skips exactly them."""
    pos, neg = fitness >= 0, fitness < 0
    prio = np.empty(reduced.shape, dtype=np.float64)
    prio[pos] = reduced[pos] - (reduced[pos].min() if pos.any() else 0.0)
    prio[neg] = reduced[neg] - (reduced[neg].max() if neg.any() else 0.0) - 1.0
    return prio


def _round(problem: Problem, reduced: np.ndarray) -> tuple[np.ndarray | None, dict[str, Any], str]:
    """Greedy phases on the reduced scores ``F + f + g`` (N, E) (see the module docstring)."""
    fit = problem.fitness
    if problem.load_penalty > 0:
        # The penalised greedy walks by fitness minus the marginal penalty; restricting
        # it to the plan's support keeps the relaxation's choice of pairs.
        support = problem.allowed & (reduced >= -1e-9 * max(1.0, float(np.abs(fit).max(initial=0.0))))
        restricted = problem.replace(allowed=support)
        x, stats, message = run_greedy(restricted, fit, skip_negative=True, use_penalty=True)
        if x is not None:
            stats["rounding"] = "penalised greedy on the plan's support"
            return x, stats, message
    x, stats, message = run_greedy(problem, _priority(fit, reduced), skip_negative=True, use_penalty=False)
    stats["rounding"] = "greedy by reduced score"
    return x, stats, message


def _schedule_options(options: dict[str, Any]) -> dict[str, Any]:
    """The user's options as keyword arguments of :func:`entropic_duals`."""
    options = check_options("sinkhorn", options)
    return {
        "eps_final": float(options.get("eps", 1e-3)),
        "eps_start": float(options.get("eps_start", 1.0)),
        "eps_decay": float(options.get("eps_decay", 0.5)),
        "max_sweeps": int(options.get("max_sweeps", 50)),
        "tol": float(options.get("tol", 1e-4)),
        "stage_tol": float(options.get("stage_tol", 1e-2)),
        "line_iters": int(options.get("line_iters", 8)),
        "device": options.get("device"),
        "dtype": options.get("dtype"),
    }


def solve(
    problem: Problem, *, time_limit: float | None = None, seed: int | None = None, **options: Any
) -> SolverResult:
    schedule = _schedule_options(options)
    start = time.perf_counter()
    allowed = problem.allowed & (problem.client_capacity > 0)[:, None] & (problem.expert_max > 0)[None, :]
    f, g, info = entropic_duals(
        problem.fitness,
        allowed,
        problem.client_min,
        np.minimum(problem.client_capacity, allowed.sum(axis=1)),
        problem.expert_min,
        np.minimum(problem.expert_max, allowed.sum(axis=0)),
        load_penalty=problem.load_penalty,
        **schedule,
    )
    relax_time = time.perf_counter() - start
    reduced = problem.fitness + f[:, None] + g[None, :]
    bound = lagrangian_bound(problem, f, g, reduced)
    x, stats, message = _round(problem, reduced)
    del reduced
    stats.update(info, relaxation_time=relax_time)
    if x is None:
        return SolverResult("infeasible", None, message, bound=bound, stats=stats)
    return SolverResult("feasible", x, "feasible (entropic relaxation, rounded)", bound=bound, stats=stats)


def solve_sparse(
    problem: Any, *, time_limit: float | None = None, seed: int | None = None, **options: Any
) -> SolverResult:
    """The entropic relaxation of a :class:`~alignsolve.SparseProblem`, rounded by the sparse greedy walk.

    The duals come from :func:`entropic_duals_sparse` (numpy, or torch with ``device``),
    the bound is :func:`lagrangian_bound` over the listed entries, and the rounding is
    :func:`~alignsolve.solvers.rounding.walk_sparse` in decreasing reduced score. A lower
    bound the walk cannot meet is repaired by ``flow`` on the same candidates (which also
    decides infeasibility). A load penalty is not supported on this path (use ``flow``).
    """
    from ..rounding import flow_repair, walk_sparse

    schedule = _schedule_options(options)
    if problem.load_penalty:
        raise InvalidProblemError(
            "load_penalty", "must be 0 for sinkhorn on a SparseProblem (flow handles it)", problem.load_penalty
        )
    start = time.perf_counter()
    n, e = problem.shape
    rows, cols, vals = problem.rows, problem.indices, problem.values
    cap, emax = problem.client_capacity, problem.expert_max
    keep = (cap > 0)[rows] & (emax > 0)[cols]
    f, g, info = entropic_duals_sparse(
        problem.indptr,
        cols,
        vals,
        e,
        problem.client_min,
        np.minimum(cap, np.bincount(rows[keep], minlength=n)),
        problem.expert_min,
        np.minimum(emax, np.bincount(cols[keep], minlength=e)),
        keep=None if keep.all() else keep,
        **schedule,
    )
    del keep
    relax_time = time.perf_counter() - start
    reduced = vals + f[rows] + g[cols]
    bound = lagrangian_bound(problem, f, g, reduced)
    # float32 resolution (6e-8 relative) is far finer than the duals' tolerance, and lets the
    # walk sort packed 64-bit keys instead of a stable float64 argsort.
    priority = _priority(vals, reduced).astype(np.float32)
    del reduced
    taken, stats = walk_sparse(problem, priority)
    stats.update(info, relaxation_time=relax_time, rounding="sparse greedy walk by reduced score")
    if taken is None:
        result = flow_repair(problem, stats, "the rounding's lower-bound walk fell short")
        result.bound = bound if result.status != "infeasible" else None
        return result
    objective = problem.objective(taken)
    message = "feasible (entropic relaxation, rounded, sparse)"
    return SolverResult("feasible", problem.to_matrix(taken), message, bound=bound, stats=stats, objective=objective)
