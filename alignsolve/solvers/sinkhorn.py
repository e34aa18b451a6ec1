"""Entropic relaxation: log-domain Bregman projections with an epsilon schedule, then rounding.

The relaxation adds ``eps`` times the entropy to the LP of the unit variant::

    max_x  sum F x - lambda sum_j load_j**2 - eps sum x (log x - 1)
    s.t.   client_min <= rows <= client_capacity,  expert_min <= columns <= expert_max,
           0 <= x <= 1,  x = 0 where not allowed.

Its solution has the form ``x_ij = min(1, exp((F_ij + f_i + g_j) / eps))`` with one
dual per client ``f`` and per expert ``g``: the box multiplier of Dykstra's
algorithm, ``max(0, F + f + g)``, is carried in closed form instead of being stored,
so no (N, E) correction array exists. Each sweep projects (in KL divergence) onto the
client rows with the box, then onto the expert columns with the box: block
coordinate ascent on the dual, where each block is one monotone equation per line,
``R(d) = target(d)``, ``R(d) = sum min(1, exp((A + d) / eps))``, solved to a
tolerance by bracketed Newton steps. The target is the violated bound (rows and
columns with slack keep their dual at 0) or, with a load penalty, the load whose
marginal penalty balances the dual, ``clip(-g / (2 lambda), expert_min, expert_max)``.
``eps`` decreases geometrically (the schedule) with the duals carried over.

Any duals give a **valid upper bound** (weak Lagrangian duality)::

    sum_ij max(0, F_ij + f_i + g_j) + sum_i max(-f_i lo_i, -f_i hi_i)
        + sum_j max_{c in [lo_j, hi_j]} (-g_j c - lambda c**2)

reported as ``bound``. The plan is rounded by the greedy's phases (lower bounds,
augmenting-path repair, fill) walking pairs in decreasing ``F + f + g``, so the answer
is feasible whenever the problem is. Without a load penalty pairs of negative fitness
are never added beyond the lower bounds.

One implementation serves numpy arrays and torch tensors (CPU or CUDA): the few
operations it needs go through :class:`_Numpy` or :class:`_Torch`, every line in
lockstep. On numpy the pairs are entries grouped by line, and the block update is the
compiled per-line form of the same equations (:mod:`._sinkhorn_kernels`).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..errors import InvalidProblemError
from ..problem import Problem
from . import SolverResult, check_options
from .rounding import run_greedy

__all__ = ["entropic_duals", "entropic_duals_sparse", "lagrangian_bound", "solve", "solve_sparse"]


class _Numpy:
    """The array operations of the algorithm, on numpy.

    numpy always works on grouped entries (a dense problem's allowed pairs become entries,
    see :func:`entropic_duals`), whose block update is the compiled per-line kernel; the
    element-wise and segment operations here run the lockstep :func:`_solve_lines` on the
    same entries, the reference the kernel is tested against.
    """

    name = "numpy"

    def __init__(self, dtype: Any = np.float64) -> None:
        self.dtype = dtype

    def asarray(self, a: Any) -> Any:
        return np.asarray(a, dtype=self.dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a, dtype=np.float64)

    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    where = staticmethod(np.where)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)

    @staticmethod
    def clip(a: Any, lo: Any, hi: Any) -> Any:
        return np.minimum(np.maximum(a, lo), hi)

    # Entries are grouped by line on numpy (see entropic_duals_sparse): reduceat reads contiguous
    # segments, where bincount would scatter over ids.
    sorted_segments = True

    @staticmethod
    def ids(a: np.ndarray) -> Any:
        return np.asarray(a)

    @staticmethod
    def take(d: Any, ids: Any) -> Any:
        return d[ids]

    def segment_sum(self, a: Any, side: _EntrySide) -> Any:
        out = np.zeros(side.n_lines, dtype=self.dtype)
        if side.starts.size:
            out[side.nonempty] = np.add.reduceat(a, side.starts)
        return out

    def segment_max(self, a: Any, side: _EntrySide) -> Any:
        out = np.full(side.n_lines, -np.inf, dtype=self.dtype)
        if side.starts.size:
            out[side.nonempty] = np.maximum.reduceat(a, side.starts)
        return out

    def isfinite(self, a: Any) -> Any:
        return np.isfinite(a)


class _Torch:
    """The same operations on torch tensors (any device)."""

    name = "torch"

    def __init__(self, device: Any, dtype: Any) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.dtype = dtype

    def asarray(self, a: Any) -> Any:
        if isinstance(a, np.ndarray) and not a.flags.writeable:
            a = a.copy()  # a Problem's arrays are read-only; torch warns on sharing those
        return self.torch.as_tensor(a, dtype=self.dtype, device=self.device)

    def mask(self, a: Any) -> Any:
        if isinstance(a, np.ndarray) and not a.flags.writeable:
            a = a.copy()
        return self.torch.as_tensor(a, dtype=self.torch.bool, device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        return a.detach().to("cpu", self.torch.float64).numpy()

    def exp(self, a: Any) -> Any:
        return self.torch.exp(a)

    def log(self, a: Any) -> Any:
        return self.torch.log(a)

    def where(self, c: Any, a: Any, b: Any) -> Any:
        return self.torch.where(c, a, b)

    def minimum(self, a: Any, b: Any) -> Any:
        return self.torch.minimum(a, self.asarray(b)) if not self.torch.is_tensor(b) else self.torch.minimum(a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return self.torch.maximum(a, self.asarray(b)) if not self.torch.is_tensor(b) else self.torch.maximum(a, b)

    def sum(self, a: Any, axis: int) -> Any:
        return a.sum(dim=axis)

    def amin(self, a: Any, axis: int) -> Any:
        return a.amin(dim=axis)

    def total_max(self, a: Any) -> float:
        return float(a.max()) if a.numel() else -math.inf

    def logsumexp(self, a: Any, axis: int) -> Any:
        return self.torch.logsumexp(a, dim=axis)

    def clip(self, a: Any, lo: Any, hi: Any) -> Any:
        return self.torch.minimum(self.torch.maximum(a, lo), hi)

    # index_add_ and scatter_reduce_ take entries in any order: one layout serves both sides.
    sorted_segments = False

    def ids(self, a: np.ndarray) -> Any:
        return self.torch.as_tensor(np.asarray(a, dtype=np.int64), device=self.device)

    @staticmethod
    def take(d: Any, ids: Any) -> Any:
        return d[ids]

    def segment_sum(self, a: Any, side: _EntrySide) -> Any:
        out = self.torch.zeros(side.n_lines, dtype=self.dtype, device=self.device)
        return out.index_add_(0, side.line, a.to(self.dtype))

    def segment_max(self, a: Any, side: _EntrySide) -> Any:
        out = self.torch.full((side.n_lines,), -math.inf, dtype=self.dtype, device=self.device)
        return out.scatter_reduce_(0, side.line, a, "amax", include_self=True)

    def isfinite(self, a: Any) -> Any:
        return self.torch.isfinite(a)


def _ops_for(fitness: Any, device: str | None, dtype: str | None) -> _Numpy | _Torch:
    """numpy for numpy input without ``device``; torch for a tensor or a ``device``."""
    is_tensor = type(fitness).__module__.startswith("torch")
    if device is None and not is_tensor:
        if dtype not in (None, "float64", "float32"):
            raise InvalidProblemError("dtype", "must be 'float32' or 'float64'", repr(dtype))
        return _Numpy(np.float32 if dtype == "float32" else np.float64)
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from ..errors import MethodUnavailableError

        raise MethodUnavailableError('sinkhorn on torch needs torch; run: pip install "alignsolve[torch]"') from exc
    if device is None:
        device = str(fitness.device)
    if dtype not in (None, "float64", "float32"):
        raise InvalidProblemError("dtype", "must be 'float32' or 'float64'", repr(dtype))
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidProblemError("device", "must be a torch device such as 'cpu' or 'cuda'", repr(device)) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidProblemError("device", "needs a CUDA GPU, and torch sees none", repr(device))
    # float32 is the GPU's fast path; CPU defaults to float64 like numpy.
    chosen = dtype or ("float32" if dev.type == "cuda" else "float64")
    return _Torch(dev, torch.float32 if chosen == "float32" else torch.float64)


class _DenseSide:
    """The lines of one side of a dense (N, E) array (torch; numpy turns the pairs into entries): client rows
    (``axis=1``) or expert columns (``axis=0``)."""

    def __init__(self, ops: Any, K: Any, axis: int) -> None:
        self.ops, self.K, self.axis = ops, K, axis
        self.n_lines = K.shape[0] if axis == 1 else K.shape[1]

    def expand(self, d: Any) -> Any:
        """This side's duals (one per line) broadcast over the entries."""
        return d[:, None] if self.axis == 1 else d[None, :]

    def with_other(self, other: Any) -> Any:
        """``K`` plus the other side's duals."""
        return self.K + (other[None, :] if self.axis == 1 else other[:, None])

    def sum(self, a: Any) -> Any:
        return self.ops.sum(a, self.axis)

    def amin(self, a: Any) -> Any:
        return self.ops.amin(a, self.axis)

    def logsumexp(self, a: Any) -> Any:
        return self.ops.logsumexp(a, self.axis)

    def update(self, d_prev: Any, other: Any, *args: Any) -> tuple[Any, float]:
        """One block update of this side's duals given the other side's (see :func:`_solve_lines`)."""
        return _solve_lines(self.ops, self, self.with_other(other), d_prev, *args)


