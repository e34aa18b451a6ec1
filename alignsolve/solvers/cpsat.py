"""Exact method for both variants: OR-Tools CP-SAT on an integer-scaled model.

Model: a Boolean per allowed pair that fits its client's budget; the slot, load and
budget rows as linear constraints; with a load penalty, an integer ``load_j`` and
``sq_j = load_j**2`` (multiplication equality). CP-SAT needs integers:

* fitness is multiplied by ``scale`` (a power of two, option, default so that the
  largest ``|F|`` is about 2**24) and rounded; ``lambda * scale`` is rounded too;
* costs are scaled per client so that the budget is about 2**40, rounded to the
  nearest integer, and the budget rounded down after adding half of the tolerance
  that :func:`alignsolve.verify` grants (1e-9 relative): every CP-SAT solution then
  passes ``verify`` and, for E up to about 1000 experts, no assignment within the
  true budget is cut off.

``bound`` is CP-SAT's proven objective bound divided by ``scale`` plus
``stats["rounding_error_bound"]`` (what rounding the fitness can have hidden), so it
bounds the true optimum. ``status`` is ``"optimal"`` only when CP-SAT proved it;
stopped by ``time_limit`` it is ``"time_limit"`` with the best assignment and bound.

Options: ``workers`` (CP-SAT's ``num_workers``, default: the CPU count),
``scale``, ``hint`` (default True: the greedy answer, or ``warm_start``, is given to
CP-SAT as a solution hint), ``warm_start`` (an assignment or (N, E) matrix).
``lagrangian`` (default True): on the budget variant without client minimums or load
penalty, first run the Lagrangian bound and heuristic of :mod:`._lagrangian` (up to 10 s,
at most a third of ``time_limit``); its answer becomes the hint when it beats greedy's,
the reported ``bound`` is the smaller of CP-SAT's and the Lagrangian one (both proven),
the answer is the better of CP-SAT's and the heuristic's, and when the two meet the
status is ``"optimal"`` without waiting for CP-SAT (``stats["lagrangian_*"]``).
``seed`` sets CP-SAT's ``random_seed``; with several workers its search is still not
bit-for-bit reproducible, only the proven optimum is.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np

from .._validation import budget_slack, value_tolerance
from ..errors import ConstraintViolation, InvalidProblemError
from ..feasibility import budget_relaxation, diagnose_generalised
from ..problem import Problem
from . import SolverResult, check_options
from ._lagrangian import LagrangianResult, lagrangian

__all__ = ["solve"]

_FITNESS_BITS = 24
_BUDGET_BITS = 40
#: Variables made between two looks at the clock while the model is built.
_BUILD_STEP = 20_000


def _fitness_scale(max_abs: float) -> float:
    if max_abs == 0:
        return 1.0
    return 2.0 ** (_FITNESS_BITS - math.ceil(math.log2(max_abs)))


def _integer_budgets(cost: np.ndarray, budget: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-client scaled integer costs (N, E) and budgets (N,) (see the module docstring)."""
    slack = 0.5 * budget_slack(budget)
    top = np.maximum(budget + slack, cost.max(axis=1, initial=0.0))
    # Exponents as integers and ldexp, not exp2: a cost of 1e-300 needs a factor 2**1037,
    # beyond a double, while the scaled costs themselves are ordinary numbers.
    exponent = (_BUDGET_BITS - np.frexp(top)[1]).astype(np.int64)
    icost = np.rint(np.ldexp(cost, exponent[:, None])).astype(np.int64)
    ibudget = np.floor(np.ldexp(budget + slack, exponent)).astype(np.int64)
    return icost, ibudget


