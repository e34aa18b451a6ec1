"""The sparse problem form: validation, its meaning, and agreement with the dense form."""

from __future__ import annotations

import numpy as np
import pytest

import alignsolve as als
from alignsolve.errors import ConstraintViolation, InvalidProblemError

CASES = [("skewed", 0.0), ("lowrank", 0.5), ("tight", 0.0), ("uniform", 0.0), ("adversarial", 0.0)]


@pytest.mark.parametrize(("family", "frac"), CASES)
@pytest.mark.parametrize("method", ["flow", "greedy", "sinkhorn"])
def test_sparse_and_dense_agree_exactly_when_every_pair_is_listed(family, frac, method):
    problem = als.generate(family, 200, 12, 3, seed=2, expert_min_frac=frac)
    sparse = als.SparseProblem.from_dense(problem, problem.n_experts)
    dense = als.solve(problem, method)
    answer = als.solve(sparse, method)
    als.verify(sparse, answer)
    assert answer.is_sparse
    if method == "greedy" and answer.stats.get("repair") == "flow":
        # The sparse greedy repairs unmet minima with flow (exact) where the dense one uses augmenting paths.
        assert answer.objective >= dense.objective - 1e-9
        return
    assert answer.objective == pytest.approx(dense.objective, rel=1e-12, abs=1e-12)
    assert np.array_equal(answer.pairs, dense.pairs)
    if method == "sinkhorn":  # the same duals, hence the same bound
        assert answer.bound == pytest.approx(dense.bound, rel=1e-9)


@pytest.mark.parametrize(("family", "frac"), CASES)
def test_priced_sparse_flow_is_the_sparse_optimum(family, frac):
    problem = als.generate(family, 300, 16, 3, seed=5, expert_min_frac=frac)
    sparse = als.SparseProblem.from_dense(problem, 6)
    plain = als.solve(sparse, "flow", pricing=False)
    priced = als.solve(sparse, "flow", pricing=True, candidates=2)
    assert plain.status == priced.status
    if plain.has_solution:
        als.verify(sparse, priced)
        assert priced.objective == pytest.approx(plain.objective, rel=1e-9)


@pytest.mark.parametrize("m", [1, 3, 8])
def test_sparse_optimum_is_the_dense_problem_restricted_to_the_list(m):
    problem = als.generate("lowrank", 150, 10, 2, seed=3)
    sparse = als.SparseProblem.from_dense(problem, m)
    answer = als.solve(sparse, "flow")
    restricted = als.solve(sparse.to_dense(), "flow")
    assert answer.objective == pytest.approx(restricted.objective, rel=1e-12)
    assert answer.objective <= als.solve(problem, "flow").objective + 1e-9
    greedy = als.solve(sparse, "greedy")
    als.verify(sparse, greedy)
    assert greedy.objective <= answer.objective + 1e-9
    assert greedy.bound >= answer.objective - 1e-9  # the 1/2-approximation bound holds on the sparse problem


def test_from_dense_keeps_candidates_for_lower_bounds():
    # Every client prefers experts 0-2; expert 5 needs 4 clients, so its best clients must stay listed.
    fit = np.tile(np.array([3.0, 2.0, 1.0, 0.1, 0.1, 0.2]), (10, 1)) + np.linspace(0, 0.01, 10)[:, None]
    problem = als.Problem(fit, 1, expert_min=[0, 0, 0, 0, 0, 4])
    sparse = als.SparseProblem.from_dense(problem, 2)
    answer = als.solve(sparse, "flow")
    assert answer.status == "optimal"
    assert answer.loads[5] == 4
    assert answer.objective == pytest.approx(als.solve(problem, "flow").objective)


