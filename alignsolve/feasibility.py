"""Feasibility of the bound constraints: repair by augmenting paths, and certificates.

The constraints of the unit variant (no budgets) are those of a circulation in

    source -> client i  [client_min_i, client_capacity_i]
    client i -> expert j  [0, 1]  where allowed
    expert j -> sink  [expert_min_j, expert_max_j]
    sink -> source  [0, inf)

By Hoffman's circulation theorem it is feasible exactly when no node set X has more
lower bound forced into it than upper bound lets out. Only two shapes of X can do
that here, and :func:`find_feasible` returns one of them as a certificate when the
repair max-flow cannot saturate:

* ``experts_undersupplied``: experts ``B`` need ``sum expert_min`` clients, but at
  most ``sum_{i in A} client_capacity_i + sum_{i not in A} |allowed(i, B)|`` slots
  can reach them;
* ``clients_overdemanding``: clients ``A`` need ``sum client_min`` experts, but at
  most ``sum_{j in B} expert_max_j + sum_{j not in B} |allowed(A, j)|`` slots exist.

Either inequality holds for every feasible ``x``, so ``required > available`` proves
infeasibility independently of any solver.

The generalised variant (budgets) is NP-hard to decide; :func:`diagnose_generalised`
checks the necessary conditions that are cheap to prove: a third kind,
``client_budget`` (client ``i`` must train ``client_min_i`` experts but even its
cheapest allowed ones cost more than its budget), then the two kinds above on the
:func:`budget_relaxation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from ._validation import budget_slack
from .problem import Problem

__all__ = ["Certificate", "budget_relaxation", "diagnose", "diagnose_generalised", "diagnose_sparse", "find_feasible"]

_LIST_AT_MOST = 8


@dataclass(frozen=True)
class Certificate:
    """A proof of infeasibility (see the module docstring for the two kinds)."""

    kind: str
    clients: list[int]
    experts: list[int]
    required: int
    available: int
    message: str = field(default="")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "clients": self.clients,
            "experts": self.experts,
            "required": self.required,
            "available": self.available,
        }


def _ids(label: str, idx: np.ndarray | list[int]) -> str:
    idx = [int(v) for v in idx]
    if len(idx) == 1:
        return f"{label} {idx[0]}"
    if len(idx) <= _LIST_AT_MOST:
        return f"{label}s {idx}"
    return f"{len(idx)} {label}s {idx[:_LIST_AT_MOST]}..."


def _is_sparse(problem: Any) -> bool:
    return hasattr(problem, "indptr")


def _pairs_between(problem: Any, clients: np.ndarray, experts: np.ndarray) -> int:
    """Allowed (listed) pairs from the clients in mask ``clients`` to the experts in mask ``experts``."""
    if _is_sparse(problem):
        return int(np.count_nonzero(clients[problem.rows] & experts[problem.indices]))
    return int(problem.allowed[np.ix_(clients, experts)].sum())


def _allowed_counts(problem: Any) -> tuple[np.ndarray, np.ndarray]:
    """(allowed pairs per client (N,), per expert (E,))."""
    e = problem.shape[1]
    if _is_sparse(problem):
        return np.diff(problem.indptr), np.bincount(problem.indices, minlength=e)
    return problem.allowed.sum(axis=1), problem.allowed.sum(axis=0)


def _experts_undersupplied(problem: Problem, clients_full: np.ndarray, experts: np.ndarray) -> Certificate:
    """Experts B (bool mask) with clients A (bool mask) counted at full capacity."""
    required = int(problem.expert_min[experts].sum())
    cap_part = int(problem.client_capacity[clients_full].sum())
    pair_part = _pairs_between(problem, ~clients_full, experts)
    available = cap_part + pair_part
    b = np.flatnonzero(experts)
    a = np.flatnonzero(clients_full)
    if experts.all() and clients_full.all():
        msg = f"total expert_min ({required}) exceeds total client_capacity ({available})"
    elif b.size == 1 and not clients_full.any():
        msg = f"expert {int(b[0])} has {available} allowed clients, fewer than its expert_min {required}"
    else:
        msg = (
            f"{_ids('expert', b)} need at least {required} clients in total (expert_min), but at most "
            f"{available} slots can reach them ({_ids('client', a) if a.size else 'no clients'} with "
            f"client_capacity {cap_part}, plus {pair_part} allowed pairs from the other clients)"
        )
    return Certificate("experts_undersupplied", a.tolist(), b.tolist(), required, available, msg)


def _clients_overdemanding(problem: Problem, clients: np.ndarray, experts_full: np.ndarray) -> Certificate:
    """Clients A (bool mask) with experts B (bool mask) counted at full expert_max."""
    required = int(problem.client_min[clients].sum())
    cap_part = int(problem.expert_max[experts_full].sum())
    pair_part = _pairs_between(problem, clients, ~experts_full)
    available = cap_part + pair_part
    a = np.flatnonzero(clients)
    b = np.flatnonzero(experts_full)
    if clients.all() and experts_full.all():
        msg = f"total client_min ({required}) exceeds total expert_max ({available})"
    elif a.size == 1 and not experts_full.any():
        msg = f"client {int(a[0])} has {available} allowed experts, fewer than its client_min {required}"
    else:
        msg = (
            f"{_ids('client', a)} must train at least {required} experts in total (client_min), but at "
            f"most {available} slots exist ({_ids('expert', b) if b.size else 'no experts'} with "
            f"expert_max {cap_part}, plus {pair_part} allowed pairs to the other experts)"
        )
    return Certificate("clients_overdemanding", a.tolist(), b.tolist(), required, available, msg)


def _quick_certificate(problem: Problem) -> Certificate | None:
    """The common necessary conditions, checked in O(N E) before any max-flow."""
    n, e = problem.shape
    all_c, no_c = np.ones(n, bool), np.zeros(n, bool)
    all_e, no_e = np.ones(e, bool), np.zeros(e, bool)
    cert = _experts_undersupplied(problem, all_c, all_e)
    if cert.required > cert.available:
        return cert
    cert = _clients_overdemanding(problem, all_c, all_e)
    if cert.required > cert.available:
        return cert
    by_client, by_expert = _allowed_counts(problem)
    per_expert = by_expert - problem.expert_min
    if (per_expert < 0).any():
        j = int(np.argmin(per_expert))
        return _experts_undersupplied(problem, no_c, np.arange(e) == j)
    per_client = by_client - problem.client_min
    if (per_client < 0).any():
        i = int(np.argmin(per_client))
        return _clients_overdemanding(problem, np.arange(n) == i, no_e)
    return None


def find_feasible(problem: Problem, start: np.ndarray | None = None) -> tuple[np.ndarray | None, Certificate | None]:
    """Repair ``start`` into an assignment meeting every bound, by augmenting paths.

    Parameters
    ----------
    problem : Problem
        Budgets, if any, are ignored (this is the unit variant's feasibility).
    start : ndarray of bool, shape (N, E), optional
        An assignment that respects ``allowed``, ``client_capacity`` and
        ``expert_max`` (lower bounds may be unmet). Default: empty.

    Returns
    -------
    matrix : ndarray of bool, shape (N, E), or None
        ``start`` changed along augmenting paths so that every lower bound holds;
        None when the problem is infeasible.
    certificate : Certificate or None
        When infeasible, a proof naming the clients and experts responsible.

    Notes
    -----
    The residual network of the circulation above is built around the pseudo-flow
    given by ``start`` (client and expert flows raised to their lower bounds), and a
    max-flow from a super-source to a super-sink pushes the missing units. Paths may
    drop pairs of ``start`` to make room elsewhere. Cost: one max-flow on N*E arcs.
    """
    n, e = problem.shape
    x = np.zeros((n, e), dtype=bool) if start is None else np.array(start, dtype=bool, copy=True)
    r, c = x.sum(axis=1, dtype=np.int64), x.sum(axis=0, dtype=np.int64)
    if _missing(problem, r, c) == 0:  # every lower bound holds: no pair list to build
        return x, None
    ai, aj = np.nonzero(problem.allowed)
    xa = x[ai, aj]
    delta, cert = _circulation(problem, ai, aj, xa, r, c)
    if cert is not None:
        return None, cert
    if delta is not None:
        x[ai, aj] = xa + delta > 0
    return x, None


def _missing(problem: Any, r: np.ndarray, c: np.ndarray) -> int:
    """Units of lower bound still unmet by ``r`` pairs per client and ``c`` per expert."""
    return int((np.maximum(r, problem.client_min) - r).sum() + (np.maximum(c, problem.expert_min) - c).sum())


def _circulation(
    problem: Any, ai: np.ndarray, aj: np.ndarray, xa: np.ndarray, r: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray | None, Certificate | None]:
    """The repair max-flow on pairs (ai, aj), of which those in ``xa`` are taken.

    ``r`` and ``c`` are the taken pairs per client and per expert. Returns (the flow
    added on each pair, or None when nothing was missing; None) or (None, certificate).
    """
    n, e = problem.shape
    cap, cmin = problem.client_capacity, problem.client_min
    emin, emax = problem.expert_min, problem.expert_max
    fs = np.maximum(r, cmin)
    ft = np.maximum(c, emin)
    d_client = fs - r
    d_expert = ft - c
    need = _missing(problem, r, c)
    if need == 0:
        return None, None
    quick = _quick_certificate(problem)
    if quick is not None:
        return None, quick

    # Node numbering: s, clients, experts, t, S*, T*.
    s, t = 0, n + e + 1
    S, T = n + e + 2, n + e + 3
    cl = np.arange(1, n + 1)
    ex = np.arange(n + 1, n + e + 1)
    total = int(xa.sum())
    # No arc needs more than every pair: capacities stay inside scipy's int32 however large the bounds.
    big = int(min(cap.sum() + cmin.sum() + emin.sum(), len(ai)) + 1)
    tails = [np.full(n, s), cl, cl[ai], ex[aj], ex, np.full(e, t), [t, s], np.full(n, S), [s], ex, [S]]
    heads = [cl, np.full(n, s), ex[aj], cl[ai], np.full(e, t), ex, [s, t], cl, [T], np.full(e, T), [t]]
    caps = [
        cap - fs,
        fs - cmin,
        (~xa).astype(np.int64),
        xa.astype(np.int64),
        emax - ft,
        ft - emin,
        [big - total, total],
        d_client,
        [int(d_client.sum())],
        d_expert,
        [int(d_expert.sum())],
    ]
    tail = np.concatenate([np.asarray(v, dtype=np.int64) for v in tails])
    head = np.concatenate([np.asarray(v, dtype=np.int64) for v in heads])
    capv = np.minimum(np.concatenate([np.asarray(v, dtype=np.int64) for v in caps]), big)
    keep = capv > 0
    graph = sp.csr_array(
        (capv[keep].astype(np.int32), (tail[keep].astype(np.int32), head[keep].astype(np.int32))),
        shape=(n + e + 4, n + e + 4),
    )
    graph.sum_duplicates()
    result = maximum_flow(graph, S, T, method="dinic")
    if result.flow_value == need:
        flow = sp.csr_array(result.flow)
        return np.asarray(flow[cl[ai], ex[aj]]).ravel(), None
    return None, _cut_certificate(problem, graph, sp.csr_array(result.flow), S, n, e)


def _cut_certificate(
    problem: Problem, graph: sp.csr_array, flow: sp.csr_array, source: int, n: int, e: int
) -> Certificate:
    """Hoffman set from the min cut: nodes reachable from S* in the residual graph."""
    residual = (graph - flow).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reach = np.zeros(n + e + 4, dtype=bool)
    reach[breadth_first_order(residual, source, directed=True, return_predecessors=False)] = True
    s_in, t_in = bool(reach[0]), bool(reach[n + e + 1])
    clients_in, experts_in = reach[1 : n + 1], reach[n + 1 : n + e + 1]
    candidates = []
    if s_in and t_in:  # lower bounds of the experts outside X are forced into it
        candidates.append(_experts_undersupplied(problem, ~clients_in, ~experts_in))
    if not s_in and not t_in:
        candidates.append(_clients_overdemanding(problem, clients_in, experts_in))
    # The complement is a Hoffman set too when the cut was found from the other side.
    candidates.append(_experts_undersupplied(problem, clients_in, experts_in))
    candidates.append(_clients_overdemanding(problem, ~clients_in, ~experts_in))
    for cert in candidates:
        if cert.required > cert.available:
            return cert
    # Unreachable by the theorem; kept so that a bug shows as a message, not a crash.
    return Certificate("unknown", [], [], 0, 0, "the lower bounds cannot all be met (max-flow did not saturate)")


def diagnose(problem: Any) -> Certificate | None:
    """None when the bound constraints are feasible, else a certificate of why not.

    Takes a :class:`~alignsolve.Problem` (budgets ignored: see
    :func:`diagnose_generalised`) or a :class:`~alignsolve.SparseProblem`.
    """
    if _is_sparse(problem):
        return diagnose_sparse(problem)
    matrix, cert = find_feasible(problem)
    return cert if matrix is None else None


def diagnose_sparse(problem: Any) -> Certificate | None:
    """:func:`diagnose` for a :class:`~alignsolve.SparseProblem`: the same max-flow on its listed pairs.

    No N x E array is made: the graph has one arc per listed pair.
    """
    n, e = problem.shape
    zeros = np.zeros(problem.nnz, dtype=bool)
    _, cert = _circulation(problem, problem.rows, problem.indices, zeros, np.zeros(n, np.int64), np.zeros(e, np.int64))
    return cert


def budget_relaxation(problem: Problem) -> Problem:
    """The unit variant that drops the budgets but forbids every pair dearer than its client's budget.

    Every assignment of ``problem`` is an assignment of the relaxation, so a
    certificate for the relaxation proves ``problem`` infeasible.
    """
    if not problem.is_generalised:
        return problem
    cost, budget = problem.cost, problem.budget
    assert cost is not None and budget is not None
    affordable = cost <= (budget + budget_slack(budget))[:, None]
    return problem.replace(allowed=problem.allowed & affordable, cost=None, budget=None)


def _client_budget_certificate(problem: Problem) -> Certificate | None:
    cost, budget = problem.cost, problem.budget
    assert cost is not None and budget is not None
    need = problem.client_min
    rows = np.flatnonzero(need > 0)
    if rows.size == 0:
        return None
    priced = np.where(problem.allowed[rows], cost[rows], np.inf)
    priced.sort(axis=1)
    spent = np.cumsum(priced, axis=1)
    limit = (budget + budget_slack(budget))[rows, None]
    affordable = (spent <= limit).sum(axis=1)  # the most experts each budget can pay for
    short = np.flatnonzero(affordable < need[rows])
    if short.size == 0:
        return None
    k = int(rows[short[0]])
    got = int(affordable[short[0]])
    msg = (
        f"client {k} must train client_min {int(need[k])} experts but its budget {budget[k]:.6g} pays for at most "
        f"{got} of its allowed experts (the cheapest {int(need[k])} cost {float(spent[short[0], need[k] - 1]):.6g})"
    )
    return Certificate("client_budget", [k], [], int(need[k]), got, msg)


def diagnose_generalised(problem: Problem, *, quick: bool = False) -> Certificate | None:
    """A certificate of infeasibility from necessary conditions, or None.

    For the unit variant this is exact (None means feasible); for the generalised
    variant None only means that the cheap necessary conditions hold. ``quick``
    skips the max-flow and checks the O(N E) conditions only.
    """
    if _is_sparse(problem):
        return _quick_certificate(problem) if quick else diagnose_sparse(problem)
    if problem.is_generalised:
        cert = _client_budget_certificate(problem)
        if cert is not None:
            return cert
        problem = budget_relaxation(problem)
    return _quick_certificate(problem) if quick else diagnose(problem)
