"""Exact method: min-cost circulation with OR-Tools ``SimpleMinCostFlow``.

Graph (node ids: source 0, clients 1..N, experts N+1..N+E, sink N+E+1)::

    source -> client i     capacity client_capacity_i - client_min_i, cost 0
    client i -> expert j   capacity 1, cost -round(F_ij * scale)      (allowed pairs)
    expert j -> sink       capacity expert_max_j - expert_min_j, cost 0, or, with a
                           load penalty, one unit arc per load k > expert_min_j with
                           cost round(lambda * (2k - 1) * scale)  (k^2 - (k-1)^2 = 2k - 1)
    sink -> source         uncapacitated, cost 0  (the amount of flow is free)

Lower bounds become node supplies (client i +client_min_i, source -sum client_min,
expert j -expert_min_j, sink +sum expert_min). The constraint matrix is totally
unimodular and the penalty's unit arcs have increasing costs, so the min-cost
circulation is the exact integral optimum of the convex objective. Fitness is scaled
by a power of two to integers; ``stats["rounding_error_bound"]`` bounds how far the
float objective may be from the true optimum (0 when the scaling is exact).

**Pricing on a candidate graph** (large problems). The dense graph holds one arc per
allowed pair, and OR-Tools stores about 60 bytes per arc: 6.4 million pairs cost some
400 MB. With ``pricing`` on, the flow is first solved on a candidate graph: each client's
``candidates`` best pairs by fitness, and each expert's ``2 * expert_min`` best clients.
Node potentials of that optimum price every left-out pair (shortest-path distances by
Bellman-Ford, on a graph of the E experts plus source and sink from which the clients
are eliminated: see :mod:`._flow_kernels`; on the whole residual graph each sweep would cost
O(pairs) and paths would alternate clients and experts): a pair whose reduced cost
``cost_ij + pi(client i) - pi(expert j)`` is negative could improve the flow and joins
the graph, which is solved again. When no left-out pair has a negative reduced cost, the
potentials prove the candidate optimum optimal for the full graph (complementary
slackness: left-out pairs carry no flow). A candidate graph that is infeasible grows
(candidates doubled) and, at worst, becomes the dense graph, so feasibility is decided
on the full problem. ``pricing=None`` (default) turns it on above
:data:`PRICING_PAIRS` eligible pairs. Pricing runs over the fitness matrix in row chunks,
so no dense copy is made. Above :data:`_EXPERT_GRAPH_MAX` experts there are no
potentials, and the flow is solved on the dense graph (``stats["pricing_fallback"]``).
The sparse form chooses its first graph by sampled expert prices and, instead of a second
solve of the whole graph, re-solves only the clients near a change of choice (:func:`solve_sparse`).

``time_limit`` is not supported by SimpleMinCostFlow (it cannot be interrupted); the
option is accepted and ignored, and ``stats["time_limit_ignored"]`` says so.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..errors import InvalidProblemError
from ..feasibility import diagnose
from ..problem import Problem
from . import SolverResult, check_options

__all__ = ["PRICING_PAIRS", "solve", "solve_sparse"]

_INT_LIMIT = 2**62
#: ``pricing=None`` solves on a candidate graph (with pricing) above this many eligible pairs.
PRICING_PAIRS = 1_000_000
_CHUNK = 8192  # rows per pricing chunk: 8192 x E float64 at a time


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


def _eligible_rows(problem: Problem, lo: int, hi: int) -> np.ndarray:
    """(hi - lo, E) bool: pairs the flow may use (positive fitness only, when no lower bound could need others)."""
    mask = problem.allowed[lo:hi]
    if not problem.has_lower_bounds:
        mask = mask & (problem.fitness[lo:hi] > 0)
    return mask


def _dense_figures(problem: Problem) -> tuple[np.ndarray, float, int]:
    """(eligible pairs per expert, max |fitness| over eligible pairs, eligible pair count), chunk by chunk."""
    n, e = problem.shape
    per_expert = np.zeros(e, np.int64)
    max_abs = 0.0
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        elig = _eligible_rows(problem, lo, hi)
        per_expert += elig.sum(axis=0)
        if elig.any():
            max_abs = max(max_abs, float(np.abs(problem.fitness[lo:hi][elig]).max()))
    return per_expert, max_abs, int(per_expert.sum())


def _candidates(problem: Problem, m: int) -> np.ndarray:
    """(N, E) bool: each client's m best eligible pairs, and each expert's 2 * expert_min best eligible clients."""
    n, e = problem.shape
    cand = np.zeros((n, e), dtype=bool)
    fit = problem.fitness
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        elig = _eligible_rows(problem, lo, hi)
        if m >= e:
            cand[lo:hi] = elig
            continue
        score = np.where(elig, fit[lo:hi], -np.inf)
        top = np.argpartition(-score, m - 1, axis=1)[:, :m]
        rows = np.arange(hi - lo)[:, None]
        cand[lo:hi][rows, top] = np.isfinite(score[rows, top])
    # Each expert's best clients: twice its share of the slots (and of its lower bound), so that
    # experts few clients rank highly still see their best takers.
    share = math.ceil(int(problem.client_capacity.sum()) / e)
    for j in range(e):
        r = min(n, 2 * max(min(int(problem.expert_max[j]), share), int(problem.expert_min[j])))
        if r == 0:
            continue
        col = np.where(problem.allowed[:, j], fit[:, j], -np.inf)
        top = np.argpartition(-col, r - 1)[:r] if r < n else np.arange(n)
        cand[top[np.isfinite(col[top])], j] = True
    return cand


def _price(
    problem: Problem, cand: np.ndarray, scale: float, d_client: np.ndarray, d_expert: np.ndarray, margin: float
) -> tuple[int, int]:
    """Price the left-out eligible pairs; returns (pairs with a negative reduced cost, pairs added).

    The negative ones must join the graph. Those within ``margin`` (in scaled cost units)
    of zero join too: they are the ones the next potentials are likely to turn negative,
    and taking them now saves a re-solve.
    """
    n = problem.n_clients
    negative = added = 0
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        cost = -np.rint(problem.fitness[lo:hi] * scale).astype(np.int64)
        reduced = cost + d_client[lo:hi, None] - d_expert[None, :]
        neg, took = _price_in(reduced, _eligible_rows(problem, lo, hi) & ~cand[lo:hi], margin, cand[lo:hi])
        negative += neg
        added += took
    return negative, added


def _price_in(reduced: np.ndarray, open_: np.ndarray, threshold: float, cand: np.ndarray) -> tuple[int, int]:
    """Add to ``cand`` (a view, updated in place) the open pairs of reduced cost below ``threshold``.

    ``reduced`` and ``open_`` have ``cand``'s shape. Returns (open pairs of negative reduced
    cost, pairs added); nothing is added when no open pair is negative (the graph is optimal).
    """
    negative = int(((reduced < 0) & open_).sum())
    if not negative:
        return 0, 0
    take = (reduced < threshold) & open_
    cand |= take
    return negative, int(take.sum())


def solve(
    problem: Problem, *, time_limit: float | None = None, seed: int | None = None, **options: Any
) -> SolverResult:
    options = check_options("flow", options)
    n, e = problem.shape
    per_expert, max_fit, eligible = _dense_figures(problem)
    pricing = options.get("pricing")
    if pricing is None:
        pricing = eligible > PRICING_PAIRS
    # Problem-wide figures come from the full eligible set, so that every candidate graph is
    # a restriction of the same dense graph (same scale, same load caps).
    m, margin, emax, max_flow, scale, stats = _graph_setup(problem, options, per_expert, max_fit, eligible)
    stats["pricing"] = bool(pricing)
    if time_limit is not None:
        stats["time_limit_ignored"] = True

    if not pricing:
        ai, aj = _nonzero_eligible(problem)
        return _solve_graph(problem, ai, aj, emax, max_flow, scale, stats, need_potentials=False)[0]

    cand = _candidates(problem, min(m, e))
    rounds = 0
    while True:
        rounds += 1
        ai, aj = np.nonzero(cand)
        result, potentials = _solve_graph(problem, ai, aj, emax, max_flow, scale, stats, need_potentials=True)
        del ai, aj
        if result.status == "infeasible":
            if int(cand.sum()) >= eligible:  # the candidate graph is the dense graph: truly infeasible
                cert = diagnose(problem)
                message = cert.message if cert is not None else "min-cost flow found the supplies cannot be met"
                if cert is not None:
                    stats["certificate"] = cert.to_dict()
                result = SolverResult("infeasible", None, message, stats=stats)
                break
            m = min(2 * m, e)
            cand |= _candidates(problem, m)
            stats["candidates_grown_to"] = m
            continue
        if potentials is None:  # no potentials (see _optimal_potentials): finish on the dense graph
            stats["pricing_fallback"] = _NO_POTENTIALS + "; solved on the dense graph"
            ai, aj = _nonzero_eligible(problem)
            result = _solve_graph(problem, ai, aj, emax, max_flow, scale, stats, need_potentials=False)[0]
            break
        negative, added = _price(
            problem, cand, scale, potentials[1 : n + 1], potentials[n + 1 : n + e + 1], margin * scale * max_fit
        )
        stats.setdefault("priced_in", []).append(added)
        if negative == 0:
            break
    stats["pricing_rounds"] = rounds
    stats["candidate_pairs"] = int(cand.sum())
    stats["eligible_pairs"] = eligible
    return result


def _nonzero_eligible(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    return np.nonzero(_eligible_rows(problem, 0, problem.n_clients))


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
    shortest-path distances in the expert graph (:mod:`._flow_kernels`); each client the
    highest potential its residual arcs allow. None also above :data:`_EXPERT_GRAPH_MAX` experts.
    """
    from ._flow_kernels import client_potentials, expert_potentials

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