def test_unsorted_indices_mean_the_same_problem():
    a = als.SparseProblem([0, 3, 5], [2, 0, 1, 1, 0], [0.3, 0.1, 0.2, 0.5, 0.4], 3, 1)
    b = als.SparseProblem([0, 3, 5], [0, 1, 2, 0, 1], [0.1, 0.2, 0.3, 0.4, 0.5], 3, 1)
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.values, b.values)
    assert als.solve(a, "flow").pairs.tolist() == als.solve(b, "flow").pairs.tolist() == [[0, 2], [1, 1]]


def test_empty_row_trains_nothing_and_cannot_meet_a_minimum():
    sp = als.SparseProblem([0, 2, 2, 3], [0, 1, 1], [1.0, 2.0, 3.0], 2, 1)
    answer = als.solve(sp, "flow")
    assert answer.counts.tolist() == [1, 0, 1]
    hard = als.SparseProblem([0, 2, 2, 3], [0, 1, 1], [1.0, 2.0, 3.0], 2, 1, client_min=[0, 1, 0])
    for method in ("flow", "greedy"):
        assert als.solve(hard, method).status == "infeasible"


@pytest.mark.parametrize(
    ("kwargs", "parameter", "fragment"),
    [
        (dict(indptr=[0, 2, 3], indices=[1, 1, 0], values=[1.0, 2.0, 3.0]), "indices", "at most once"),
        (dict(indptr=[0, 2, 3], indices=[0, 4, 0], values=[1.0, 2.0, 3.0]), "indices", "[0, n_experts = 3)"),
        (dict(indptr=[0, 2, 3], indices=[0, -1, 0], values=[1.0, 2.0, 3.0]), "indices", "-1 at entry 1"),
        (dict(indptr=[0, 2, 2], indices=[0, 1, 0], values=[1.0, 2.0, 3.0]), "indptr", "end at len(indices) = 3"),
        (dict(indptr=[0, 3, 2, 3], indices=[0, 1, 2], values=[1.0, 2.0, 3.0]), "indptr", "non-decreasing"),
        (dict(indptr=[0, 2, 3], indices=[0, 1, 0], values=[1.0, np.nan, 3.0]), "values", "finite"),
        (dict(indptr=[0, 2, 3], indices=[0, 1, 0], values=[1.0, 2.0]), "values", "one value per index"),
        (dict(indptr=[0, 2, 3], indices=[0.0, 1.0, 0.0], values=[1.0, 2.0, 3.0]), "indices", "integer"),
    ],
)
def test_bad_candidate_lists_name_the_parameter(kwargs, parameter, fragment):
    with pytest.raises(InvalidProblemError) as info:
        als.SparseProblem(n_experts=3, client_capacity=1, **kwargs)
    assert info.value.parameter == parameter
    assert fragment in str(info.value)


def test_methods_without_a_sparse_path_say_so():
    sp = als.SparseProblem.from_dense(als.generate("uniform", 20, 4, 2, seed=0), 2)
    with pytest.raises(InvalidProblemError, match="to_dense"):
        als.solve(sp, "cpsat")
    with pytest.raises(InvalidProblemError, match="load_penalty"):
        als.solve(
            als.SparseProblem([0, 1], [0], [1.0], 1, 1, load_penalty=0.1),
            "greedy",
        )


def test_flow_handles_a_load_penalty_on_the_sparse_form():
    problem = als.generate("skewed", 120, 8, 2, seed=4, load_penalty=0.05)
    sparse = als.SparseProblem.from_dense(problem, 8)
    assert als.solve(sparse, "flow").objective == pytest.approx(als.solve(problem, "flow").objective, rel=1e-9)


def test_verify_rejects_pairs_off_the_list_and_broken_bounds():
    sp = als.SparseProblem([0, 2, 3], [0, 1, 1], [1.0, 2.0, 3.0], 2, 1, expert_max=1)
    with pytest.raises(ConstraintViolation, match="not listed"):
        als.verify(sp, np.array([[False, False], [True, False]]))
    with pytest.raises(ConstraintViolation, match="expert_max"):
        als.verify(sp, np.array([[False, True], [False, True]]))
    als.verify(sp, np.array([[True, False], [False, True]]))


