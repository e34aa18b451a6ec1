"""The one entry point, :func:`solve`, and the pipeline every method runs through.

``solve`` checks the arguments once, picks the method (``auto``), runs the cheap
infeasibility pre-check once, rescales extreme fitness exactly, calls the backend, and
builds the one result type for dense and sparse answers alike; on the way out it keeps
the promises of :class:`~alignsolve.Assignment` (a bound below the answer is dropped, an
``optimal`` that rounding could spoil is downgraded, an infeasible answer gets its
certificate).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from ._validation import as_optional_positive_float, as_seed, value_tolerance
from .assignment import Assignment, relative_gap
from .errors import InvalidProblemError
from .feasibility import diagnose_generalised
from .problem import Problem
from .solvers import (
    METHODS,
    SolverResult,
    available_methods,
    check_options,
    get_backend,
    quick_infeasibility,
    refuse_generalised,
)
from .sparse import SparseProblem

__all__ = ["AUTO_EXACT_PAIRS", "SPARSE_METHODS", "choose_method", "solve"]

log = logging.getLogger("alignsolve.solve")

#: Methods see fitness (and load_penalty) rescaled by a power of two, exactly, when the
#: largest coefficient lies outside [2**-_SAFE_EXPONENT, 2**_SAFE_EXPONENT]: integer
#: scalings (flow, cpsat) and solver tolerances (HiGHS, cvxpy) are made for values near 1.
_SAFE_EXPONENT = 16

#: ``optimal`` promises the optimum within this fraction of the objective (absolute below 1):
#: integer-scaled methods (flow, cpsat) whose ``stats["rounding_error_bound"]`` exceeds it
#: report ``feasible`` instead, with their (valid) bound.
OPTIMAL_TOL = 1e-6

#: Methods that solve a :class:`SparseProblem` on its candidate lists (no N x E array): ``MethodSpec.sparse``.
SPARSE_METHODS = tuple(name for name, spec in METHODS.items() if spec.sparse)

#: ``auto`` solves exactly (``flow``) up to this many allowed pairs, and with
#: ``greedy`` beyond it: a time rule, from the flow's seconds per million pairs in
#: ``benchmarks/results/targets.md``.
AUTO_EXACT_PAIRS = 2_000_000

#: On the generalised variant ``auto`` runs ``cpsat`` up to this many allowed pairs
#: (with the caller's ``time_limit``, else :data:`AUTO_CPSAT_SECONDS`), and the
#: budget-aware ``greedy`` beyond it.
AUTO_CPSAT_PAIRS = 200_000
AUTO_CPSAT_SECONDS = 10.0


def choose_method(problem: Problem | SparseProblem, *, time_limit: float | None = None) -> str:
    """The method ``auto`` picks for ``problem``.

    Rule: the generalised variant goes to ``cpsat`` (exact, stopped at the time limit
    with a proven bound) up to :data:`AUTO_CPSAT_PAIRS` allowed pairs, else to
    ``greedy``; the unit variant goes to ``flow`` when it has at most
    :data:`AUTO_EXACT_PAIRS` allowed pairs (and, with a ``time_limit``, at most
    ``time_limit`` million pairs per second of limit), else to ``greedy``.
    """
    installed = set(available_methods())
    pairs = problem.nnz if isinstance(problem, SparseProblem) else int(problem.allowed.sum())
    if problem.is_generalised:
        if pairs <= AUTO_CPSAT_PAIRS and "cpsat" in installed:
            return "cpsat"
        return "greedy"
    limit = AUTO_EXACT_PAIRS if time_limit is None else min(AUTO_EXACT_PAIRS, int(time_limit * 1_000_000))
    if pairs <= limit and "flow" in installed:
        return "flow"
    return "greedy"


def solve(
    problem: Problem | SparseProblem,
    method: str = "auto",
    *,
    time_limit: float | None = None,
    seed: int | None = None,
    warm_start: Any = None,
    **options: Any,
) -> Assignment:
    """Solve one round's assignment problem.

    Parameters
    ----------
    problem : Problem or SparseProblem
        A :class:`SparseProblem` (candidate lists) is solved by the methods in
        :data:`SPARSE_METHODS` without any N x E array; its answer's ``matrix`` is a
        ``scipy.sparse.csr_array``.
    method : str, default "auto"
        ``"flow"`` (exact), ``"greedy"`` (fast), ``"random"`` (quality floor) or
        ``"auto"`` (see :func:`choose_method`). :func:`available_methods` lists them.
    time_limit : float, optional
        Seconds; honoured by methods that can stop early (documented per method).
    seed : int, optional
        For the methods that draw random numbers (``random``, tie-breaking).
    warm_start : Assignment or array_like of bool, shape (N, E), optional
        A previous assignment to start from. ``cpsat`` gives it to CP-SAT as a
        solution hint; ``greedy`` keeps its pairs that still fit (worst dropped first)
        and improves the result by local search. The other methods cannot use one and
        say so in ``stats["warm_start_ignored"]``.
    **options
        Method-specific options, each checked by name, type and range.

    Returns
    -------
    Assignment
        Always; an infeasible problem is ``status="infeasible"`` with a ``message``
        naming a violated necessary condition.

    Raises
    ------
    InvalidProblemError
        Bad arguments (unknown method, bad time limit, a method that cannot solve
        the generalised variant or the sparse form, unknown or out-of-range options).
    MethodUnavailableError
        The method's optional dependency is missing; the message has the ``pip install``.
    """
    if not isinstance(problem, (Problem, SparseProblem)):
        raise InvalidProblemError("problem", "must be an alignsolve.Problem or SparseProblem", type(problem).__name__)
    if not isinstance(method, str):
        raise InvalidProblemError("method", "must be a string", method)
    sparse = isinstance(problem, SparseProblem)
    limit = as_optional_positive_float("time_limit", time_limit)
    seed = as_seed("seed", seed)
    start_matrix = _warm_start_matrix(problem, warm_start)
    name = choose_method(problem, time_limit=limit) if method == "auto" else method
    spec = METHODS.get(name)
    if spec is not None and sparse and not spec.sparse:
        raise InvalidProblemError(
            "method",
            f"must be one of auto, {', '.join(SPARSE_METHODS)} for a SparseProblem "
            "(the others need the dense form: problem.to_dense())",
            repr(method),
        )
    if spec is not None and problem.is_generalised and not spec.generalised:
        refuse_generalised(name)
    backend = get_backend(name)  # raises for an unknown method or a missing extra
    assert spec is not None
    if method == "auto" and name == "cpsat" and limit is None:
        limit = AUTO_CPSAT_SECONDS
    if start_matrix is not None and not spec.warm_start:
        options = {**options, "warm_start": start_matrix}
    options = check_options(name, options)
    start = time.perf_counter()
    raw = quick_infeasibility(problem)  # the cheap necessary conditions, once, for every method
    shift = 0
    if raw is None:
        scaled, shift = _normalised(problem)
        run = backend.solve_sparse if sparse else backend.solve  # type: ignore[attr-defined]
        raw = run(scaled, time_limit=limit, seed=seed, **options)
        _unscale(raw, shift)
    raw = _certified(problem, raw)
    stats = dict(raw.stats or {})
    if start_matrix is not None and spec.warm_start:
        stats["warm_start_ignored"] = spec.warm_start
    if method == "auto":
        stats["auto_choice"] = name
    return _result(problem, raw, name, time.perf_counter() - start, stats, shift)


def _result(
    problem: Problem | SparseProblem, raw: SolverResult, name: str, wall: float, stats: dict[str, Any], shift: int
) -> Assignment:
    """The one result builder, for dense and sparse answers alike."""
    if raw.matrix is None:
        if isinstance(problem, SparseProblem):
            import scipy.sparse as sp

            empty: Any = sp.csr_array(problem.shape, dtype=bool)
        else:
            empty = np.zeros(problem.shape, bool)
        return Assignment(
            status=raw.status,  # type: ignore[arg-type]
            message=raw.message,
            matrix=empty,
            objective=-math.inf,
            bound=raw.bound,
            method=name,
            wall_time=wall,
            stats=stats,
        )
    objective = problem.objective(raw.matrix) if raw.objective is None or shift else raw.objective
    status, bound = _checked_bound(raw.status, objective, raw.bound, stats, name)
    return Assignment(
        status=status,  # type: ignore[arg-type]
        message=raw.message,
        matrix=raw.matrix,
        objective=objective,
        bound=bound,
        gap=relative_gap(objective, bound),
        method=name,
        wall_time=wall,
        stats=stats,
    )


def _warm_start_matrix(problem: Problem | SparseProblem, warm_start: Any) -> np.ndarray | None:
    """The (N, E) bool matrix of a warm start, validated; None when not given."""
    if warm_start is None:
        return None
    if isinstance(problem, SparseProblem):
        raise InvalidProblemError("warm_start", "is not supported for a SparseProblem", type(warm_start).__name__)
    if isinstance(warm_start, Assignment):
        if not warm_start.has_solution:
            raise InvalidProblemError(
                "warm_start", "must hold a solution", f"an assignment with status {warm_start.status!r}"
            )
        warm_start = warm_start.matrix
    matrix = np.asarray(warm_start)
    if matrix.shape != problem.shape:
        raise InvalidProblemError("warm_start", f"must have the problem's shape {problem.shape}", matrix.shape)
    if matrix.dtype != bool:
        if not np.isin(matrix, (0, 1)).all():
            raise InvalidProblemError("warm_start", "must hold only 0/1 or booleans", matrix.dtype)
        matrix = matrix.astype(bool)
    return matrix


def _normalised(problem: Problem | SparseProblem) -> tuple[Problem | SparseProblem, int]:
    """``problem`` with fitness and load_penalty multiplied by ``2**-shift``, and ``shift``.

    The largest objective coefficient (``|F|``, or the load penalty's last increment
    ``lambda (2 load_max - 1)``) lands in [0.5, 1). Scaling by a power of two is exact, so
    the optimal assignments are the same; only entries more than 2**1000 below the
    largest can flush to zero, far below any solver's resolution. ``shift = 0``: unchanged.
    """
    values = problem.values if isinstance(problem, SparseProblem) else problem.fitness
    top = float(np.abs(values).max(initial=0.0))
    lam = problem.load_penalty
    if lam:
        top = max(top, lam * (2.0 * float(min(problem.n_clients, int(problem.expert_max.max(initial=0)))) - 1.0))
    if top == 0.0:
        return problem, 0
    shift = math.frexp(top)[1]
    if abs(shift) <= _SAFE_EXPONENT:
        return problem, 0
    lam2 = math.ldexp(lam, -shift)
    if isinstance(problem, SparseProblem):
        scaled = SparseProblem(
            problem.indptr,
            problem.indices,
            np.ldexp(problem.values, -shift),
            problem.n_experts,
            problem.client_capacity,
            client_min=problem.client_min,
            expert_min=problem.expert_min,
            expert_max=problem.expert_max,
            load_penalty=lam2,
            values_dtype=str(problem.values.dtype),
        )
        return scaled, shift
    return problem.replace(fitness=np.ldexp(problem.fitness, -shift), load_penalty=lam2), shift


def _unscale(raw: SolverResult, shift: int) -> None:
    """Bring a result of the normalised problem back to the caller's units (in place)."""
    if not shift:
        return
    raw.objective = None  # recomputed on the caller's problem
    if raw.bound is not None:
        raw.bound = math.ldexp(raw.bound, shift)
    stats = dict(raw.stats or {})
    for key in ("rounding_error_bound", "lagrangian_bound", "lagrangian_objective", "lp_value"):
        if isinstance(stats.get(key), float):
            stats[key] = math.ldexp(stats[key], shift)
    stats["fitness_scaled_by"] = f"2**{-shift}"
    raw.stats = stats


