"""Property tests on small random instances (hypothesis), against independent oracles."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import alignsolve as als
from alignsolve.testing import brute_force, milp_optimum

ALL_METHODS = ("flow", "greedy", "random")


@st.composite
def problems(draw, max_n=12, max_e=6, lower_bounds=True, negative=True, penalty=False):
    n = draw(st.integers(1, max_n))
    e = draw(st.integers(1, max_e))
    low = -3 if negative else 0
    fit = np.array(draw(st.lists(st.integers(low, 5), min_size=n * e, max_size=n * e)), float).reshape(n, e)
    cap = np.array(draw(st.lists(st.integers(0, e), min_size=n, max_size=n)))
    emax = np.array(draw(st.lists(st.integers(0, n), min_size=e, max_size=e)))
    cmin = np.zeros(n, int)
    emin = np.zeros(e, int)
    if lower_bounds and draw(st.booleans()):
        cmin = np.array([draw(st.integers(0, int(c))) for c in cap])
    if lower_bounds and draw(st.booleans()):
        emin = np.array([draw(st.integers(0, int(m))) for m in emax])
    dense = draw(st.sampled_from([1.0, 0.8, 0.5]))
    mask_bits = draw(st.lists(st.floats(0, 1), min_size=n * e, max_size=n * e))
    allowed = np.array(mask_bits).reshape(n, e) < dense
    lam = draw(st.sampled_from([0.0, 0.5, 1.25])) if penalty else 0.0
    return als.Problem(fit, cap, client_min=cmin, expert_min=emin, expert_max=emax, allowed=allowed, load_penalty=lam)


@given(problems())
def test_every_method_verifies_and_flow_matches_milp(problem):
    optimum = milp_optimum(problem)
    flow = als.solve(problem, "flow")
    if optimum is None:
        assert flow.status == "infeasible"
        assert als.diagnose(problem) is not None
    else:
        assert flow.status == "optimal"
        assert flow.objective == pytest.approx(optimum, abs=1e-9)
        als.verify(problem, flow)
    for method in ("greedy", "random"):
        result = als.solve(problem, method, seed=3)
        # Feasible whenever the problem is, infeasible only when it is.
        assert (result.status == "infeasible") == (optimum is None)
        if optimum is not None:
            als.verify(problem, result)
            assert result.objective <= optimum + 1e-9
            if result.bound is not None:
                assert result.bound >= optimum - 1e-9


@given(problems(lower_bounds=False, negative=False))
def test_greedy_is_maximal_and_half_optimal_without_lower_bounds(problem):
    optimum = milp_optimum(problem)
    greedy = als.solve(problem, "greedy")
    assert 2 * greedy.objective >= optimum - 1e-9
    room_c = greedy.counts < problem.client_capacity
    room_e = greedy.loads < problem.expert_max
    addable = problem.allowed & ~greedy.matrix & room_c[:, None] & room_e[None, :]
    assert not addable.any()


@given(problems(), st.randoms(use_true_random=False))
def test_optimum_is_invariant_under_permutations(problem, rnd):
    n, e = problem.shape
    pi = np.array(rnd.sample(range(n), n))
    sigma = np.array(rnd.sample(range(e), e))
    permuted = problem.relabel(pi, sigma)
    a, b = als.solve(problem, "flow"), als.solve(permuted, "flow")
    assert a.status == b.status
    if a.has_solution:
        assert a.objective == pytest.approx(b.objective)


@given(problems(), st.integers(0, 11), st.integers(-4, 4))
def test_adding_a_constant_to_a_pinned_row_shifts_the_optimum(problem, row, constant):
    # When client i's count is pinned (client_min = capacity), adding c to its row adds
    # c * capacity to every feasible objective: the optimum shifts by that amount.
    n, _ = problem.shape
    i = row % n
    cmin = problem.client_min.copy()
    cmin[i] = problem.client_capacity[i]
    pinned = problem.replace(client_min=cmin)
    fit = pinned.fitness.copy()
    fit[i] += constant
    shifted = pinned.replace(fitness=fit)
    a, b = als.solve(pinned, "flow"), als.solve(shifted, "flow")
    assert a.status == b.status
    if a.has_solution:
        assert b.objective == pytest.approx(a.objective + constant * pinned.client_capacity[i])


@given(problems(max_n=4, max_e=3, penalty=True))
def test_load_penalty_matches_brute_force(problem):
    assume(int(problem.allowed.sum()) <= 12)
    optimum, _ = brute_force(problem)
    flow = als.solve(problem, "flow")
    if optimum is None:
        assert flow.status == "infeasible"
        return
    assert flow.objective == pytest.approx(optimum, abs=1e-9)
    als.verify(problem, flow)
    greedy = als.solve(problem, "greedy")
    als.verify(problem, greedy)
    assert greedy.objective <= optimum + 1e-9


@given(problems())
def test_infeasibility_certificate_is_a_valid_proof(problem):
    cert = als.diagnose(problem)
    optimum = milp_optimum(problem)
    assert (cert is None) == (optimum is not None)
    if cert is None:
        return
    # Recompute the certificate's inequality from the problem alone.
    allowed = problem.allowed
    a = np.zeros(problem.n_clients, bool)
    a[cert.clients] = True
    b = np.zeros(problem.n_experts, bool)
    b[cert.experts] = True
    if cert.kind == "experts_undersupplied":
        required = problem.expert_min[b].sum()
        available = problem.client_capacity[a].sum() + allowed[np.ix_(~a, b)].sum()
    else:
        assert cert.kind == "clients_overdemanding"
        required = problem.client_min[a].sum()
        available = problem.expert_max[b].sum() + allowed[np.ix_(a, ~b)].sum()
    assert (required, available) == (cert.required, cert.available)
    assert required > available
    assert cert.message


@given(problems(penalty=True), st.integers(1, 3), st.sampled_from([0.0, 0.02]))
def test_flow_pricing_on_a_candidate_graph_equals_the_dense_flow(problem, candidates, margin):
    dense = als.solve(problem, "flow", pricing=False)
    priced = als.solve(problem, "flow", pricing=True, candidates=candidates, margin=margin)
    assert priced.status == dense.status
    if dense.status == "infeasible":
        assert priced.message == dense.message  # the same certificate, decided on the full problem
    else:
        als.verify(problem, priced)
        assert priced.objective == pytest.approx(dense.objective, abs=1e-9)
        assert priced.stats["pricing"] and priced.stats["pricing_rounds"] >= 1
        assert priced.stats["candidate_pairs"] <= int(problem.allowed.sum())