class _EntrySide:
    """The lines of one side of a list of entries (the sparse form).

    ``K`` (nnz,) holds the entries' fitness, ``line`` (nnz,) the line of each entry on
    this side and ``other`` its line on the other side. On numpy the entries are grouped
    by line, given as ``counts`` per line (``starts`` of the non-empty lines, ``nonempty``
    their ids), so that a line's reductions are contiguous and ``line`` is not needed
    (None); on torch the order does not matter and ``line`` drives the reductions.
    """

    def __init__(self, ops: Any, K: Any, line: Any, other: Any, n_lines: int, counts: np.ndarray | None = None) -> None:
        self.ops, self.K, self.line, self.other, self.n_lines = ops, K, line, other, n_lines
        self.counts = counts
        if counts is not None:
            bounds = np.zeros(counts.size + 1, dtype=np.int64)
            np.cumsum(counts, out=bounds[1:])
            self.bounds = bounds  # line l's entries are bounds[l]:bounds[l + 1]
            self.nonempty = np.flatnonzero(counts)
            self.starts = bounds[:-1][self.nonempty]

    def expand(self, d: Any) -> Any:
        # Grouped entries: repeating each line's dual reads memory in order; gathering it does not.
        return np.repeat(d, self.counts) if self.counts is not None else self.ops.take(d, self.line)

    def with_other(self, other: Any) -> Any:
        return self.K + self.ops.take(other, self.other)

    def sum(self, a: Any) -> Any:
        return self.ops.segment_sum(a, self)

    def amin(self, a: Any) -> Any:
        return -self.ops.segment_max(-a, self)

    def logsumexp(self, a: Any) -> Any:
        top = self.ops.segment_max(a, self)
        top = self.ops.where(self.ops.isfinite(top), top, 0.0)
        return self.ops.log(self.sum(self.ops.exp(a - self.expand(top)))) + top

    def update(self, d_prev: Any, other: Any, lo: Any, hi: Any, lam: float, eps: float, iters: int, tol: float):
        """One block update of this side's duals given the other side's (see :func:`_solve_lines`).

        Grouped numpy entries go through the compiled per-line solver (the same equations,
        each line stopping when it is within ``tol``, one exponential per entry and block),
        with the same sweeps and answer as the vectorised form.
        """
        if self.counts is None:
            return _solve_lines(self.ops, self, self.with_other(other), d_prev, lo, hi, lam, eps, iters, tol)
        from ._sinkhorn_kernels import solve_lines

        f64 = np.float64
        d, worst = solve_lines(
            self.K,
            self.other,
            np.asarray(other, dtype=f64),
            self.bounds,
            np.asarray(d_prev, dtype=f64),
            np.asarray(lo, dtype=f64),
            np.asarray(hi, dtype=f64),
            float(lam),
            float(eps),
            int(iters),
            float(tol),
        )
        return d.astype(self.ops.dtype, copy=False), float(worst)


