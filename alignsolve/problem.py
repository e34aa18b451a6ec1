"""The client-expert assignment problem of one federated round.

.. math::

    \\max_x \\; \\sum_{ij} F_{ij} x_{ij} - \\lambda \\sum_j \\mathrm{load}_j^2
    \\quad\\text{s.t.}\\quad
    \\begin{aligned}
    &\\text{client\\_min}_i \\le \\textstyle\\sum_j x_{ij} \\le \\text{client\\_capacity}_i \\\\
    &\\text{expert\\_min}_j \\le \\mathrm{load}_j = \\textstyle\\sum_i x_{ij} \\le \\text{expert\\_max}_j \\\\
    &x_{ij} = 0 \\text{ where not allowed}_{ij}, \\qquad
      \\textstyle\\sum_j \\text{cost}_{ij} x_{ij} \\le \\text{budget}_i \\text{ (generalised variant)}
    \\end{aligned}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._files import MAX_FILE_BYTES, parse_json, read_npz
from ._validation import MAX_MAGNITUDE, as_bool_matrix, as_bounds, as_float_array, as_nonneg_float
from .errors import InvalidProblemError

__all__ = ["Problem"]

FORMAT = "alignsolve.problem"
FORMAT_VERSION = 1

#: The array fields, and which of their axes are indexed by clients ("n") and by experts ("e")
_AXES = {
    "fitness": "ne",
    "client_capacity": "n",
    "client_min": "n",
    "expert_min": "e",
    "expert_max": "e",
    "allowed": "ne",
    "cost": "ne",
    "budget": "n",
}
_ARRAY_FIELDS = tuple(_AXES)
_FIELDS = (*_ARRAY_FIELDS, "load_penalty")


class Problem:
    """One round's client-expert assignment problem (immutable, validated).

    Parameters
    ----------
    fitness : array_like, shape (N, E)
        Finite scores, higher is better, at most 1e150 in magnitude. ``F[i, j]`` is the value of client ``i``
        training expert ``j`` this round.
    client_capacity : int or array_like of int, shape (N,)
        Expert slots of each client (>= 0). A scalar applies to every client. A value
        above E cannot bind and is stored as E (``10**9`` means "no limit").
    client_min : int or array_like of int, shape (N,), default 0
        Minimum number of experts each client must train (<= ``client_capacity``).
    expert_min : int or array_like of int, shape (E,), default 0
        Minimum number of clients per expert (a secure-aggregation cohort size, say).
    expert_max : int or array_like of int, shape (E,), default N
        Maximum number of clients per expert (>= ``expert_min``); above N it is stored as N.
    allowed : array_like of bool, shape (N, E), default all True
        ``False`` forbids a pair (memory, policy). Must be boolean dtype.
    load_penalty : float, default 0
        lambda >= 0; the objective subtracts ``lambda * sum_j load_j**2``.
    cost : array_like, shape (N, E) or (E,), optional
        Resource cost (>= 0) of client ``i`` training expert ``j``; with ``budget``
        this is the generalised (budget) variant.
    budget : float or array_like, shape (N,), optional
        Each client's resource budget (>= 0). Given together with ``cost``.

    Raises
    ------
    InvalidProblemError
        Naming the parameter, the rule and the value received.

    Notes
    -----
    Arrays are copied and made read-only: the caller's arrays are never modified and
    the problem cannot change after construction.
    """

    __slots__ = (
        "_allowed",
        "_budget",
        "_client_capacity",
        "_client_min",
        "_cost",
        "_expert_max",
        "_expert_min",
        "_fitness",
        "_frozen",
        "_load_penalty",
    )

    def __init__(
        self,
        fitness: Any,
        client_capacity: Any,
        *,
        client_min: Any = 0,
        expert_min: Any = 0,
        expert_max: Any = None,
        allowed: Any = None,
        load_penalty: float = 0.0,
        cost: Any = None,
        budget: Any = None,
    ) -> None:
        f = as_float_array("fitness", fitness, None, ndim=2)
        n, e = f.shape
        if n < 1 or e < 1:
            raise InvalidProblemError(
                "fitness", "must have at least one client (row) and one expert (column)", f"shape ({n}, {e})"
            )
        cap, cmin, emin, emax = as_bounds(client_capacity, client_min, expert_min, expert_max, n, e)
        mask = as_bool_matrix("allowed", True if allowed is None else allowed, (n, e))
        lam = as_nonneg_float("load_penalty", load_penalty, maximum=MAX_MAGNITUDE)
        if (cost is None) != (budget is None):
            given, missing = ("cost", "budget") if budget is None else ("budget", "cost")
            raise InvalidProblemError(
                missing, f"must be given together with {given} (the generalised variant needs both)", "None"
            )
        c = b = None
        if cost is not None:
            c = as_float_array("cost", cost, (n, e), nonneg=True, broadcast_from=((e,),))
            b = as_float_array("budget", budget, (n,), nonneg=True)
        self._fitness = f
        self._client_capacity = cap
        self._client_min = cmin
        self._expert_min = emin
        self._expert_max = emax
        self._allowed = mask
        self._load_penalty = lam
        self._cost = c
        self._budget = b
        self._frozen = True

    # -- immutability -------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(f"Problem is immutable: cannot set {name!r} (use Problem.replace(...))")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Problem is immutable: cannot delete {name!r}")

    # -- fields ---------------------------------------------------------------------
    @property
    def fitness(self) -> np.ndarray:
        """(N, E) float64, read-only."""
        return self._fitness

    @property
    def client_capacity(self) -> np.ndarray:
        """(N,) int64, read-only."""
        return self._client_capacity

    @property
    def client_min(self) -> np.ndarray:
        """(N,) int64, read-only."""
        return self._client_min

    @property
    def expert_min(self) -> np.ndarray:
        """(E,) int64, read-only."""
        return self._expert_min

    @property
    def expert_max(self) -> np.ndarray:
        """(E,) int64, read-only."""
        return self._expert_max

    @property
    def allowed(self) -> np.ndarray:
        """(N, E) bool, read-only."""
        return self._allowed

    @property
    def load_penalty(self) -> float:
        """lambda >= 0 of the quadratic load penalty."""
        return self._load_penalty

    @property
    def cost(self) -> np.ndarray | None:
        """(N, E) float64 resource cost, or None outside the generalised variant."""
        return self._cost

    @property
    def budget(self) -> np.ndarray | None:
        """(N,) float64 resource budget, or None outside the generalised variant."""
        return self._budget

    @property
    def n_clients(self) -> int:
        return int(self._fitness.shape[0])

    @property
    def n_experts(self) -> int:
        return int(self._fitness.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        """(N, E)."""
        return (self.n_clients, self.n_experts)

    @property
    def is_generalised(self) -> bool:
        """True when ``cost`` and ``budget`` make this a generalised assignment problem."""
        return self._cost is not None

    @property
    def has_lower_bounds(self) -> bool:
        return bool(self._client_min.any() or self._expert_min.any())

    # -- maths ------------------------------------------------------------------------
    def objective(self, matrix: Any) -> float:
        """Objective of a 0/1 assignment matrix (N, E): ``sum F*x - lambda * sum_j load_j**2``."""
        x = np.asarray(matrix, dtype=bool)
        if x.shape != self.shape:
            raise InvalidProblemError("matrix", f"must have shape {self.shape}", f"shape {x.shape}")
        value = float(self._fitness.reshape(-1)[np.flatnonzero(x)].sum())
        if self._load_penalty:
            loads = x.sum(axis=0, dtype=np.int64).astype(np.float64)
            value -= self._load_penalty * float(loads @ loads)
        return value

    def replace(self, **changes: Any) -> Problem:
        """A new problem with some fields changed (validated again)."""
        unknown = set(changes) - set(_FIELDS)
        if unknown:
            raise InvalidProblemError(
                "replace", f"accepts only the fields {', '.join(_FIELDS)}", ", ".join(sorted(unknown))
            )
        fields = self.to_dict(arrays=True)
        fields.update(changes)
        return Problem(**fields)

    def relabel(self, clients: Any, experts: Any) -> Problem:
        """The same problem with its clients and experts listed in another order.

        Parameters
        ----------
        clients : array_like of int, shape (N,)
            A permutation of ``range(N)``: row i of the new problem is client ``clients[i]``.
        experts : array_like of int, shape (E,)
            A permutation of ``range(E)``: column j of the new problem is expert ``experts[j]``.

        Returns
        -------
        Problem
            Every field reordered along its client and expert axes. An assignment ``y`` of it is
            the assignment ``x`` of this problem with ``x[np.ix_(clients, experts)] = y``, with
            the same objective and feasibility: the two problems have the same optimum.
        """
        order = {"n": _permutation("clients", clients, self.n_clients)}
        order["e"] = _permutation("experts", experts, self.n_experts)
        fields = self.to_dict(arrays=True)
        for name, axes in _AXES.items():
            if fields[name] is not None:
                fields[name] = fields[name][np.ix_(*(order[a] for a in axes))]
        return Problem(**fields)

    # -- serialisation -------------------------------------------------------------
    def to_dict(self, *, arrays: bool = False) -> dict[str, Any]:
        """Fields as a dict: numpy arrays (``arrays=True``) or JSON-ready lists."""
        out: dict[str, Any] = {}
        for name in _ARRAY_FIELDS:
            value = getattr(self, name)
            if value is None:
                out[name] = None
            else:
                out[name] = value if arrays else value.tolist()
        out["load_penalty"] = self._load_penalty
        return out

    def to_json(self, *, indent: int | None = None) -> str:
        """JSON text (lossless: floats are written with enough digits to round-trip)."""
        doc = {"format": FORMAT, "version": FORMAT_VERSION, "n_clients": self.n_clients, "n_experts": self.n_experts}
        doc.update(self.to_dict())
        if self._allowed.all():
            doc["allowed"] = None  # the default: keep files small
        return json.dumps(doc, indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> Problem:
        """Parse what :meth:`to_json` wrote (a str, bytes or an already-parsed dict).

        Hostile text (not UTF-8, not JSON, nested too deeply, numbers too long, counts
        that disagree with the arrays) raises :class:`InvalidProblemError`.
        """
        doc = dict(text) if isinstance(text, Mapping) else parse_json(text, "text")
        if not isinstance(doc, dict):
            raise InvalidProblemError("text", "must be a JSON object", type(doc).__name__)
        return cls._from_fields(doc, "JSON document")

    @classmethod
    def _from_fields(cls, doc: Mapping[str, Any], where: str) -> Problem:
        fmt = doc.get("format", FORMAT)
        if fmt != FORMAT:
            raise InvalidProblemError("format", f"must be {FORMAT!r}", repr(fmt))
        version = doc.get("version", FORMAT_VERSION)
        if isinstance(version, np.ndarray) and version.ndim == 0:
            version = version.item()
        if (
            isinstance(version, bool)
            or not isinstance(version, (int, np.integer))
            or not 1 <= version <= FORMAT_VERSION
        ):
            raise InvalidProblemError(
                "version",
                f"must be an integer from 1 to {FORMAT_VERSION} (a later one is a newer alignsolve's)",
                version,
            )
        for key, axis in (("n_clients", 0), ("n_experts", 1)):
            if key in doc:
                count, fitness = doc[key], doc.get("fitness")
                shape = np.shape(fitness) if isinstance(fitness, np.ndarray) else _list_shape(fitness)
                if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
                    raise InvalidProblemError(key, "must be an integer", count)
                if shape is not None and len(shape) == 2 and shape[axis] != count:
                    raise InvalidProblemError(key, f"must match the fitness array's shape {shape}", count)
        unknown = set(doc) - set(_FIELDS) - {"format", "version", "n_clients", "n_experts"}
        if unknown:
            raise InvalidProblemError(
                where, f"may hold only the fields {', '.join(_FIELDS)}", "unknown " + ", ".join(sorted(unknown))
            )
        for required in ("fitness", "client_capacity"):
            if doc.get(required) is None:
                raise InvalidProblemError(required, f"is required in the {where}", "missing")
        kwargs = {k: doc[k] for k in _FIELDS if k in doc and doc[k] is not None}
        penalty = kwargs.get("load_penalty")
        if isinstance(penalty, np.ndarray) and penalty.ndim == 0:  # an npz stores the scalar as a 0-d array
            kwargs["load_penalty"] = penalty.item()
        fitness = kwargs.pop("fitness")
        capacity = kwargs.pop("client_capacity")
        return cls(fitness, capacity, **kwargs)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write to ``.json`` or ``.npz`` (chosen by the suffix); returns the path."""
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix == ".json":
            p.write_text(self.to_json())
        elif suffix == ".npz":
            arrays = {k: v for k, v in self.to_dict(arrays=True).items() if k != "load_penalty" and v is not None}
            arrays["load_penalty"] = np.float64(self._load_penalty)
            arrays["version"] = np.int64(FORMAT_VERSION)
            with open(p, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        else:
            raise InvalidProblemError("path", "must end in .json or .npz", str(p))
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, max_bytes: int = MAX_FILE_BYTES) -> Problem:
        """Read a ``.json`` or ``.npz`` file written by :meth:`save`. Never unpickles.

        Every array's declared size is checked against its stored size and against
        ``max_bytes`` before anything is allocated; a damaged or hostile file raises
        :class:`InvalidProblemError` naming ``path``.
        """
        p = Path(path)
        suffix = p.suffix.lower()
        if not p.is_file():
            raise InvalidProblemError("path", "must be an existing file", str(p))
        if suffix == ".json":
            if p.stat().st_size > max_bytes:
                raise InvalidProblemError("path", f"must be at most max_bytes = {max_bytes} bytes", p.stat().st_size)
            return cls.from_json(p.read_bytes())
        if suffix == ".npz":
            return cls._from_fields(read_npz(p, max_bytes), "npz archive")
        raise InvalidProblemError("path", "must end in .json or .npz", str(p))

    # -- misc -------------------------------------------------------------------------
    def __repr__(self) -> str:
        extra = ", generalised" if self.is_generalised else ""
        lam = f", load_penalty={self._load_penalty:g}" if self._load_penalty else ""
        return f"Problem(N={self.n_clients}, E={self.n_experts}{lam}{extra})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Problem):
            return NotImplemented
        for name in _ARRAY_FIELDS:
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None) or (a is not None and not np.array_equal(a, b)):
                return False
        return self._load_penalty == other._load_penalty

    __hash__ = None  # type: ignore[assignment]


def _list_shape(value: Any) -> tuple[int, ...] | None:
    """(rows, columns) of a list of lists, without converting it; None when it is not one."""
    if not isinstance(value, list):
        return None
    first = value[0] if value else []
    return (len(value), len(first)) if isinstance(first, list) else (len(value),)


def _permutation(name: str, value: Any, size: int) -> np.ndarray:
    """``value`` as an int64 permutation of ``range(size)``, or InvalidProblemError naming ``name``."""
    order = np.asarray(value)
    if (
        order.shape != (size,)
        or (size and not np.issubdtype(order.dtype, np.integer))
        or not np.array_equal(np.sort(order), np.arange(size))
    ):
        raise InvalidProblemError(name, f"must be a permutation of range({size})", value)
    return order.astype(np.int64)
