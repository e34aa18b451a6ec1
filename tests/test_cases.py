"""Every method against the shared table of known optima."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import alignsolve as als
from alignsolve.testing import brute_force
from tests.cases import CASES, build

METHODS = ["flow", "greedy", "random", "auto", "cpsat", "milp", "lp", "sinkhorn"]
EXACT = {"flow", "auto", "cpsat", "milp"}  # auto picks flow (cpsat when generalised) on small instances
UNIT_EXACT = {"lp"}  # exact on the unit variant (total unimodularity)


@pytest.mark.parametrize("name,kwargs,optimum", CASES, ids=[c[0] for c in CASES])
def test_known_optimum_matches_brute_force(name, kwargs, optimum):
    value, _ = brute_force(build(kwargs))
    assert (value is None) == (optimum is None)
    if optimum is not None:
        assert value == pytest.approx(optimum)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name,kwargs,optimum", CASES, ids=[c[0] for c in CASES])
def test_method_on_case(method, name, kwargs, optimum):
    problem = build(kwargs)
    if problem.is_generalised and not als.solvers.METHODS.get(method, als.solvers.METHODS["cpsat"]).generalised:
        with pytest.raises(als.InvalidProblemError, match="generalised") as info:
            als.solve(problem, method)
        assert info.value.parameter == "method"
        return
    result = als.solve(problem, method, seed=0)
    assert isinstance(result, als.Assignment)
    if optimum is None:
        assert result.status == "infeasible"
        assert not result.has_solution
        assert result.message  # names the violated condition
        assert result.objective == -math.inf
        return
    assert result.status in ("optimal", "feasible")
    als.verify(problem, result)
    assert result.objective <= optimum + 1e-9
    if method in EXACT or (method in UNIT_EXACT and not problem.is_generalised):
        assert result.status == "optimal"
        assert result.objective == pytest.approx(optimum)
        assert result.bound is not None and result.bound >= optimum - 1e-9
    if result.bound is not None:
        assert result.bound >= optimum - 1e-9


def test_greedy_trap_is_half():
    problem = build(dict(CASES[1][1]))
    greedy = als.solve(problem, "greedy")
    assert greedy.objective == pytest.approx(1.01)
    assert greedy.bound == pytest.approx(2.02)  # 2 * greedy bounds the optimum (2.0)


def test_result_views_are_consistent():
    problem = als.generate("uniform", 30, 6, 2, seed=4)
    a = als.solve(problem, "flow")
    m = a.matrix
    assert a.pairs.shape == (int(m.sum()), 2)
    assert np.array_equal(a.pairs, np.argwhere(m))
    assert np.array_equal(a.loads, m.sum(0)) and np.array_equal(a.counts, m.sum(1))
    for i in range(problem.n_clients):
        assert np.array_equal(a.experts_of(i), np.flatnonzero(m[i]))
    for j in range(problem.n_experts):
        assert np.array_equal(a.clients_of(j), np.flatnonzero(m[:, j]))
    assert not a.matrix.flags.writeable
    assert "objective" in a.summary()


def test_assignment_json_round_trip():
    problem = als.generate("skewed", 25, 5, 2, seed=1, expert_min_frac=0.5)
    a = als.solve(problem, "flow")
    b = als.Assignment.from_json(a.to_json())
    assert np.array_equal(a.matrix, b.matrix)
    assert (b.status, b.method, b.objective, b.bound) == (a.status, a.method, a.objective, a.bound)
    infeasible = als.solve(als.generate("infeasible", 20, 5, 2, seed=0), "flow")
    c = als.Assignment.from_json(infeasible.to_json())
    assert c.status == "infeasible" and c.objective == -math.inf and c.message == infeasible.message


def test_auto_choice_is_recorded_and_follows_the_rule(monkeypatch):
    problem = als.generate("uniform", 20, 4, 2, seed=0)
    a = als.solve(problem)
    assert a.method == "flow" and a.stats["auto_choice"] == "flow"
    solve_module = importlib.import_module("alignsolve.solve")  # the module: als.solve is the function

    monkeypatch.setattr(solve_module, "AUTO_EXACT_PAIRS", 10)
    assert als.choose_method(problem) == "greedy"
    assert als.solve(problem).method == "greedy"


def test_flow_reports_rounding_bound_for_float_fitness():
    problem = als.generate("uniform", 50, 8, 3, seed=2)
    a = als.solve(problem, "flow")
    assert a.stats["rounding_error_bound"] < 1e-6
    assert a.bound - a.objective == pytest.approx(a.stats["rounding_error_bound"])
    ints = als.Problem(np.arange(12.0).reshape(4, 3), 2)
    assert als.solve(ints, "flow").stats["rounding_error_bound"] == 0.0


def test_flow_handles_huge_and_tiny_fitness_scales():
    rng = np.random.default_rng(0)
    base = rng.random((12, 4))
    for factor in (1e-9, 1.0, 1e12):
        p = als.Problem(base * factor, 2, expert_max=7)
        a = als.solve(p, "flow")
        ref = als.solve(als.Problem(base, 2, expert_max=7), "flow")
        assert np.array_equal(a.matrix, ref.matrix)


def test_random_is_seeded_and_maximal():
    problem = als.generate("uniform", 40, 6, 2, seed=3)
    a = als.solve(problem, "random", seed=7)
    b = als.solve(problem, "random", seed=7)
    c = als.solve(problem, "random", seed=8)
    assert np.array_equal(a.matrix, b.matrix)
    assert not np.array_equal(a.matrix, c.matrix)
    room_c = a.counts < problem.client_capacity
    room_e = a.loads < problem.expert_max
    assert not (problem.allowed & ~a.matrix & room_c[:, None] & room_e[None, :]).any()


def test_random_is_not_the_fitness_drawn_with_the_same_seed():
    # generate("uniform", seed=s) and a plain default_rng(s) in `random` would draw the same matrix,
    # turning the quality floor into greedy; the method keeps its own stream.
    for seed in (0, 1, 2):
        problem = als.generate("uniform", 400, 16, 1, seed=seed)
        optimum = als.solve(problem, "flow").objective
        picked = als.solve(problem, "random", seed=seed)
        assert (optimum - picked.objective) / optimum > 0.2


def test_greedy_is_deterministic():
    problem = als.generate("lowrank", 300, 16, 3, seed=5)
    assert np.array_equal(als.solve(problem, "greedy").matrix, als.solve(problem, "greedy").matrix)


def test_greedy_needs_repair_and_gets_it():
    # Greedy's lower-bound pass gives client 0 its favourite expert 0, which is the only
    # expert client 1 may train; augmenting paths must move client 0 to expert 1.
    problem = als.Problem(
        [[5.0, 1.0], [1.0, 0.0]], 1, client_min=1, expert_max=1, allowed=np.array([[True, True], [True, False]])
    )
    a = als.solve(problem, "greedy")
    als.verify(problem, a)
    assert a.stats["repaired"]
    assert a.pairs.tolist() == [[0, 1], [1, 0]]


def test_greedy_never_takes_negative_pairs_without_lower_bounds():
    rng = np.random.default_rng(1)
    problem = als.Problem(rng.normal(size=(60, 6)), 3, expert_max=40)
    a = als.solve(problem, "greedy")
    assert (problem.fitness[a.matrix] >= 0).all()


def test_chunked_walk_equals_a_full_sort():
    # A tiny first chunk forces many chunks; the answer must equal one big chunk's.
    problem = als.generate("skewed", 400, 12, 3, seed=9)
    one = als.solve(problem, "greedy", chunk=10**9)
    many = als.solve(problem, "greedy", chunk=1)
    assert many.stats["chunks"] > 1
    assert one.objective == pytest.approx(many.objective)


@pytest.mark.parametrize("chunk", [1, 50, None])
def test_greedy_equals_a_plain_sorted_walk(chunk):
    # Distinct fitness (no ties), no lower bounds: the answer is fixed by the definition.
    rng = np.random.default_rng(4)
    fit = rng.normal(size=(300, 20))
    allowed = rng.random((300, 20)) < 0.8
    problem = als.Problem(fit, rng.integers(0, 4, 300), expert_max=rng.integers(0, 60, 20), allowed=allowed)
    want = np.zeros(problem.shape, bool)
    counts, loads = np.zeros(300, int), np.zeros(20, int)
    for flat in np.argsort(-fit, axis=None):
        i, j = divmod(int(flat), 20)
        if fit[i, j] < 0:
            break
        if allowed[i, j] and counts[i] < problem.client_capacity[i] and loads[j] < problem.expert_max[j]:
            want[i, j] = True
            counts[i] += 1
            loads[j] += 1
    assert np.array_equal(als.solve(problem, "greedy", chunk=chunk).matrix, want)


def test_collect_pairs_recounts_when_the_estimate_is_short():
    from alignsolve.solvers._greedy_kernels import collect_pairs

    problem = als.generate("skewed", 200, 16, 3, seed=2)
    n, e = problem.shape
    state = (np.zeros(n * e, bool), np.zeros(n, np.int64), np.zeros(e, np.int64))
    args = (problem.fitness, problem.allowed, 0.5, np.inf, True, *state, problem.client_capacity, problem.expert_max)
    short = collect_pairs(*args, 1)
    exact = collect_pairs(*args, n * e)
    assert len(short[0]) > 16  # more than the smallest buffer: the recount ran
    for got, want in zip(short, exact, strict=True):
        assert np.array_equal(got, want)


_COLD_CACHE_DRIVER = """
import sys
import numpy as np
from kernels_copy import collect_pairs

