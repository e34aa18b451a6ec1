"""Exact method: the MIP of :mod:`alignsolve.solvers._model` through ``scipy.optimize.milp``.

scipy bundles its own HiGHS, so this backend never loads the ``highspy`` package
(which clashes with OR-Tools' copy of HiGHS in one process, see the README).

* Unit and generalised variants, load penalty included (continuous load units).
* ``time_limit`` is passed to HiGHS; stopped early with an incumbent the status is
  ``"time_limit"`` and ``bound`` is HiGHS's proven dual bound.
* ``mip_rel_gap`` (option, default 1e-9) is HiGHS's stopping gap: ``"optimal"``
  means proven within it.
* ``warm_start`` cannot be used: ``scipy.optimize.milp`` takes no initial solution.

HiGHS accepts a constraint violated by its feasibility tolerance (1e-7 absolute);
when rounding the pair variables to 0/1 breaks a budget by more than
:func:`alignsolve.verify` allows, the budget rows are tightened by the excess and the
model solved again (at most three times, ``stats["budget_tightenings"]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..feasibility import diagnose_generalised
from ..problem import Problem
from . import SolverResult, check_options, quick_infeasibility
from ._model import empty_model_result, linear_model

__all__ = ["solve"]

_TIGHTEN_ROUNDS = 3


def solve(
    problem: Problem, *, time_limit: float | None = None, seed: int | None = None, **options: Any
) -> SolverResult:
    check_options("milp", options, ("mip_rel_gap",))
    from scipy.optimize import Bounds, LinearConstraint, milp

    refused = quick_infeasibility(problem)
    if refused is not None:
        return refused
    model = linear_model(problem)
    if model.objective.size == 0:
        return empty_model_result(problem)
    n, e = problem.shape
    upper = model.upper.copy()
    budget_rows = slice(upper.size - n, upper.size) if problem.is_generalised else None
    hi_opts: dict[str, Any] = {"disp": False, "mip_rel_gap": float(options.get("mip_rel_gap", 1e-9))}
    if time_limit is not None:
        hi_opts["time_limit"] = float(time_limit)
    stats: dict[str, Any] = {
        "variables": int(model.objective.size),
        "constraints": int(model.matrix.shape[0]),
        "budget_tightenings": 0,
    }
    first_bound: float | None = None
    for attempt in range(_TIGHTEN_ROUNDS + 1):
        res = milp(
            -model.objective,
            constraints=LinearConstraint(model.matrix, model.lower, upper),
            integrality=model.integrality,
            bounds=Bounds(0.0, 1.0),
            options=hi_opts,
        )
        stats["highs_status"] = int(res.status)
        stats["highs_message"] = str(res.message)
        if res.status == 2:
            full = diagnose_generalised(problem, quick=False)
            msg = full.message if full is not None else "HiGHS proved that no assignment satisfies every constraint"
            if full is not None:
                stats["certificate"] = full.to_dict()
            return SolverResult("infeasible", None, msg, stats=stats)
        bound = None if getattr(res, "mip_dual_bound", None) is None else -float(res.mip_dual_bound)
        if attempt == 0:
            # A tightened model's dual bound may fall below the true optimum: keep the first.
            first_bound = bound
        bound = first_bound
        if res.x is None:
            msg = f"HiGHS stopped without an assignment: {res.message}"
            return SolverResult("time_limit" if res.status == 1 else "infeasible", None, msg, bound=bound, stats=stats)
        x = np.zeros((n, e), bool)
        x[model.rows, model.cols] = res.x[: model.n_pairs] > 0.5
        if budget_rows is None:
            break
        used = (problem.cost * x).sum(axis=1)  # type: ignore[operator]
        excess = used - problem.budget - 1e-9 * np.maximum(1.0, problem.budget)  # type: ignore[operator]
        if (excess <= 0).all():
            break
        if attempt == _TIGHTEN_ROUNDS:
            msg = "HiGHS's answers kept exceeding a budget by more than its tolerance after rounding"
            return SolverResult("unknown", None, msg, bound=bound, stats=stats)
        stats["budget_tightenings"] += 1
        upper[budget_rows] -= np.maximum(excess, 0.0) + 1e-9 * np.maximum(1.0, problem.budget)  # type: ignore[operator]
    stats["nodes"] = int(getattr(res, "mip_node_count", 0) or 0)
    status = "optimal" if res.status == 0 else "time_limit"
    if status == "optimal" and stats["budget_tightenings"]:
        # Proven optimal for the tightened budgets only; optimal overall if it meets the first bound.
        obj = problem.objective(x)
        if bound is None or obj < bound - 1e-9 * max(1.0, abs(bound)) - hi_opts["mip_rel_gap"] * abs(bound):
            status = "feasible"
    return SolverResult(status, x, f"{status} (HiGHS via scipy: {res.message})", bound=bound, stats=stats)
