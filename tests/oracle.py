"""Reference optima computed independently of alignsolve's solvers (test-side only)."""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

import alignsolve as als


def milp_optimum(problem: als.Problem) -> float | None:
    """Optimum of the unit variant (no load penalty) by scipy's MILP (HiGHS); None if infeasible."""
    assert problem.load_penalty == 0 and not problem.is_generalised
    n, e = problem.shape
    ai, aj = np.nonzero(problem.allowed)
    p = len(ai)
    if p == 0:
        feasible = not problem.client_min.any() and not problem.expert_min.any()
        return 0.0 if feasible else None
    rows = np.zeros((n, p))
    rows[ai, np.arange(p)] = 1
    cols = np.zeros((e, p))
    cols[aj, np.arange(p)] = 1
    cons = [
        LinearConstraint(rows, problem.client_min, problem.client_capacity),
        LinearConstraint(cols, problem.expert_min, problem.expert_max),
    ]
    res = milp(-problem.fitness[ai, aj], constraints=cons, integrality=np.ones(p), bounds=Bounds(0, 1))
    if res.status == 2:
        return None
    assert res.status == 0, res.message
    return float(-res.fun)


def brute_force(problem: als.Problem) -> tuple[float | None, np.ndarray | None]:
    """Optimum by enumerating every 0/1 matrix on the allowed pairs (tiny instances only)."""
    ai, aj = np.nonzero(problem.allowed)
    assert len(ai) <= 14, "brute force is for tiny instances"
    best, best_x = None, None
    for bits in itertools.product((False, True), repeat=len(ai)):
        x = np.zeros(problem.shape, dtype=bool)
        x[ai, aj] = bits
        counts, loads = x.sum(1), x.sum(0)
        if ((counts < problem.client_min) | (counts > problem.client_capacity)).any():
            continue
        if ((loads < problem.expert_min) | (loads > problem.expert_max)).any():
            continue
        if problem.is_generalised and ((problem.cost * x).sum(1) > problem.budget + 1e-9).any():
            continue
        value = float((problem.fitness * x).sum()) - problem.load_penalty * float((loads.astype(float) ** 2).sum())
        if best is None or value > best + 1e-12:
            best, best_x = value, x
    return best, best_x
