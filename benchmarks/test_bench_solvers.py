"""pytest-benchmark timings of the solvers (not part of the test suite).

    python -m pytest benchmarks/test_bench_solvers.py --benchmark-enable

Compare the groups' rows side by side: each group is one instance, solved by the
bare OR-Tools reference and by alignsolve's methods in the same process run.
"""

from __future__ import annotations

import pytest
from references import bare_min_cost_flow

import alignsolve as als

SIZES = {"1000x64k4": (1000, 64, 4), "10000x256k8": (10000, 256, 8)}


@pytest.fixture(scope="module", params=list(SIZES))
def instance(request):
    n, e, k = SIZES[request.param]
    problem = als.generate("skewed", n, e, k, seed=0, expert_min_frac=0.5)
    als.solve(als.generate("uniform", 20, 4, 2, expert_min_frac=0.5), "greedy")  # compile kernels outside timing
    return request.param, problem


def _rounds(problem):
    return 3 if problem.n_clients * problem.n_experts > 1_000_000 else 10


@pytest.mark.parametrize("method", ["bare_ortools", "flow", "greedy", "random"])
def test_solver(benchmark, instance, method):
    name, problem = instance
    benchmark.group = name
    if method == "bare_ortools":
        benchmark.pedantic(bare_min_cost_flow, args=(problem,), rounds=_rounds(problem), iterations=1)
    else:
        result = benchmark.pedantic(
            als.solve, args=(problem, method), kwargs={"seed": 0}, rounds=_rounds(problem), iterations=1
        )
        als.verify(problem, result)
