"""The sparse path: ``flow`` on a :class:`~alignsolve.SparseProblem`, with sampled prices and the repair."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from .. import SolverResult, check_options
from .core import _INT_LIMIT, _NO_POTENTIALS, _flow_core, _graph_setup, _not_optimal, _optimal, _rounding_error
from .dense import _price_in

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
    from .._sparse_kernels import row_top

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
    from ...sparse import SparseProblem

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
    off), so most clients' choices are settled: :func:`.kernels.client_gaps` says how far
    each is from changing it. Clients whose gap is below ``tau`` (the negative ones included)
    are solved again, on their ``capacity + 2`` best entries at the current potentials, with
    the expert bounds less the loads of the clients kept. Under the potentials of that
    sub-problem's optimum, a client kept or re-solved whose gap is negative (on any of its
    entries) is freed, or has its graph grown, and the sub-problem is solved again. When no
    gap is negative, those potentials certify the whole flow (:func:`_certificate`).
    """
    from .._sparse_kernels import row_top
    from .kernels import client_gaps

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
    load and circulation arcs of :mod:`.kernels`; no load penalty). Returns False when one
    fails, else the full potentials (graph order) when ``want_potentials``, else None.
    """
    from .kernels import client_potentials

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
