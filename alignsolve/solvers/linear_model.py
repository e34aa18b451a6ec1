"""The assignment problem as a sparse linear model, shared by ``milp`` and ``lp``.

Variables ``z = [x, u]``: ``x_p`` in {0, 1} for each allowed pair ``p = (i, j)`` and,
with a load penalty, ``u_jk`` in [0, 1] for the k-th unit of expert j's load
(k = 1 .. expert_max_j). The convex penalty ``lambda * load_j**2`` is the sum of the
increasing increments ``lambda * (2k - 1)`` (``k**2 - (k-1)**2``), so a maximiser fills
``u_j1, u_j2, ...`` in order and ``sum_k u_jk = load_j`` prices the load exactly; the
``u`` may stay continuous even in the MIP::

    maximise    c_x . x  -  sum_jk lambda (2k - 1) u_jk
    subject to  client_min  <=  R x  <=  client_capacity        (R: client of each pair)
                expert_min  <=  C x  <=  expert_max             (C: expert of each pair)
                C x - S u = 0                                   (penalty only; S sums an expert's units)
                W x <= budget                                   (generalised variant; W: cost of each pair)

:func:`lagrangian_bound` turns *any* multipliers of these rows into a valid upper
bound on the optimum, which is how the interior-point LP reports a bound that does
not depend on its stopping tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._validation import budget_slack
from ..problem import Problem
from . import SolverResult

__all__ = ["LinearModel", "empty_model_result", "lagrangian_bound", "linear_model"]


@dataclass(frozen=True)
class LinearModel:
    """``maximise objective . z  s.t.  lower <= A z <= upper, 0 <= z <= 1``.

    Attributes
    ----------
    rows, cols : ndarray of int64, shape (P,)
        Client and expert of each pair variable (the first P entries of z).
    objective : ndarray, shape (P + Q,)
    matrix : scipy.sparse.csr_array, shape (M, P + Q)
    lower, upper : ndarray, shape (M,)
        ``-inf`` / ``inf`` where a side is absent.
    n_pairs : int
        P; the remaining Q variables are the penalty's load units.
    budget_scale : ndarray, shape (N,), or None
        The power of two each budget row (the last N rows) was multiplied by.
    """

    rows: np.ndarray
    cols: np.ndarray
    objective: np.ndarray
    matrix: sp.csr_array
    lower: np.ndarray
    upper: np.ndarray
    n_pairs: int
    budget_scale: np.ndarray | None = None

    @property
    def integrality(self) -> np.ndarray:
        """1 for the pair variables, 0 for the load units."""
        out = np.zeros(self.objective.size, np.uint8)
        out[: self.n_pairs] = 1
        return out

    def to_matrix(self, z: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """The (N, E) plan of the pair part of ``z`` (fractional values kept)."""
        plan = np.zeros(shape)
        plan[self.rows, self.cols] = z[: self.n_pairs]
        return plan


def linear_model(problem: Problem, *, forbid_over_budget: bool = True) -> LinearModel:
    """Build the sparse model of ``problem`` (see the module docstring).

    Pairs whose own cost exceeds the client's budget can never be taken, so they are
    left out of the model when ``forbid_over_budget`` (fewer variables, tighter LP).
    """
    n, e = problem.shape
    allowed = problem.allowed
    if problem.is_generalised and forbid_over_budget:
        allowed = allowed & (problem.cost <= _budget_with_slack(problem)[:, None])  # type: ignore[operator]
    rows, cols = np.nonzero(allowed)
    rows, cols = rows.astype(np.int64), cols.astype(np.int64)
    p = rows.size
    pair = np.arange(p)
    ones = np.ones(p)
    blocks = [
        sp.csr_array((ones, (rows, pair)), shape=(n, p)),
        sp.csr_array((ones, (cols, pair)), shape=(e, p)),
    ]
    lower = [problem.client_min.astype(float), problem.expert_min.astype(float)]
    upper = [problem.client_capacity.astype(float), problem.expert_max.astype(float)]
    objective = [problem.fitness[rows, cols]]

    lam = problem.load_penalty
    q = 0
    if lam > 0:
        # Units beyond what the pairs could ever reach are never used: cap them there.
        reach = np.minimum(problem.expert_max, np.bincount(cols, minlength=e)).astype(np.int64)
        q = int(reach.sum())
        unit_expert = np.repeat(np.arange(e), reach)
        unit_rank = np.arange(q) - np.repeat(np.cumsum(reach) - reach, reach) + 1  # k = 1 .. reach_j
        objective.append(-lam * (2.0 * unit_rank - 1.0))
        link = sp.hstack(
            [blocks[1], sp.csr_array((-np.ones(q), (unit_expert, np.arange(q))), shape=(e, q))], format="csr"
        )
        blocks = [sp.hstack([b, sp.csr_array((b.shape[0], q))], format="csr") for b in blocks]
        blocks.append(link)
        lower.append(np.zeros(e))
        upper.append(np.zeros(e))
    budget_scale = None
    if problem.is_generalised:
        # Each budget row is scaled by a power of two (exact) so that its largest entry lies in
        # [0.5, 1): solvers treat magnitudes from about 1e20 on as infinite, and tolerances are absolute.
        cost = problem.cost[rows, cols]  # type: ignore[index]
        top = np.array(problem.budget, dtype=float)
        np.maximum.at(top, rows, cost)
        budget_scale = np.where(top > 0, np.ldexp(1.0, -np.frexp(top)[1]), 1.0)
        w = sp.csr_array((cost * budget_scale[rows], (rows, pair)), shape=(n, p))
        blocks.append(sp.hstack([w, sp.csr_array((n, q))], format="csr") if q else w)
        lower.append(np.full(n, -np.inf))
        upper.append(problem.budget.astype(float) * budget_scale)  # type: ignore[union-attr]
    return LinearModel(
        rows=rows,
        cols=cols,
        objective=np.concatenate(objective),
        matrix=sp.vstack(blocks, format="csr"),
        lower=np.concatenate(lower),
        upper=np.concatenate(upper),
        n_pairs=p,
        budget_scale=budget_scale,
    )


def _budget_with_slack(problem: Problem) -> np.ndarray:
    """The budget plus the tolerance :func:`alignsolve.verify` grants (1e-9 relative)."""
    b = problem.budget
    assert b is not None
    return b + budget_slack(b)


def lagrangian_bound(model: LinearModel, multipliers: np.ndarray) -> float:
    """A valid upper bound on the model's maximum from any row multipliers ``y``.

    For every z in the box and every feasible ``A z = s`` with ``lower <= s <= upper``:
    ``objective . z = (objective - A^T y) . z + y . s``, and each term is at most its
    maximum over the box and over ``[lower, upper]``:

    .. math::  \\max_z \\le \\sum_v \\max(0, (c - A^\\top y)_v)
               + \\sum_m \\max(y_m \\, \\mathrm{upper}_m, \\; y_m \\, \\mathrm{lower}_m)

    Parameters
    ----------
    model : LinearModel
    multipliers : ndarray, shape (M,)
        Any real numbers; the closer to the LP duals, the tighter the bound. A
        multiplier pushing towards an infinite side is clipped to 0 (its term would
        be infinite).

    Returns
    -------
    float
    """
    y = np.asarray(multipliers, dtype=float).copy()
    y[(y > 0) & ~np.isfinite(model.upper)] = 0.0
    y[(y < 0) & ~np.isfinite(model.lower)] = 0.0
    reduced = model.objective - model.matrix.T @ y
    side = np.where(y > 0, model.upper, model.lower)
    return float(np.maximum(reduced, 0.0).sum() + (y * np.where(y == 0, 0.0, side)).sum())


def empty_model_result(problem: Problem) -> SolverResult:
    """The answer when no pair can be taken: the empty assignment, if no minimum asks for more."""
    from ..feasibility import diagnose_generalised

    cert = diagnose_generalised(problem)
    if cert is not None:
        return SolverResult("infeasible", None, cert.message, stats={"certificate": cert.to_dict()})
    if problem.client_min.any() or problem.expert_min.any():  # unreachable: the certificate covers it
        return SolverResult("infeasible", None, "a minimum cannot be met: no pair can be taken")
    return SolverResult("optimal", np.zeros(problem.shape, bool), "optimal (no pair can be taken)", bound=0.0)