#: The smallest price sample: sparse pricing is on by default from ten times this many clients.
SAMPLE_CLIENTS = 20_000
_SAMPLE_FRACTION = 10  # one client in this many forms the price sample
#: The sparse path's default ``margin``: with sampled prices few pairs lie near zero, and a wider
#: margin only makes the graphs larger.
SPARSE_MARGIN = 0.002


def solve_sparse(
    problem: Any, *, time_limit: float | None = None, seed: int | None = None, **options: Any
) -> SolverResult:
    """The exact optimum of a :class:`~alignsolve.SparseProblem`: the same circulation on the listed pairs.

    The answer's ``matrix`` is a ``scipy.sparse.csr_array``. ``pricing=True`` prices as on
    the dense path, over entries instead of matrix rows, with a first graph chosen by
    expert prices: one client in ten (drawn with a fixed seed) forms a smaller problem of
    the same shape (expert bounds scaled), whose exact optimum, itself priced the same way,
    gives expert prices ``p_j`` (its potentials). The first graph then holds each client's
    ``candidates`` best entries by ``F_ij - p_j`` (by ``F_ij`` alone below
    :data:`SAMPLE_CLIENTS` x 10 clients, plus every entry of an expert with a lower bound),
    the potentials of its optimum price the other entries, and those with a negative
    reduced cost join until none is left.

    With sampled prices and no load penalty, the first graph holds ``capacity + 1`` entries
    per client (not ``+ 2``), and when pricing finds improving entries the graph is not solved
    again whole: :func:`_repair` re-solves only the clients near a change of choice (a small
    share of them) until the potentials of that re-solve certify the whole flow, and
    falls back to the grown graph when they do not within :data:`_REPAIR_ROUNDS` re-solves.
    ``stats["repair"]`` lists its re-solves.
    """
    options = check_options("flow", options)
    stats: dict[str, Any] = {}
    if time_limit is not None:
        stats["time_limit_ignored"] = True
    return _sparse_optimum(problem, options, stats, want_potentials=False)[0]


