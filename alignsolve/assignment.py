"""The one result type every method returns."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from ._files import parse_json
from ._validation import Option, frozen, value_tolerance
from .balance import coefficient_of_variation
from .errors import InvalidProblemError

__all__ = ["Assignment", "Status", "relative_gap"]

Status = Literal["optimal", "feasible", "infeasible", "time_limit", "unknown"]
STATUSES: tuple[str, ...] = get_args(Status)
FORMAT = "alignsolve.assignment"


def relative_gap(objective: float, bound: float | None) -> float | None:
    """``|bound - objective| / |objective|`` (the MIP convention).

    0 when both are 0, ``inf`` when only the objective is 0, None without a bound.
    """
    if bound is None or not math.isfinite(objective):
        return None
    diff = abs(bound - objective)
    if diff <= 1e-12 * max(1.0, abs(bound)):
        return 0.0
    return diff / abs(objective) if objective != 0 else math.inf


@dataclass(frozen=True, eq=False)
class Assignment:
    """Who trains what, and how good it is.

    Attributes
    ----------
    status : {"optimal", "feasible", "infeasible", "time_limit", "unknown"}
        ``optimal``: proven optimal (within the rounding bound in ``stats``);
        ``feasible``: satisfies every constraint, optimality not proven;
        ``infeasible``: no assignment exists, ``message`` says which constraint makes it so;
        ``time_limit``: the time limit stopped the method; ``matrix`` holds its best
        assignment if ``has_solution``;
        ``unknown``: the method found no assignment and did not prove that none exists
        (a heuristic on the generalised variant, whose feasibility is NP-hard: use
        ``cpsat`` or ``milp`` to decide).
    message : str
        One line for people.
    matrix : ndarray of bool, shape (N, E), or scipy.sparse.csr_array of bool
        ``matrix[i, j]`` is True when client ``i`` trains expert ``j``. All False
        when there is no solution. Read-only (dense). For a
        :class:`~alignsolve.SparseProblem` it is a CSR array (``is_sparse``), so that
        no N x E array is ever made; the derived views below work on both.
    objective : float
        ``sum F*x - load_penalty * sum_j load_j**2``; ``-inf`` when there is no solution.
    bound : float or None
        A proven upper bound on the optimum, when the method has one.
    gap : float or None
        ``|bound - objective| / |objective|``.
    method : str
        The method that produced it (``auto`` resolves to the one it chose).
    wall_time : float
        Seconds spent in :func:`alignsolve.solve`, validation excluded.
    stats : dict
        Method-specific figures (JSON-serialisable).
    client_ids : tuple or None
        The clients' own ids, one per row, when the assignment comes from an
        :class:`~alignsolve.Aligner` (None: rows are the problem's client indices).
    """

    status: Status
    message: str
    matrix: np.ndarray
    objective: float
    bound: float | None = None
    gap: float | None = None
    method: str = ""
    wall_time: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    client_ids: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise InvalidProblemError("status", f"must be one of {', '.join(STATUSES)}", repr(self.status))
        if _issparse(self.matrix):
            import scipy.sparse as sp

            m = sp.csr_array(self.matrix, dtype=bool, copy=True)
            m.eliminate_zeros()
            m.sort_indices()
            m.data, m.indices, m.indptr = frozen(m.data), frozen(m.indices), frozen(m.indptr)
        else:
            m = np.array(self.matrix, dtype=bool, copy=True)
            if m.ndim != 2:
                raise InvalidProblemError("matrix", "must be 2-D (N, E)", f"{m.ndim}-D")
            m = frozen(m)
        object.__setattr__(self, "matrix", m)
        self._check_consistent(int(m.nnz) if _issparse(m) else int(m.sum()))
        if self.client_ids is not None:
            ids = tuple(self.client_ids)
            if len(ids) != m.shape[0]:
                raise InvalidProblemError("client_ids", f"must have one id per row ({m.shape[0]})", f"{len(ids)} ids")
            if len(set(ids)) != len(ids):
                raise InvalidProblemError("client_ids", "must be unique", "duplicate ids")
            object.__setattr__(self, "client_ids", ids)

    def _check_consistent(self, pairs: int) -> None:
        """The fields must tell one story: a status is a promise about the rest."""
        for name in ("objective", "bound", "gap", "wall_time"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))):
                raise InvalidProblemError(name, "must be a number", value)
        if math.isnan(self.objective) or self.objective == math.inf:
            raise InvalidProblemError("objective", "must be finite, or -inf when there is no solution", self.objective)
        if self.status in ("optimal", "feasible") and not math.isfinite(self.objective):
            raise InvalidProblemError("objective", f"must be finite for status {self.status!r}", self.objective)
        if self.status in ("infeasible", "unknown") and (pairs or math.isfinite(self.objective)):
            raise InvalidProblemError(
                "matrix", f"must hold no pairs and objective -inf for status {self.status!r}", f"{pairs} pairs"
            )
        if self.bound is not None:
            if math.isnan(self.bound):
                raise InvalidProblemError("bound", "must be a number or None", self.bound)
            if math.isfinite(self.objective) and self.bound < self.objective - value_tolerance(self.objective):
                raise InvalidProblemError(
                    "bound", "must be at least the objective (an upper bound on the optimum)", self.bound
                )

    # -- derived views -------------------------------------------------------------
    @property
    def has_solution(self) -> bool:
        """True when ``matrix`` is an assignment (status optimal/feasible, or time_limit with one)."""
        return self.status in ("optimal", "feasible") or (self.status == "time_limit" and math.isfinite(self.objective))

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.matrix.shape[0]), int(self.matrix.shape[1]))

    @property
    def is_sparse(self) -> bool:
        """True when ``matrix`` is a CSR array (the answer to a SparseProblem)."""
        return _issparse(self.matrix)

    @property
    def n_pairs(self) -> int:
        """Number of assigned (client, expert) pairs."""
        return int(self.matrix.nnz) if self.is_sparse else int(self.matrix.sum())

    @property
    def pairs(self) -> np.ndarray:
        """(M, 2) int64 ``(client, expert)`` pairs, sorted by client then expert."""
        if self.is_sparse:
            m = self.matrix
            rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
            return np.stack([rows, m.indices.astype(np.int64)], axis=1)
        return np.argwhere(self.matrix).astype(np.int64)

    @property
    def loads(self) -> np.ndarray:
        """(E,) int64: clients per expert."""
        if self.is_sparse:
            return np.bincount(self.matrix.indices, minlength=self.shape[1]).astype(np.int64)
        return self.matrix.sum(axis=0, dtype=np.int64)

    @property
    def counts(self) -> np.ndarray:
        """(N,) int64: experts per client."""
        if self.is_sparse:
            return np.diff(self.matrix.indptr).astype(np.int64)
        return self.matrix.sum(axis=1, dtype=np.int64)

    @property
    def load_cv(self) -> float:
        """Coefficient of variation of ``loads`` (std / mean; 0 when nothing is assigned)."""
        return coefficient_of_variation(self.loads)

    def experts_of(self, client: int) -> np.ndarray:
        """Sorted expert indices client ``client`` trains."""
        if self.is_sparse:
            m = self.matrix
            return m.indices[m.indptr[client] : m.indptr[client + 1]].astype(np.int64)
        return np.flatnonzero(self.matrix[client])

    def clients_of(self, expert: int) -> np.ndarray:
        """Sorted client indices that train expert ``expert``."""
        if self.is_sparse:
            pairs = self.pairs
            return pairs[pairs[:, 1] == expert, 0]
        return np.flatnonzero(self.matrix[:, expert])

    def by_client(self) -> dict[Any, list[int]]:
        """``{client id: [experts]}`` for every row (ids from ``client_ids``, else row indices)."""
        ids = self.client_ids if self.client_ids is not None else range(self.shape[0])
        return {cid: self.experts_of(i).tolist() for i, cid in enumerate(ids)}

    # -- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; the assignment is stored as its pairs."""
        return {
            "format": FORMAT,
            "version": 1,
            "status": self.status,
            "message": self.message,
            "n_clients": self.shape[0],
            "n_experts": self.shape[1],
            "pairs": self.pairs.tolist(),
            "objective": _finite_or_none(self.objective),
            "bound": _finite_or_none(self.bound),
            "gap": _finite_or_none(self.gap),
            "method": self.method,
            "wall_time": self.wall_time,
            "stats": self.stats,
            "client_ids": None if self.client_ids is None else list(self.client_ids),
        }

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=_json_default)

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> Assignment:
        """Parse what :meth:`to_json` wrote; anything else raises :class:`InvalidProblemError`.

        The pairs must be a list of ``[client, expert]`` integer pairs inside the stated
        shape, listed once each; the status, objective and bound must agree (``optimal``
        and ``feasible`` have a finite objective, ``infeasible`` and ``unknown`` no pairs,
        a bound is at least the objective). ``n_clients`` and ``n_experts`` are at most
        ``MAX_COUNT`` (10**7), and above ``DENSE_LIMIT`` (1e8) cells the matrix is built sparse,
        so a file's stated shape never allocates N x E.
        """
        doc = dict(text) if isinstance(text, Mapping) else parse_json(text, "text")
        if not isinstance(doc, dict):
            raise InvalidProblemError("text", "must be a JSON object", type(doc).__name__)
        if doc.get("format") != FORMAT:
            raise InvalidProblemError("format", f"must be {FORMAT!r}", repr(doc.get("format")))
        if doc.get("version", 1) != 1 or isinstance(doc.get("version"), bool):
            raise InvalidProblemError("version", "must be 1 (a later one is a newer alignsolve's)", doc.get("version"))
        n, e = (_count(doc, key) for key in ("n_clients", "n_experts"))
        pairs = _pair_array(doc.get("pairs", []), n, e)
        if n * e > DENSE_LIMIT:
            import scipy.sparse as sp

            matrix: Any = sp.csr_array(
                (np.ones(len(pairs), bool), (pairs[:, 0], pairs[:, 1])), shape=(n, e), dtype=bool
            )
        else:
            matrix = np.zeros((n, e), dtype=bool)
            matrix[pairs[:, 0], pairs[:, 1]] = True
        stats = doc.get("stats", {})
        if not isinstance(stats, dict):
            raise InvalidProblemError("stats", "must be a JSON object", type(stats).__name__)
        ids = doc.get("client_ids")
        if ids is not None and (
            not isinstance(ids, list) or any(isinstance(c, bool) or not isinstance(c, (str, int)) for c in ids)
        ):
            raise InvalidProblemError("client_ids", "must be a list of strings or integers", _short(ids))
        for key in ("message", "method"):
            if not isinstance(doc.get(key, ""), str):
                raise InvalidProblemError(key, "must be a string", doc.get(key))
        objective = _number(doc, "objective")
        return cls(
            status=doc.get("status"),  # type: ignore[arg-type]
            message=doc.get("message", ""),
            matrix=matrix,
            objective=-math.inf if objective is None else objective,
            bound=_number(doc, "bound"),
            gap=_number(doc, "gap"),
            method=doc.get("method", ""),
            wall_time=_number(doc, "wall_time") or 0.0,
            stats=stats,
            client_ids=None if ids is None else tuple(ids),
        )

    def summary(self) -> str:
        """A one-screen text summary."""
        n, e = self.shape
        lines = [f"method     {self.method}", f"status     {self.status}: {self.message}"]
        if self.has_solution:
            loads = self.loads
            lines += [
                f"objective  {self.objective:.6g}"
                + (f"   bound {self.bound:.6g}" if self.bound is not None else "")
                + (f"   gap {self.gap:.3%}" if self.gap is not None and math.isfinite(self.gap) else ""),
                f"pairs      {self.n_pairs} over {n} clients x {e} experts",
                f"loads      min {int(loads.min())}  mean {loads.mean():.2f}  max {int(loads.max())}"
                f"  cv {self.load_cv:.3f}",
            ]
        lines.append(f"wall time  {self.wall_time:.4f} s")
        return "\n".join(lines)

    def __repr__(self) -> str:
        n, e = self.shape
        return (
            f"Assignment(status={self.status!r}, method={self.method!r}, objective={self.objective:.6g}, "
            f"pairs={self.n_pairs}, shape=({n}, {e}))"
        )


