"""Registry of solver backends: one file per method, imported only when used.

Availability is checked with :func:`importlib.util.find_spec`, which looks for a
package without importing it (importing ortools and highspy in one process clashes,
see docs/contributing.md).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .._validation import POSITIVE, Option
from ..assignment import Status
from ..errors import InvalidProblemError, MethodUnavailableError
from ..feasibility import diagnose_generalised
from ..problem import Problem

__all__ = ["METHODS", "MethodSpec", "SolverResult", "available_methods", "get_backend", "method_info"]


@dataclass
class SolverResult:
    """What a backend returns; :func:`alignsolve.solve` turns it into an Assignment."""

    status: Status
    matrix: np.ndarray | None
    message: str
    bound: float | None = None
    stats: dict[str, Any] | None = None
    objective: float | None = None  # when the backend computed it already


class Backend(Protocol):
    """A method's module: ``solve`` for a :class:`Problem`; ``solve_sparse`` too where ``MethodSpec.sparse``."""

    def solve(
        self, problem: Problem, *, time_limit: float | None, seed: int | None, **options: Any
    ) -> SolverResult: ...

    def solve_sparse(
        self, problem: Any, *, time_limit: float | None, seed: int | None, **options: Any
    ) -> SolverResult: ...


@dataclass(frozen=True)
class MethodSpec:
    """A method's entry in the registry."""

    name: str
    module: str
    requires: tuple[str, ...]
    extra: str | None  # the pip extra that installs ``requires``; None: core dependency
    guarantee: str  # "exact", "bound", "approximation", "heuristic"
    generalised: bool  # solves the budget variant
    summary: str
    warm_start: str = ""  # "" when the method uses ``warm_start``, else why it cannot
    options: Mapping[str, Option] = field(default_factory=dict)  # name -> rule of each method option
    sparse: bool = False  # solves a SparseProblem on its candidate lists (the backend has solve_sparse)

    def missing(self) -> list[str]:
        return [pkg for pkg in self.requires if importlib.util.find_spec(pkg) is None]

    def install_hint(self) -> str:
        if self.extra:
            return f'pip install "alignsolve[{self.extra}]"'
        return "pip install --force-reinstall alignsolve  # reinstalls the core dependencies: " + " ".join(
            self.requires
        )


def _any_start(name: str, value: Any) -> Any:
    # The matrix itself is validated against the problem by solve() (shape, 0/1).
    return value


def _device(name: str, value: Any) -> Any:
    if isinstance(value, str) or type(value).__name__ == "device":
        return value
    raise InvalidProblemError(name, "must be None or a torch device such as 'cpu' or 'cuda'", value)


def _dtype(name: str, value: Any) -> Any:
    if value in ("float32", "float64") or type(value).__name__ == "dtype":
        return value
    raise InvalidProblemError(name, "must be None, 'float32' or 'float64' (or a torch dtype)", value)


_START = Option("any", none=True, check=_any_start)
_FLOW_OPTIONS = {
    "scale": Option("float", low=0.0, low_open=True, none=True),
    "pricing": Option("bool", none=True),
    "candidates": Option("int", low=1, high=2**31 - 1, none=True),
    "margin": Option("float", low=0.0),
}

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "flow",
            "alignsolve.solvers.flow",
            ("ortools",),
            None,
            "exact",
            False,
            "min-cost flow (OR-Tools SimpleMinCostFlow); exact, convex load penalty included",
            "SimpleMinCostFlow takes no initial flow",
            _FLOW_OPTIONS,
            sparse=True,
        ),
        MethodSpec(
            "greedy",
            "alignsolve.solvers.greedy",
            ("numba",),
            None,
            "approximation",
            True,
            "fitness-score greedy with augmenting-path repair (fitness per budget share on the generalised "
            "variant); 1/2-approximation without lower bounds",
            "",
            {
                "chunk": Option("int", low=1, high=2**40, none=True),
                "warm_start": _START,
                "local_search": Option(
                    "int", low=0, high=10**6, none=True, text="must be a number of passes from 0 to 10**6 (or None)"
                ),
            },
            sparse=True,
        ),
        MethodSpec(
            "random",
            "alignsolve.solvers.random_baseline",
            ("numba",),
            None,
            "heuristic",
            False,
            "random maximal feasible assignment (the quality floor)",
            "a random draw has no use for a previous assignment",
        ),
        MethodSpec(
            "cpsat",
            "alignsolve.solvers.cpsat",
            ("ortools",),
            None,
            "exact",
            True,
            "OR-Tools CP-SAT on the integer-scaled model; proven bound and gap, time_limit, workers",
            "",
            {
                "workers": Option("int", low=1, high=256, none=True),
                "scale": Option("float", low=0.0, low_open=True, none=True),
                "hint": Option("bool"),
                "warm_start": _START,
                "lagrangian": Option("bool"),
            },
        ),
        MethodSpec(
            "milp",
            "alignsolve.solvers.milp",
            ("scipy",),
            None,
            "exact",
            True,
            "scipy.optimize.milp (scipy's bundled HiGHS); proven dual bound, time_limit",
            "scipy.optimize.milp takes no initial solution",
            {"mip_rel_gap": Option("float", low=0.0, high=1.0)},
        ),
        MethodSpec(
            "lp",
            "alignsolve.solvers.lp",
            ("cvxpy",),
            "cvxpy",
            "bound",
            True,
            "LP relaxation through cvxpy (CLARABEL or SCIPY), rounded and repaired; integral on the unit variant",
            "cvxpy's CLARABEL and SCIPY interfaces take no initial point",
            {
                "solver": Option(
                    "choice",
                    choices=("CLARABEL", "SCIPY"),
                    text="must be 'CLARABEL' or 'SCIPY' (cvxpy's HIGHS loads highspy, which clashes with OR-Tools)",
                )
            },
        ),
        MethodSpec(
            "sinkhorn",
            "alignsolve.solvers.sinkhorn",
            ("numpy",),
            None,
            "bound",
            False,
            "entropic relaxation (log-domain Bregman projections, epsilon schedule) on numpy or torch, rounded "
            "and repaired; Lagrangian bound",
            "its iterate is a pair of dual vectors, not an assignment",
            {
                "eps": POSITIVE,
                "eps_start": POSITIVE,
                "eps_decay": Option("float", low=0.0, high=1.0, low_open=True, high_open=True),
                "max_sweeps": Option("int", low=1, high=10**7),
                "tol": POSITIVE,
                "stage_tol": POSITIVE,
                "line_iters": Option("int", low=1, high=10**4),
                "device": Option("any", none=True, check=_device),
                "dtype": Option("any", none=True, check=_dtype),
            },
            sparse=True,
        ),
    )
}