def solve(
    problem: Problem, *, time_limit: float | None = None, seed: int | None = None, **options: Any
) -> SolverResult:
    options = check_options("cpsat", options)
    from ortools.sat.python import cp_model

    clock = time.perf_counter()
    lag = None
    if problem.is_generalised and options.get("lagrangian", True):
        share = 10.0 if time_limit is None else min(10.0, time_limit / 3.0)
        lag = lagrangian(problem, time_limit=share, gap=1e-9)
    if lag is not None and lag.matrix is not None and _closed(lag.bound, lag.objective):
        stats0 = _lagrangian_stats(lag)
        return SolverResult(
            "optimal", lag.matrix, "optimal (proven by the Lagrangian bound)", bound=lag.bound, stats=stats0
        )
    n, e = problem.shape
    relaxed = budget_relaxation(problem)
    rows, cols = np.nonzero(relaxed.allowed)
    fit = problem.fitness[rows, cols]
    top = float(np.abs(fit).max(initial=0.0))
    # The penalty's lambda sets the scale too: a zero fitness matrix must not leave lambda to be rounded to 0.
    scale = float(options.get("scale") or _fitness_scale(max(top, problem.load_penalty)))
    # Every coefficient and every sum of them must be exact in int64 (and in a double on the way there).
    ceiling = min(2.0**53, 2.0**62 / max(1, len(rows)))
    if max(top, problem.load_penalty * float(n) ** 2) * scale > ceiling:
        raise InvalidProblemError(
            "scale",
            f"must keep max|fitness| * scale below {ceiling:g} (and lambda * N^2 * scale) so that CP-SAT's "
            f"integer model stays exact; at most {ceiling / max(top, 1e-300):g} here",
            scale,
        )
    ifit = np.rint(fit * scale).astype(np.int64)
    lam = problem.load_penalty
    ilam = round(lam * scale)
    stats: dict[str, Any] = {"variables": len(rows), "scale": scale}
    if lag is not None:
        stats.update(_lagrangian_stats(lag))
    hint = _hint(problem, options, lag)

    def out_of_time() -> bool:
        # Building the model is Python work over every pair; past the limit, CP-SAT is not started.
        return time_limit is not None and time.perf_counter() - clock >= time_limit

    model = cp_model.CpModel()
    xs: list[Any] = []
    names = [f"x{i}_{j}" for i, j in zip(rows.tolist(), cols.tolist())]
    for lo in range(0, len(names), _BUILD_STEP):
        xs.extend(model.new_bool_var(name) for name in names[lo : lo + _BUILD_STEP])
        if out_of_time():
            return _best_known(problem, hint, lag, stats)
    by_client: list[list[int]] = [[] for _ in range(n)]
    by_expert: list[list[int]] = [[] for _ in range(e)]
    for p, (i, j) in enumerate(zip(rows.tolist(), cols.tolist())):
        by_client[i].append(p)
        by_expert[j].append(p)
    cmin, cap = problem.client_min.tolist(), problem.client_capacity.tolist()
    emin, emax = problem.expert_min.tolist(), problem.expert_max.tolist()
    for i in range(n):
        if by_client[i] and (cmin[i] > 0 or cap[i] < len(by_client[i])):
            model.add_linear_constraint(cp_model.LinearExpr.sum([xs[p] for p in by_client[i]]), cmin[i], cap[i])
    loads = []
    for j in range(e):
        expr = cp_model.LinearExpr.sum([xs[p] for p in by_expert[j]])
        if ilam:
            top = min(emax[j], len(by_expert[j]))
            load = model.new_int_var(emin[j], max(emin[j], top), f"load{j}")
            model.add(load == expr)
            loads.append((load, top))
        elif by_expert[j] and (emin[j] > 0 or emax[j] < len(by_expert[j])):
            model.add_linear_constraint(expr, emin[j], emax[j])
    if out_of_time():
        return _best_known(problem, hint, lag, stats)
    if problem.is_generalised:
        icost, ibudget = _integer_budgets(problem.cost, problem.budget)  # type: ignore[arg-type]
        for i in range(n):
            pairs = by_client[i]
            weights = icost[i, cols[pairs]]
            if pairs and int(weights.sum()) > ibudget[i]:  # otherwise the budget cannot bind
                row = cp_model.LinearExpr.weighted_sum([xs[p] for p in pairs], weights.tolist())
                model.add(row <= int(ibudget[i]))
    objective = cp_model.LinearExpr.weighted_sum(xs, ifit.tolist())
    if ilam:
        squares = []
        for j, (load, top) in enumerate(loads):
            sq = model.new_int_var(0, max(top, emin[j]) ** 2, f"sq{j}")
            model.add_multiplication_equality(sq, [load, load])
            squares.append(sq)
        objective = objective - ilam * sum(squares)
    model.maximize(objective)
    if out_of_time():
        return _best_known(problem, hint, lag, stats)
    if hint is not None and options.get("hint", True):
        values = hint[rows, cols].tolist()
        for lo in range(0, len(xs), _BUILD_STEP):
            for p in range(lo, min(lo + _BUILD_STEP, len(xs))):
                model.add_hint(xs[p], values[p])
            if out_of_time():
                return _best_known(problem, hint, lag, stats)
        stats["hinted"] = True

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = int(options.get("workers") or os.cpu_count() or 1)
    if time_limit is not None:
        left = float(time_limit) - (time.perf_counter() - clock)
        if left < 0.05:  # too little for CP-SAT to load the model and search
            return _best_known(problem, hint, lag, stats)
        solver.parameters.max_time_in_seconds = left
    if seed is not None:
        solver.parameters.random_seed = int(seed) % (2**31)
    code = solver.solve(model)
    stats.update(
        cp_status=solver.status_name(code),
        wall_time_cpsat=solver.wall_time,
        branches=int(solver.num_branches),
        workers=int(solver.parameters.num_workers),
    )
    if code == cp_model.INFEASIBLE:
        full = diagnose_generalised(problem, quick=False)
        msg = (
            full.message if full is not None else "CP-SAT proved that the budgets cannot hold together with the bounds"
        )
        return SolverResult("infeasible", None, msg, stats=stats)
    if code == cp_model.MODEL_INVALID:  # a bug of ours, not the user's input
        raise RuntimeError(f"CP-SAT rejected the model: {model.validate()}")
    # Rounding each fitness hides at most its own rounding error per taken pair, and rounding lambda
    # at most |lambda*scale - ilam| / scale per unit of sum(load^2).
    taken = min(int(problem.client_capacity.sum()), int(problem.expert_max.sum()), len(xs))
    per_pair = float(np.abs(ifit - fit * scale).max(initial=0.0)) / scale  # at most 0.5 / scale
    err = per_pair * taken + abs(lam * scale - ilam) / scale * float(np.square(np.minimum(problem.expert_max, n)).sum())
    stats["rounding_error_bound"] = err
    # CP-SAT's objective bound means something only once it has finished its presolve and
    # reported a status with a solution; stopped earlier (UNKNOWN) the field holds no proof.
    bound = solver.best_objective_bound / scale + err if code in (cp_model.OPTIMAL, cp_model.FEASIBLE) else math.inf
    x = None
    value = -math.inf
    if code in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        values = np.fromiter((solver.boolean_value(v) for v in xs), bool, len(xs))
        x = np.zeros((n, e), bool)
        x[rows, cols] = values
        value = problem.objective(x)
    proven = code == cp_model.OPTIMAL
    if lag is not None:
        bound = min(bound, lag.bound)  # both bounds are proven
    # Never less than the hint or the Lagrangian heuristic: CP-SAT stopped early may hold nothing, or something worse.
    x, value = _best_of(problem, x, value, hint, lag, stats)
    if not math.isfinite(bound):
        bound = None
    proven = proven or (x is not None and bound is not None and _closed(bound, value))
    if x is None:
        return SolverResult("time_limit", None, "CP-SAT stopped before finding an assignment", bound=bound, stats=stats)
    status = "optimal" if proven else "time_limit"
    return SolverResult(status, x, f"{status} (CP-SAT)", bound=bound, stats=stats)


