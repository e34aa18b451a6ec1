"""Exact method: the MIP of :mod:`alignsolve.solvers.linear_model` through ``scipy.optimize.milp``.

scipy bundles its own HiGHS, so this backend never loads the ``highspy`` package
(which clashes with OR-Tools' copy of HiGHS in one process, see docs/contributing.md).

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

import time
from typing import Any

import numpy as np

from .._validation import budget_slack
from ..feasibility import diagnose_generalised
from ..problem import Problem
from . import SolverResult, check_options
from .linear_model import empty_model_result, linear_model

__all__ = ["solve"]

_TIGHTEN_ROUNDS = 3
#: HiGHS checks its time limit only between phases of its work and can overrun it by seconds
#: (an LP solve at the root is not interrupted). With a ``time_limit`` it runs in a forked
#: child that is stopped this many seconds after the limit.
_GRACE = 0.25
#: HiGHS is given this share of the time left, so that it usually stops by itself, with its incumbent and
#: its dual bound, before the child would be stopped.
_HIGHS_SHARE = 0.8


def _highs(objective: np.ndarray, constraints: Any, integrality: np.ndarray, options: dict[str, Any]) -> Any:
    from scipy.optimize import Bounds, milp

    return milp(objective, constraints=constraints, integrality=integrality, bounds=Bounds(0.0, 1.0), options=options)


def _child(conn: Any, args: tuple[Any, ...]) -> None:
    try:
        res = _highs(*args)
        conn.send(
            {
                "status": res.status,
                "message": res.message,
                "x": res.x,
                "mip_dual_bound": getattr(res, "mip_dual_bound", None),
                "mip_node_count": getattr(res, "mip_node_count", 0),
            }
        )
    except BaseException as exc:  # reported to the parent, which raises it
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def _highs_within(args: tuple[Any, ...], seconds: float) -> Any:
    """HiGHS in a forked child, stopped after ``seconds``; None when it was stopped.

    Where fork is unavailable HiGHS runs in this process (its own limit only).
    """
    import multiprocessing as mp
    from types import SimpleNamespace

    if "fork" not in mp.get_all_start_methods():
        return _highs(*args)
    ctx = mp.get_context("fork")
    here, there = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(there, args), daemon=True)
    proc.start()
    there.close()
    try:
        if not here.poll(max(seconds, 0.05)):
            return None
        got = here.recv()
    except EOFError:
        got = {"error": "the HiGHS child process ended without an answer"}
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        here.close()
    if "error" in got:
        raise RuntimeError(f"scipy.optimize.milp failed: {got['error']}")
    return SimpleNamespace(**got)


def _greedy_answer(problem: Problem) -> np.ndarray | None:
    """Greedy's assignment, ready before HiGHS starts: the answer if HiGHS is stopped, finds nothing, or less."""
    from .greedy import solve as greedy_solve

    return greedy_solve(problem).matrix


def solve(
    problem: Problem, *, time_limit: float | None = None, seed: int | None = None, **options: Any
) -> SolverResult:
    options = check_options("milp", options)
    from scipy.optimize import LinearConstraint

    clock = time.perf_counter()
    model = linear_model(problem)
    if model.objective.size == 0:
        return empty_model_result(problem)
    n, e = problem.shape
    upper = model.upper.copy()
    budget_rows = slice(upper.size - n, upper.size) if problem.is_generalised else None
    hi_opts: dict[str, Any] = {"disp": False, "mip_rel_gap": float(options.get("mip_rel_gap", 1e-9))}
    stats: dict[str, Any] = {
        "variables": int(model.objective.size),
        "constraints": int(model.matrix.shape[0]),
        "budget_tightenings": 0,
    }
    first_bound: float | None = None
    fallback: np.ndarray | None = None
    for attempt in range(_TIGHTEN_ROUNDS + 1):
        if time_limit is not None:
            # The model's construction and earlier attempts count against the caller's limit.
            hi_opts["time_limit"] = max(0.01, _HIGHS_SHARE * (float(time_limit) - (time.perf_counter() - clock)))
        args = (-model.objective, LinearConstraint(model.matrix, model.lower, upper), model.integrality, hi_opts)
        if time_limit is None:
            res = _highs(*args)
        else:
            if attempt == 0:  # ready before HiGHS starts, so that stopping it costs nothing more
                fallback = _greedy_answer(problem)
            res = _highs_within(args, float(time_limit) - (time.perf_counter() - clock) + _GRACE)
            if res is None:
                stats["highs_stopped"] = f"HiGHS overran its time limit by more than {_GRACE} s and was stopped"
                message = "HiGHS was stopped at the time limit"
                if fallback is not None:
                    stats["answer_from"] = "greedy (HiGHS was stopped at the time limit)"
                    message = "time_limit (HiGHS stopped; greedy's answer)"
                return SolverResult("time_limit", fallback, message, bound=first_bound, stats=stats)
        stats["highs_status"] = int(res.status)
        stats["highs_message"] = str(res.message)
        if res.status == 2 and "infeasible" not in str(res.message).lower():
            # scipy reports some HiGHS failures (a model error) under the infeasible code: that proves nothing.
            return SolverResult("unknown", None, f"HiGHS failed: {res.message}", stats=stats)
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
            # Status 1 is HiGHS's time or node limit; anything else without an answer (3: unbounded or
            # numerical trouble, 4: other) proves nothing about feasibility.
            msg = f"HiGHS stopped without an assignment: {res.message}"
            if res.status == 1 and fallback is not None:
                stats["answer_from"] = "greedy (HiGHS found no assignment within the time limit)"
                return SolverResult("time_limit", fallback, msg, bound=bound, stats=stats)
            return SolverResult("time_limit" if res.status == 1 else "unknown", None, msg, bound=bound, stats=stats)
        x = np.zeros((n, e), bool)
        x[model.rows, model.cols] = res.x[: model.n_pairs] > 0.5
        if budget_rows is None:
            break
        used = (problem.cost * x).sum(axis=1)  # type: ignore[operator]
        excess = used - problem.budget - budget_slack(problem.budget)  # type: ignore[operator]
        if (excess <= 0).all():
            break
        if attempt == _TIGHTEN_ROUNDS:
            msg = "HiGHS's answers kept exceeding a budget by more than its tolerance after rounding"
            return SolverResult("unknown", None, msg, bound=bound, stats=stats)
        stats["budget_tightenings"] += 1
        shrink = np.maximum(excess, 0.0) + budget_slack(problem.budget)  # type: ignore[operator]
        upper[budget_rows] -= shrink * model.budget_scale  # the rows are scaled (see linear_model)
    stats["nodes"] = int(getattr(res, "mip_node_count", 0) or 0)
    status = {0: "optimal", 1: "time_limit"}.get(int(res.status), "feasible")
    if status == "optimal" and stats["budget_tightenings"]:
        # Proven optimal for the tightened budgets only; optimal overall if it meets the first bound.
        obj = problem.objective(x)
        if bound is None or obj < bound - 1e-9 * max(1.0, abs(bound)) - hi_opts["mip_rel_gap"] * abs(bound):
            status = "feasible"
    if status != "optimal" and fallback is not None:
        # Stopped early, HiGHS's incumbent can be worse than the greedy answer already in hand: keep the better.
        if problem.objective(fallback) > problem.objective(x):
            x = fallback
            stats["answer_from"] = "greedy (better than HiGHS's incumbent at the time limit)"
    return SolverResult(status, x, f"{status} (HiGHS via scipy: {res.message})", bound=bound, stats=stats)
