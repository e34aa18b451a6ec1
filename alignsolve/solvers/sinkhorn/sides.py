"""The two sides of a block update: client rows and expert columns, dense or as grouped entries.

Each side solves, for every line, the dual ``d`` of ``R(d) = target(d)`` (see the
package docstring): in lockstep by bracketed Newton steps (:func:`_solve_lines`), or, for
grouped numpy entries, line by line in the compiled :mod:`.kernels`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


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
    this side and ``other`` its line on the other side. With ``counts`` (entries per
    line) the entries are grouped by line, so that a line's reductions are contiguous:
    numpy then runs the compiled per-line update, torch contiguous segment reductions
    (``lengths``; a plain (lines, width) reduction when every line has the same count,
    ``width``), and ``line`` is not needed (None). Without ``counts`` (torch only) the
    order does not matter and ``line`` drives scatter reductions.
    """

    def __init__(self, ops: Any, K: Any, line: Any, other: Any, n_lines: int, counts: np.ndarray | None = None) -> None:
        self.ops, self.K, self.line, self.other, self.n_lines = ops, K, line, other, n_lines
        self.counts = counts
        self.lengths = self.width = None
        if counts is not None:
            bounds = np.zeros(counts.size + 1, dtype=np.int64)
            np.cumsum(counts, out=bounds[1:])
            self.bounds = bounds  # line l's entries are bounds[l]:bounds[l + 1]
            self.nonempty = np.flatnonzero(counts)
            self.starts = bounds[:-1][self.nonempty]
            if ops.name == "torch":
                self.lengths = ops.ids(counts)
                if counts.size and counts[0] > 0 and np.all(counts == counts[0]):
                    self.width = int(counts[0])

    def expand(self, d: Any) -> Any:
        if self.line is not None:
            return self.ops.take(d, self.line)
        # Grouped entries: repeating each line's dual reads memory in order; gathering it does not.
        if self.ops.name == "numpy":
            return np.repeat(d, self.counts)
        if self.width is not None:
            return d[:, None].expand(self.n_lines, self.width).reshape(-1)
        return self.ops.torch.repeat_interleave(d, self.lengths, output_size=self.K.shape[0])

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
        if self.counts is None or self.ops.name != "numpy":
            return _solve_lines(self.ops, self, self.with_other(other), d_prev, lo, hi, lam, eps, iters, tol)
        from .kernels import solve_lines

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
