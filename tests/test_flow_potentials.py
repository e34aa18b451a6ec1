"""The flow method's pricing certificate: node potentials from the expert graph.

Checked against the definition, arc by arc, on the full residual graph rebuilt here
(``cost + d[u] - d[v] >= 0`` on every residual arc), not against the solver's own code.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import alignsolve as als
from alignsolve.solvers.flow import core, dense, sparse
from alignsolve.solvers.flow import kernels as _flow_kernels
from tests.test_properties import problems


def _residual_violations(problem, ai, aj, costs, used, emax, scale, d):
    """Reduced costs below zero on the residual graph of the flow ``used`` (an empty list when d certifies it)."""
    n, e = problem.shape
    src, sink = 0, n + e + 1
    counts = np.bincount(ai[used], minlength=n)
    loads = np.bincount(aj[used], minlength=e)
    lam = problem.load_penalty
    bad = []

    def check(u, v, cost, what):
        if cost + d[u] - d[v] < 0:
            bad.append((what, u, v, int(cost + d[u] - d[v])))

    for i in range(n):
        if counts[i] < problem.client_capacity[i]:
            check(src, 1 + i, 0, "source->client")
        if counts[i] > problem.client_min[i]:
            check(1 + i, src, 0, "client->source")
    for t in range(len(ai)):
        u, v = 1 + int(ai[t]), n + 1 + int(aj[t])
        if used[t]:
            check(v, u, -int(costs[t]), "expert->client")
        else:
            check(u, v, int(costs[t]), "client->expert")
    for j in range(e):
        unit = (lambda k: int(np.rint(lam * (2 * k - 1) * scale))) if lam > 0 else (lambda k: 0)
        if loads[j] < emax[j]:
            check(n + 1 + j, sink, unit(loads[j] + 1), "expert->sink")
        if loads[j] > problem.expert_min[j]:
            check(sink, n + 1 + j, -unit(loads[j]), "sink->expert")
    check(sink, src, 0, "sink->source")
    if counts.sum() > 0:
        check(src, sink, 0, "source->sink")
    return bad


@given(problems(penalty=True))
def test_potentials_of_an_optimal_flow_certify_it_on_every_residual_arc(problem):
    n, e = problem.shape
    elig = problem.allowed if problem.has_lower_bounds else problem.allowed & (problem.fitness > 0)
    per_expert, max_fit, eligible = dense._dense_figures(problem)
    _, _, emax, max_flow, scale, stats = core._graph_setup(problem, {}, per_expert, max_fit, eligible)
    ai, aj = np.nonzero(elig)
    status, used, d, _ = core._flow_core(problem, ai, aj, problem.fitness[ai, aj], emax, max_flow, scale, stats, True)
    if status != "optimal":
        return
    assert d is not None and d.shape == (n + e + 2,)
    costs = -np.rint(problem.fitness[ai, aj] * scale).astype(np.int64)
    assert _residual_violations(problem, ai, aj, costs, used, emax, scale, d) == []


def test_a_flow_with_an_improving_cycle_has_no_potentials():
    # Two clients, two experts, one slot each; the flow takes the worse diagonal (1 + 1 < 5 + 5).
    starts = np.array([0, 2, 4])
    cols = np.array([0, 1, 0, 1])
    costs = -np.array([1, 5, 5, 1], np.int64)
    taken = np.array([True, False, False, True])
    ones = np.ones(2, np.int64)
    zeros = np.zeros(2, np.int64)
    args = (starts, cols, costs, taken, ones, ones, zeros, ones, zeros, ones, zeros, zeros, True)
    _, converged = _flow_kernels.expert_potentials(*args)
    assert not converged
    # The better diagonal is optimal, and its potentials converge.
    _, converged = _flow_kernels.expert_potentials(*args[:3], ~taken, *args[4:])
    assert converged


@pytest.mark.parametrize("sparse", [False, True])
def test_pricing_without_potentials_falls_back_to_the_full_graph(monkeypatch, sparse):
    monkeypatch.setattr(core, "_EXPERT_GRAPH_MAX", 0)  # as if E were too large for the expert graph
    problem = als.generate("skewed", 200, 12, 3, seed=2)
    if sparse:
        problem = als.SparseProblem.from_dense(problem, 6)
    plain = als.solve(problem, "flow", pricing=False)
    priced = als.solve(problem, "flow", pricing=True, candidates=2)
    assert "no potentials" in priced.stats["pricing_fallback"]
    assert priced.objective == pytest.approx(plain.objective, rel=1e-12)


@given(st.integers(0, 2**31 - 1))
def test_sampled_prices_give_the_same_sparse_optimum(seed):
    problem = als.generate_sparse(400, 24, 3, 8, seed=seed)
    plain = als.solve(problem, "flow")
    assert plain.stats["pricing"] is False  # below ten times SAMPLE_CLIENTS clients the default is the plain graph
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sparse, "SAMPLE_CLIENTS", 4)  # 400 clients, a sample of 40 and its own sample of 4
        priced = als.solve(problem, "flow")
    assert priced.stats["pricing"] and priced.stats["price_sample"]["clients"] == 40
    assert priced.objective == pytest.approx(plain.objective, rel=1e-12)
    als.verify(problem, priced)


def _brute_gap(worth, taken, count, cap, cmin):
    """A client's gap by its definition: the smallest margin of the conditions that apply."""
    margins = [lo - hi for lo in worth[taken] for hi in worth[~taken]]
    if count > cmin:
        margins += list(worth[taken])  # it may drop an entry for nothing
    if count < cap:
        margins += [-w for w in worth[~taken]]  # it may add one
    return min(margins) if margins else int(_flow_kernels.INF)


