"""The circulation itself: integer scaling, the OR-Tools graph, its solve, and the potentials that price it.

Shared by the dense (:mod:`.dense`) and sparse (:mod:`.sparse`) paths; see the package docstring for the graph.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import InvalidProblemError
from ...feasibility import diagnose
from ...problem import Problem
from .. import SolverResult

_INT_LIMIT = 2**62
#: ``pricing=None`` solves on a candidate graph (with pricing) above this many eligible pairs.
PRICING_PAIRS = 1_000_000


def _choose_scale(max_abs_cost: float, n_nodes: int, max_flow: int) -> float:
    """The largest power of two keeping every scaled cost safely inside int64.

    OR-Tools multiplies costs by the node count during cost scaling and sums
    ``cost * flow``; both must stay below 2**63. A factor 4 of headroom is kept: at the
    edge OR-Tools refused graphs (BAD_COST_RANGE) whose costs met the bare bounds (the
    LP support graph of a 3000 x 64 one-slot instance at scale 2**50, and a 30000 x 256
    one-slot instance at 2**47). Costs are kept
    <= 2**48 so that the float -> int conversion is exact.
    """
    if max_abs_cost == 0:
        return 1.0
    ceiling = min(_INT_LIMIT / (4 * (n_nodes + 1)), _INT_LIMIT / (4 * (max_flow + 1)), 2.0**48)
    return 2.0 ** math.floor(math.log2(ceiling / max_abs_cost))


def _graph_setup(
    problem: Any, options: dict[str, Any], per_expert: np.ndarray, max_fit: float, eligible: int
) -> tuple[int, float, np.ndarray, int, float, dict[str, Any]]:
    """Figures shared by every graph of one solve, dense or sparse: (candidates per client, pricing margin,
    effective expert caps, max flow, integer scale, stats holding the scale)."""
    n, e = problem.shape
    m = int(options.get("candidates") or max(8, 2 * int(problem.client_capacity.max(initial=0))))
    margin = float(options.get("margin", 0.02))
    emin = problem.expert_min
    emax = np.maximum(np.minimum(problem.expert_max, per_expert), emin)
    max_flow = int(min(problem.client_capacity.sum(), emax.sum(), max(eligible, 1)))
    lam = problem.load_penalty
    pen_top = lam * (2.0 * float(emax.max(initial=0)) - 1.0) if lam > 0 else 0.0
    safe = _choose_scale(max(max_fit, pen_top), n + e + 2, max_flow)
    scale = float(options.get("scale") or safe)
    if scale > safe:
        raise InvalidProblemError(
            "scale",
            f"must be at most {safe:g} for this problem (larger scaled costs overflow OR-Tools' int64 arithmetic)",
            scale,
        )
    return m, margin, emax, max_flow, scale, {"scale": scale}


def _solve_graph(
    problem: Problem,
    ai: np.ndarray,
    aj: np.ndarray,
    emax: np.ndarray,
    max_flow: int,
    scale: float,
    stats: dict[str, Any],
    *,
    need_potentials: bool,
) -> tuple[SolverResult, np.ndarray | None]:
    """Min-cost flow on the pairs (ai, aj); with ``need_potentials``, also the node potentials of its optimum."""
    n, e = problem.shape
    status, used, potentials, rounding_bound = _flow_core(
        problem, ai, aj, problem.fitness[ai, aj], emax, max_flow, scale, stats, need_potentials
    )
    if status == "optimal":
        x = np.zeros((n, e), dtype=bool)
        x[ai[used], aj[used]] = True
        objective = problem.objective(x)
        return _optimal(x, objective, rounding_bound, stats), potentials
    return _not_optimal(problem, status, need_potentials, stats), None


def _optimal(x: Any, objective: float, rounding_bound: float, stats: dict[str, Any]) -> SolverResult:
    message = "optimal" if rounding_bound == 0 else f"optimal within the fitness rounding bound {rounding_bound:.3g}"
    return SolverResult("optimal", x, message, bound=objective + rounding_bound, stats=stats, objective=objective)


def _not_optimal(problem: Any, status: str, candidate_graph: bool, stats: dict[str, Any]) -> SolverResult:
    if candidate_graph:  # a candidate graph: the caller decides whether the full problem is infeasible
        return SolverResult("infeasible", None, "candidate graph infeasible", stats=stats)
    cert = diagnose(problem) if isinstance(problem, Problem) else None
    if cert is not None:
        stats["certificate"] = cert.to_dict()
        return SolverResult("infeasible", None, cert.message, stats=stats)
    return SolverResult("infeasible", None, "min-cost flow found the supplies cannot be met", stats=stats)


def _flow_core(
    problem: Any,
    ai: np.ndarray,
    aj: np.ndarray,
    f_pairs: np.ndarray,
    emax: np.ndarray,
    max_flow: int,
    scale: float,
    stats: dict[str, Any],
    need_potentials: bool,
) -> tuple[str, np.ndarray | None, np.ndarray | None, float]:
    """The circulation on pairs (ai, aj) of fitness ``f_pairs``, for a dense or a sparse problem.

    Returns (status "optimal"/"infeasible", which pairs carry flow, node potentials or None,
    rounding error bound).
    """
    from ortools.graph.python import min_cost_flow

    n, e = problem.shape
    cap, cmin = problem.client_capacity, problem.client_min
    emin = problem.expert_min
    lam = problem.load_penalty
    if lam > 0:
        extra = np.maximum(emax - emin, 0)
        pen_expert = np.repeat(np.arange(e), extra)
        offsets = np.repeat(np.cumsum(extra) - extra, extra)
        pen_k = np.arange(extra.sum()) - offsets + np.repeat(emin, extra) + 1
        pen_real = lam * (2.0 * pen_k - 1.0)
    else:
        pen_expert = np.arange(e)
        pen_real = np.zeros(e)

    pair_cost = -np.rint(f_pairs * scale)
    pen_cost = np.rint(pen_real * scale)
    err_pair = float(np.abs(pair_cost + f_pairs.astype(np.float64) * scale).max(initial=0.0)) / scale
    err_pen = float(np.abs(pen_cost - pen_real * scale).max(initial=0.0)) / scale
    rounding_bound = 2.0 * max_flow * (err_pair + err_pen)

    src, sink = 0, n + e + 1
    big = int(cap.sum() + 1)
    pen_cap = np.ones(len(pen_expert), np.int64) if lam > 0 else (emax - emin)
    tails = np.concatenate([np.zeros(n, np.int64), 1 + ai.astype(np.int64), n + 1 + pen_expert, [sink]])
    heads = np.concatenate(
        [
            np.arange(1, n + 1, dtype=np.int64),
            n + 1 + aj.astype(np.int64),
            np.full(len(pen_expert), sink, np.int64),
            [src],
        ]
    )
    caps = np.concatenate([cap - cmin, np.ones(len(ai), np.int64), pen_cap, [big]]).astype(np.int64)
    costs = np.concatenate([np.zeros(n), pair_cost, pen_cost, [0.0]]).astype(np.int64)
    del pair_cost
    supplies = np.zeros(n + e + 2, np.int64)
    supplies[src] = -int(cmin.sum())
    supplies[1 : n + 1] = cmin
    supplies[n + 1 : n + e + 1] = -emin
    supplies[sink] = int(emin.sum())

    smcf = min_cost_flow.SimpleMinCostFlow()
    arcs = smcf.add_arcs_with_capacity_and_unit_cost(tails, heads, caps, costs)
    smcf.set_nodes_supplies(np.arange(n + e + 2, dtype=np.int64), supplies)
    del tails, heads, caps
    if not need_potentials:
        del costs
    status = smcf.solve()
    stats.update(
        rounding_error_bound=rounding_bound,
        arcs=int(smcf.num_arcs()),
        nodes=int(smcf.num_nodes()),
        ortools_status=status.name,
    )
    if status == smcf.OPTIMAL:
        used = smcf.flows(arcs[n : n + len(ai)]) > 0
        del smcf
        potentials = None
        if need_potentials:
            potentials = _optimal_potentials(problem, ai, aj, costs[n : n + len(ai)], used, emax, scale)
        return "optimal", used, potentials, rounding_bound
    if status == smcf.INFEASIBLE:
        return "infeasible", None, None, rounding_bound
    raise RuntimeError(f"OR-Tools SimpleMinCostFlow returned {status.name} (scale {scale}); please report this")


_NO_POTENTIALS = "no potentials to price with (more than 4096 experts, or Bellman-Ford did not converge)"
#: Above this many experts the expert graph ((E + 2)^2 int64: 134 MB at 4096) is not built; pricing then has no
#: potentials and the flow is solved on the full graph.
_EXPERT_GRAPH_MAX = 4096


def _optimal_potentials(
    problem: Any,
    ai: np.ndarray,
    aj: np.ndarray,
    costs: np.ndarray,
    used: np.ndarray,
    emax: np.ndarray,
    scale: float,
) -> np.ndarray | None:
    """(N + E + 2,) potentials of an optimal flow on the pairs (ai, aj), nodes in graph order
    (source, clients, experts, sink); None where Bellman-Ford did not converge.

    The pairs must be grouped by client (row-major). Experts, source and sink get
    shortest-path distances in the expert graph (:mod:`.kernels`); each client the
    highest potential its residual arcs allow. None also above :data:`_EXPERT_GRAPH_MAX` experts.
    """
    from .kernels import client_potentials, expert_potentials

    n, e = problem.shape
    if e > _EXPERT_GRAPH_MAX:
        return None
    cap, cmin, emin = problem.client_capacity, problem.client_min, problem.expert_min
    counts = np.bincount(ai[used], minlength=n)
    loads = np.bincount(aj[used], minlength=e)
    starts = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(ai, minlength=n), out=starts[1:])
    lam = problem.load_penalty

    def unit_cost(k: np.ndarray) -> np.ndarray:  # the cost of an expert's k-th unit of load, k > expert_min
        return np.rint(lam * (2.0 * k - 1.0) * scale).astype(np.int64) if lam > 0 else np.zeros(e, np.int64)

    d, converged = expert_potentials(
        starts, aj, costs, used, counts, cap, cmin, loads, emin, emax,
        unit_cost(loads + 1), unit_cost(loads), bool(counts.any()),
    )  # fmt: skip
    if not converged:
        return None
    d_client = client_potentials(starts, aj, costs, used, counts, cap, d)
    return np.concatenate([d[e : e + 1], d_client, d[:e], d[e + 1 :]])


def _rounding_error(values: np.ndarray, scale: float) -> float:
    """The largest |round(F * scale) - F * scale| / scale over ``values``, in chunks."""
    err = 0.0
    step = 1 << 22
    for lo in range(0, len(values), step):
        v = values[lo : lo + step].astype(np.float64) * scale
        err = max(err, float(np.abs(np.rint(v) - v).max(initial=0.0)))
    return err / scale