def _sparse_optimum(
    problem: Any, options: dict[str, Any], stats: dict[str, Any], *, want_potentials: bool
) -> tuple[SolverResult, np.ndarray | None, float]:
    """(result, potentials of its optimum when asked and available, the integer scale used)."""
    from ._sparse_kernels import row_top

    n, e = problem.shape
    vals, rows, cols = problem.values, problem.rows, problem.indices
    elig = np.ones(problem.nnz, dtype=bool) if problem.has_lower_bounds else vals > 0
    per_expert = np.bincount(cols[elig], minlength=e).astype(np.int64)
    eligible = int(per_expert.sum())
    max_fit = float(np.abs(vals[elig]).max(initial=0.0))
    pricing = options.get("pricing")
    if pricing is None:
        pricing = n >= _SAMPLE_FRACTION * SAMPLE_CLIENTS
    options = dict(options)
    options.setdefault("margin", SPARSE_MARGIN)
    m, margin, emax, max_flow, scale, setup = _graph_setup(problem, options, per_expert, max_fit, eligible)
    stats.update(setup, pricing=bool(pricing), sparse=True, eligible_pairs=eligible)

    def run(mask: np.ndarray, potentials: bool, at: float = scale):
        idx = np.flatnonzero(mask)
        status, used, pot, bound = _flow_core(
            problem, rows[idx], cols[idx], vals[idx], emax, max_flow, at, stats, potentials
        )
        if status != "optimal":
            return _not_optimal(problem, status, potentials, stats), None, None
        taken = np.zeros(problem.nnz, dtype=bool)
        taken[idx[used]] = True
        return _optimal(problem.to_matrix(taken), problem.objective(taken), bound, stats), pot, taken

    if not pricing:
        result, pot, _ = run(elig, want_potentials)
        return result, pot, scale
    prices = _sample_prices(problem, emax, options, stats)
    repairable = prices is not None and problem.load_penalty == 0
    if prices is None:
        cand = row_top(problem.indptr, vals, elig, m)
        if problem.expert_min.any():
            cand |= elig & (problem.expert_min[cols] > 0)
    else:
        if not options.get("candidates"):
            # One spare entry per client when a repair can follow: OR-Tools' time follows the arcs
            # per client, and the repair re-solves the few clients that need more.
            m = int(problem.client_capacity.max(initial=0)) + (1 if repairable else 2)
        cand = row_top(problem.indptr, vals - prices[cols], elig, m)
    # With a repair to follow, the first graph is solved with coarse integer costs (OR-Tools' cost
    # scaling then takes fewer phases); its potentials,
    # rescaled, only choose what the repair re-solves, and the repair certifies at the full scale.
    first_scale = scale
    if repairable and not options.get("scale") and max_fit > 0:
        first_scale = min(scale, 2.0 ** math.floor(math.log2(_COARSE_COSTS / max_fit)))
        stats["first_graph_scale"] = first_scale
    rounds = 0
    while True:
        rounds += 1
        result, pot, taken = run(cand, True, first_scale if rounds == 1 else scale)
        if result.status == "infeasible":
            if int(cand.sum()) >= eligible:
                result, pot, _ = run(elig, want_potentials)  # the full graph decides (and explains) infeasibility
                break
            m *= 2
            cand |= row_top(problem.indptr, vals, elig, m)
            stats["candidates_grown_to"] = m
            continue
        if pot is None:
            stats["pricing_fallback"] = _NO_POTENTIALS + "; solved on every entry"
            result, pot, _ = run(elig, want_potentials)
            break
        if rounds == 1 and first_scale != scale:
            pot = np.where(np.abs(pot) < _INT_LIMIT // 8, pot * int(scale // first_scale), pot)
        d_client, d_expert = pot[1 : n + 1], pot[n + 1 : n + e + 1]
        negative = 0
        added = np.zeros(problem.nnz, dtype=bool)
        step = 1 << 22
        threshold = margin * scale * max_fit
        for lo in range(0, problem.nnz, step):
            hi = min(problem.nnz, lo + step)
            reduced = -np.rint(vals[lo:hi] * scale) + d_client[rows[lo:hi]] - d_expert[cols[lo:hi]]
            negative += _price_in(reduced, elig[lo:hi] & ~cand[lo:hi], threshold, added[lo:hi])[0]
        stats.setdefault("priced_in", []).append(int(added.sum()) if negative else 0)
        if negative == 0 and (rounds > 1 or first_scale == scale):  # coarse potentials certify nothing
            break
        if rounds == 1 and repairable:
            repaired = _repair(problem, elig, taken, pot, scale, emax, max_flow, max_fit, stats, want_potentials)
            if repaired is not None:
                result, pot = repaired
                break
        cand |= added
    stats["pricing_rounds"] = rounds
    stats["candidate_pairs"] = int(cand.sum())
    return result, pot, scale


def _sample_prices(problem: Any, emax: np.ndarray, options: dict[str, Any], stats: dict[str, Any]) -> np.ndarray | None:
    """(E,) expert prices in fitness units from the exact optimum of a one-in-ten client sample, or None.

    None below :data:`SAMPLE_CLIENTS` x 10 clients, or when the sample is infeasible or
    yields no potentials. The sample keeps the clients' bounds and scales the experts'
    (``expert_min`` down, ``expert_max`` up, the load penalty by the inverse fraction, so
    that a unit of load costs the same at the sample's loads).
    """
    n, e = problem.shape
    size = n // _SAMPLE_FRACTION
    if size < SAMPLE_CLIENTS:
        return None
    start = time.perf_counter()
    chosen = np.sort(np.random.default_rng(0).choice(n, size, replace=False))
    fraction = size / n
    sample, _ = _subproblem(
        problem,
        chosen,
        expert_min=np.floor(problem.expert_min * fraction).astype(np.int64),
        expert_max=np.ceil(emax * fraction).astype(np.int64),
        load_penalty=problem.load_penalty / fraction,
    )
    sub_stats: dict[str, Any] = {}
    sub_options = {k: v for k, v in options.items() if k in ("candidates", "margin")}
    result, pot, scale = _sparse_optimum(sample, sub_options, sub_stats, want_potentials=True)
    stats["price_sample"] = {
        "clients": size,
        "status": result.status,
        "seconds": time.perf_counter() - start,
        "pricing_rounds": sub_stats.get("pricing_rounds"),
    }
    if pot is None:
        return None
    # A client takes expert j when F_ij s + pi_j beats its own potential, which is at most pi_S
    # while it has room: the price of j is (pi_S - pi_j) / s.
    return (pot[0] - pot[sample.n_clients + 1 : sample.n_clients + e + 1]) / scale


def _client_entries(problem: Any, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(len(chosen) + 1,) row pointers and the ids of the entries of the clients ``chosen`` (sorted ids)."""
    lengths = np.diff(problem.indptr)[chosen]
    indptr = np.zeros(len(chosen) + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return indptr, np.repeat(problem.indptr[chosen] - indptr[:-1], lengths) + np.arange(indptr[-1])


def _subproblem(
    problem: Any,
    chosen: np.ndarray,
    *,
    expert_min: np.ndarray,
    expert_max: np.ndarray,
    load_penalty: float,
    keep: np.ndarray | None = None,
) -> tuple[Any, np.ndarray]:
    """The clients ``chosen`` (sorted ids) of a sparse problem with new expert bounds, with only the
    entries ``keep`` ((nnz,) bool) when given, and (its nnz,) the ids of its entries in ``problem``."""
    from ..sparse import SparseProblem

    indptr, entries = _client_entries(problem, chosen)
    if keep is not None:
        entries = entries[keep[entries]]
        indptr = np.zeros(len(chosen) + 1, np.int64)
        np.cumsum(np.bincount(np.searchsorted(chosen, problem.rows[entries]), minlength=len(chosen)), out=indptr[1:])
    sub = SparseProblem(
        indptr,
        problem.indices[entries],
        problem.values[entries],
        problem.n_experts,
        problem.client_capacity[chosen],
        client_min=problem.client_min[chosen],
        expert_min=expert_min,
        expert_max=expert_max,
        load_penalty=load_penalty,
        values_dtype=problem.values.dtype.name,
    )
    return sub, entries


#: The largest integer cost of the coarse first graph (see :func:`_sparse_optimum`).
_COARSE_COSTS = 2.0**20
#: Repair's gap threshold, a fraction of the largest |fitness|: clients within this of changing their
#: choice are re-solved.
_REPAIR_TAU = 1e-4
#: Re-solves a repair may take before it gives up (the caller then re-solves the grown candidate graph).
_REPAIR_ROUNDS = 6
_REPAIR_EXTRA = 2  # a re-solved client's graph: its capacity + this many best entries at the current potentials


def _repair(
    problem: Any,
    elig: np.ndarray,
    taken: np.ndarray,
    pot: np.ndarray,
    scale: float,
    emax: np.ndarray,
    max_flow: int,
    max_fit: float,
    stats: dict[str, Any],
    want_potentials: bool,
) -> tuple[SolverResult, np.ndarray | None] | None:
    """The full optimum from the optimum of a candidate graph whose pricing found improving entries,
    by re-solving only the clients near a change of choice; None when that does not settle.

    The candidate optimum's potentials are close to optimal ones (only some experts' prices are
    off), so most clients' choices are settled: :func:`._flow_kernels.client_gaps` says how far
    each is from changing it. Clients whose gap is below ``tau`` (the negative ones included)
    are solved again, on their ``capacity + 2`` best entries at the current potentials, with
    the expert bounds less the loads of the clients kept. Under the potentials of that
    sub-problem's optimum, a client kept or re-solved whose gap is negative (on any of its
    entries) is freed, or has its graph grown, and the sub-problem is solved again. When no
    gap is negative, those potentials certify the whole flow (:func:`_certificate`).
    """
    from ._flow_kernels import client_gaps
    from ._sparse_kernels import row_top

    n, e = problem.shape
    start = time.perf_counter()
    rows, cols, vals = problem.rows, problem.indices, problem.values
    cap, cmin = problem.client_capacity, problem.client_min

    def gaps_under(d_expert: np.ndarray, d_source: int, flow: np.ndarray) -> np.ndarray:
        return client_gaps(problem.indptr, cols, vals, scale, elig, flow, d_expert, d_source, cap, cmin)

    def grow(clients: np.ndarray, d_expert: np.ndarray) -> None:
        """Add to the graph the best entries of ``clients`` at the expert potentials ``d_expert``."""
        indptr, entries = _client_entries(problem, clients)
        worth = np.rint(vals[entries].astype(np.float64) * scale) + d_expert[cols[entries]]
        top = row_top(indptr, worth, elig[entries], int(cap.max(initial=0)) + _REPAIR_EXTRA)
        in_graph[entries[top]] = True

    tau = _REPAIR_TAU * max_fit * scale
    d_expert = pot[n + 1 : n + e + 1]
    gaps = gaps_under(d_expert, int(pot[0]), taken)
    is_free = gaps < tau
    in_graph = np.zeros(problem.nnz, dtype=bool)
    in_graph[taken & is_free[rows]] = True  # the freed clients' current choices stay feasible
    grow(np.flatnonzero(is_free), d_expert)
    tries = []
    for _ in range(_REPAIR_ROUNDS):
        free = np.flatnonzero(is_free)
        kept = taken & ~is_free[rows]
        held = np.bincount(cols[kept], minlength=e)
        sub, entries = _subproblem(
            problem,
            free,
            expert_min=np.maximum(problem.expert_min - held, 0),
            expert_max=emax - held,
            load_penalty=0.0,
            keep=in_graph,
        )
        t0 = time.perf_counter()
        # Its graph is already a few entries per client: no pricing (and no repair within a repair).
        sub_result, sub_pot, _ = _sparse_optimum(sub, {"scale": scale, "pricing": False}, {}, want_potentials=True)
        tries.append({"clients": len(free), "pairs": int(sub.nnz), "status": sub_result.status})
        tries[-1]["solve_s"] = time.perf_counter() - t0
        if sub_result.status != "optimal" or sub_pot is None:
            break
        kept[entries[sub.entry_mask(sub_result.matrix)]] = True
        ns = sub.n_clients
        d_expert, d_source, d_sink = sub_pot[ns + 1 : ns + e + 1], int(sub_pot[0]), int(sub_pot[-1])
        gaps = gaps_under(d_expert, d_source, kept)
        bad = gaps < 0
        tries[-1]["violating"] = int(bad.sum())
        if not bad.any():
            full = _certificate(problem, elig, kept, emax, scale, d_expert, d_source, d_sink, want_potentials)
            if full is False:
                break
            stats["repair"] = {"tries": tries, "seconds": time.perf_counter() - start}
            bound = 2.0 * max_flow * _rounding_error(vals[elig], scale)
            stats["rounding_error_bound"] = bound
            return _optimal(problem.to_matrix(kept), problem.objective(kept), bound, stats), full
        # Kept clients that would change join (with those near a change); re-solved ones that would
        # take an entry outside their graph get their best entries at the new potentials.
        newly = np.flatnonzero((gaps < tau) & ~is_free)
        regrow = np.flatnonzero(bad & is_free)
        is_free[newly] = True
        in_graph[kept & is_free[rows]] = True  # the current flow stays feasible in the next graph
        grow(np.union1d(newly, regrow), d_expert)
        taken = kept
    stats["repair"] = {"tries": tries, "seconds": time.perf_counter() - start}
    return None


def _certificate(
    problem: Any,
    elig: np.ndarray,
    taken: np.ndarray,
    emax: np.ndarray,
    scale: float,
    d_expert: np.ndarray,
    d_source: int,
    d_sink: int,
    want_potentials: bool,
) -> np.ndarray | bool | None:
    """Whether expert potentials, under which no client's gap is negative, certify the flow ``taken``.

    The client arcs hold by the gaps; this checks the arcs between experts, source and sink (the
    load and circulation arcs of :mod:`._flow_kernels`; no load penalty). Returns False when one
    fails, else the full potentials (graph order) when ``want_potentials``, else None.
    """
    from ._flow_kernels import client_potentials

    n, e = problem.shape
    loads = np.bincount(problem.indices[taken], minlength=e)
    ok = (
        np.all(d_sink <= d_expert[loads < emax])  # j -> T while j has room, cost 0
        and np.all(d_expert[loads > problem.expert_min] <= d_sink)  # T -> j above its minimum
        and d_source <= d_sink  # T -> S
        and (not taken.any() or d_sink <= d_source)  # S -> T while flow runs
    )
    if not ok:
        return False
    if not want_potentials:
        return None
    idx = np.flatnonzero(elig)
    d = np.concatenate([d_expert, [d_source, d_sink]]).astype(np.int64)
    costs = -np.rint(problem.values[idx].astype(np.float64) * scale).astype(np.int64)
    counts = np.bincount(problem.rows[taken], minlength=n)
    starts = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(problem.rows[idx], minlength=n), out=starts[1:])
    d_client = client_potentials(starts, problem.indices[idx], costs, taken[idx], counts, problem.client_capacity, d)
    return np.concatenate([[d_source], d_client, d_expert, [d_sink]])


def _rounding_error(values: np.ndarray, scale: float) -> float:
    """The largest |round(F * scale) - F * scale| / scale over ``values``, in chunks."""
    err = 0.0
    step = 1 << 22
    for lo in range(0, len(values), step):
        v = values[lo : lo + step].astype(np.float64) * scale
        err = max(err, float(np.abs(np.rint(v) - v).max(initial=0.0)))
    return err / scale