@given(st.integers(0, 2**31 - 1))
def test_client_gaps_match_their_definition(seed):
    rng = np.random.default_rng(seed)
    n, e = 30, 6
    lengths = rng.integers(0, e + 1, n)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    cols = np.concatenate([np.sort(rng.choice(e, size, replace=False)) for size in lengths]).astype(np.int32)
    vals = rng.choice([-1.0, 0.25, 0.5, 1.0, 2.0], len(cols))  # ties included
    eligible = rng.random(len(cols)) < 0.9
    taken = eligible & (rng.random(len(cols)) < 0.4)
    cap = rng.integers(0, 4, n)
    cmin = np.minimum(rng.integers(0, 2, n), cap)
    scale = 4.0
    d_expert = rng.integers(-8, 9, e).astype(np.int64)
    d_source = int(rng.integers(-4, 5))
    gaps = _flow_kernels.client_gaps(indptr, cols, vals, scale, eligible, taken, d_expert, d_source, cap, cmin)
    for i in range(n):
        sl = slice(indptr[i], indptr[i + 1])
        ok = eligible[sl]
        worth = (d_expert[cols[sl]] + np.rint(vals[sl] * scale).astype(np.int64) - d_source)[ok]
        tk = taken[sl][ok]
        assert gaps[i] == _brute_gap(worth, tk, int(tk.sum()), cap[i], cmin[i])


def _repaired(problem, mp, **extra):
    mp.setattr(sparse, "SAMPLE_CLIENTS", 4)  # 400 clients: a price sample of 40, so pricing and repair run
    for name, value in extra.items():
        mp.setattr(sparse, name, value)
    stats = {}
    result, pot, scale = sparse._sparse_optimum(problem, {}, stats, want_potentials=True)
    return result, pot, scale, stats


@pytest.mark.parametrize("bounds", ["none", "expert_min", "client_min"])
def test_repair_reaches_the_optimum_and_its_potentials_certify_it(bounds):
    problem = als.generate_sparse(400, 24, 3, 8, seed=3, expert_min_frac=0.5 if bounds == "expert_min" else 0.0)
    if bounds == "client_min":  # every client must train at least one expert
        p = problem
        problem = als.SparseProblem(
            p.indptr, p.indices, p.values, p.n_experts, p.client_capacity,
            client_min=np.ones(p.n_clients, np.int64), expert_max=p.expert_max,
        )  # fmt: skip
    plain = als.solve(problem, "flow", pricing=False)
    with pytest.MonkeyPatch.context() as mp:
        result, pot, scale, stats = _repaired(problem, mp)
    assert stats["pricing_rounds"] == 1 and stats["repair"]["tries"][-1]["violating"] == 0
    assert result.objective == pytest.approx(plain.objective, rel=1e-12)
    # The potentials the repair returns certify the flow on every residual arc of the full graph.
    elig = np.ones(problem.nnz, bool) if problem.has_lower_bounds else problem.values > 0
    taken = problem.entry_mask(result.matrix)
    ai, aj = problem.rows[elig], problem.indices[elig]
    costs = -np.rint(problem.values[elig].astype(np.float64) * scale).astype(np.int64)
    emax = np.maximum(np.minimum(problem.expert_max, np.bincount(aj, minlength=problem.n_experts)), problem.expert_min)
    assert _residual_violations(problem, ai, aj, costs, taken[elig], emax, scale, pot) == []
    loads = np.bincount(problem.indices[taken], minlength=problem.n_experts)
    counts = np.bincount(problem.rows[taken], minlength=problem.n_clients)
    assert np.all((problem.expert_min <= loads) & (loads <= problem.expert_max))
    assert np.all((problem.client_min <= counts) & (counts <= problem.client_capacity))


def test_an_unsettled_repair_falls_back_to_the_grown_graph():
    problem = als.generate_sparse(400, 24, 3, 8, seed=3)
    plain = als.solve(problem, "flow", pricing=False)
    with pytest.MonkeyPatch.context() as mp:
        full, *_ = _repaired(problem, mp)
        assert len(full.stats["repair"]["tries"]) > 1  # the case needs more than one re-solve
        result, _, _, stats = _repaired(problem, mp, _REPAIR_ROUNDS=1)
    assert stats["pricing_rounds"] == 2 and len(stats["repair"]["tries"]) == 1
    assert result.objective == pytest.approx(plain.objective, rel=1e-12)


def test_certificate_checks_the_load_and_circulation_arcs():
    problem = als.generate_sparse(40, 6, 2, 4, seed=0)
    elig = problem.values > 0
    taken = problem.entry_mask(als.solve(problem, "flow").matrix)
    emax = np.minimum(problem.expert_max, np.bincount(problem.indices, minlength=6))
    d = np.zeros(6, np.int64)
    assert sparse._certificate(problem, elig, taken, emax, 1.0, d, 0, 0, False) is None
    # The sink above the source breaks the arc T -> S; an expert with room below the sink, j -> T.
    assert sparse._certificate(problem, elig, taken, emax, 1.0, d, 0, 1, False) is False
    loads = np.bincount(problem.indices[taken], minlength=6)
    room = int(np.flatnonzero(loads < emax)[0])
    d[room] = -1
    assert sparse._certificate(problem, elig, taken, emax, 1.0, d, 0, 0, False) is False
