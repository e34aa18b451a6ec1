"""The relaxation and exact backends (issue 3): properties against brute force, warm starts, torch, imports."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import alignsolve as als
from alignsolve.testing import brute_force
from tests.test_properties import problems

EXACT = ("cpsat", "milp")
ALL_GENERALISED = ("cpsat", "milp", "lp", "greedy", "auto")
ALL_UNIT = ("flow", "cpsat", "milp", "lp", "sinkhorn", "greedy")


@st.composite
def budget_problems(draw, max_n=4, max_e=3):
    """Tiny generalised problems (at most 12 pairs, so brute force is exact)."""
    n = draw(st.integers(1, max_n))
    e = draw(st.integers(1, max_e))
    base = draw(problems(max_n=n, max_e=e)).replace()
    n, e = base.shape
    cost = np.array(draw(st.lists(st.integers(0, 4), min_size=n * e, max_size=n * e)), float).reshape(n, e)
    budget = np.array(draw(st.lists(st.integers(0, 8), min_size=n, max_size=n)), float)
    lam = draw(st.sampled_from([0.0, 0.0, 0.5]))
    return base.replace(cost=cost, budget=budget, load_penalty=lam)


def _check(problem, result, optimum, *, exact):
    if optimum is None:
        # Infeasible: exact methods say so; heuristics may only fail to find one.
        assert result.status in (("infeasible",) if exact else ("infeasible", "unknown"))
        assert result.message
        return
    assert result.status != "infeasible", result.message
    if result.has_solution:
        als.verify(problem, result)
        assert result.objective <= optimum + 1e-7 * max(1.0, abs(optimum))
    if result.bound is not None:
        assert result.bound >= optimum - 1e-7 * max(1.0, abs(optimum))
    if exact:
        assert result.status == "optimal"
        assert result.objective == pytest.approx(optimum, rel=1e-7, abs=1e-7)


@settings(max_examples=60)
@given(budget_problems())
def test_generalised_methods_against_brute_force(problem):
    optimum, _ = brute_force(problem)
    for method in ALL_GENERALISED:
        result = als.solve(problem, method, seed=1)
        _check(problem, result, optimum, exact=method in EXACT or method == "auto")


@settings(max_examples=40)
@given(problems(max_n=4, max_e=3, penalty=True))
def test_unit_methods_against_brute_force(problem):
    optimum, _ = brute_force(problem)
    for method in ALL_UNIT:
        result = als.solve(problem, method, seed=1)
        # On the unit variant every method is feasible exactly when the problem is.
        _check(problem, result, optimum, exact=method in ("flow", "cpsat", "milp", "lp"))


@pytest.mark.parametrize("family", ["uniform", "skewed", "lowrank", "tight"])
def test_lp_equals_flow_on_unit_instances(family):
    problem = als.generate(family, 120, 10, 3, seed=2, expert_min_frac=0.3)
    flow = als.solve(problem, "flow")
    for solver in ("CLARABEL", "SCIPY"):
        lp = als.solve(problem, "lp", solver=solver)
        assert lp.status == "optimal"
        assert lp.objective == pytest.approx(flow.objective, rel=1e-9)
        assert lp.bound >= flow.objective - 1e-7 * abs(flow.objective)
        assert lp.stats["lp_value"] == pytest.approx(flow.objective, rel=1e-6)


def test_lp_plan_and_generalised_rounding():
    problem = als.generate("budget", 60, 8, 2, seed=3)
    exact = als.solve(problem, "milp")
    lp = als.solve(problem, "lp")
    als.verify(problem, lp)
    plan = np.zeros(problem.shape)
    for i, j, v in lp.stats["plan"]:
        plan[i, j] = v
    assert plan.max() <= 1 + 1e-9 and plan.min() >= 0
    assert lp.bound >= exact.objective - 1e-7 * abs(exact.objective)
    assert lp.objective <= exact.objective + 1e-9


def test_sinkhorn_is_close_and_bounded_on_a_medium_instance():
    problem = als.generate("skewed", 400, 16, 3, seed=1)
    flow = als.solve(problem, "flow")
    sk = als.solve(problem, "sinkhorn")
    als.verify(problem, sk)
    assert flow.objective >= sk.objective >= flow.objective * (1 - 2e-3)
    assert sk.bound >= flow.objective - 1e-9
    assert sk.stats["backend"] == "numpy"


def test_sinkhorn_meets_lower_bounds_by_repair():
    problem = als.generate("tight", 60, 8, 2, seed=5)
    sk = als.solve(problem, "sinkhorn")
    als.verify(problem, sk)
    assert sk.status == "feasible"


def test_sinkhorn_reports_infeasibility_with_a_reason():
    problem = als.generate("infeasible", 30, 6, 2, seed=0)
    sk = als.solve(problem, "sinkhorn")
    assert sk.status == "infeasible" and "expert" in sk.message


def test_sinkhorn_torch_cpu_matches_numpy():
    torch = pytest.importorskip("torch", reason="torch is the optional [torch] extra")
    problem = als.generate("uniform", 150, 12, 3, seed=7)
    a = als.solve(problem, "sinkhorn")
    b = als.solve(problem, "sinkhorn", device="cpu")
    assert b.stats["backend"] == "torch"
    assert b.objective == pytest.approx(a.objective, rel=1e-6)
    # The input decides too: a tensor runs on torch without naming a device.
    from alignsolve.solvers.sinkhorn import entropic_duals

    f_np, g_np, _ = entropic_duals(
        problem.fitness, problem.allowed, problem.client_min, problem.client_capacity,
        problem.expert_min, problem.expert_max,
    )  # fmt: skip
    f_t, g_t, info = entropic_duals(
        torch.tensor(problem.fitness), problem.allowed, problem.client_min, problem.client_capacity,
        problem.expert_min, problem.expert_max,
    )  # fmt: skip
    assert info["backend"] == "torch"
    np.testing.assert_allclose(f_t, f_np, atol=1e-6)
    np.testing.assert_allclose(g_t, g_np, atol=1e-6)


def test_sinkhorn_on_cuda():
    torch = pytest.importorskip("torch", reason="torch is the optional [torch] extra")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine (the CUDA path is benchmarked on a lent GPU)")
    problem = als.generate("skewed", 2000, 32, 4, seed=0)
    flow = als.solve(problem, "flow")
    sk = als.solve(problem, "sinkhorn", device="cuda")
    als.verify(problem, sk)
    assert sk.stats["device"].startswith("cuda")
    assert sk.bound >= flow.objective - 1e-6 * abs(flow.objective)


def test_sinkhorn_rejects_bad_device_and_dtype():
    problem = als.generate("uniform", 5, 3, 1, seed=0)
    with pytest.raises(als.InvalidProblemError, match="dtype"):
        als.solve(problem, "sinkhorn", dtype="float16")
    pytest.importorskip("torch", reason="torch is the optional [torch] extra")
    with pytest.raises(als.InvalidProblemError) as info:
        als.solve(problem, "sinkhorn", device="tpu-9")
    assert info.value.parameter == "device"


def test_lp_refuses_highs_and_unknown_solvers():
    problem = als.generate("uniform", 5, 3, 1, seed=0)
    for bad in ("HIGHS", "gurobi"):
        with pytest.raises(als.InvalidProblemError) as info:
            als.solve(problem, "lp", solver=bad)
        assert info.value.parameter == "solver"


def test_cpsat_reports_bound_and_respects_time_limit():
    problem = als.generate("budget", 200, 16, 3, seed=0)
    res = als.solve(problem, "cpsat", time_limit=3, workers=2)
    als.verify(problem, res)
    assert res.status in ("optimal", "time_limit")
    assert res.bound >= res.objective
    assert res.stats["rounding_error_bound"] >= 0
    # Whatever milp finds in its time is feasible, so no bound may fall below it.
    other = als.solve(problem, "milp", time_limit=3)
    assert other.status in ("optimal", "time_limit")
    if other.has_solution:
        als.verify(problem, other)
        assert res.bound >= other.objective - 1e-7 * abs(other.objective)
    assert other.bound is None or other.bound >= res.objective - 1e-7 * abs(res.objective)


def test_auto_uses_cpsat_on_small_generalised_problems():
    problem = als.generate("budget", 20, 4, 1, seed=0)
    res = als.solve(problem)
    assert res.method == "cpsat" and res.stats["auto_choice"] == "cpsat"
    assert res.status == "optimal"


def test_warm_start_is_used_or_reported():
    problem = als.generate("skewed", 200, 12, 3, seed=4)
    best = als.solve(problem, "flow")
    warm = als.solve(problem, "greedy", warm_start=best)
    als.verify(problem, warm)
    # Starting from the optimum, greedy keeps it (local search never makes it worse).
    assert warm.objective == pytest.approx(best.objective)
    assert warm.bound is None  # the 1/2 guarantee does not cover a warm start
    ignored = als.solve(problem, "flow", warm_start=best.matrix)
    assert "initial" in ignored.stats["warm_start_ignored"]
    hinted = als.solve(problem, "cpsat", warm_start=best, time_limit=20)
    assert hinted.stats.get("hinted") and hinted.objective == pytest.approx(best.objective, rel=1e-9)


def test_greedy_local_search_improves_generalised_answers():
    problem = als.generate("budget", 300, 16, 3, seed=2)
    plain = als.solve(problem, "greedy")
    polished = als.solve(problem, "greedy", local_search=10)
    als.verify(problem, polished)
    assert polished.objective >= plain.objective - 1e-9


@pytest.mark.parametrize(
    "warm, match",
    [(np.zeros((2, 2), bool), "shape"), (np.full((4, 3), 2), "0/1"), ("soon", "shape")],
)
def test_bad_warm_start_is_refused(warm, match):
    problem = als.generate("uniform", 4, 3, 1, seed=0)
    with pytest.raises(als.InvalidProblemError, match=match) as info:
        als.solve(problem, "greedy", warm_start=warm)
    assert info.value.parameter == "warm_start"


def test_infeasible_warm_start_assignment_is_refused():
    problem = als.generate("infeasible", 10, 4, 1, seed=0)
    bad = als.solve(problem, "flow")
    with pytest.raises(als.InvalidProblemError, match="solution"):
        als.solve(als.generate("uniform", 10, 4, 1), "greedy", warm_start=bad)


def test_generalised_infeasibility_has_a_budget_certificate():
    problem = als.Problem([[1.0, 1.0]], 2, client_min=2, cost=[[3.0, 3.0]], budget=5.0)
    cert = als.diagnose_generalised(problem)
    assert cert is not None and cert.kind == "client_budget"
    assert "budget" in cert.message and cert.required == 2 and cert.available == 1


_BOTH_ORDERS = textwrap.dedent(
    """
    import sys
    import alignsolve as als
    problem = als.generate("budget", 30, 5, 2, seed=0)
    unit = als.generate("skewed", 30, 5, 2, seed=0)
    def ortools_paths():
        from ortools.graph.python import min_cost_flow  # noqa: F401
        from ortools.sat.python import cp_model  # noqa: F401
        assert als.solve(unit, "flow").status == "optimal"
        assert als.solve(problem, "cpsat").status == "optimal"
    def cvxpy_paths():
        for p in (problem, unit):
            for solver in ("CLARABEL", "SCIPY"):
                assert als.solve(p, "lp", solver=solver).has_solution
    if sys.argv[1] == "ortools-first":
        ortools_paths(); cvxpy_paths()
    else:
        cvxpy_paths(); ortools_paths()
    assert als.solve(problem, "milp").status == "optimal"
    print("ok")
    """
)


@pytest.mark.parametrize("order", ["ortools-first", "cvxpy-first"])
def test_ortools_and_cvxpy_work_in_one_process(order):
    pytest.importorskip("cvxpy", reason="cvxpy is the optional [cvxpy] extra")
    out = subprocess.run(
        [sys.executable, "-c", _BOTH_ORDERS, order], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
    assert "undefined symbol" not in out.stderr


@pytest.mark.slow
def test_lp_rounding_flow_fits_ortools_cost_range():
    # Regression: the flow on the LP support of this one-slot instance was refused by OR-Tools
    # (BAD_COST_RANGE) when its costs were scaled to the bare int64 bounds; the scale keeps headroom now.
    problem = als.generate("uniform", 3000, 64, 1, seed=0)
    result = als.solve(problem, "lp")
    als.verify(problem, result)
    assert result.objective == pytest.approx(als.solve(problem, "flow").objective, rel=1e-12)


def test_flow_scale_fits_ortools_cost_range_on_large_one_slot_instances():
    # Regression: OR-Tools refused this graph (BAD_COST_RANGE) at scale 2**47, inside the bare int64 bounds.
    problem = als.generate("uniform", 30000, 256, 1, seed=0)
    result = als.solve(problem, "flow")
    assert result.status == "optimal"
    als.verify(problem, result)


@settings(max_examples=80)
@given(st.integers(0, 10**6))
@example(200217)  # a set whose cost sums to its budget up to one ulp, in one order and not the other
def test_client_knapsack_matches_enumeration_and_its_cut_bound_stays_valid(seed):
    from alignsolve.solvers._knapsack_kernels import client_knapsacks
    from alignsolve.verify import budget_slack

    rng = np.random.default_rng(seed)
    n, e = 3, int(rng.integers(1, 9))
    fit = np.round(rng.normal(0.5, 1.0, (n, e)), 2)
    cost = np.round(rng.uniform(0, 3, (n, e)), 1)  # zero costs included
    # The budgets with verify's slack, as the Lagrangian passes them: sums of decimal costs
    # that equal a budget may round either side of it depending on their order.
    budget = np.round(rng.uniform(0, 6, n), 1)
    budget = budget + budget_slack(budget)
    cap = rng.integers(0, 4, n)
    allowed = rng.random((n, e)) < 0.8
    prices = np.round(rng.normal(0, 0.5, e), 2)
    take, loads = np.zeros((n, e), bool), np.zeros(e, np.int64)
    upper, found, cut = client_knapsacks(fit, cost, budget, cap, allowed, prices, 10**6, 10**9, take, loads)
    best_total = 0.0
    for i in range(n):
        best = 0.0
        for bits in itertools.product((0, 1), repeat=e):
            x = np.array(bits, bool)
            if (x & ~allowed[i]).any() or x.sum() > cap[i] or cost[i] @ x > budget[i]:
                continue
            best = max(best, float((fit[i] - prices) @ x))
        best_total += best
        chosen = take[i]
        assert chosen.sum() <= cap[i] and cost[i] @ chosen <= budget[i] and not (chosen & ~allowed[i]).any()
    assert cut == 0
    assert found == pytest.approx(best_total, abs=1e-9) and upper == pytest.approx(best_total, abs=1e-9)
    np.testing.assert_array_equal(loads, take.sum(axis=0))
    # A search stopped after one node falls back to its root bound: weaker, still an upper bound.
    upper_cut, found_cut, _ = client_knapsacks(fit, cost, budget, cap, allowed, prices, 1, 10**9, take, loads)
    # and so does a node budget spent after the first client
    upper_budget, _, _ = client_knapsacks(fit, cost, budget, cap, allowed, prices, 10**6, 1, take, loads)
    assert upper_budget >= best_total - 1e-9
    assert upper_cut >= best_total - 1e-9 >= found_cut - 2e-9


@settings(max_examples=60)
@given(budget_problems())
def test_lagrangian_bound_is_above_the_optimum_and_its_answer_feasible(problem):
    from alignsolve.solvers._lagrangian import lagrangian

    problem = problem.replace(load_penalty=0.0, client_min=0)
    optimum, _ = brute_force(problem)
    lag = lagrangian(problem, time_limit=1.0, max_iterations=60)
    assert lag is not None
    if optimum is None:
        assert lag.matrix is None
        return
    assert lag.bound >= optimum - 1e-7 * max(1.0, abs(optimum))
    if lag.matrix is not None:
        als.verify(problem, lag.matrix)
        assert lag.objective <= optimum + 1e-9


def test_lagrangian_is_tight_on_the_budget_family_and_declines_what_it_does_not_cover():
    from alignsolve.solvers._lagrangian import lagrangian

    problem = als.generate("budget", 300, 16, 3, seed=1)
    lag = lagrangian(problem, time_limit=20.0)
    als.verify(problem, lag.matrix)
    lp = als.solve(problem, "lp")
    # The LP lets every client fill its budget with a fraction of one more expert; the clients' knapsacks do not.
    assert lag.bound < lp.bound
    assert lag.bound - lag.objective <= 0.005 * lag.objective
    assert lagrangian(problem.replace(load_penalty=0.1)) is None
    assert lagrangian(problem.replace(client_min=1)) is None
    assert lagrangian(als.generate("uniform", 30, 4, 2, seed=0)) is None


def test_cpsat_uses_the_lagrangian_bound_and_can_switch_it_off():
    problem = als.generate("budget", 200, 16, 3, seed=4)
    with_lag = als.solve(problem, "cpsat", time_limit=6, workers=2)
    without = als.solve(problem, "cpsat", time_limit=6, workers=2, lagrangian=False)
    for res in (with_lag, without):
        als.verify(problem, res)
        assert res.bound >= max(with_lag.objective, without.objective) - 1e-7 * res.bound
    assert "lagrangian_bound" in with_lag.stats and "lagrangian_bound" not in without.stats
    assert with_lag.bound <= with_lag.stats["lagrangian_bound"] + 1e-12
    assert with_lag.gap <= 0.005
