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

**Pricing on a candidate graph** (large problems). The dense graph holds one arc per
allowed pair, and OR-Tools stores about 60 bytes per arc: 6.4 million pairs cost some
400 MB. With ``pricing`` on, the flow is first solved on a candidate graph: each client's
``candidates`` best pairs by fitness, and each expert's ``2 * expert_min`` best clients.
Node potentials of that optimum price every left-out pair (shortest-path distances by
Bellman-Ford, on a graph of the E experts plus source and sink from which the clients
are eliminated: see :mod:`.kernels`; on the whole residual graph each sweep would cost
O(pairs) and paths would alternate clients and experts): a pair whose reduced cost
``cost_ij + pi(client i) - pi(expert j)`` is negative could improve the flow and joins
the graph, which is solved again. When no left-out pair has a negative reduced cost, the
potentials prove the candidate optimum optimal for the full graph (complementary
slackness: left-out pairs carry no flow). A candidate graph that is infeasible grows
(candidates doubled) and, at worst, becomes the dense graph, so feasibility is decided
on the full problem. ``pricing=None`` (default) turns it on above
:data:`PRICING_PAIRS` eligible pairs. Pricing runs over the fitness matrix in row chunks,
so no dense copy is made. Above :data:`.core._EXPERT_GRAPH_MAX` experts there are no
potentials, and the flow is solved on the dense graph (``stats["pricing_fallback"]``).
The sparse form chooses its first graph by sampled expert prices and, instead of a second
solve of the whole graph, re-solves only the clients near a change of choice (:func:`solve_sparse`).

``time_limit`` is not supported by SimpleMinCostFlow (it cannot be interrupted); the
option is accepted and ignored, and ``stats["time_limit_ignored"]`` says so.
"""

from __future__ import annotations

from .core import PRICING_PAIRS
from .dense import solve
from .sparse import solve_sparse

__all__ = ["PRICING_PAIRS", "solve", "solve_sparse"]