def _best_of(
    problem: Problem,
    x: np.ndarray | None,
    value: float,
    hint: np.ndarray | None,
    lag: LagrangianResult | None,
    stats: dict[str, Any],
) -> tuple[np.ndarray | None, float]:
    """The best of ``x`` (value ``value``), the Lagrangian heuristic's answer and the hint, if feasible."""
    if lag is not None and lag.matrix is not None and lag.objective > value:
        x, value, stats["answer_from"] = lag.matrix, lag.objective, "lagrangian heuristic"
    if hint is not None and _feasible(problem, hint):
        hinted = problem.objective(hint)
        if hinted > value:
            x, value, stats["answer_from"] = hint, hinted, "hint"
    return x, value


def _best_known(problem: Problem, hint: np.ndarray | None, lag: LagrangianResult | None, stats: dict[str, Any]):
    """The answer when the time limit passed before CP-SAT could start: the hint or the Lagrangian's."""
    stats["cp_status"] = "not started (time limit reached while building the model)"
    x, _ = _best_of(problem, None, -math.inf, hint, lag, stats)
    bound = None if lag is None else lag.bound
    message = "time_limit (CP-SAT not started: the limit passed while building its model)"
    return SolverResult("time_limit", x, message, bound=bound, stats=stats)


def _feasible(problem: Problem, x: np.ndarray) -> bool:
    from ..verify import verify

    try:
        verify(problem, x)
    except (ConstraintViolation, InvalidProblemError):
        return False
    return True


def _closed(bound: float, value: float) -> bool:
    """Whether a proven bound meets an assignment's value (then it is optimal).

    A bound below the value by more than the tolerance is no proof of anything (it
    cannot be valid), so it does not close the gap either.
    """
    tol = value_tolerance(value)
    return math.isfinite(value) and -tol <= bound - value <= tol


def _lagrangian_stats(lag: LagrangianResult) -> dict[str, Any]:
    return {
        "lagrangian_bound": lag.bound,
        "lagrangian_objective": lag.objective,
        **{f"lagrangian_{k}": v for k, v in lag.stats.items()},
    }


def _hint(problem: Problem, options: dict[str, Any], lag: LagrangianResult | None) -> np.ndarray | None:
    start = options.get("warm_start")
    if start is not None:
        return np.asarray(start, bool)
    from .greedy import solve as greedy_solve

    got = greedy_solve(problem)
    if lag is not None and lag.matrix is not None and (got.matrix is None or lag.objective > got.objective):
        return lag.matrix
    return got.matrix
