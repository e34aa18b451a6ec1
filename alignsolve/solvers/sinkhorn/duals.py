"""The duals of the entropic relaxation, dense or on candidate lists, and the bound any duals give."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...problem import Problem
from .ops import _Numpy, _ops_for
from .schedule import Schedule, run_schedule
from .sides import _DenseSide, _EntrySide

__all__ = ["entropic_duals", "entropic_duals_sparse", "lagrangian_bound"]


def entropic_duals(
    fitness: Any,
    allowed: Any,
    row_lo: Any,
    row_hi: Any,
    col_lo: Any,
    col_hi: Any,
    *,
    load_penalty: float = 0.0,
    eps_final: float = 1e-3,
    eps_start: float = 1.0,
    eps_decay: float = 0.5,
    max_sweeps: int = 50,
    tol: float = 1e-4,
    stage_tol: float = 1e-2,
    line_iters: int = 8,
    device: str | None = None,
    dtype: str | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Duals of the entropic relaxation (see the module docstring), on numpy or torch.

    Parameters
    ----------
    fitness : ndarray or torch.Tensor, shape (N, E)
        A tensor (or ``device``) selects torch; a numpy array selects numpy.
    allowed : array_like of bool, shape (N, E)
    row_lo, row_hi : array_like, shape (N,)
        Client bounds; ``row_hi`` must not exceed the allowed pairs of the row.
    col_lo, col_hi : array_like, shape (E,)
        Expert bounds, likewise.
    load_penalty : float
    eps_final, eps_start : float
        Entropy weights, in units of the fitness spread ``max F - min F``.
    eps_decay : float
        Factor between schedule stages (0 < decay < 1).
    max_sweeps : int
        Per stage; the last stage ends earlier when every client row is within ``tol``
        (relative), an earlier stage when within ``max(tol, stage_tol)``.
    line_iters : int
        Newton steps per line and block update.
    device, dtype : str, optional
        torch device (``"cpu"``, ``"cuda"``); ``"float32"`` or ``"float64"``.

    Returns
    -------
    f : ndarray, shape (N,)
    g : ndarray, shape (E,)
        Duals in fitness units, as float64 numpy arrays.
    info : dict
        ``sweeps``, ``stages``, ``eps`` (final, absolute), ``violation`` (final
        relative row violation), ``backend``, ``device``.
    """
    schedule = Schedule(
        load_penalty=load_penalty,
        eps_final=eps_final,
        eps_start=eps_start,
        eps_decay=eps_decay,
        max_sweeps=max_sweeps,
        tol=tol,
        stage_tol=stage_tol,
        line_iters=line_iters,
    )
    ops = _ops_for(fitness, device, dtype)
    if isinstance(ops, _Numpy):
        # numpy: the allowed pairs as entries grouped by client, for the compiled per-line
        # update (no (N, E) temporaries per Newton step), with the same sweeps and answer.
        mask = np.asarray(allowed, dtype=bool)
        n, e = mask.shape
        flat = np.flatnonzero(mask)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(mask.sum(axis=1), out=indptr[1:])
        values = np.asarray(fitness, dtype=np.float64).ravel()[flat]
        indices = (flat % e).astype(np.int32 if e < 2**31 else np.int64)
        del flat
        bounds = (row_lo, row_hi, col_lo, col_hi)
        return entropic_duals_sparse(indptr, indices, values, e, *bounds, dtype=dtype, **schedule.as_kwargs())
    F = ops.asarray(fitness)
    mask = ops.mask(allowed)
    K = ops.where(mask, F, -math.inf)
    # Reduced where the data lives: copying a GPU matrix to the host for two scalars would cost more than a sweep.
    top = ops.total_max(K)
    spread = top + ops.total_max(ops.where(mask, -F, -math.inf)) if top > -math.inf else 1.0
    spread = spread if spread > 0 else max(1.0, ops.total_max(abs(F)))
    bounds = (row_lo, row_hi, col_lo, col_hi)
    return run_schedule(ops, _DenseSide(ops, K, 1), _DenseSide(ops, K, 0), spread, bounds, schedule)