def _solve_lines(ops, side, A, d_prev, lo, hi, lam, eps, iters, tol):
    """One block update: for every line of ``side`` (client rows or expert columns), the
    dual ``d`` solving ``R(d) = target(d)`` (see the module docstring).

    ``A`` holds ``K`` plus the other side's dual, ``-inf`` off the mask. Returns the new
    duals and the largest violation ``|R(d_prev) - target(d_prev)|`` of the incoming
    iterate (the convergence measure, measured for free on the first evaluation).
    """

    scaled = A / eps  # once per block, not once per Newton step

    def evaluate(d):
        t = scaled + side.expand(d / eps)
        cap = t >= 0
        val = ops.exp(ops.minimum(t, 0.0))  # capped terms are exactly 1
        R = side.sum(val)
        U = R - side.sum(ops.where(cap, 1.0, 0.0))  # the uncapped mass drives the slope
        if lam > 0:
            raw = -d / (2.0 * lam)
            target = ops.clip(raw, lo, hi)
            inside = (raw > lo) & (raw < hi)
            slope = U / eps + ops.where(inside, 1.0 / (2.0 * lam), 0.0)
        else:
            target = ops.where(d < 0, hi, ops.where(d > 0, lo, ops.clip(R, lo, hi)))
            slope = U / eps
        return R - target, slope, target

    active = hi > 0
    lse = side.logsumexp(scaled)
    top = -side.amin(ops.where(A > -math.inf, A, math.inf))
    safe_hi = ops.maximum(hi, 1.0)
    low = eps * (ops.log(safe_hi) - lse)  # uncapped sum = hi there, so R <= hi
    if lam > 0:
        low = ops.minimum(low, -2.0 * lam * safe_hi)
    else:
        low = ops.minimum(low, 0.0)
    a = ops.where(active, low, 0.0)
    b = ops.where(active, top, 0.0)
    d = ops.clip(d_prev, a, b)
    phi, slope, target = evaluate(d)
    first = ops.where(active, abs(phi) / ops.maximum(target, 1.0), 0.0)
    for _ in range(iters):
        done = (abs(phi) <= tol * ops.maximum(target, 1.0)) | ~active
        a = ops.where(phi < 0, d, a)
        b = ops.where(phi > 0, d, b)
        newton = d - phi / ops.maximum(slope, 1e-300)
        if lam == 0:
            # Without a penalty the target jumps at d = 0 (hi below, lo above), and 0 is the
            # root whenever lo <= R(0) <= hi: a step across it tries 0 first. Bisection alone
            # only creeps up on it (d = 1e-5 and a violation of R(d) - lo forever).
            newton = ops.where(newton * d < 0, 0.0, newton)
        inside = (newton > a) & (newton < b)
        d = ops.where(done, d, ops.where(inside, newton, 0.5 * (a + b)))
        if bool(done.all()):
            break
        phi, slope, target = evaluate(d)
    return ops.where(active, d, 0.0), float(first.max()) if first.shape[0] else 0.0


