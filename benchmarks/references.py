"""External references run side by side with alignsolve in the same process.

Written directly against the external libraries (no alignsolve solver code), so that
the comparison measures alignsolve's overhead and quality, not a copy of itself.
"""

from __future__ import annotations

import numpy as np


def bare_min_cost_flow(problem) -> tuple[np.ndarray, float]:
    """A bare OR-Tools ``SimpleMinCostFlow`` on the same graph alignsolve's ``flow`` builds.

    Unit variant without load penalty: source -> client (capacity - client_min),
    client -> expert (1, -fitness scaled), expert -> sink (expert_max - expert_min),
    sink -> source, lower bounds as supplies. Pairs of non-positive fitness are left
    out when there are no lower bounds, as alignsolve does. Returns the assignment
    and its objective.
    """
    from ortools.graph.python import min_cost_flow

    n, e = problem.fitness.shape
    fit = problem.fitness
    cap, cmin = problem.client_capacity, problem.client_min
    emin, emax = problem.expert_min, problem.expert_max
    lower = bool(cmin.any() or emin.any())
    ai, aj = np.nonzero(problem.allowed if lower else problem.allowed & (fit > 0))
    scale = 2.0**30 / max(float(np.abs(fit).max()), 1e-300)
    sink = n + e + 1
    tails = np.concatenate([np.zeros(n, np.int64), 1 + ai, n + 1 + np.arange(e), [sink]])
    heads = np.concatenate([1 + np.arange(n), n + 1 + aj, np.full(e, sink), [0]])
    caps = np.concatenate([cap - cmin, np.ones(len(ai), np.int64), emax - emin, [int(cap.sum()) + 1]])
    costs = np.concatenate([np.zeros(n), -np.rint(fit[ai, aj] * scale), np.zeros(e), [0]]).astype(np.int64)
    supplies = np.concatenate([[-int(cmin.sum())], cmin, -emin, [int(emin.sum())]]).astype(np.int64)
    smcf = min_cost_flow.SimpleMinCostFlow()
    arcs = smcf.add_arcs_with_capacity_and_unit_cost(tails, heads, caps.astype(np.int64), costs)
    smcf.set_nodes_supplies(np.arange(n + e + 2), supplies)
    status = smcf.solve()
    if status != smcf.OPTIMAL:
        raise RuntimeError(f"bare SimpleMinCostFlow: {status.name}")
    used = smcf.flows(arcs[n : n + len(ai)]) > 0
    x = np.zeros((n, e), dtype=bool)
    x[ai[used], aj[used]] = True
    return x, float(fit[x].sum())
