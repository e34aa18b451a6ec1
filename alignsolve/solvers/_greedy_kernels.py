"""Compiled inner loops of the greedy and random methods (numba).

Each kernel walks pairs in a given priority order and updates the assignment and its
row and column counts in place. They are sequential by nature (a pair's acceptance
depends on every earlier one), hence compiled rather than vectorised.
"""

from __future__ import annotations

import heapq

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _open(counts, cap):  # pragma: no cover - compiled
    out = 0
    for i in range(cap.shape[0]):
        if counts[i] < cap[i]:
            out += 1
    return out


@njit(cache=True, nogil=True)
def scan_entries(ids, rows, cols, taken, counts, loads, cap, emax, check_taken=True):  # pragma: no cover
    """Take pairs in order while both their client and their expert have room.

    Pair t is client ``rows[t]``, expert ``cols[t]``, and ``taken[ids[t]]`` marks it: on the
    dense path ``taken`` is the flattened (N*E,) assignment and ``ids = rows * E + cols``; on
    the sparse path it is the (nnz,) entry mask and ``ids`` are entry ids. (Rows and columns
    are gathered beforehand: a vectorised gather overlaps its cache misses, this loop's
    branches do not.) ``counts`` (N,) and ``loads`` (E,) are updated in place.
    ``check_taken=False`` when no pair can be taken already (skips a random read per pair).

    Returns
    -------
    accepted : int
    exhausted : bool
        True once no client or no expert has room (later pairs cannot fit).
    """
    open_clients = _open(counts, cap)
    open_experts = _open(loads, emax)
    accepted = 0
    if open_clients == 0 or open_experts == 0:
        return accepted, True
    for t in range(ids.shape[0]):
        k = ids[t]
        i = rows[t]
        j = cols[t]
        if counts[i] >= cap[i] or loads[j] >= emax[j] or (check_taken and taken[k]):
            continue
        taken[k] = True
        counts[i] += 1
        loads[j] += 1
        accepted += 1
        if counts[i] == cap[i]:
            open_clients -= 1
        if loads[j] == emax[j]:
            open_experts -= 1
        if open_clients == 0 or open_experts == 0:
            return accepted, True
    return accepted, False


@njit(cache=True, nogil=True)
def _deficit(counts, loads, cmin, emin):  # pragma: no cover - compiled
    """Sum of the unmet client and expert minima."""
    deficit = 0
    for i in range(cmin.shape[0]):
        if counts[i] < cmin[i]:
            deficit += cmin[i] - counts[i]
    for j in range(emin.shape[0]):
        if loads[j] < emin[j]:
            deficit += emin[j] - loads[j]
    return deficit


@njit(cache=True, nogil=True)
def scan_lower_entries(  # pragma: no cover - compiled
    ids, rows, cols, taken, counts, loads, cap, emax, cmin, emin, check_taken=True
):
    """Take pairs, in order, that reduce an unmet client or expert minimum and fit the upper bounds.

    Pairs and ``check_taken`` as in :func:`scan_entries`. Returns (pairs taken, deficit
    left: the sum of unmet minima).
    """
    deficit = _deficit(counts, loads, cmin, emin)
    accepted = 0
    for t in range(ids.shape[0]):
        if deficit == 0:
            break
        i = rows[t]
        j = cols[t]
        if counts[i] >= cap[i] or loads[j] >= emax[j]:
            continue
        helps = 0
        if counts[i] < cmin[i]:
            helps += 1
        if loads[j] < emin[j]:
            helps += 1
        k = ids[t]
        if helps == 0 or (check_taken and taken[k]):  # the random read last: most pairs stop before it
            continue
        taken[k] = True
        counts[i] += 1
        loads[j] += 1
        deficit -= helps
        accepted += 1
    return accepted, deficit


@njit(cache=True, nogil=True)
def _best_gain(j, pos, ptr, rows, vals, n_experts, x, counts, loads, cap, emax, lam):  # pragma: no cover
    """Move ``pos[j]`` past clients of expert j that are full or hold j already; return
    the marginal gain of its best remaining client, or -inf when j has none or is full."""
    while pos[j] < ptr[j + 1] and (counts[rows[pos[j]]] >= cap[rows[pos[j]]] or x[rows[pos[j]] * n_experts + j]):
        pos[j] += 1
    if pos[j] >= ptr[j + 1] or loads[j] >= emax[j]:
        return -np.inf
    return vals[pos[j]] - lam * (2.0 * loads[j] + 1.0)


