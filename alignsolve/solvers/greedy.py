"""Fast method: the greedy fitness-score rule, with augmenting-path repair.

1. **Lower bounds first.** Pairs are walked in decreasing fitness; a pair is taken
   when both sides have room and it reduces a client's or an expert's unmet minimum.
2. **Repair.** If some minimum is still unmet, a max-flow on the residual network
   (:func:`alignsolve.feasibility.find_feasible`) moves pairs along augmenting paths
   until every minimum holds, or proves the problem infeasible. So the method returns
   a feasible assignment whenever one exists.
3. **Fill.** Pairs of non-negative fitness are walked in decreasing fitness and taken
   while both sides have room. With a load penalty the walk is by marginal gain
   ``F_ij - lambda * (2 load_j + 1)`` and stops when no gain is non-negative.

The walk sorts only the top of the pairs: a chunk of the best ``chunk`` candidates is
selected in O(NE) with :func:`numpy.argpartition`, sorted, and scanned by a compiled
kernel; the next chunk is taken only while some client and some expert have room.
Ties are broken in a fixed order that depends only on the input (``seed`` is unused).

Guarantee: without lower bounds and load penalty, the assignment is maximal among
non-negative pairs and at least half the optimum (greedy on the intersection of two
partition matroids), so ``bound = 2 * objective`` is reported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidProblemError
from ..problem import Problem
from . import SolverResult, check_options
from .rounding import budget_priority, flow_repair, local_search, run_budget_greedy, run_greedy, trim, walk_sparse

__all__ = ["solve", "solve_sparse"]


def solve(
    problem: Problem, *, time_limit: float | None = None, seed: int | None = None, **options: Any
) -> SolverResult:
    options = check_options("greedy", options)
    start = options.get("warm_start")
    polish = options.get("local_search")
    # By default the local search runs only from a warm start (its moves adapt the
    # previous round's plan); greedy alone stays a single pass.
    polish_passes = int(polish) if polish is not None else (10 if start is not None else 0)
    start_matrix = None if start is None else trim(problem, start)
    if problem.is_generalised:
        best: tuple[float, np.ndarray | None, dict[str, Any], str] = (-np.inf, None, {}, "")
        for name, priority in (("fitness per budget share", budget_priority(problem)), ("fitness", problem.fitness)):
            x, stats, message = run_budget_greedy(problem, priority, start=start_matrix)
            if x is None and stats.get("proven_infeasible"):
                return SolverResult("infeasible", None, message, stats=stats)
            if x is not None:
                stats["moves"] = local_search(problem, x, polish_passes) if polish_passes else 0
                value = problem.objective(x)
                if value > best[0]:
                    best = (value, x, {**stats, "order": name}, "")
            elif best[1] is None:
                best = (-np.inf, None, stats, message)
        value, x, stats, message = best
        if x is None:
            return SolverResult("unknown", None, message, stats=stats)
        return SolverResult("feasible", x, "feasible (greedy, generalised)", stats=stats, objective=value)

    x, stats, message = run_greedy(
        problem,
        problem.fitness,
        skip_negative=True,
        use_penalty=True,
        chunk=options.get("chunk"),
        start=start_matrix,
    )
    if x is None:
        return SolverResult("infeasible", None, message, stats=stats)
    if polish_passes:
        stats["moves"] = local_search(problem, x, polish_passes)
    objective = problem.objective(x)
    bound = None
    if not problem.has_lower_bounds and problem.load_penalty == 0 and start is None:
        bound = 2.0 * objective
        stats["bound_kind"] = "1/2-approximation: optimum <= 2 * greedy"
    return SolverResult("feasible", x, "feasible (greedy)", bound=bound, stats=stats, objective=objective)


def solve_sparse(problem: Any, *, time_limit: float | None = None, seed: int | None = None, **options: Any):
    """Greedy on candidate lists (:class:`~alignsolve.SparseProblem`): the same rule, over the listed entries.

    The walk is :func:`walk_sparse` by fitness. With lower bounds, if the first walk
    leaves a minimum unmet the answer comes from ``flow`` on the same candidates (exact
    repair; ``stats["repair"] = "flow"``), so the method stays feasible whenever the
    sparse problem is. A load penalty is not supported on this path (use ``flow``).
    """
    options = check_options("greedy", options, ("chunk",))
    if problem.load_penalty:
        raise InvalidProblemError(
            "load_penalty", "must be 0 for greedy on a SparseProblem (flow handles it)", problem.load_penalty
        )
    taken, stats = walk_sparse(problem, problem.values, chunk=options.get("chunk"))
    if taken is None:
        return flow_repair(problem, stats, "greedy's lower-bound walk fell short")
    x = problem.to_matrix(taken)
    objective = problem.objective(taken)
    bound = None if problem.has_lower_bounds else 2.0 * objective
    if bound is not None:
        stats["bound_kind"] = "1/2-approximation: optimum <= 2 * greedy"
    return SolverResult("feasible", x, "feasible (greedy, sparse)", bound=bound, stats=stats, objective=objective)
