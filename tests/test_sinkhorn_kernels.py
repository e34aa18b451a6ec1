"""The compiled per-line block update of sparse sinkhorn against the vectorised lockstep form."""

from __future__ import annotations

import numpy as np
import pytest

from alignsolve.solvers.sinkhorn import ops as sk_ops
from alignsolve.solvers.sinkhorn import sides


class _NumpyReference(sk_ops._Numpy):
    """The lockstep form of the block update on numpy: element-wise and segment operations over grouped entries.

    Production numpy runs the compiled per-line kernel instead; this is what it is checked against.
    """

    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    where = staticmethod(np.where)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)

    @staticmethod
    def clip(a, lo, hi):
        return np.minimum(np.maximum(a, lo), hi)

    @staticmethod
    def ids(a):
        return np.asarray(a)

    @staticmethod
    def take(d, ids):
        return d[ids]

    def segment_sum(self, a, side):
        # reduceat over the contiguous segments of grouped entries
        out = np.zeros(side.n_lines, dtype=self.dtype)
        if side.starts.size:
            out[side.nonempty] = np.add.reduceat(a, side.starts)
        return out

    def segment_max(self, a, side):
        out = np.full(side.n_lines, -np.inf, dtype=self.dtype)
        if side.starts.size:
            out[side.nonempty] = np.maximum.reduceat(a, side.starts)
        return out

    @staticmethod
    def isfinite(a):
        return np.isfinite(a)


def _grouped_lines(rng, n_lines, n_other, spread):
    """Random entries grouped by line: some lines empty, some entries out of play (-inf)."""
    counts = rng.integers(0, 9, size=n_lines)
    counts[rng.random(n_lines) < 0.1] = 0
    nnz = int(counts.sum())
    values = rng.uniform(0.0, spread, size=nnz)
    values[rng.random(nnz) < 0.1] = -np.inf
    other = rng.integers(0, n_other, size=nnz).astype(np.int32)
    return counts, values, other


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("lam", "eps", "spread"), [(0.0, 0.05, 1.0), (0.0, 1e-3, 10.0), (0.3, 0.01, 1.0)])
def test_compiled_update_matches_the_vectorised_one(seed, lam, eps, spread):
    # spread / eps = 1e4 puts roots where the top entry's exponent is far beyond 300:
    # the per-entry fallback of the factorised exponentials must carry those lines.
    rng = np.random.default_rng(seed)
    n_lines, n_other = 300, 40
    counts, values, other = _grouped_lines(rng, n_lines, n_other, spread)
    ops = _NumpyReference()
    side = sides._EntrySide(ops, values, None, other, n_lines, counts)
    live = np.bincount(np.repeat(np.arange(n_lines), counts)[np.isfinite(values)], minlength=n_lines)
    hi = np.minimum(rng.integers(0, 6, size=n_lines), live).astype(float)  # hi = 0 closes a line
    lo = np.minimum(rng.integers(0, 3, size=n_lines), hi).astype(float)
    other_dual = rng.normal(scale=0.2 * spread, size=n_other)
    d_prev = rng.normal(scale=0.2 * spread, size=n_lines)
    # Enough Newton steps for every line to reach its root, so both forms stop on the same
    # equation rather than on the same iteration count.
    args = (lo, hi, lam, eps, 200, 1e-11)
    expected, worst_expected = sides._solve_lines(ops, side, side.with_other(other_dual), d_prev, *args)
    got, worst = side.update(d_prev, other_dual, *args)
    assert np.all(got[hi == 0] == 0.0)
    # The vectorised form takes the uncapped mass as R minus the capped count, which loses
    # digits when that mass is tiny; the compiled one sums it apart. Newton steps of a few
    # eps carry that difference: 1e-4 eps bounds it.
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-4 * eps)
    assert worst == pytest.approx(worst_expected, rel=1e-9, abs=1e-12)


def test_compiled_update_keeps_the_vectorised_iteration_count():
    # With few Newton steps neither form converges: the same steps give the same duals.
    rng = np.random.default_rng(11)
    counts, values, other = _grouped_lines(rng, 200, 30, 1.0)
    ops = _NumpyReference()
    side = sides._EntrySide(ops, values, None, other, 200, counts)
    hi = np.minimum(3.0, counts).astype(float)
    lo = np.zeros(200)
    other_dual, d_prev = rng.normal(scale=0.3, size=30), rng.normal(scale=0.3, size=200)
    for iters in (0, 1, 3):
        args = (lo, hi, 0.0, 0.02, iters, 1e-12)
        expected, _ = sides._solve_lines(ops, side, side.with_other(other_dual), d_prev, *args)
        got, _ = side.update(d_prev, other_dual, *args)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-4 * 0.02)