def available_methods() -> list[str]:
    """Names of the methods whose dependencies are installed (``"auto"`` first)."""
    names = [name for name, spec in METHODS.items() if not spec.missing()]
    return ["auto", *names] if names else []


def method_info() -> list[dict[str, Any]]:
    """One dict per method: name, guarantee, generalised, available, install hint, summary."""
    return [
        {
            "name": s.name,
            "guarantee": s.guarantee,
            "generalised": s.generalised,
            "available": not s.missing(),
            "install": s.install_hint() if s.missing() else "",
            "summary": s.summary,
        }
        for s in METHODS.values()
    ]


def get_backend(name: str) -> Backend:
    """Import and return a backend module, or raise with the exact ``pip install``."""
    spec = METHODS.get(name)
    if spec is None:
        raise InvalidProblemError("method", f"must be one of auto, {', '.join(METHODS)}", repr(name))
    missing = spec.missing()
    if missing:
        raise MethodUnavailableError(
            f"method {name!r} needs {', '.join(missing)}, which is not installed; run: {spec.install_hint()}"
        )
    module: Backend = importlib.import_module(spec.module)  # type: ignore[assignment]
    return module


def quick_infeasibility(problem: Any) -> SolverResult | None:
    """The ``"infeasible"`` result when an O(N E) (or O(pairs)) necessary condition already fails, else None.

    :func:`alignsolve.solve` runs this once, before any backend, for the dense and the
    sparse form (:func:`alignsolve.feasibility.diagnose_generalised` with ``quick=True``), so
    a hopeless problem never reaches a solver.
    """
    cert = diagnose_generalised(problem, quick=True)
    if cert is None:
        return None
    return SolverResult("infeasible", None, cert.message, stats={"certificate": cert.to_dict()})


def refuse_generalised(name: str) -> None:
    """Raise the message that names the methods which do solve the budget variant."""
    able = [s.name for s in METHODS.values() if s.generalised]
    if able:
        where = "use method=" + " or ".join(repr(a) for a in able)
    else:
        where = "no method of this alignsolve version solves it; drop cost and budget to use the unit variant"
    raise InvalidProblemError(
        "method", f"{name!r} cannot solve the generalised variant (cost and budget given); {where}", repr(name)
    )


def check_options(name: str, options: Mapping[str, Any], accepted: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The method's options, each checked against its rule in :data:`METHODS`.

    An unknown option (a typo must not pass silently), a wrong type or a value out of
    range raises :class:`~alignsolve.InvalidProblemError` naming the option. ``accepted``
    narrows the names further (a path of the method that takes fewer options).
    Returns the options with their values normalised (ints, floats, bools).
    """
    rules = METHODS[name].options
    names = tuple(rules) if accepted is None else accepted
    unknown = sorted(set(options) - set(names))
    if unknown:
        rule = f"method {name!r} accepts " + (", ".join(names) if names else "no extra options")
        raise InvalidProblemError(unknown[0], rule, f"unknown option(s) {', '.join(unknown)}")
    return {key: rules[key](key, value) for key, value in options.items()}