@njit(cache=True, nogil=True)
def penalised_greedy(ptr, rows, vals, n_experts, x, counts, loads, cap, emax, lam):  # pragma: no cover
    """Greedy by marginal gain ``F_ij - lam * (2 * load_j + 1)`` (the quadratic penalty's increment).

    ``rows[ptr[j]:ptr[j+1]]`` are expert j's candidate clients in decreasing fitness
    ``vals``. A lazy max-heap over experts holds each expert's best current gain;
    a popped entry whose client filled up since is re-evaluated and pushed back.
    Stops when the best gain is negative.
    """
    pos = ptr[:-1].copy()
    heap = [(0.0, np.int64(0))]
    heap.pop()
    for j in range(n_experts):
        gain = _best_gain(j, pos, ptr, rows, vals, n_experts, x, counts, loads, cap, emax, lam)
        if gain > -np.inf:
            heapq.heappush(heap, (-gain, np.int64(j)))
    accepted = 0
    while len(heap) > 0:
        neg, j = heapq.heappop(heap)
        if -neg < 0.0:
            break
        gain = _best_gain(j, pos, ptr, rows, vals, n_experts, x, counts, loads, cap, emax, lam)
        if gain == -np.inf:
            continue
        if gain < -neg:  # stale: the best client of j filled up elsewhere
            heapq.heappush(heap, (-gain, j))
            continue
        i = rows[pos[j]]
        x[i * n_experts + j] = True
        counts[i] += 1
        loads[j] += 1
        accepted += 1
        pos[j] += 1
        gain = _best_gain(j, pos, ptr, rows, vals, n_experts, x, counts, loads, cap, emax, lam)
        if gain > -np.inf:
            heapq.heappush(heap, (-gain, j))
    return accepted


@njit(cache=True, nogil=True, inline="always")
def _qualifies(priority, allowed, x, loads, emax, i, j, floor, hi):  # pragma: no cover - compiled
    """Pair (i, j) lies in ``[floor, hi)``, is allowed, untaken, and its expert has room (a bool, no branch)."""
    v = priority[i, j]
    return (v >= floor) & (v < hi) & allowed[i, j] & (loads[j] < emax[j]) & (not x[i * priority.shape[1] + j])


@njit(cache=True, nogil=True)
def collect_pairs(priority, allowed, lo, hi, nonneg_only, x, counts, loads, cap, emax, hint):  # pragma: no cover
    """The pairs with ``lo <= priority < hi`` that are allowed and can still be taken.

    Walks the (N, E) matrices row by row, skipping clients that are full, so no flat
    index is ever divided. Branch-free inside a row (the value test passes for a small,
    unpredictable fraction of pairs; a mispredicted branch cost more than the write):
    every pair is written at the cursor, which moves only when the pair qualifies. One
    pass into buffers of ``hint`` entries (the caller's estimate); when that was short, a
    counting pass and a second fill. Returns rows, cols (int32: half the bytes to gather
    when the chunk is sorted) and priorities, unsorted.

    The second fill is a loop, not a recursive call: a recursive kernel's cached object
    code refers to itself by an unresolved symbol, and two processes that compile it into
    one cold cache at once abort in LLVM ("Symbol not found: .numba.unresolved$...").
    """
    n, e = priority.shape
    size = max(hint, 16)
    floor = max(lo, 0.0) if nonneg_only else lo
    while True:
        rows = np.empty(size + 1, np.int32)  # one spare slot for the unconditional write
        cols = np.empty(size + 1, np.int32)
        vals = np.empty(size + 1, np.float64)
        m = 0
        short = False
        for i in range(n):
            if counts[i] >= cap[i]:
                continue
            for j in range(e):
                rows[m] = i
                cols[m] = j
                vals[m] = priority[i, j]
                m += _qualifies(priority, allowed, x, loads, emax, i, j, floor, hi)
                if m > size:
                    short = True
                    break
            if short:
                break
        if not short:
            return rows[:m], cols[:m], vals[:m]
        # The estimate was short: count exactly, then fill again at that size.
        total = 0
        for i2 in range(n):
            if counts[i2] < cap[i2]:
                for j2 in range(e):
                    total += _qualifies(priority, allowed, x, loads, emax, i2, j2, floor, hi)
        size = max(total, 16)


