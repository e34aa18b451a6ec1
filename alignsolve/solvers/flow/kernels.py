"""Compiled loops for the flow method's pricing (numba): the node potentials of an optimal flow.

Both work on the pairs of the graph that was solved, grouped by client: pair ``t`` of
client ``i`` lies in ``starts[i]:starts[i+1]``, goes to expert ``cols[t]`` at integer
cost ``costs[t]`` (``-round(F * scale)``), and ``taken[t]`` says whether it carries flow.

Potentials follow the flow module's convention: ``cost + d[u] - d[v] >= 0`` on every
residual arc ``u -> v``. Client nodes are eliminated: with the expert potentials fixed, a
client's own potential may lie anywhere between the largest of its lower limits and the
smallest of its upper limits (its residual arcs), and that interval is non-empty exactly
when every (lower, upper) pair of limits holds. Each such pair is a difference constraint
between two experts (or an expert and the source), so the potentials of the E experts,
the source S and the sink T are shortest-path distances in a graph of E + 2 nodes:

==========================================  =====================  ============================
residual arcs of the flow                    condition              arc of the expert graph
==========================================  =====================  ============================
``j -> i -> j'`` (i trains j, not j')        ``x_ij=1, x_ij'=0``    ``j -> j'``, ``c_ij' - c_ij``
``j -> i -> S`` (i may drop j)               ``count_i > min_i``    ``j -> S``, ``-c_ij``
``S -> i -> j'`` (i may add j')              ``count_i < cap_i``    ``S -> j'``, ``c_ij'``
``j -> T`` / ``T -> j`` (load arcs)          room / above minimum   next / minus last unit cost
``T -> S`` / ``S -> T`` (circulation arc)    always / flow > 0      0
==========================================  =====================  ============================

Bellman-Ford on it costs O(E^2) per sweep instead of O(pairs), and a path through it is
far shorter than one that alternates clients and experts. A client's potential is then
the smallest of its upper limits (as high as allowed), which certifies the most left-out
pairs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

INF = np.int64(2**62)


@njit(cache=True, nogil=True)
def expert_potentials(
    starts, cols, costs, taken, counts, cap, cmin, loads, emin, emax, pen_next, pen_last, flow_positive
):  # pragma: no cover - compiled
    """Potentials (E + 2,) of the experts, S (index E) and T (index E + 1), and whether they converged.

    ``pen_next[j]`` / ``pen_last[j]``: the cost of expert j's next unit of load and of its
    last one (0 without a load penalty). The potentials are shortest distances from a
    virtual root joined to every node at cost 0. Not converging within E + 3 sweeps means
    a negative cycle: the flow is not optimal on these pairs.
    """
    e = emax.shape[0]
    s, t = e, e + 1
    w = np.full((e + 2, e + 2), INF, np.int64)
    n = starts.shape[0] - 1
    for i in range(n):
        lo, hi = starts[i], starts[i + 1]
        can_drop = counts[i] > cmin[i]
        can_add = counts[i] < cap[i]
        for a in range(lo, hi):
            if not taken[a]:
                if can_add and costs[a] < w[s, cols[a]]:
                    w[s, cols[a]] = costs[a]
                continue
            ja, ca = cols[a], costs[a]
            if can_drop and -ca < w[ja, s]:
                w[ja, s] = -ca
            for u in range(lo, hi):
                if taken[u]:
                    continue
                cu = costs[u] - ca
                if cu < w[ja, cols[u]]:
                    w[ja, cols[u]] = cu
    for j in range(e):
        if loads[j] < emax[j]:
            w[j, t] = pen_next[j]
        if loads[j] > emin[j]:
            w[t, j] = -pen_last[j]
    w[t, s] = 0
    if flow_positive:
        w[s, t] = 0
    # Compact the finite arcs once; each sweep then reads them in order.
    m = 0
    for u in range(e + 2):
        for v in range(e + 2):
            if u != v and w[u, v] < INF:
                m += 1
    tails = np.empty(m, np.int64)
    heads = np.empty(m, np.int64)
    weights = np.empty(m, np.int64)
    m = 0
    for u in range(e + 2):
        for v in range(e + 2):
            if u != v and w[u, v] < INF:
                tails[m], heads[m], weights[m] = u, v, w[u, v]
                m += 1
    d = np.zeros(e + 2, np.int64)
    for _ in range(e + 3):
        changed = False
        for a in range(m):
            nd = d[tails[a]] + weights[a]
            if nd < d[heads[a]]:
                d[heads[a]] = nd
                changed = True
        if not changed:
            return d, True
    return d, False


@njit(cache=True, nogil=True)
def client_potentials(starts, cols, costs, taken, counts, cap, d):  # pragma: no cover - compiled
    """(N,) each client's potential: the smallest of its upper limits (``d[S]`` while it has room,
    ``d[j] - c_ij`` for each expert it trains), or ``INF // 2`` for a client that can take nothing."""
    e = d.shape[0] - 2
    n = starts.shape[0] - 1
    out = np.empty(n, np.int64)
    for i in range(n):
        top = d[e] if counts[i] < cap[i] else INF
        for a in range(starts[i], starts[i + 1]):
            if taken[a]:
                limit = d[cols[a]] - costs[a]
                if limit < top:
                    top = limit
        out[i] = INF // 2 if top == INF else top
    return out


@njit(cache=True, nogil=True)
def client_gaps(indptr, cols, vals, scale, eligible, taken, d_expert, d_source, cap, cmin):  # pragma: no cover
    """(N,) int64: how far each client is from changing its choice under the expert potentials.

    Under potentials ``d``, entry ``a`` of client i is worth ``w_a = d[j] + round(F_a * scale)``
    against the null option's ``d[S]`` (the residual-arc conditions of the module docstring):
    a taken entry must be worth at least every entry it could swap for and, while the client
    may drop it, at least ``d[S]``; an untaken one, while the client has room, at most ``d[S]``.
    The gap is the smallest margin of these conditions (least taken minus most untaken, least
    taken minus ``d[S]``, ``d[S]`` minus most untaken, each where it applies), negative where
    one fails, ``INF`` where none applies. A client with a large gap keeps its choice under
    any small change of the potentials.
    """
    n = indptr.shape[0] - 1
    out = np.empty(n, np.int64)
    for i in range(n):
        count = 0
        low = INF
        high = -INF
        for a in range(indptr[i], indptr[i + 1]):
            if not eligible[a]:
                continue
            w = d_expert[cols[a]] + np.int64(np.rint(vals[a] * scale)) - d_source
            if taken[a]:
                count += 1
                if w < low:
                    low = w
            elif w > high:
                high = w
        gap = INF
        if low < INF and high > -INF:
            gap = low - high
        if count > cmin[i] and low < gap:  # it may drop its least entry
            gap = low
        if count < cap[i] and -high < gap:  # it may add its best untaken one
            gap = -high
        out[i] = gap
    return out