def _schedule(
    ops,
    rows,
    cols,
    spread,
    bounds,
    *,
    load_penalty,
    eps_final,
    eps_start,
    eps_decay,
    max_sweeps,
    tol,
    stage_tol,
    line_iters,
):
    """The epsilon schedule of block updates, rows then columns, shared by the dense and sparse forms."""
    r_lo, r_hi, c_lo, c_hi = (ops.asarray(b) for b in bounds)
    f = ops.asarray(np.zeros(rows.n_lines))
    g = ops.asarray(np.zeros(cols.n_lines))
    eps = eps_start * spread
    final = eps_final * spread
    sweeps = stages = 0
    violation = math.inf
    while True:
        stages += 1
        last = eps <= final * (1 + 1e-12)
        # Stages before the last only warm-start the next one: a loose tolerance there
        # saves sweeps without changing the rounded answer.
        stage_end = tol if last else max(tol, stage_tol)
        for _ in range(max_sweeps):
            sweeps += 1
            f, violation = rows.update(f, g, r_lo, r_hi, 0.0, eps, line_iters, tol)
            g, _ = cols.update(g, f, c_lo, c_hi, load_penalty, eps, line_iters, tol)
            if violation <= stage_end:
                break
        if last:
            break
        eps = max(eps * eps_decay, final)
    info = {
        "sweeps": sweeps,
        "stages": stages,
        "eps": eps,
        "violation": violation,
        "backend": ops.name,
        "device": str(getattr(ops, "device", "cpu")),
    }
    return ops.to_numpy(f), ops.to_numpy(g), info


_SCHEDULE = ("load_penalty", "eps_final", "eps_start", "eps_decay", "max_sweeps", "tol", "stage_tol", "line_iters")