n, e = 6, 4
fit = np.random.default_rng(0).random((n, e))
frozen = fit.copy()
frozen.setflags(write=False)
allowed = np.ones((n, e), bool)
state = (np.zeros(n * e, bool), np.zeros(n, np.int64), np.zeros(e, np.int64), np.full(n, 2), np.full(e, 3))
calls = [(frozen, 0), (frozen, 5), (fit, 0), (fit, 5)]  # four signatures, each hint short of the 24 pairs
for priority, hint in calls[:: 1 if sys.argv[1] == "0" else -1]:
    rows, _, _ = collect_pairs(priority, allowed, 0.0, 2.0, True, *state, hint)
    assert len(rows) == n * e
"""


def test_kernels_compile_in_two_processes_into_one_cold_cache(tmp_path):
    # Two pytest workers (or two Flower server processes) on a fresh checkout compile the kernels into one numba
    # cache at once. A self-recursive cached kernel aborted there in LLVM ("Symbol not found:
    # .numba.unresolved$...collect_pairs"), in most attempts; a copy of the module gives this test a cold cache.
    import shutil
    import subprocess
    import sys

    from alignsolve.solvers import _greedy_kernels

    shutil.copy(_greedy_kernels.__file__, tmp_path / "kernels_copy.py")
    (tmp_path / "driver.py").write_text(_COLD_CACHE_DRIVER)
    for attempt in range(2):
        procs = [
            subprocess.Popen(
                [sys.executable, "driver.py", str(order)],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for order in (0, 1)
        ]
        for proc in procs:
            out = proc.communicate(timeout=600)[0].decode(errors="replace")
            assert proc.returncode == 0, f"attempt {attempt}: exit {proc.returncode}\n{out[-2000:]}"
        shutil.rmtree(tmp_path / "__pycache__")


@given(st.lists(st.one_of(st.integers(-3, 3).map(float), st.floats(allow_nan=False, allow_infinity=False))))
def test_descending_order_is_a_stable_argsort(values):
    # Ties, both zeros, subnormals and values beyond float32's range included.
    from alignsolve.solvers.rounding import descending_order

    vals = np.array(values, dtype=np.float64)
    assert np.array_equal(descending_order(vals), np.argsort(-vals, kind="stable"))
    # With entry ids carried along (float64: gathered after; float32: inside the keys).
    ids = 3 * np.arange(vals.size) + 7
    single = np.where(np.abs(vals) < 3e38, vals, 0.0).astype(np.float32)  # finite in float32
    for v in (vals, single):
        assert np.array_equal(descending_order(v, ids), ids[np.argsort(-v, kind="stable")])
