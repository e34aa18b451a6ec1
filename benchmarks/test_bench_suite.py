"""pytest-benchmark view of the solver suite (not part of the test suite).

    python -m pytest benchmarks/test_bench_suite.py --benchmark-enable

Each group is one family at 1000x32 (k = 4; capacity 1 for ``single``): every alignsolve
method and every external reference that applies, side by side in the same process run
(the methods and references are ``run_solvers.py``'s). The ``sparse`` group times the
candidate-list form at 100000 x 1024, m = 32.
"""

from __future__ import annotations

import pytest
from run_solvers import FAMILIES, METHODS, make_problem, warm_up

import alignsolve as als


@pytest.fixture(scope="module", params=list(FAMILIES))
def instance(request):
    warm_up()
    return request.param, make_problem(request.param, 1000, 32, 4, 0)


@pytest.mark.parametrize("method", [m.name for m in METHODS])
def test_suite(benchmark, instance, method):
    family, problem = instance
    spec = next(m for m in METHODS if m.name == method)
    if not spec.applies(problem):
        pytest.skip(f"{method} does not apply to the {family} family")
    benchmark.group = f"{family} 1000x32"
    rounds = 1 if method in ("cpsat", "milp", "ref_milp", "lp", "ref_cvxpy") else 5
    benchmark.pedantic(spec.run, args=(problem, 0), rounds=rounds, iterations=1)


@pytest.fixture(scope="module")
def sparse_instance():
    als.solve(als.generate_sparse(200, 16, 2, 8, seed=1), "greedy")
    return als.generate_sparse(100_000, 1024, 4, 32, seed=0)


@pytest.mark.parametrize("method", ["greedy", "flow"])
def test_sparse(benchmark, sparse_instance, method):
    benchmark.group = "sparse 100000x1024 m=32"
    result = benchmark.pedantic(als.solve, args=(sparse_instance, method), rounds=2, iterations=1)
    als.verify(sparse_instance, result)