def _schedule_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """The schedule's keyword arguments out of a public function's parameters (its ``locals()``)."""
    return {name: params[name] for name in _SCHEDULE}


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
    schedule = _schedule_kwargs(locals())
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
        return entropic_duals_sparse(indptr, indices, values, e, *bounds, dtype=dtype, **schedule)
    F = ops.asarray(fitness)
    mask = ops.mask(allowed)
    K = ops.where(mask, F, -math.inf)
    # Reduced where the data lives: copying a GPU matrix to the host for two scalars would cost more than a sweep.
    top = ops.total_max(K)
    spread = top + ops.total_max(ops.where(mask, -F, -math.inf)) if top > -math.inf else 1.0
    spread = spread if spread > 0 else max(1.0, ops.total_max(abs(F)))
    bounds = (row_lo, row_hi, col_lo, col_hi)
    return _schedule(ops, _DenseSide(ops, K, 1), _DenseSide(ops, K, 0), spread, bounds, **schedule)


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
    entries (contiguous segments on numpy, ``index_add_``/``scatter_reduce_`` on torch),
    so time and memory are O(nnz) per update.

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
    schedule = _schedule_kwargs(locals())
    ops = _ops_for(values, device, dtype)
    n, e = int(np.asarray(indptr).size - 1), int(n_experts)
    counts_r = np.diff(np.asarray(indptr, dtype=np.int64))
    rows = np.repeat(np.arange(n, dtype=np.int32 if n < 2**31 else np.int64), counts_r)
    cols = np.asarray(indices)
    vals = np.asarray(values, dtype=np.float64)
    if keep is not None:
        live = vals[keep]
        vals = np.where(keep, vals, -np.inf)
    else:
        live = vals
    spread = float(live.max() - live.min()) if live.size else 1.0
    spread = spread if spread > 0 else max(1.0, float(np.abs(live).max(initial=0.0)))
    del live
    if ops.sorted_segments:
        from ._sparse_kernels import group_order

        # A second copy of the entries grouped by expert (a counting sort).
        order = group_order(cols, e)
        counts_c = np.bincount(cols, minlength=e)
        row_side = _EntrySide(ops, ops.asarray(vals), None, cols, n, counts_r)
        col_side = _EntrySide(ops, ops.asarray(vals[order]), None, rows[order], e, counts_c)
        del order
    else:
        K, r, c = ops.asarray(vals), ops.ids(rows), ops.ids(cols)
        row_side, col_side = _EntrySide(ops, K, r, c, n), _EntrySide(ops, K, c, r, e)
    del vals
    with np.errstate(divide="ignore"):  # log(0) of a line whose entries are all out of play
        return _schedule(ops, row_side, col_side, spread, (row_lo, row_hi, col_lo, col_hi), **schedule)


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


def _priority(fitness: np.ndarray, reduced: np.ndarray) -> np.ndarray:
    """The rounding order: non-negative-fitness pairs by reduced score (all >= 0), then the
    others (all < 0), so the fill phase, which skips negative priorities, skips exactly them."""
    pos, neg = fitness >= 0, fitness < 0
    prio = np.empty(reduced.shape, dtype=np.float64)
    prio[pos] = reduced[pos] - (reduced[pos].min() if pos.any() else 0.0)
    prio[neg] = reduced[neg] - (reduced[neg].max() if neg.any() else 0.0) - 1.0
    return prio


def _round(problem: Problem, reduced: np.ndarray) -> tuple[np.ndarray | None, dict[str, Any], str]:
    """Greedy phases on the reduced scores ``F + f + g`` (N, E) (see the module docstring)."""
    fit = problem.fitness
    if problem.load_penalty > 0:
        # The penalised greedy walks by fitness minus the marginal penalty; restricting
        # it to the plan's support keeps the relaxation's choice of pairs.
        support = problem.allowed & (reduced >= -1e-9 * max(1.0, float(np.abs(fit).max(initial=0.0))))
        restricted = problem.replace(allowed=support)
        x, stats, message = run_greedy(restricted, fit, skip_negative=True, use_penalty=True)
        if x is not None:
            stats["rounding"] = "penalised greedy on the plan's support"
            return x, stats, message
    x, stats, message = run_greedy(problem, _priority(fit, reduced), skip_negative=True, use_penalty=False)
    stats["rounding"] = "greedy by reduced score"
    return x, stats, message