@njit(cache=True, nogil=True)
def scan_budget(  # pragma: no cover - compiled
    rows, cols, costs, gains, n_experts, x, counts, loads, cap, emax, cmin, emin, left, cheapest, lam, lower_only
):
    """Budget-aware walk for the generalised variant.

    Accepts pair ``k`` when both sides have room and ``costs[k] <= left[i]``; with
    ``lower_only`` the pair must also reduce a client's or an expert's unmet minimum.
    While client i still owes ``r = cmin_i - counts_i`` experts, a pair may spend its
    budget only down to ``(r - 1) * cheapest[i]`` so the rest of its minimum stays
    affordable. ``left`` (N,) is the budget left, updated in place. Outside
    ``lower_only`` a pair is taken only if its marginal value
    ``gains[k] - lam * (2 load_j + 1)`` is non-negative.

    Returns the number accepted and the deficit left.
    """
    deficit = _deficit(counts, loads, cmin, emin)
    accepted = 0
    for k in range(rows.shape[0]):
        if lower_only and deficit == 0:
            break
        i = rows[k]
        j = cols[k]
        p = i * n_experts + j
        if x[p] or counts[i] >= cap[i] or loads[j] >= emax[j]:
            continue
        owed = cmin[i] - counts[i]
        reserve = (owed - 1) * cheapest[i] if owed > 1 else 0.0
        if costs[k] > left[i] - reserve:
            continue
        helps = 0
        if owed > 0:
            helps += 1
        if loads[j] < emin[j]:
            helps += 1
        if lower_only and helps == 0:
            continue
        if not lower_only and gains[k] - lam * (2.0 * loads[j] + 1.0) < 0.0:
            continue
        x[p] = True
        counts[i] += 1
        loads[j] += 1
        left[i] -= costs[k]
        deficit -= helps
        accepted += 1
    return accepted, deficit


@njit(cache=True, nogil=True)
def local_swaps(fitness, allowed, x, loads, emin, emax, cost, left, lam, max_passes):  # pragma: no cover
    """Improve an assignment by moving one client from one expert to another.

    For each client i, the move ``j -> j2`` (i holds j, not j2) is made when it gains
    ``F[i, j2] - F[i, j] - lam * (2 (load_j2 - load_j) + 2) > 1e-12`` and keeps every
    constraint: ``load_j > emin_j``, ``load_j2 < emax_j2`` and, when ``cost`` has
    rows, the budget (``left``, updated in place). Client counts never change.
    Passes repeat until none improves or ``max_passes``.

    Returns the number of moves made.
    """
    n, e = fitness.shape
    budgeted = cost.shape[0] == n
    moves = 0
    for _ in range(max_passes):
        improved = False
        for i in range(n):
            for j in range(e):
                if not x[i, j] or loads[j] <= emin[j]:
                    continue
                best = 1e-12
                best_j = -1
                for j2 in range(e):
                    if x[i, j2] or not allowed[i, j2] or loads[j2] >= emax[j2]:
                        continue
                    if budgeted and cost[i, j2] - cost[i, j] > left[i]:
                        continue
                    gain = fitness[i, j2] - fitness[i, j] - lam * (2.0 * (loads[j2] - loads[j]) + 2.0)
                    if gain > best:
                        best = gain
                        best_j = j2
                if best_j >= 0:
                    x[i, j] = False
                    x[i, best_j] = True
                    loads[j] -= 1
                    loads[best_j] += 1
                    if budgeted:
                        left[i] -= cost[i, best_j] - cost[i, j]
                    moves += 1
                    improved = True
        if not improved:
            break
    return moves


@njit(cache=True, nogil=True)
def refine_runs(keys, order, vals):  # pragma: no cover - compiled
    """Re-order runs of ``order`` whose sorted ``keys`` share their high 32 bits by decreasing ``vals``.

    ``keys`` are sorted, their high half a coarse (float32) image of the values and their
    low half the index held in ``order``; within a run the indices ascend. Insertion sort
    (runs are short), stable, so equal values keep index order. ``order`` is updated in
    place.
    """
    m = keys.shape[0]
    t = 0
    while t < m:
        high = keys[t] >> np.uint64(32)
        end = t + 1
        while end < m and keys[end] >> np.uint64(32) == high:
            end += 1
        for a in range(t + 1, end):
            o = order[a]
            b = a
            while b > t and vals[order[b - 1]] < vals[o]:
                order[b] = order[b - 1]
                b -= 1
            order[b] = o
        t = end