def _certified(problem: Problem | SparseProblem, raw: SolverResult) -> SolverResult:
    """Every ``infeasible`` answer carries a certificate when a cheap one exists (any method)."""
    if raw.status != "infeasible" or (raw.stats or {}).get("certificate") is not None:
        return raw
    cert = diagnose_generalised(problem)  # type: ignore[arg-type]
    if cert is not None:
        raw.stats = {**(raw.stats or {}), "certificate": cert.to_dict()}
    return raw


def _checked_bound(
    status: str, objective: float, bound: float | None, stats: dict[str, Any], name: str
) -> tuple[str, float | None]:
    """The status and bound to report: a bound below the answer's own value is no bound.

    A valid upper bound is never below an assignment's objective. Should a method ever
    return one, it is dropped (``stats["bound_dropped"]``, logged) and an ``optimal`` that
    rested on it becomes ``feasible``: a status is a promise, and a broken bound cannot
    keep it.
    """
    rounding = stats.get("rounding_error_bound")
    if status == "optimal" and isinstance(rounding, float) and rounding > OPTIMAL_TOL * max(1.0, abs(objective)):
        # Optimal for the integer-rounded scores only: too coarse a scale to promise the real optimum.
        stats["not_optimal"] = (
            f"optimal for the integer-scaled scores; rounding may hide up to {rounding:.3g} "
            f"(more than {OPTIMAL_TOL:g} of the objective)"
        )
        status = "feasible"
    if bound is None or not math.isfinite(objective):
        return status, bound
    if bound >= objective - value_tolerance(objective) and math.isfinite(bound):
        return status, bound
    stats["bound_dropped"] = f"{name} reported bound {bound!r} below its objective {objective!r}"
    log.warning("solve: %s", stats["bound_dropped"])
    return ("feasible" if status == "optimal" else status), None