def _schedule_options(options: dict[str, Any]) -> dict[str, Any]:
    """The user's options as keyword arguments of :func:`entropic_duals`."""
    options = check_options("sinkhorn", options)
    return {
        "eps_final": float(options.get("eps", 1e-3)),
        "eps_start": float(options.get("eps_start", 1.0)),
        "eps_decay": float(options.get("eps_decay", 0.5)),
        "max_sweeps": int(options.get("max_sweeps", 50)),
        "tol": float(options.get("tol", 1e-4)),
        "stage_tol": float(options.get("stage_tol", 1e-2)),
        "line_iters": int(options.get("line_iters", 8)),
        "device": options.get("device"),
        "dtype": options.get("dtype"),
    }


def solve(
    problem: Problem, *, time_limit: float | None = None, seed: int | None = None, **options: Any
) -> SolverResult:
    schedule = _schedule_options(options)
    start = time.perf_counter()
    allowed = problem.allowed & (problem.client_capacity > 0)[:, None] & (problem.expert_max > 0)[None, :]
    f, g, info = entropic_duals(
        problem.fitness,
        allowed,
        problem.client_min,
        np.minimum(problem.client_capacity, allowed.sum(axis=1)),
        problem.expert_min,
        np.minimum(problem.expert_max, allowed.sum(axis=0)),
        load_penalty=problem.load_penalty,
        **schedule,
    )
    relax_time = time.perf_counter() - start
    reduced = problem.fitness + f[:, None] + g[None, :]
    bound = lagrangian_bound(problem, f, g, reduced)
    x, stats, message = _round(problem, reduced)
    del reduced
    stats.update(info, relaxation_time=relax_time)
    if x is None:
        return SolverResult("infeasible", None, message, bound=bound, stats=stats)
    return SolverResult("feasible", x, "feasible (entropic relaxation, rounded)", bound=bound, stats=stats)


def solve_sparse(
    problem: Any, *, time_limit: float | None = None, seed: int | None = None, **options: Any
) -> SolverResult:
    """The entropic relaxation of a :class:`~alignsolve.SparseProblem`, rounded by the sparse greedy walk.

    The duals come from :func:`entropic_duals_sparse` (numpy, or torch with ``device``),
    the bound is :func:`lagrangian_bound` over the listed entries, and the rounding is
    :func:`~alignsolve.solvers.rounding.walk_sparse` in decreasing reduced score. A lower
    bound the walk cannot meet is repaired by ``flow`` on the same candidates (which also
    decides infeasibility). A load penalty is not supported on this path (use ``flow``).
    """
    from .rounding import flow_repair, walk_sparse

    schedule = _schedule_options(options)
    if problem.load_penalty:
        raise InvalidProblemError(
            "load_penalty", "must be 0 for sinkhorn on a SparseProblem (flow handles it)", problem.load_penalty
        )
    start = time.perf_counter()
    n, e = problem.shape
    rows, cols, vals = problem.rows, problem.indices, problem.values
    cap, emax = problem.client_capacity, problem.expert_max
    keep = (cap > 0)[rows] & (emax > 0)[cols]
    f, g, info = entropic_duals_sparse(
        problem.indptr,
        cols,
        vals,
        e,
        problem.client_min,
        np.minimum(cap, np.bincount(rows[keep], minlength=n)),
        problem.expert_min,
        np.minimum(emax, np.bincount(cols[keep], minlength=e)),
        keep=None if keep.all() else keep,
        **schedule,
    )
    del keep
    relax_time = time.perf_counter() - start
    reduced = vals + f[rows] + g[cols]
    bound = lagrangian_bound(problem, f, g, reduced)
    # float32 resolution (6e-8 relative) is far finer than the duals' tolerance, and lets the
    # walk sort packed 64-bit keys instead of a stable float64 argsort.
    priority = _priority(vals, reduced).astype(np.float32)
    del reduced
    taken, stats = walk_sparse(problem, priority)
    stats.update(info, relaxation_time=relax_time, rounding="sparse greedy walk by reduced score")
    if taken is None:
        result = flow_repair(problem, stats, "the rounding's lower-bound walk fell short")
        result.bound = bound if result.status != "infeasible" else None
        return result
    objective = problem.objective(taken)
    message = "feasible (entropic relaxation, rounded, sparse)"
    return SolverResult("feasible", problem.to_matrix(taken), message, bound=bound, stats=stats, objective=objective)
