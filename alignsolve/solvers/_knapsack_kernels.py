"""Compiled per-client knapsacks for the Lagrangian bound of the budget variant (numba).

For fixed expert prices ``p`` each client's part of the Lagrangian is a 0-1 knapsack
with a cardinality limit::

    max  sum_j v_j x_j   s.t.  sum_j c_j x_j <= W,  sum_j x_j <= k,  v_j = F_ij - p_j

over the client's allowed experts. Only items with ``v_j > 0`` can help (no client
minimum here), so each client's search runs over a few items, depth first, items in
decreasing ``v / c``, pruned by the smaller of two valid bounds on what the remaining
items can add: the fractional knapsack (ignoring the count) and the sum of the
``k - taken`` largest values (ignoring the budget). Either alone is a relaxation, so the
minimum is one too; filling by ratio up to the count would not be.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _remaining_bound(v, w, pos, room, left, top):  # pragma: no cover - compiled
    """Upper bound on what items pos.. can add within ``room`` budget and ``left`` items (``top``: scratch)."""
    frac = 0.0
    rem = room
    for t in range(pos, v.size):
        if w[t] <= rem:
            rem -= w[t]
            frac += v[t]
        else:
            frac += v[t] * rem / w[t]
            break
    # the `left` largest values among items pos.. (left is small: a client's capacity)
    for s in range(left):
        top[s] = 0.0
    for t in range(pos, v.size):
        x = v[t]
        if left > 0 and x > top[left - 1]:
            s = left - 1
            while s > 0 and top[s - 1] < x:
                top[s] = top[s - 1]
                s -= 1
            top[s] = x
    count = 0.0
    for s in range(left):
        count += top[s]
    return min(frac, count)


@njit(cache=True, nogil=True)
def _knapsack(v, w, W, k, node_limit, chosen):  # pragma: no cover - compiled
    """Best value, an upper bound on it, nodes searched; ``chosen`` gets the best set.

    Items are in decreasing ``v / w`` (all ``v > 0``). When ``node_limit`` nodes did not
    finish the search the bound is the root bound (and nodes = node_limit + 1).
    """
    n = v.size
    for t in range(n):
        chosen[t] = False
    if n == 0 or k == 0:
        return 0.0, 0.0, 0
    top = np.zeros(k)
    root = _remaining_bound(v, w, 0, W, k, top)
    x = np.zeros(n, np.bool_)
    vals = np.zeros(n + 1)
    wts = np.zeros(n + 1)
    cnts = np.zeros(n + 1, np.int64)
    state = np.zeros(n + 1, np.int8)
    best = 0.0
    nodes = 0
    pos = 0
    while pos >= 0:
        if state[pos] == 0:
            nodes += 1
            if vals[pos] > best:
                best = vals[pos]
                for t in range(n):
                    chosen[t] = x[t] if t < pos else False
            if pos == n or cnts[pos] == k:
                pos -= 1
                continue
            if vals[pos] + _remaining_bound(v, w, pos, W - wts[pos], k - cnts[pos], top) <= best:
                pos -= 1
                continue
            if nodes > node_limit:
                return best, max(root, best), nodes
            state[pos] = 1
            if wts[pos] + w[pos] <= W:
                x[pos] = True
                vals[pos + 1] = vals[pos] + v[pos]
                wts[pos + 1] = wts[pos] + w[pos]
                cnts[pos + 1] = cnts[pos] + 1
                state[pos + 1] = 0
                pos += 1
                continue
        if state[pos] == 1:
            state[pos] = 2
            x[pos] = False
            vals[pos + 1] = vals[pos]
            wts[pos + 1] = wts[pos]
            cnts[pos + 1] = cnts[pos]
            state[pos + 1] = 0
            pos += 1
            continue
        x[pos] = False
        state[pos] = 0
        pos -= 1
    return best, best, nodes


@njit(cache=True, nogil=True)
def client_knapsacks(
    fitness, cost, budget, cap, allowed, prices, node_limit, node_budget, take, loads
):  # pragma: no cover
    """Every client's knapsack at ``prices`` (see the module docstring).

    Each search stops after ``node_limit`` nodes, and once ``node_budget`` nodes are
    spent over all clients the remaining ones get one node each (their root bound; what
    keeps an iteration's time bounded on large instances). Writes each client's best set
    into ``take`` (N, E) and the experts' loads into ``loads`` (E,). Returns (sum of the
    clients' upper bounds, sum of their best values, clients whose search was cut).
    """
    spent = 0
    n, e = fitness.shape
    upper = 0.0
    found = 0.0
    cut = 0
    for j in range(e):
        loads[j] = 0
    for i in range(n):
        idx = np.empty(e, np.int64)
        m = 0
        for j in range(e):
            take[i, j] = False
            if allowed[i, j] and fitness[i, j] - prices[j] > 0.0:
                idx[m] = j
                m += 1
        if m == 0:
            continue
        idx = idx[:m]
        v = np.empty(m)
        w = np.empty(m)
        ratio = np.empty(m)
        for t in range(m):
            j = idx[t]
            v[t] = fitness[i, j] - prices[j]
            w[t] = cost[i, j]
            ratio[t] = v[t] / w[t] if w[t] > 0.0 else np.inf
        order = np.argsort(-ratio)
        v = v[order]
        w = w[order]
        idx = idx[order]
        chosen = np.zeros(m, np.bool_)
        limit = min(node_limit, max(1, node_budget - spent))
        best, bound, nodes = _knapsack(v, w, budget[i], cap[i], limit, chosen)
        spent += nodes
        upper += bound
        found += best
        if nodes > limit:
            cut += 1
        for t in range(m):
            if chosen[t]:
                take[i, idx[t]] = True
                loads[idx[t]] += 1
    return upper, found, cut
