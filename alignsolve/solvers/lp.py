"""LP relaxation through cvxpy, rounded and repaired.

The model is :func:`alignsolve.solvers.linear_model.linear_model` with ``0 <= z <= 1``,
written with cvxpy in vectorised form (one variable vector, sparse constraint
matrices). ``solver`` (option) is ``"CLARABEL"`` (default, interior point) or
``"SCIPY"`` (scipy's bundled HiGHS). cvxpy's own ``HIGHS`` interface loads the
``highspy`` package, whose HiGHS library clashes with OR-Tools' copy in one process,
so it is refused, and cvxpy is imported with ``highspy`` hidden (see
:func:`import_cvxpy`).

* ``bound``: the Lagrangian bound of the solver's duals
  (:func:`~alignsolve.solvers.linear_model.lagrangian_bound`), valid whatever the
  solver's stopping tolerance; the LP value itself is in ``stats["lp_value"]``.
* ``stats["plan"]``: the fractional plan as ``[[client, expert, value], ...]`` for the
  pairs with value > 1e-9.
* Unit variant: the LP is totally unimodular, so an integral optimum lies on the
  optimal face, and an interior-point solution's support contains the support of
  every optimal vertex. The min-cost flow restricted to that support (a handful of
  pairs) recovers an integral optimum: status ``"optimal"`` when it matches the bound.
* Generalised variant: the budget-aware greedy walks pairs by decreasing LP value
  (ties by fitness per budget share), then local search.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ..feasibility import diagnose_generalised
from ..problem import Problem
from . import SolverResult, check_options
from .linear_model import LinearModel, empty_model_result, lagrangian_bound, linear_model

__all__ = ["import_cvxpy", "solve"]

SOLVERS = ("CLARABEL", "SCIPY")


def import_cvxpy() -> Any:
    """Import cvxpy without letting it load ``highspy``.

    cvxpy probes every solver it knows at import time; probing ``HIGHS`` loads
    ``highspy``, whose ``libhighs`` breaks a later ``import ortools`` (and is broken by
    an earlier one). A ``None`` entry in ``sys.modules`` makes that probe find
    nothing, for the duration of the import only. If the caller imported highspy
    already, it is left alone.
    """
    if "cvxpy" in sys.modules:
        return sys.modules["cvxpy"]
    hide = "highspy" not in sys.modules
    if hide:
        sys.modules["highspy"] = None  # type: ignore[assignment]
    try:
        import cvxpy
    finally:
        if hide:
            del sys.modules["highspy"]
    return cvxpy


def _solve_lp(model: LinearModel, solver: str) -> tuple[str, float, np.ndarray | None, np.ndarray | None]:
    cp = import_cvxpy()
    z = cp.Variable(model.objective.size)
    A = model.matrix
    fin_u, fin_l = np.isfinite(model.upper), np.isfinite(model.lower)
    cons = [z >= 0, z <= 1]
    upper = A[fin_u] @ z <= model.upper[fin_u]
    lower = A[fin_l] @ z >= model.lower[fin_l]
    cons += [upper, lower]
    prob = cp.Problem(cp.Maximize(model.objective @ z), cons)
    prob.solve(solver=solver)
    if prob.status in ("infeasible", "infeasible_inaccurate"):
        return prob.status, -np.inf, None, None
    if z.value is None:
        return prob.status, -np.inf, None, None
    y = np.zeros(A.shape[0])
    # Row multipliers of the Lagrangian: +dual on an upper side, -dual on a lower side.
    if upper.dual_value is not None:
        y[fin_u] += np.asarray(upper.dual_value).reshape(-1)
    if lower.dual_value is not None:
        y[fin_l] -= np.asarray(lower.dual_value).reshape(-1)
    return prob.status, float(prob.value), np.clip(z.value, 0.0, 1.0), y


def solve(
    problem: Problem, *, time_limit: float | None = None, seed: int | None = None, **options: Any
) -> SolverResult:
    solver = check_options("lp", options).get("solver", "CLARABEL")
    model = linear_model(problem)
    if model.objective.size == 0:
        return empty_model_result(problem)
    status, value, z, y = _solve_lp(model, solver)
    stats: dict[str, Any] = {"lp_status": status, "lp_value": value, "solver": solver}
    if time_limit is not None:
        stats["time_limit_ignored"] = "cvxpy's interfaces to CLARABEL and SCIPY are not stopped early"
    if z is None or y is None:
        full = diagnose_generalised(problem, quick=False)
        msg = full.message if full is not None else f"the LP relaxation is {status}, so no assignment exists"
        if status.startswith("infeasible"):
            return SolverResult("infeasible", None, msg, stats=stats)
        raise RuntimeError(f"cvxpy/{solver} failed on the LP relaxation: status {status}")
    bound = lagrangian_bound(model, y)
    plan = model.to_matrix(z, problem.shape)
    nz = np.argwhere(plan > 1e-9)
    stats["plan"] = [[int(i), int(j), float(plan[i, j])] for i, j in nz]
    stats["fractional_pairs"] = int(((plan > 1e-6) & (plan < 1 - 1e-6)).sum())
    if problem.is_generalised:
        from .rounding import budget_priority, local_search, run_budget_greedy

        tie = budget_priority(problem)
        ranks = np.argsort(np.argsort(tie, axis=None)).reshape(problem.shape) / tie.size
        x, gstats, message = run_budget_greedy(problem, plan + 1e-3 * ranks)
        if x is None:
            status_ = "infeasible" if gstats.get("proven_infeasible") else "unknown"
            return SolverResult(status_, None, message, bound=bound, stats={**stats, **gstats})
        stats["moves"] = local_search(problem, x, 10)
        stats["rounding"] = "budget greedy by LP value, then local search"
        return SolverResult("feasible", x, "feasible (LP relaxation, rounded)", bound=bound, stats=stats)
    x = _support_flow(problem, plan)
    stats["rounding"] = "min-cost flow on the LP support"
    obj = problem.objective(x)
    optimal = obj >= bound - 1e-7 * max(1.0, abs(bound))
    status_ = "optimal" if optimal else "feasible"
    return SolverResult(
        status_, x, f"{status_} (LP relaxation, integral by total unimodularity)", bound=bound, stats=stats
    )


def _support_flow(problem: Problem, plan: np.ndarray) -> np.ndarray:
    """Integral optimum inside the LP support; the full flow if the support is not enough."""
    from .flow import solve as flow_solve

    support = problem.allowed & (plan > 1e-6)
    got = flow_solve(problem.replace(allowed=support))
    if got.matrix is None:  # tolerance cut off a needed pair: solve on the full mask
        got = flow_solve(problem)
    assert got.matrix is not None  # the LP was feasible, so the problem is
    return got.matrix
