"""The sparse problem form: each client lists its candidate experts and their fitness.

A dense N x E fitness matrix stops fitting long before a federation's scale does (a
million clients by 4096 experts is 16 GB in float32), and most pairs are pointless: a
client's routing mass sits on a few experts. :class:`SparseProblem` holds only the
candidate pairs, in compressed sparse row (CSR) form:

    client i's candidates are  indices[indptr[i]:indptr[i+1]]   (expert ids, int32)
    with fitness               values[indptr[i]:indptr[i+1]]

and the same client and expert bounds as :class:`~alignsolve.Problem` (no budgets: the
generalised variant stays dense).

**Meaning.** An unlisted pair is forbidden (``x_ij = 0``); the sparse problem is the
dense problem restricted to the listed pairs, exactly what ``to_dense()`` returns (fitness
0 and ``allowed=False`` off the list). So:

* its optimum is at most the dense optimum of any matrix that agrees on the listed pairs,
  and equal to it when that dense problem has an optimum using only listed pairs (for
  example when every client lists at least its ``capacity`` best experts and no bound
  forces a client or an expert onto an unlisted pair);
* it can be infeasible where the dense problem is not (an expert whose ``expert_min``
  exceeds the clients that list it): the status says so, like any infeasibility.

**How to check what is lost.** Where the dense matrix still fits, solve it too (``flow``
on the dense problem prices every pair) and compare objectives; ``benchmarks/run_scale.py``
reports that gap for every size where the dense optimum can be computed.
:meth:`SparseProblem.from_dense` builds the sparse form from a dense problem by keeping
each client's ``m`` best allowed pairs plus, for every expert with a lower bound, its
``2 * expert_min`` best clients (so that lower bounds keep their candidates).

**Input rules.** ``indptr`` has N + 1 non-decreasing entries from 0 to ``len(indices)``;
expert ids lie in ``[0, E)``; a client lists an expert at most once (duplicates raise:
summing or keeping one would both be guesses); indices need not be sorted (each row is
sorted on construction, with its values); an empty row is a client with no candidates
(it trains nothing; with ``client_min > 0`` the problem is infeasible). Values must be
finite; they are stored as float64 (``values_dtype="float32"`` halves the memory).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validation import AT_LEAST_ONE, MAX_MAGNITUDE, as_bounds, as_nonneg_float, frozen
from .errors import InvalidProblemError

__all__ = ["SparseProblem"]


def _int_array(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise InvalidProblemError(name, "must be a 1-D integer array", f"{arr.ndim}-D")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidProblemError(name, "must be an integer array", f"dtype {arr.dtype}")
    return arr


class SparseProblem:
    """One round's assignment problem over candidate pairs (CSR; immutable, validated).

    Parameters
    ----------
    indptr : array_like of int, shape (N + 1,)
        Row pointers: client ``i``'s candidates are entries ``indptr[i]:indptr[i+1]``.
    indices : array_like of int, shape (nnz,)
        Expert id of each entry, in ``[0, n_experts)``; unique within a row.
    values : array_like of float, shape (nnz,)
        Fitness of each entry (finite).
    n_experts : int
        E >= 1.
    client_capacity, client_min, expert_min, expert_max, load_penalty
        As in :class:`~alignsolve.Problem`.
    values_dtype : {"float64", "float32"}
        Storage of ``values``.

    Raises
    ------
    InvalidProblemError
        Naming the parameter, the rule and the value received (see the module docstring
        for the rules on ``indptr`` and ``indices``).
    """

    __slots__ = (
        "_client_capacity",
        "_client_min",
        "_expert_max",
        "_expert_min",
        "_frozen",
        "_indices",
        "_indptr",
        "_load_penalty",
        "_n_experts",
        "_rows",
        "_values",
    )

    def __init__(
        self,
        indptr: Any,
        indices: Any,
        values: Any,
        n_experts: int,
        client_capacity: Any,
        *,
        client_min: Any = 0,
        expert_min: Any = 0,
        expert_max: Any = None,
        load_penalty: float = 0.0,
        values_dtype: str = "float64",
    ) -> None:
        e = AT_LEAST_ONE("n_experts", n_experts)
        ptr = _int_array("indptr", indptr)
        if ptr.size < 2:
            raise InvalidProblemError("indptr", "must have N + 1 >= 2 entries (at least one client)", ptr.size)
        idx = _int_array("indices", indices)
        if values_dtype not in ("float64", "float32"):
            raise InvalidProblemError("values_dtype", "must be 'float64' or 'float32'", repr(values_dtype))
        val = np.asarray(values)
        if val.ndim != 1 or val.shape != idx.shape:
            raise InvalidProblemError("values", f"must be 1-D with one value per index ({idx.size})", val.shape)
        if val.dtype == bool or (val.size and not np.issubdtype(val.dtype, np.number)):
            raise InvalidProblemError("values", "must be numeric", f"dtype {val.dtype}")
        if np.iscomplexobj(val):
            raise InvalidProblemError("values", "must be real", f"dtype {val.dtype}")
        val = np.array(val, dtype=values_dtype, copy=True)
        if not np.isfinite(val).all():
            k = int(np.flatnonzero(~np.isfinite(val))[0])
            raise InvalidProblemError("values", "must be finite", f"{val[k]} at entry {k}")
        if val.size and float(np.abs(val).max()) > MAX_MAGNITUDE:
            k = int(np.argmax(np.abs(val)))
            raise InvalidProblemError(
                "values", f"must be at most {MAX_MAGNITUDE:g} in magnitude (objectives must stay finite)", val[k]
            )
        if ptr[0] != 0 or ptr[-1] != idx.size:
            raise InvalidProblemError(
                "indptr", f"must start at 0 and end at len(indices) = {idx.size}", f"[{ptr[0]}, ..., {ptr[-1]}]"
            )
        steps = np.diff(ptr)
        if (steps < 0).any():
            i = int(np.flatnonzero(steps < 0)[0])
            raise InvalidProblemError("indptr", "must be non-decreasing", f"indptr[{i}] = {ptr[i]} > {ptr[i + 1]}")
        if idx.size and (idx.min() < 0 or idx.max() >= e):
            k = int(np.flatnonzero((idx < 0) | (idx >= e))[0])
            raise InvalidProblemError("indices", f"must lie in [0, n_experts = {e})", f"{idx[k]} at entry {k}")
        n = ptr.size - 1
        ptr64 = ptr.astype(np.int64)
        index_dtype = np.int32 if e <= np.iinfo(np.int32).max else np.int64
        idx = idx.astype(index_dtype, copy=True)
        rows = np.repeat(np.arange(n, dtype=np.int32 if n <= np.iinfo(np.int32).max else np.int64), steps)
        # Sort each row by expert id (values follow); a duplicate is then two equal neighbours in a row.
        if idx.size > 1:
            order_needed = (np.diff(idx) <= 0) & (rows[1:] == rows[:-1])
            if order_needed.any():
                order = np.lexsort((idx, rows))
                idx, val = idx[order], val[order]
                dup = (np.diff(idx) == 0) & (rows[1:] == rows[:-1])
                if dup.any():
                    k = int(np.flatnonzero(dup)[0])
                    raise InvalidProblemError(
                        "indices",
                        "must list an expert at most once per client",
                        f"client {rows[k]} lists {idx[k]} twice",
                    )
        cap, cmin, emin, emax = as_bounds(client_capacity, client_min, expert_min, expert_max, n, e)
        self._indptr, self._indices, self._values, self._rows = (frozen(a) for a in (ptr64, idx, val, rows))
        self._n_experts = e
        self._client_capacity, self._client_min = cap, cmin
        self._expert_min, self._expert_max = emin, emax
        self._load_penalty = as_nonneg_float("load_penalty", load_penalty, maximum=MAX_MAGNITUDE)
        self._frozen = True

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(f"SparseProblem is immutable: cannot set {name!r}")
        object.__setattr__(self, name, value)

    # -- fields ---------------------------------------------------------------------
    indptr = property(lambda self: self._indptr, doc="(N + 1,) int64 row pointers.")
    indices = property(lambda self: self._indices, doc="(nnz,) int32 expert ids, sorted within each row.")
    values = property(lambda self: self._values, doc="(nnz,) fitness of each entry.")
    rows = property(lambda self: self._rows, doc="(nnz,) client of each entry (int32 where it fits).")
    client_capacity = property(lambda self: self._client_capacity)
    client_min = property(lambda self: self._client_min)
    expert_min = property(lambda self: self._expert_min)
    expert_max = property(lambda self: self._expert_max)
    load_penalty = property(lambda self: self._load_penalty)
    cost = property(lambda self: None, doc="Always None: the sparse form has no budgets.")
    budget = property(lambda self: None, doc="Always None: the sparse form has no budgets.")

    @property
    def n_clients(self) -> int:
        return int(self._indptr.size - 1)

    @property
    def n_experts(self) -> int:
        return self._n_experts

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_clients, self._n_experts)

    @property
    def nnz(self) -> int:
        """Number of candidate pairs."""
        return int(self._indices.size)

    @property
    def is_generalised(self) -> bool:
        return False

    @property
    def has_lower_bounds(self) -> bool:
        return bool(self._client_min.any() or self._expert_min.any())

    @property
    def nbytes(self) -> int:
        """Bytes held by the candidate arrays (indptr, indices, values, rows)."""
        return int(self._indptr.nbytes + self._indices.nbytes + self._values.nbytes + self._rows.nbytes)

    # -- conversions ----------------------------------------------------------------
    def objective(self, chosen: Any) -> float:
        """Objective of a selection of entries: ``chosen`` is a bool mask of shape (nnz,), or an
        (N, E) matrix (dense or scipy.sparse) whose pairs must all be candidates."""
        mask = self.entry_mask(chosen)
        value = float(self._values[mask].sum(dtype=np.float64))
        if self._load_penalty:
            loads = np.bincount(self._indices[mask], minlength=self._n_experts).astype(np.float64)
            value -= self._load_penalty * float(loads @ loads)
        return value

    def entry_mask(self, chosen: Any) -> np.ndarray:
        """(nnz,) bool mask of the entries an assignment uses (see :meth:`objective`).

        Raises
        ------
        InvalidProblemError
            When the assignment uses a pair that is not a candidate, or has the wrong shape.
        """
        import scipy.sparse as sp

        if isinstance(chosen, np.ndarray) and chosen.dtype == bool and chosen.shape == (self.nnz,):
            return chosen
        if sp.issparse(chosen):
            csr = sp.csr_array(chosen, copy=True)
            if csr.shape != self.shape:
                raise InvalidProblemError("matrix", f"must have shape {self.shape}", f"shape {csr.shape}")
            csr.eliminate_zeros()
            r = np.repeat(np.arange(self.n_clients, dtype=np.int64), np.diff(csr.indptr))
            c = csr.indices.astype(np.int64)
        else:
            x = np.asarray(chosen)
            if x.shape != self.shape:
                raise InvalidProblemError(
                    "matrix", f"must have shape {self.shape} or ({self.nnz},)", f"shape {x.shape}"
                )
            r, c = np.nonzero(x)
        key = self._rows.astype(np.int64) * self._n_experts + self._indices
        want = r.astype(np.int64) * self._n_experts + c
        pos = np.searchsorted(key, want)  # keys are sorted: rows ascending, experts sorted within a row
        ok = (pos < key.size) & (key[np.minimum(pos, key.size - 1)] == want)
        if not ok.all():
            k = int(np.flatnonzero(~ok)[0])
            raise InvalidProblemError(
                "matrix", "must use candidate pairs only", f"client {int(r[k])}, expert {int(c[k])} is not listed"
            )
        mask = np.zeros(self.nnz, dtype=bool)
        mask[pos] = True
        return mask

    def to_matrix(self, mask: np.ndarray) -> Any:
        """A ``scipy.sparse.csr_array`` of bool, shape (N, E), from an entry mask (nnz,)."""
        import scipy.sparse as sp

        counts = np.bincount(self._rows[mask], minlength=self.n_clients)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        data = np.ones(int(counts.sum()), dtype=bool)
        return sp.csr_array((data, self._indices[mask], indptr), shape=self.shape)

    def to_dense(self):
        """The equivalent dense :class:`~alignsolve.Problem` (unlisted pairs forbidden, fitness 0 there)."""
        from .problem import Problem

        n, e = self.shape
        fit = np.zeros((n, e))
        allowed = np.zeros((n, e), dtype=bool)
        fit[self._rows, self._indices] = self._values
        allowed[self._rows, self._indices] = True
        return Problem(
            fit,
            self._client_capacity,
            client_min=self._client_min,
            expert_min=self._expert_min,
            expert_max=self._expert_max,
            allowed=allowed,
            load_penalty=self._load_penalty,
        )

    @classmethod
    def from_dense(cls, problem, m: int, *, values_dtype: str = "float64", chunk: int = 8192) -> SparseProblem:
        """Keep each client's ``m`` best allowed pairs, and each expert's ``2 * expert_min`` best allowed clients.

        Parameters
        ----------
        problem : Problem
            A unit-variant problem (no budgets).
        m : int
            Candidates per client, 1 <= m; ``m >= E`` keeps every allowed pair (then the
            sparse and dense problems are the same problem).
        """
        from .problem import Problem

        if not isinstance(problem, Problem):
            raise InvalidProblemError("problem", "must be an alignsolve.Problem", type(problem).__name__)
        if problem.is_generalised:
            raise InvalidProblemError(
                "problem", "must be the unit variant (the sparse form has no budgets)", "cost given"
            )
        m = AT_LEAST_ONE("m", m)
        n, e = problem.shape
        keep = np.zeros((n, e), dtype=bool) if m < e else problem.allowed.copy()
        if m < e:
            for lo in range(0, n, chunk):
                hi = min(n, lo + chunk)
                score = np.where(problem.allowed[lo:hi], problem.fitness[lo:hi], -np.inf)
                top = np.argpartition(-score, m - 1, axis=1)[:, :m]
                r = np.arange(hi - lo)[:, None]
                keep[lo:hi][r, top] = np.isfinite(score[r, top])
            for j in np.flatnonzero(problem.expert_min):
                r = min(n, 2 * int(problem.expert_min[j]))
                col = np.where(problem.allowed[:, j], problem.fitness[:, j], -np.inf)
                top = np.argpartition(-col, r - 1)[:r] if r < n else np.arange(n)
                keep[top[np.isfinite(col[top])], j] = True
        rows, cols = np.nonzero(keep)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
        return cls(
            indptr,
            cols,
            problem.fitness[rows, cols],
            e,
            problem.client_capacity,
            client_min=problem.client_min,
            expert_min=problem.expert_min,
            expert_max=problem.expert_max,
            load_penalty=problem.load_penalty,
            values_dtype=values_dtype,
        )

    def __repr__(self) -> str:
        n, e = self.shape
        return f"SparseProblem(n_clients={n}, n_experts={e}, nnz={self.nnz}, lower_bounds={self.has_lower_bounds})"
