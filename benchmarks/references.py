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


def cvxpy_textbook(problem, solver: str = "CLARABEL") -> float:
    """The LP relaxation as a textbook writes it in cvxpy: a dense (N, E) variable,
    row and column sums, the box and the mask (unit variant, no load penalty).
    Returns the LP value."""
    # Only the import goes through alignsolve: cvxpy would otherwise load highspy, which breaks ortools.
    from alignsolve.solvers.lp import import_cvxpy

    cp = import_cvxpy()
    x = cp.Variable(problem.shape)
    cons = [
        x >= 0,
        x <= problem.allowed.astype(float),
        cp.sum(x, axis=1) <= problem.client_capacity,
        cp.sum(x, axis=1) >= problem.client_min,
        cp.sum(x, axis=0) <= problem.expert_max,
        cp.sum(x, axis=0) >= problem.expert_min,
    ]
    prob = cp.Problem(cp.Maximize(cp.sum(cp.multiply(problem.fitness, x))), cons)
    prob.solve(solver=solver)
    return float(prob.value)


def scipy_milp_textbook(problem, time_limit: float | None = None) -> tuple[float, float | None]:
    """``scipy.optimize.milp`` on the dense textbook model (every pair a variable, the
    mask as upper bounds; budgets when given; no load penalty). Returns (objective, dual bound)."""
    import scipy.sparse as sp
    from scipy.optimize import Bounds, LinearConstraint, milp

    n, e = problem.shape
    rows = sp.kron(sp.eye(n), np.ones((1, e)), format="csr")
    cols = sp.kron(np.ones((1, n)), sp.eye(e), format="csr")
    cons = [
        LinearConstraint(rows, problem.client_min, problem.client_capacity),
        LinearConstraint(cols, problem.expert_min, problem.expert_max),
    ]
    if problem.cost is not None:
        w = sp.csr_array((problem.cost.ravel(), (np.repeat(np.arange(n), e), np.arange(n * e))), shape=(n, n * e))
        cons.append(LinearConstraint(w, -np.inf, problem.budget))
    opts = {"disp": False} if time_limit is None else {"disp": False, "time_limit": time_limit}
    res = milp(
        -problem.fitness.ravel(),
        constraints=cons,
        integrality=np.ones(n * e),
        bounds=Bounds(0, problem.allowed.ravel().astype(float)),
        options=opts,
    )
    value = -float(res.fun) if res.x is not None else float("-inf")
    bound = -float(res.mip_dual_bound) if getattr(res, "mip_dual_bound", None) is not None else None
    return value, bound


def pot_sinkhorn(problem, reg: float) -> np.ndarray:
    """POT's ``ot.sinkhorn`` on the balanced transport a client-expert plan would be
    without the box: rows carry ``client_capacity``, columns share the same mass in
    proportion to ``expert_max``; cost ``-fitness``. Returns the plan (N, E)."""
    import ot

    a = problem.client_capacity.astype(float)
    b = problem.expert_max.astype(float)
    b = b / b.sum() * a.sum()
    cost = problem.fitness.max() - problem.fitness  # non-negative, same argmax
    return ot.sinkhorn(a, b, cost, reg, method="sinkhorn_log", numItermax=2000)


def lsa_slot_expanded(problem) -> tuple[np.ndarray, float]:
    """``scipy.optimize.linear_sum_assignment`` on the slot-expanded matrix: the one-expert-per-client case.

    Valid only when every client has capacity 1 and there are no lower bounds, load penalty
    or budgets: expert j becomes ``expert_max_j`` identical columns, and N zero-cost
    "unassigned" columns let a client stay idle when all its pairs have negative fitness.
    Returns (matrix (N, E) bool, objective).
    """
    from scipy.optimize import linear_sum_assignment

    n, e = problem.shape
    if (
        np.any(problem.client_capacity != 1)
        or problem.has_lower_bounds
        or problem.load_penalty
        or problem.is_generalised
    ):
        raise ValueError("lsa_slot_expanded: needs capacity 1, no lower bounds, no load penalty, no budgets")
    slots = np.minimum(problem.expert_max, n)
    owner = np.repeat(np.arange(e), slots)
    gain = np.where(problem.allowed[:, owner], problem.fitness[:, owner], -np.inf)
    # Maximise gain: minimise -gain, forbidden pairs at a cost no optimum pays.
    big = 1.0 + 2.0 * float(np.abs(problem.fitness).sum())
    cost = np.concatenate([np.where(np.isfinite(gain), -gain, big), np.zeros((n, n))], axis=1)
    rows, cols = linear_sum_assignment(cost)
    x = np.zeros((n, e), dtype=bool)
    real = cols < owner.size
    x[rows[real], owner[cols[real]]] = True
    x &= problem.allowed
    return x, problem.objective(x)


def linprog_textbook(problem) -> float:
    """The dense LP relaxation with ``scipy.optimize.linprog`` (HiGHS): one variable per pair, no load penalty.

    On the unit variant the LP is totally unimodular, so its optimum equals the flow's.
    """
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix, vstack

    if problem.load_penalty or problem.is_generalised:
        raise ValueError("linprog_textbook: the unit variant without load penalty only")
    n, e = problem.shape
    idx = np.arange(n * e)
    rows_c = coo_matrix((np.ones(n * e), (idx // e, idx)), shape=(n, n * e))
    rows_e = coo_matrix((np.ones(n * e), (idx % e, idx)), shape=(e, n * e))
    a = vstack([rows_c, -rows_c, rows_e, -rows_e]).tocsr()
    b = np.concatenate([problem.client_capacity, -problem.client_min, problem.expert_max, -problem.expert_min])
    bounds = np.stack([np.zeros(n * e), problem.allowed.reshape(-1).astype(float)], axis=1)
    res = linprog(-problem.fitness.reshape(-1), A_ub=a, b_ub=b, bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"linprog: {res.message}")
    return float(-res.fun)
