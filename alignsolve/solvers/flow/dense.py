"""The dense path: ``flow`` on a :class:`~alignsolve.Problem`, with pricing on a candidate graph for large problems."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...feasibility import diagnose
from ...problem import Problem
from .. import SolverResult, check_options
from .core import _NO_POTENTIALS, PRICING_PAIRS, _graph_setup, _solve_graph

_CHUNK = 8192  # rows per pricing chunk: 8192 x E float64 at a time


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