def test_sparse_assignment_views_match_the_dense_ones():
    problem = als.generate("lowrank", 80, 7, 2, seed=9)
    dense = als.solve(problem, "flow")
    sparse = als.solve(als.SparseProblem.from_dense(problem, 7), "flow")
    assert np.array_equal(sparse.loads, dense.loads)
    assert np.array_equal(sparse.counts, dense.counts)
    assert sparse.by_client() == dense.by_client()
    assert np.array_equal(sparse.clients_of(3), dense.clients_of(3))
    assert sparse.n_pairs == dense.n_pairs
    back = als.Assignment.from_json(sparse.to_json())
    assert np.array_equal(back.pairs, dense.pairs)


def test_auto_picks_a_sparse_method():
    sp = als.SparseProblem.from_dense(als.generate("uniform", 50, 6, 2, seed=1), 3)
    assert als.solve(sp).method == "flow"


def test_generate_sparse_is_the_top_m_of_its_dense_twin():
    sparse = als.generate_sparse(3000, 40, 3, 6, seed=4, values_dtype="float64")
    dense = als.generate_sparse(3000, 40, 3, 6, seed=4, dense=True)
    again = als.SparseProblem.from_dense(dense, 6)
    assert np.array_equal(sparse.indices, again.indices)
    assert np.array_equal(sparse.values, again.values)
    assert np.array_equal(sparse.indptr, again.indptr)
    assert sparse.nnz == 3000 * 6 and sparse.indices.dtype == np.int32
    with pytest.raises(InvalidProblemError, match="capacity"):
        als.generate_sparse(10, 8, 5, 4)


def test_greedy_walk_in_many_chunks_equals_one_sorted_walk():
    problem = als.generate_sparse(4000, 64, 4, 12, seed=2, values_dtype="float64")
    one = als.solve(problem, "greedy", chunk=problem.nnz)
    many = als.solve(problem, "greedy", chunk=500)
    assert many.stats["chunks"] > one.stats["chunks"] == 1
    assert np.array_equal(one.pairs, many.pairs)
    # and a plain reference: walk every non-negative entry in decreasing value
    order = np.argsort(-problem.values, kind="stable")
    counts = np.zeros(problem.n_clients, int)
    loads = np.zeros(problem.n_experts, int)
    value = 0.0
    for k in order:
        i, j, v = problem.rows[k], problem.indices[k], problem.values[k]
        if v < 0:
            break
        if counts[i] < problem.client_capacity[i] and loads[j] < problem.expert_max[j]:
            counts[i] += 1
            loads[j] += 1
            value += v
    assert one.objective == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize(("family", "frac", "m"), [("skewed", 0.0, 4), ("lowrank", 0.5, 5), ("tight", 0.0, 6)])
def test_sparse_sinkhorn_is_the_dense_sinkhorn_of_the_restricted_problem(family, frac, m):
    problem = als.generate(family, 300, 16, 3, seed=6, expert_min_frac=frac)
    sparse = als.SparseProblem.from_dense(problem, m)
    answer = als.solve(sparse, "sinkhorn")
    als.verify(sparse, answer)
    restricted = als.solve(sparse.to_dense(), "sinkhorn")
    optimum = als.solve(sparse, "flow").objective
    assert answer.bound == pytest.approx(restricted.bound, rel=1e-9)
    assert answer.bound >= optimum - 1e-9 >= answer.objective - 2e-9
    assert answer.objective >= optimum * (1 - 0.01)
    assert answer.stats["backend"] == "numpy" and answer.stats["rounding"].startswith("sparse greedy")


