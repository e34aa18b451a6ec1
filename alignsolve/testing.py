"""Reference optima computed independently of alignsolve's solvers, to cross-check them.

The test suite and the regression instances (``datasets/instances/make_instances.py``) use
these as oracles; so can a user checking a solver on their own small instances. Neither
calls any of alignsolve's methods: :func:`milp_optimum` states the unit variant as an
integer program for scipy's HiGHS MILP, :func:`brute_force` enumerates every 0/1 matrix.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from .problem import Problem

__all__ = ["brute_force", "milp_optimum"]


def milp_optimum(problem: Problem) -> float | None:
    """Optimum of the unit variant (no load penalty) by scipy's MILP (HiGHS); None if infeasible."""
    if problem.load_penalty != 0 or problem.is_generalised:
        raise ValueError(
            "problem: milp_optimum takes the unit variant (load_penalty 0, no budgets); got "
            f"load_penalty={problem.load_penalty}, budgets={'yes' if problem.is_generalised else 'no'}"
        )
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
    if res.status != 0:
        raise RuntimeError(f"scipy.optimize.milp did not solve the oracle's program: {res.message}")
    return float(-res.fun)


def brute_force(problem: Problem) -> tuple[float | None, np.ndarray | None]:
    """Optimum by enumerating every 0/1 matrix on the allowed pairs (tiny instances only)."""
    ai, aj = np.nonzero(problem.allowed)
    if len(ai) > 14:
        raise ValueError(f"problem: brute_force enumerates 2^pairs, so at most 14 allowed pairs; got {len(ai)}")
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