def entropic_duals_sparse(
    indptr: np.ndarray,
    indices: np.ndarray,
    values: np.ndarray,
    n_experts: int,
    row_lo: Any,
    row_hi: Any,
    col_lo: Any,
    col_hi: Any,
    *,
    keep: np.ndarray | None = None,
    load_penalty: float = 0.0,
    eps_final: float = 1e-3,
    eps_start: float = 1.0,
    eps_decay: float = 0.5,
    max_sweeps: int = 50,
    tol: float = 1e-4,
    stage_tol: float = 1e-2,
    line_iters: int = 8,
    device: str | None = None,
    dtype: str | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """:func:`entropic_duals` on candidate lists: the same updates over the listed entries only.

    No (N, E) array is formed: every line reduction is a segment reduction over the
    entries, grouped by line on each side (a second copy of the entries grouped by expert):
    the compiled per-line update on numpy, contiguous segment reductions on torch. Time
    and memory are O(nnz) per update.

    Parameters
    ----------
    indptr : ndarray, shape (N + 1,)
    indices : ndarray, shape (nnz,)
        Expert id of each entry (the CSR arrays of a :class:`~alignsolve.SparseProblem`).
    values : ndarray, shape (nnz,)
    n_experts : int
    row_lo, row_hi : array_like, shape (N,)
        Client bounds; ``row_hi`` must not exceed the kept entries of the row.
    col_lo, col_hi : array_like, shape (E,)
    keep : ndarray of bool, shape (nnz,), optional
        Entries in play (the others count as forbidden); default all.
    load_penalty, eps_final, eps_start, eps_decay, max_sweeps, tol, line_iters, device, dtype
        As in :func:`entropic_duals`; a ``device`` selects torch.

    Returns
    -------
    f : ndarray, shape (N,)
    g : ndarray, shape (E,)
    info : dict
        As in :func:`entropic_duals`.
    """
    schedule = Schedule(
        load_penalty=load_penalty,
        eps_final=eps_final,
        eps_start=eps_start,
        eps_decay=eps_decay,
        max_sweeps=max_sweeps,
        tol=tol,
        stage_tol=stage_tol,
        line_iters=line_iters,
    )
    ops = _ops_for(values, device, dtype)
    n, e = int(np.asarray(indptr).size - 1), int(n_experts)
    counts_r = np.diff(np.asarray(indptr, dtype=np.int64))
    cols = np.asarray(indices)
    vals = np.asarray(values)
    if vals.dtype not in (np.float32, np.float64):
        vals = vals.astype(np.float64)
    if keep is not None:
        live = vals[keep]
        vals = np.where(keep, vals, -np.inf).astype(vals.dtype, copy=False)
    else:
        live = vals
    spread = float(live.max()) - float(live.min()) if live.size else 1.0
    spread = spread if spread > 0 else max(1.0, float(np.abs(live).max(initial=0.0)))
    del live
    if ops.name == "torch":
        row_side, col_side = _torch_sides(ops, vals, cols, counts_r, n, e)
    else:
        from .._sparse_kernels import group_order

        rows = np.repeat(np.arange(n, dtype=np.int32 if n < 2**31 else np.int64), counts_r)
        # A second copy of the entries grouped by expert (a counting sort).
        order = group_order(cols, e)
        row_side = _EntrySide(ops, ops.asarray(vals), None, cols, n, counts_r)
        col_side = _EntrySide(ops, ops.asarray(vals[order]), None, rows[order], e, np.bincount(cols, minlength=e))
        del order, rows
    del vals
    with np.errstate(divide="ignore"):  # log(0) of a line whose entries are all out of play
        return run_schedule(ops, row_side, col_side, spread, (row_lo, row_hi, col_lo, col_hi), schedule)


def _torch_sides(ops: Any, vals: np.ndarray, cols: np.ndarray, counts_r: np.ndarray, n: int, e: int):
    """The two sides of the sparse form on torch, built on the device from the values and expert ids alone.

    Only ``vals`` and ``cols`` cross to the device; each entry's client comes from the
    row counts, and the expert-grouped copy from a stable sort there. Grouped
    (``ops.sorted_segments``): each side its own copy grouped by line, indexed in int32
    where the ids fit. Otherwise one copy shared by both sides, int64 for scatter.
    """
    torch = ops.torch
    K = ops.asarray(vals)
    wide = max(n, e) >= 2**31
    c = ops.ids(cols, np.int64 if wide else np.int32)
    lengths_r = ops.ids(counts_r)
    index = torch.int64 if wide else torch.int32
    r = torch.repeat_interleave(torch.arange(n, dtype=index, device=ops.device), lengths_r, output_size=K.shape[0])
    if not ops.sorted_segments:
        r, c = r.long(), c.long()  # scatter_reduce_ takes int64 only
        return _EntrySide(ops, K, r, c, n), _EntrySide(ops, K, c, r, e)
    order = torch.sort(c, stable=True).indices
    counts_c = np.bincount(cols, minlength=e)
    return _EntrySide(ops, K, None, c, n, counts_r), _EntrySide(ops, K[order], None, r[order], e, counts_c)


def lagrangian_bound(problem: Any, f: np.ndarray, g: np.ndarray, reduced: np.ndarray | None = None) -> float:
    """The weak-duality bound of the module docstring for any duals ``f`` (N,), ``g`` (E,).

    ``problem`` is a :class:`~alignsolve.Problem` or a :class:`~alignsolve.SparseProblem`
    (then the sum runs over the listed entries only). ``reduced`` may pass the pair
    scores ``F + f + g`` already computed: shape (N, E), or (nnz,) for the sparse form.
    """
    if isinstance(problem, Problem):
        allowed = problem.allowed
        if reduced is None:
            reduced = problem.fitness + f[:, None] + g[None, :]
        pairs = np.where(allowed, reduced, 0.0)
        per_row, per_col = allowed.sum(axis=1), allowed.sum(axis=0)
    else:
        pairs = problem.values + f[problem.rows] + g[problem.indices] if reduced is None else reduced
        per_row = np.diff(problem.indptr)
        per_col = np.bincount(problem.indices, minlength=problem.n_experts)
    total = float(np.maximum(pairs, 0.0).sum())
    del pairs
    # Row and column sums can never exceed the allowed pairs of the line.
    r_lo, r_hi = problem.client_min, np.minimum(problem.client_capacity, per_row)
    c_lo, c_hi = problem.expert_min, np.minimum(problem.expert_max, per_col)
    total += float(np.maximum(-f * r_lo, -f * r_hi).sum())
    lam = problem.load_penalty
    if lam > 0:
        # max over integer c in [lo, hi] of -g c - lam c^2: a concave parabola, so the
        # best integer is next to the clipped vertex -g / (2 lam).
        vertex = np.clip(-g / (2.0 * lam), c_lo, c_hi)
        best = np.full(g.shape, -np.inf)
        for c in (np.floor(vertex), np.ceil(vertex)):
            c = np.clip(c, c_lo, c_hi)
            best = np.maximum(best, -g * c - lam * c * c)
        total += float(best.sum())
    else:
        total += float(np.maximum(-g * c_lo, -g * c_hi).sum())
    return total