def test_sparse_sinkhorn_on_torch_cpu_matches_numpy():
    pytest.importorskip("torch", reason="torch is the optional [torch] extra")
    sparse = als.generate_sparse(3000, 48, 3, 8, seed=1)
    a = als.solve(sparse, "sinkhorn")
    b = als.solve(sparse, "sinkhorn", device="cpu")
    assert b.stats["backend"] == "torch" and a.stats["backend"] == "numpy"
    assert b.objective == pytest.approx(a.objective, rel=1e-6)
    assert b.bound == pytest.approx(a.bound, rel=1e-6)
    als.verify(sparse, b)


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "scatter"])
def test_sparse_sinkhorn_on_torch_matches_numpy_on_ragged_lists(grouped, monkeypatch):
    # Rows of 0 to 8 entries: torch's grouped layout reduces by segment_reduce (the
    # equal-width shortcut does not apply) and its scatter layout by index_add_; both
    # are the same updates as numpy's compiled ones.
    pytest.importorskip("torch", reason="torch is the optional [torch] extra")
    from alignsolve.solvers.sinkhorn import ops

    monkeypatch.setattr(ops._Torch, "sorted_segments", grouped)
    rng = np.random.default_rng(4)
    full = als.generate_sparse(600, 24, 2, 8, seed=2)
    keep = rng.random(full.nnz) < 0.7
    keep[full.indptr[5] : full.indptr[9]] = False  # four clients list nothing
    counts = np.add.reduceat(keep, full.indptr[:-1])
    indptr = np.concatenate([[0], np.cumsum(counts)])
    capacity = np.minimum(2, counts)
    sparse = als.SparseProblem(indptr, full.indices[keep], full.values[keep], 24, capacity)
    a = als.solve(sparse, "sinkhorn")
    b = als.solve(sparse, "sinkhorn", device="cpu")
    als.verify(sparse, b)
    assert b.stats["backend"] == "torch" and b.stats["sweeps"] == a.stats["sweeps"]
    assert b.objective == pytest.approx(a.objective, rel=1e-9)
    assert b.bound == pytest.approx(a.bound, rel=1e-9)


def test_sparse_sinkhorn_handles_empty_rows_closed_lines_and_infeasibility():
    # client 1 lists nothing, client 3 has no capacity, expert 2 is closed (expert_max 0)
    indptr, indices = [0, 2, 2, 5, 7, 9], [0, 2, 0, 1, 2, 1, 3, 0, 3]
    values = [0.9, 0.8, 0.7, 0.6, 0.95, 0.5, 0.4, 0.3, 0.2]
    sp = als.SparseProblem(indptr, indices, values, 4, [1, 1, 2, 0, 1], expert_max=[2, 2, 0, 2])
    answer = als.solve(sp, "sinkhorn")
    als.verify(sp, answer)
    assert answer.objective == pytest.approx(als.solve(sp, "flow").objective)
    assert answer.loads[2] == 0 and answer.counts[1] == answer.counts[3] == 0
    # expert 3 needs three clients but only two list it: flow's repair reports why
    hard = als.SparseProblem(indptr, indices, values, 4, [1, 1, 2, 1, 1], expert_min=[0, 0, 0, 3])
    refused = als.solve(hard, "sinkhorn")
    assert refused.status == "infeasible" and not refused.has_solution
    with pytest.raises(InvalidProblemError, match="load_penalty"):
        als.solve(als.SparseProblem([0, 1], [0], [1.0], 1, 1, load_penalty=0.1), "sinkhorn")


def test_sparse_sinkhorn_on_cuda():
    torch = pytest.importorskip("torch", reason="torch is the optional [torch] extra")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine (the CUDA path is benchmarked on a lent GPU)")
    sparse = als.generate_sparse(20000, 128, 4, 16, seed=3)
    gpu = als.solve(sparse, "sinkhorn", device="cuda")
    als.verify(sparse, gpu)
    assert gpu.stats["device"].startswith("cuda")
    assert gpu.objective >= als.solve(sparse, "flow").objective * (1 - 1e-3)
