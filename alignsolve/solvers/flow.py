"""Exact method: min-cost circulation with OR-Tools ``SimpleMinCostFlow``.

Graph (node ids: source 0, clients 1..N, experts N+1..N+E, sink N+E+1)::

    source -> client i     capacity client_capacity_i - client_min_i, cost 0
    client i -> expert j   capacity 1, cost -round(F_ij * scale)      (allowed pairs)
    expert j -> sink       capacity expert_max_j - expert_min_j, cost 0, or, with a
                           load penalty, one unit arc per load k > expert_min_j with
                           cost round(lambda * (2k - 1) * scale)  (k^2 - (k-1)^2 = 2k - 1)
    sink -> source         uncapacitated, cost 0  (the amount of flow is free)

Lower bounds become node supplies (client i +client_min_i, source -sum client_min,
expert j -expert_min_j, sink +sum expert_min). The constraint matrix is totally
unimodular and the penalty's unit arcs have increasing costs, so the min-cost
circulation is the exact integral optimum of the convex objective. Fitness is scaled
by a power of two to integers; ``stats["rounding_error_bound"]`` bounds how far the
float objective may be from the true optimum (0 when the scaling is exact).

``time_limit`` is not supported by SimpleMinCostFlow (it cannot be interrupted); the
option is accepted and ignored, and ``stats["time_limit_ignored"]`` says so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..feasibility import diagnose
from ..problem import Problem
from . import SolverResult, check_options

__all__ = ["solve"]

_INT_LIMIT = 2**62


def _choose_scale(max_abs_cost: float, n_nodes: int, max_flow: int) -> float:
    """The largest power of two keeping every scaled cost safely inside int64.

    OR-Tools multiplies costs by the node count during cost scaling and sums
    ``cost * flow``; both must stay below 2**63. Costs are kept <= 2**50 so that the
    float -> int conversion is exact.
    """
    if max_abs_cost == 0:
        return 1.0
    ceiling = min(_INT_LIMIT / (n_nodes + 1), _INT_LIMIT / (max_flow + 1), 2.0**50)
    return 2.0 ** math.floor(math.log2(ceiling / max_abs_cost))


def solve(
    problem: Problem, *, time_limit: float | None = None, seed: int | None = None, **options: Any
) -> SolverResult:
    check_options("flow", options, ("scale",))
    from ortools.graph.python import min_cost_flow

    n, e = problem.shape
    fit = problem.fitness
    cap, cmin = problem.client_capacity, problem.client_min
    emin = problem.expert_min
    allowed = problem.allowed
    lam = problem.load_penalty
    # Pairs that can never improve the objective are dropped when no lower bound
    # could need them (every other arc costs >= 0).
    if problem.has_lower_bounds:
        ai, aj = np.nonzero(allowed)
    else:
        ai, aj = np.nonzero(allowed & (fit > 0))
    f_pairs = fit[ai, aj]
    # Loads can never exceed expert_max, nor the allowed clients of the expert.
    emax = np.minimum(problem.expert_max, np.bincount(aj, minlength=e))
    emax = np.maximum(emax, emin)  # keep expert_min <= ub; infeasibility is diagnosed below
    max_flow = int(min(cap.sum(), emax.sum(), max(len(ai), 1)))

    if lam > 0:
        extra = np.maximum(emax - emin, 0)
        pen_expert = np.repeat(np.arange(e), extra)
        offsets = np.repeat(np.cumsum(extra) - extra, extra)
        pen_k = np.arange(extra.sum()) - offsets + np.repeat(emin, extra) + 1
        pen_real = lam * (2.0 * pen_k - 1.0)
    else:
        pen_expert = np.arange(e)
        pen_real = np.zeros(e)
    max_abs = float(max(np.abs(f_pairs).max(initial=0.0), pen_real.max(initial=0.0)))
    scale = float(options.get("scale") or _choose_scale(max_abs, n + e + 2, max_flow))

    pair_cost = -np.rint(f_pairs * scale)
    pen_cost = np.rint(pen_real * scale)
    err_pair = float(np.abs(pair_cost + f_pairs * scale).max(initial=0.0)) / scale
    err_pen = float(np.abs(pen_cost - pen_real * scale).max(initial=0.0)) / scale
    rounding_bound = 2.0 * max_flow * (err_pair + err_pen)

    src, sink = 0, n + e + 1
    clients = np.arange(1, n + 1, dtype=np.int64)
    experts = np.arange(n + 1, n + e + 1, dtype=np.int64)
    big = int(cap.sum() + 1)
    pen_cap = np.ones(len(pen_expert), np.int64) if lam > 0 else (emax - emin)
    tails = np.concatenate([np.zeros(n, np.int64), clients[ai], experts[pen_expert], [sink]])
    heads = np.concatenate([clients, experts[aj], np.full(len(pen_expert), sink, np.int64), [src]])
    caps = np.concatenate([cap - cmin, np.ones(len(ai), np.int64), pen_cap, [big]]).astype(np.int64)
    costs = np.concatenate([np.zeros(n), pair_cost, pen_cost, [0.0]]).astype(np.int64)
    supplies = np.zeros(n + e + 2, np.int64)
    supplies[src] = -int(cmin.sum())
    supplies[1 : n + 1] = cmin
    supplies[n + 1 : n + e + 1] = -emin
    supplies[sink] = int(emin.sum())

    smcf = min_cost_flow.SimpleMinCostFlow()
    arcs = smcf.add_arcs_with_capacity_and_unit_cost(tails, heads, caps, costs)
    smcf.set_nodes_supplies(np.arange(n + e + 2, dtype=np.int64), supplies)
    del tails, heads, caps, costs
    status = smcf.solve()
    stats: dict[str, Any] = {
        "scale": scale,
        "rounding_error_bound": rounding_bound,
        "arcs": int(smcf.num_arcs()),
        "nodes": int(smcf.num_nodes()),
        "ortools_status": status.name,
    }
    if time_limit is not None:
        stats["time_limit_ignored"] = True
    if status == smcf.OPTIMAL:
        pair_arcs = arcs[n : n + len(ai)]
        used = smcf.flows(pair_arcs) > 0
        x = np.zeros((n, e), dtype=bool)
        x[ai[used], aj[used]] = True
        objective = problem.objective(x)
        exact = rounding_bound == 0
        message = "optimal" if exact else f"optimal within the fitness rounding bound {rounding_bound:.3g}"
        return SolverResult("optimal", x, message, bound=objective + rounding_bound, stats=stats, objective=objective)
    if status == smcf.INFEASIBLE:
        cert = diagnose(problem)
        if cert is not None:
            stats["certificate"] = cert.to_dict()
            return SolverResult("infeasible", None, cert.message, stats=stats)
        return SolverResult("infeasible", None, "min-cost flow found the supplies cannot be met", stats=stats)
    raise RuntimeError(f"OR-Tools SimpleMinCostFlow returned {status.name} (scale {scale}); please report this")
