"""Compiled loops over candidate entries of a :class:`~alignsolve.SparseProblem` (numba).

The entries are indexed 0..nnz-1 in CSR order; ``rows[k]`` and ``cols[k]`` are entry k's
client and expert, and ``taken[k]`` marks it as assigned. Nothing here allocates an N x E
array.
"""

from __future__ import annotations

import numpy as np
from numba import njit


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


@njit(cache=True, nogil=True)
def group_order(ids, n_groups):  # pragma: no cover - compiled
    """The stable order grouping entries by ``ids`` (values in [0, n_groups)): a counting sort, O(nnz)."""
    starts = np.zeros(n_groups + 1, np.int64)
    for t in range(ids.shape[0]):
        starts[ids[t] + 1] += 1
    for g in range(n_groups):
        starts[g + 1] += starts[g]
    order = np.empty(ids.shape[0], np.int64)
    for t in range(ids.shape[0]):
        g = ids[t]
        order[starts[g]] = t
        starts[g] += 1
    return order
