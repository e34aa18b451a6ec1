"""An independent checker of every hard constraint.

It shares no code with the solvers: it recomputes row sums, column sums, the mask,
budgets and the objective from the matrix alone.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._validation import budget_slack
from .assignment import Assignment
from .errors import ConstraintViolation, InvalidProblemError
from .problem import Problem

__all__ = ["budget_slack", "verify"]

_MAX_LISTED = 5  # per constraint family, so that a huge failure stays readable


def verify(problem: Problem, assignment: Assignment | Any, *, objective_tol: float = 1e-6) -> None:
    """Check an assignment against every hard constraint of ``problem``.

    Parameters
    ----------
    problem : Problem or SparseProblem
    assignment : Assignment or array_like of bool, shape (N, E)
        An :class:`Assignment` with a solution, or a bare 0/1 matrix.
    objective_tol : float
        Relative tolerance for the reported objective of an :class:`Assignment`
        against the objective recomputed from its matrix.

    Returns
    -------
    None
        When every constraint holds.

    Raises
    ------
    ConstraintViolation
        Listing every violated constraint (shape, mask, client bounds, expert bounds,
        budgets, reported objective).
    InvalidProblemError
        When ``assignment`` is an :class:`Assignment` without a solution (infeasible).
    """
    from .sparse import SparseProblem

    if not isinstance(problem, (Problem, SparseProblem)):
        raise InvalidProblemError("problem", "must be an alignsolve.Problem or SparseProblem", type(problem).__name__)
    reported = None
    chosen = assignment
    if isinstance(assignment, Assignment):
        if not assignment.has_solution:
            raise InvalidProblemError("assignment", "must hold a solution to verify", f"status {assignment.status!r}")
        chosen, reported = assignment.matrix, assignment.objective

    violations: list[str] = []

    def report(family: str, idx: np.ndarray, describe: Any) -> None:
        for k in idx[:_MAX_LISTED]:
            violations.append(describe(k))
        if idx.size > _MAX_LISTED:
            violations.append(f"... and {idx.size - _MAX_LISTED} more {family} violations")

    if isinstance(problem, SparseProblem):
        # The pairs must be candidates; then the same bounds and objective as the dense form.
        try:
            mask = problem.entry_mask(chosen)
        except InvalidProblemError as exc:
            raise ConstraintViolation([str(exc)]) from None
        n, e = problem.shape
        counts = np.bincount(problem.rows[mask], minlength=n).astype(np.int64)
        loads = np.bincount(problem.indices[mask], minlength=e).astype(np.int64)
        _check_bounds(problem, counts, loads, report)
        actual = problem.objective(mask) if reported is not None else None
    else:
        x = np.asarray(chosen)
        if x.dtype != bool:
            if not np.isin(x, (0, 1)).all():
                raise ConstraintViolation([f"entries must be 0/1, found values {np.unique(x)[:5].tolist()}"])
            x = x.astype(bool)
        if x.shape != problem.shape:
            raise ConstraintViolation([f"matrix shape {x.shape} differs from the problem's {problem.shape}"])
        forbidden = np.argwhere(x & ~problem.allowed)
        report("allowed", forbidden, lambda p: f"pair (client {p[0]}, expert {p[1]}) is not allowed")
        counts = x.sum(axis=1, dtype=np.int64)
        loads = x.sum(axis=0, dtype=np.int64)
        _check_bounds(problem, counts, loads, report)
        if problem.is_generalised:
            assert problem.cost is not None and problem.budget is not None  # narrowing for mypy
            used = (problem.cost * x).sum(axis=1)
            budget = problem.budget
            slack = budget_slack(budget)
            report(
                "budget",
                np.flatnonzero(used > budget + slack),
                lambda i: f"client {i} uses {used[i]:.6g} > budget {budget[i]:.6g}",
            )
        actual = None
        if reported is not None:
            actual = float((problem.fitness * x).sum())
            if problem.load_penalty:
                lf = loads.astype(np.float64)
                actual -= problem.load_penalty * float(lf @ lf)

    if reported is not None and not math.isclose(reported, actual, rel_tol=objective_tol, abs_tol=objective_tol):
        violations.append(f"reported objective {reported!r} differs from the recomputed {actual!r}")
    if violations:
        raise ConstraintViolation(violations)


def _check_bounds(problem: Any, counts: np.ndarray, loads: np.ndarray, report: Any) -> None:
    # (family, who, verb, noun, value, limit, upper): value must be <= limit when upper, else >=.
    bounds = (
        ("client_capacity", "client", "trains", "experts", counts, problem.client_capacity, True),
        ("client_min", "client", "trains", "experts", counts, problem.client_min, False),
        ("expert_max", "expert", "has", "clients", loads, problem.expert_max, True),
        ("expert_min", "expert", "has", "clients", loads, problem.expert_min, False),
    )
    for family, who, verb, noun, value, limit, upper in bounds:
        sign = ">" if upper else "<"
        broken = np.flatnonzero(value > limit if upper else value < limit)
        # report() calls describe before the next iteration, so the loop variables are current.
        report(family, broken, lambda k: f"{who} {k} {verb} {value[k]} {noun} {sign} {family} {limit[k]}")  # noqa: B023