#: ``from_json`` builds a dense matrix up to this many cells (N x E), a CSR array above.
DENSE_LIMIT = 10**8


#: Largest stated ``n_clients`` / ``n_experts`` a file may declare: even a CSR matrix allocates one row pointer per
#: client, so a file must not be able to ask for billions of them.
MAX_COUNT = 10**7


def _count(doc: Mapping[str, Any], key: str) -> int:
    return Option("int", low=0, high=MAX_COUNT)(key, doc.get(key))


def _number(doc: Mapping[str, Any], key: str) -> float | None:
    return Option("float", none=True)(key, doc.get(key))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _pair_array(value: Any, n: int, e: int) -> np.ndarray:
    """(M, 2) int64 pairs from a JSON list of [client, expert] integer pairs, each in range and listed once."""
    if not isinstance(value, list) or any(
        not isinstance(p, list) or len(p) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in p)
        for p in value
    ):
        raise InvalidProblemError("pairs", "must be a list of [client, expert] integer pairs", _short(value))
    pairs = np.array(value, dtype=object).reshape(-1, 2)
    if pairs.size and (pairs.min() < 0 or pairs[:, 0].max() >= n or pairs[:, 1].max() >= e):
        raise InvalidProblemError("pairs", f"must index a ({n}, {e}) matrix", "out-of-range pair")
    pairs = pairs.astype(np.int64)
    if len(np.unique(pairs[:, 0] * max(e, 1) + pairs[:, 1])) != len(pairs):
        raise InvalidProblemError("pairs", "must list each pair once", "a repeated pair")
    return pairs


def _issparse(value: Any) -> bool:
    # Without importing scipy.sparse for dense answers: only a scipy object can be sparse.
    return type(value).__module__.startswith("scipy.sparse")


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
