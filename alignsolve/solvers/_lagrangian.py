"""Lagrangian bound and heuristic for the budget variant: relax the expert bounds, keep each client's knapsack.

With a price ``p_j`` on each expert's bounds, the budget variant splits into one
knapsack per client (see :mod:`._knapsack_kernels`)::

    L(p) = sum_i max_{x_i in X_i} sum_j (F_ij - p_j) x_ij
           + sum_j ( max(p_j, 0) * expert_max_j - max(-p_j, 0) * expert_min_j )

where ``X_i`` is client i's integer set (allowed pairs, budget, at most
``client_capacity`` experts). For any feasible x, ``sum F x <= L(p)`` (the price term
bounds ``p_j load_j`` since ``expert_min <= load <= expert_max``), so every ``L(p)`` is
a proven upper bound. Keeping the clients' sets integral is what makes it strong: the LP
relaxation lets every client fill its budget with a fraction of one more expert, which
on the ``budget`` family puts the LP bound about 6% above the optimum; ``L`` at good
prices is within a few hundredths of a percent of it.

The prices come from a projected subgradient method with Polyak steps towards the best
assignment found; every few steps the clients' sets are turned into an assignment
(:func:`~alignsolve.solvers.rounding.trim` drops pairs over an expert's cap, worst first,
then the budget greedy fills and meets lower bounds), which gives that target and the
heuristic's answer. Not covered: client minimums (a client's set would have to include
negative-value pairs) and a load penalty; :func:`lagrangian` returns None for those.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import budget_slack
from ..problem import Problem

__all__ = ["LagrangianResult", "lagrangian"]


@dataclass
class LagrangianResult:
    """What :func:`lagrangian` found.

    Attributes
    ----------
    bound : float
        The smallest ``L(p)`` evaluated: a proven upper bound on the optimum.
    matrix : ndarray of bool, shape (N, E), or None
        The best assignment the heuristic built (feasible), if any.
    objective : float
        Its objective (``-inf`` without one).
    prices : ndarray, shape (E,)
        The prices of the best bound.
    stats : dict
        ``iterations``, ``seconds``, ``clients_cut`` (searches stopped by the node limit,
        whose root bound was used instead), ``stop`` (why it stopped).
    """

    bound: float
    matrix: np.ndarray | None
    objective: float
    prices: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)


def lagrangian(
    problem: Problem,
    *,
    time_limit: float = 5.0,
    max_iterations: int = 300,
    gap: float = 1e-6,
    node_limit: int = 20000,
    node_budget: int = 2_000_000,
) -> LagrangianResult | None:
    """The Lagrangian bound and heuristic of the module docstring.

    Parameters
    ----------
    problem : Problem
        The budget variant without client minimums or load penalty (else None is returned).
    time_limit : float
        Seconds; the loop stops after the first iteration past it.
    max_iterations : int
    gap : float
        Stop once ``(bound - objective) / max(1, |objective|)`` is at most this.
    node_limit : int
        Search nodes per client knapsack before its root bound is used instead.
    node_budget : int
        Search nodes per iteration over all clients; past it the remaining clients use
        their root bound (still a valid bound, weaker), so an iteration stays short on
        large instances.
    """
    from ._knapsack_kernels import client_knapsacks
    from .rounding import budget_priority, run_budget_greedy, trim

    if not problem.is_generalised or problem.client_min.any() or problem.load_penalty > 0:
        return None
    start = time.perf_counter()
    n, e = problem.shape
    fit = np.ascontiguousarray(problem.fitness, dtype=np.float64)
    cost = np.ascontiguousarray(problem.cost, dtype=np.float64)
    budget = np.asarray(problem.budget, dtype=np.float64)
    # verify() accepts a budget exceeded by its slack: the bound covers those assignments too.
    loose = budget + budget_slack(budget)
    cap = problem.client_capacity.astype(np.int64)
    allowed = np.ascontiguousarray(problem.allowed)
    emax = np.minimum(problem.expert_max, n).astype(np.float64)
    emin = problem.expert_min.astype(np.float64)
    priority = budget_priority(problem)
    prices = np.zeros(e)
    take = np.zeros((n, e), dtype=bool)
    loads = np.zeros(e, dtype=np.int64)
    best_bound, best_prices = np.inf, prices.copy()
    best_x: np.ndarray | None = None
    best_obj = -np.inf
    theta, stall, cut, it, stop = 1.0, 0, 0, 0, "iterations"
    for it in range(1, max_iterations + 1):
        upper, _, cut = client_knapsacks(fit, cost, loose, cap, allowed, prices, node_limit, node_budget, take, loads)
        bound = upper + float(np.maximum(prices, 0.0) @ emax - np.maximum(-prices, 0.0) @ emin)
        if bound < best_bound - 1e-12 * abs(bound):
            best_bound, best_prices, stall = bound, prices.copy(), 0
        else:
            stall += 1
            if stall >= 5:
                theta, stall = theta / 2.0, 0
        if it == 1 or it % 5 == 0 or stall == 0:
            x, _, _ = run_budget_greedy(problem, priority, start=trim(problem, take))
            if x is not None:
                value = problem.objective(x)
                if value > best_obj:
                    best_obj, best_x = value, x
        if best_bound - best_obj <= gap * max(1.0, abs(best_obj)):
            stop = "gap"
            break
        if time.perf_counter() - start > time_limit:
            stop = "time_limit"
            break
        if theta < 1e-4:
            stop = "step"
            break
        # Subgradient of L: expert_max - load where the price is positive, expert_min - load
        # where negative; at 0 only the violated side moves the price.
        g = np.where(
            prices > 0,
            emax - loads,
            np.where(prices < 0, emin - loads, np.minimum(0.0, emax - loads) + np.maximum(0.0, emin - loads)),
        )
        norm = float(g @ g)
        if norm == 0.0:  # the knapsack sets already respect every expert bound: L is attained
            stop = "subgradient 0"
            break
        target = best_obj if np.isfinite(best_obj) else 0.95 * best_bound
        step = theta * max(bound - target, 1e-12 * max(1.0, abs(bound))) / norm
        moved = prices - step * g
        # A price does not jump across 0 in one step: it stops there (the bounds switch sides).
        prices = np.where(np.sign(moved) * np.sign(prices) < 0, 0.0, moved)
    stats = {
        "iterations": it,
        "seconds": time.perf_counter() - start,
        "clients_cut": int(cut),
        "stop": stop,
    }
    return LagrangianResult(best_bound, best_x, best_obj, best_prices, stats)
