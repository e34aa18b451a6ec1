"""Compiled loops over candidate entries of a :class:`~alignsolve.SparseProblem` (numba).

The entries are indexed 0..nnz-1 in CSR order; ``rows[k]`` and ``cols[k]`` are entry k's
client and expert, and ``taken[k]`` marks it as assigned. Nothing here allocates an N x E
array.
"""

from __future__ import annotations

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
def scan_entries(order, rows, cols, taken, counts, loads, cap, emax):  # pragma: no cover - compiled
    """Take entries ``order[0], order[1], ...`` while both their client and their expert have room.

    ``rows[t]`` and ``cols[t]`` are the client and expert of entry ``order[t]`` (gathered
    beforehand: a vectorised gather overlaps its cache misses, this loop's branches do not).
    Returns (entries taken, exhausted): exhausted is True once no client or no expert has room.
    """
    open_clients = _open(counts, cap)
    open_experts = _open(loads, emax)
    accepted = 0
    if open_clients == 0 or open_experts == 0:
        return accepted, True
    for t in range(order.shape[0]):
        k = order[t]
        i = rows[t]
        j = cols[t]
        if taken[k] or counts[i] >= cap[i] or loads[j] >= emax[j]:
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
def scan_lower_entries(order, rows, cols, taken, counts, loads, cap, emax, cmin, emin):  # pragma: no cover
    """Take entries, in order, that reduce an unmet client or expert minimum and fit the upper bounds.

    Returns (entries taken, deficit left: the sum of unmet minima).
    """
    deficit = 0
    for i in range(cmin.shape[0]):
        if counts[i] < cmin[i]:
            deficit += cmin[i] - counts[i]
    for j in range(emin.shape[0]):
        if loads[j] < emin[j]:
            deficit += emin[j] - loads[j]
    accepted = 0
    for t in range(order.shape[0]):
        if deficit == 0:
            break
        k = order[t]
        i = rows[k]
        j = cols[k]
        if taken[k] or counts[i] >= cap[i] or loads[j] >= emax[j]:
            continue
        helps = 0
        if counts[i] < cmin[i]:
            helps += 1
        if loads[j] < emin[j]:
            helps += 1
        if helps == 0:
            continue
        taken[k] = True
        counts[i] += 1
        loads[j] += 1
        accepted += 1
        deficit -= helps
    return accepted, deficit


@njit(cache=True, nogil=True)
def row_top(indptr, values, eligible, c):  # pragma: no cover - compiled
    """(nnz,) bool: each row's ``c`` eligible entries of highest value (all of them when fewer).

    Ties go to the earlier entry. O(nnz * c) in the worst case; c is small (a few times a
    client's capacity).
    """
    n = indptr.shape[0] - 1
    out = np.zeros(values.shape[0], dtype=np.bool_)
    best = np.empty(c, dtype=np.int64)
    for i in range(n):
        size = 0
        for k in range(indptr[i], indptr[i + 1]):
            if not eligible[k]:
                continue
            if size < c:
                pos = size
                size += 1
            elif values[k] > values[best[size - 1]]:
                pos = size - 1
            else:
                continue
            # insertion into best[0:size], kept in decreasing value
            while pos > 0 and values[best[pos - 1]] < values[k]:
                best[pos] = best[pos - 1]
                pos -= 1
            best[pos] = k
        for t in range(size):
            out[best[t]] = True
    return out


@njit(cache=True, nogil=True)
def collect_entries(vals, rows, cols, lo, hi, counts, cap, loads, emax, out):  # pragma: no cover - compiled
    """Write into ``out`` the ids of the entries with ``lo <= value < hi`` whose client and expert both
    still have room, in entry order; return how many. Branch-free (the test's outcome is
    data-dependent and mispredicts otherwise): every id is written, the cursor moves on a match."""
    t = 0
    for k in range(vals.shape[0]):
        v = vals[k]
        ok = (v >= lo) & (v < hi) & (counts[rows[k]] < cap[rows[k]]) & (loads[cols[k]] < emax[cols[k]])
        out[t] = k
        t += ok
    return t
