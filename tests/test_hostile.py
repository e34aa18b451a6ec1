"""Hostile and careless input against every public entry point of alignsolve.

Each test states a promise: a bad input raises InvalidProblemError naming the parameter
(never another exception, never a silent guess), and whatever is accepted is answered
truthfully (``optimal`` proven, a ``bound`` at least the optimum, every answer verified).
"""

from __future__ import annotations

import io
import json
import math
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import alignsolve as als
from alignsolve import Assignment, InvalidProblemError, Problem, SparseProblem
from alignsolve.solvers import METHODS

EXACT = ("flow", "cpsat", "milp")
HYPO = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def tiny(**kw):
    rng = np.random.default_rng(3)
    return Problem(rng.random((5, 3)), 2, expert_max=4, **kw)


def optimum(problem):
    return als.solve(problem, "flow").objective


def assert_truthful(problem, answer, best=None):
    """The promises of a status: a verified answer, a bound at least the optimum, optimal = proven."""
    if answer.has_solution:
        als.verify(problem, answer)
    if best is not None and answer.has_solution:
        assert answer.objective <= best + 1e-9 * max(1.0, abs(best))
    if answer.bound is not None and best is not None:
        assert answer.bound >= best - 1e-9 * max(1.0, abs(best))
    if answer.status == "optimal" and best is not None:
        assert answer.objective == pytest.approx(best, rel=1e-6, abs=1e-12 * max(1.0, abs(best)))


# -- wrong claims -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "limit"), [("cpsat", 0.05), ("cpsat", 0.5), ("milp", 0.3), ("milp", 1.0)])
def test_exact_methods_cut_short_never_claim_optimal_nor_return_less_than_greedy(method, limit):
    problem = als.generate("budget", 1000, 32, 4, seed=0)
    greedy = als.solve(problem, "greedy")
    answer = als.solve(problem, method, time_limit=limit)
    als.verify(problem, answer)
    assert answer.objective >= greedy.objective  # never less than the hint / fallback
    if answer.bound is not None:
        assert answer.bound >= answer.objective and answer.bound >= greedy.objective
    if answer.status == "optimal":
        assert answer.gap is not None and answer.gap <= 1e-9


def test_cpsat_stopped_before_a_solution_returns_its_hint():
    problem = als.generate("uniform", 1000, 32, 4, seed=0, expert_min_frac=0.5)
    answer = als.solve(problem, "cpsat", time_limit=0.05)
    assert answer.has_solution
    als.verify(problem, answer)
    assert answer.bound is None or answer.bound >= answer.objective


def test_milp_is_right_at_tiny_and_huge_scales():
    rng = np.random.default_rng(0)
    small = Problem(rng.random((4, 3)) * 1e-7, 1, expert_max=2)
    answer = als.solve(small, "milp")
    assert answer.status == "optimal" and answer.objective == pytest.approx(optimum(small), rel=1e-9)
    big = Problem([[1e22, 2e22]], 1)
    answer = als.solve(big, "milp")
    assert answer.status == "optimal" and answer.objective == 2e22


@pytest.mark.parametrize("method", ["flow", "cpsat"])
@pytest.mark.parametrize("scale", [-1, 0, math.nan, math.inf, "2", True])
def test_bad_integer_scale_is_refused(method, scale):
    with pytest.raises(InvalidProblemError) as info:
        als.solve(tiny(), method, scale=scale)
    assert info.value.parameter == "scale"


@pytest.mark.parametrize("method", ["flow", "cpsat"])
def test_a_scale_that_overflows_int64_is_refused(method):
    with pytest.raises(InvalidProblemError, match="scale"):
        als.solve(tiny(), method, scale=2.0**80)


@pytest.mark.parametrize("capacity", [10**9, 2**62])
def test_huge_capacities_mean_no_limit(capacity):
    rng = np.random.default_rng(1)
    problem = Problem(rng.random((6, 3)), capacity, expert_max=capacity)
    assert problem.client_capacity.max() == 3 and problem.expert_max.max() == 6
    assert als.diagnose(problem) is None
    best = optimum(problem)
    assert best == pytest.approx(problem.fitness.sum())
    for method in [m for m in als.available_methods() if m != "auto"]:
        answer = als.solve(problem, method)
        assert answer.has_solution, method
        assert_truthful(problem, answer, best)


def test_lower_bounds_beyond_int32_are_refused_by_name():
    with pytest.raises(InvalidProblemError) as info:
        Problem(np.ones((2, 2)), 2**40, client_min=2**40)
    assert info.value.parameter == "client_min"


def test_problem_sparse_and_assignment_arrays_stay_immutable():
    problem = tiny()
    sparse = SparseProblem.from_dense(problem, 2)
    answer = als.solve(problem, "flow")
    sparse_answer = als.solve(sparse, "greedy")
    arrays = [getattr(problem, f) for f in ("fitness", "client_capacity", "client_min", "expert_min", "expert_max")]
    arrays += [problem.allowed, sparse.indptr, sparse.indices, sparse.values, sparse.rows, answer.matrix]
    arrays += [sparse_answer.matrix.data, sparse_answer.matrix.indices, sparse_answer.matrix.indptr]
    for arr in arrays:
        with pytest.raises(ValueError):
            arr.flags.writeable = True
        with pytest.raises(ValueError):
            arr[...] = 0


def test_an_infeasible_answer_carries_a_certificate_whatever_the_method():
    problem = Problem(np.ones((3, 2)), 1, expert_min=[3, 1])  # 4 slots needed, 3 exist
    for method in [m for m in als.available_methods() if m != "auto"]:
        if method == "random":
            continue
        answer = als.solve(problem, method)
        assert answer.status == "infeasible", method
        assert answer.stats["certificate"]["required"] > answer.stats["certificate"]["available"], method


# -- options ----------------------------------------------------------------------------------------------

BAD_OPTIONS = [
    ("sinkhorn", "eps_decay", 2.0),
    ("sinkhorn", "eps_decay", 1.0),
    ("sinkhorn", "eps", 0),
    ("sinkhorn", "eps", -1),
    ("sinkhorn", "eps", math.nan),
    ("sinkhorn", "max_sweeps", -3),
    ("sinkhorn", "tol", -1e-3),
    ("sinkhorn", "line_iters", 0),
    ("sinkhorn", "device", 3),
    ("sinkhorn", "dtype", "float16"),
    ("greedy", "chunk", -5),
    ("greedy", "local_search", -1),
    ("greedy", "local_search", 1.5),
    ("milp", "mip_rel_gap", -0.1),
    ("milp", "mip_rel_gap", math.inf),
    ("cpsat", "workers", -1),
    ("cpsat", "workers", 0),
    ("cpsat", "hint", "x"),
    ("cpsat", "lagrangian", "no"),
    ("flow", "pricing", "yes"),
    ("flow", "margin", math.nan),
    ("flow", "margin", -1.0),
    ("flow", "candidates", 0),
    ("lp", "solver", "HIGHS"),
    ("lp", "solver", 3),
]


@pytest.mark.parametrize(("method", "option", "value"), BAD_OPTIONS)
def test_every_bad_option_is_refused_by_name(method, option, value):
    if method not in als.available_methods():
        pytest.skip(f"{method} is not installed")
    with pytest.raises(InvalidProblemError) as info:
        als.solve(tiny(), method, **{option: value})
    assert info.value.parameter == option
    assert option in str(info.value)


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(), max_size=2),
)
OPTIONS = [
    (name, option)
    for name, spec in METHODS.items()
    for option in spec.options
    if option not in ("warm_start",) and name in als.available_methods()
]


@pytest.mark.parametrize(("method", "option"), OPTIONS)
@given(value=ANY_VALUE)
@HYPO
def test_any_option_value_is_refused_by_name_or_answered_truthfully(method, option, value):
    problem = tiny()
    try:
        answer = als.solve(problem, method, time_limit=5.0, **{option: value})
    except InvalidProblemError as exc:
        assert exc.parameter == option
        return
    assert_truthful(problem, answer, optimum(problem))


def test_unknown_option_is_refused_by_name():
    with pytest.raises(InvalidProblemError) as info:
        als.solve(tiny(), "flow", sclae=2.0)
    assert info.value.parameter == "sclae"


# -- magnitudes -------------------------------------------------------------------------------------------


@given(exponent=st.integers(min_value=-300, max_value=150), seed=st.integers(0, 2**16))
@settings(max_examples=15, deadline=None)
def test_fitness_magnitudes_from_1e_300_to_1e150_solve_correctly(exponent, seed):
    rng = np.random.default_rng(seed)
    problem = Problem(rng.random((6, 3)) * 10.0**exponent, 2, expert_max=3)
    best = optimum(problem)
    assert best == pytest.approx(np.sort(problem.fitness, axis=None)[-6:].sum(), rel=1e-9) or best > 0
    for method in [m for m in als.available_methods() if m not in ("auto", "random")]:
        answer = als.solve(problem, method)
        assert answer.has_solution, method
        assert_truthful(problem, answer, best)
        if method in EXACT:
            assert answer.objective == pytest.approx(best, rel=1e-9), method


@pytest.mark.parametrize("value", [1e151, 1e300, -1e300])
def test_magnitudes_beyond_the_limit_are_refused_with_the_rule(value):
    with pytest.raises(InvalidProblemError, match="magnitude") as info:
        Problem([[value, 1.0]], 1)
    assert info.value.parameter == "fitness"
    with pytest.raises(InvalidProblemError, match="magnitude"):
        SparseProblem([0, 1], [0], [value], 2, 1)
    with pytest.raises(InvalidProblemError, match="at most"):
        Problem([[1.0, 1.0]], 1, load_penalty=abs(value))


@pytest.mark.parametrize("unit", [1e-300, 1e-9, 1.0, 1e149])
def test_costs_and_budgets_of_any_magnitude_solve(unit):
    # The budget tolerance is relative: scaling every cost and budget changes nothing.
    best = 5.0
    fitness = [[1.0, 2.0], [2.0, 1.0]]
    problem = Problem(fitness, 2, cost=np.array([[1.0, 2.0]] * 2) * unit, budget=np.array([2.0, 3.0]) * unit)
    for method in ("cpsat", "milp", "greedy"):
        answer = als.solve(problem, method)
        als.verify(problem, answer)
        if method != "greedy":
            assert answer.status == "optimal" and answer.objective == pytest.approx(best), method


# -- the sparse form ------------------------------------------------------------------------------------


def test_sparse_complex_values_are_refused():
    with pytest.raises(InvalidProblemError, match="real") as info:
        SparseProblem([0, 1], [0], np.array([1 + 2j]), 2, 1)
    assert info.value.parameter == "values"


def test_sparse_infeasibility_has_a_certificate_and_diagnose_takes_it():
    sparse = SparseProblem([0, 1, 2], [0, 0], [1.0, 1.0], 2, 1, expert_min=[0, 1])  # expert 1 is listed by nobody
    cert = als.diagnose(sparse)
    assert cert is not None and cert.required > cert.available
    for method in ("flow", "greedy", "sinkhorn"):
        answer = als.solve(sparse, method)
        assert answer.status == "infeasible" and "certificate" in answer.stats, method
    feasible = SparseProblem([0, 1, 2], [0, 1], [1.0, 1.0], 2, 1, expert_min=[0, 1])
    assert als.diagnose(feasible) is None


# -- files: Problem.load ----------------------------------------------------------------------------------


def _npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _hostile_files():
    good = json.loads(tiny().to_json())
    yield "version.json", json.dumps(good | {"version": 1.5}).encode()
    yield "version_str.json", json.dumps(good | {"version": "1"}).encode()
    yield "future.json", json.dumps(good | {"version": 99}).encode()
    yield "counts.json", json.dumps(good | {"n_clients": 7}).encode()
    yield "counts2.json", json.dumps(good | {"n_experts": 2}).encode()
    yield "nested.json", b"[" * 100_000 + b"]" * 100_000
    yield "nested_field.json", json.dumps(good | {"fitness": [[[[[[1.0]]]]]]}).encode()
    yield "latin1.json", b'{"format": "alignsolve.problem", "caf\xe9": 1}'
    yield "digits.json", b'{"fitness": [[' + b"9" * 5000 + b"]], " + b'"client_capacity": 1}'
    yield "array.json", b"[1, 2, 3]"
    yield "empty.json", b""
    yield "ragged.json", json.dumps(good | {"fitness": [[1.0, 2.0], [3.0]]}).encode()
    yield "strings.json", json.dumps(good | {"fitness": [["a", "b"]]}).encode()
    fit = np.ones((2, 2))
    yield "v99.npz", _npz_bytes(fitness=fit, client_capacity=np.int64(1), version=np.int64(99))
    yield "vfrac.npz", _npz_bytes(fitness=fit, client_capacity=np.int64(1), version=np.float64(1.5))
    yield "object.npz", _hostile_object_npz()
    yield "corrupt.npz", _npz_bytes(fitness=fit, client_capacity=np.int64(1))[:-40]
    yield "garbage.npz", b"PK\x03\x04" + b"\x00" * 100
    yield "notzip.npz", b"\x93NUMPY not a zip"
    yield "hugeheader.npz", _huge_header_npz()
    yield "extra.npz", _npz_bytes(fitness=fit, client_capacity=np.int64(1), junk=np.zeros(3))


def _hostile_object_npz():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        inner = io.BytesIO()
        np.save(inner, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        zf.writestr("fitness.npy", inner.getvalue())
    return buf.getvalue()


def _huge_header_npz():
    """A member whose header declares a (10**6, 10**6) float64 array but stores 16 bytes."""
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}
    inner = io.BytesIO()
    np.lib.format.write_array_header_1_0(inner, header)
    inner.write(b"\x00" * 16)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("fitness.npy", inner.getvalue())
        cap = io.BytesIO()
        np.save(cap, np.int64(1))
        zf.writestr("client_capacity.npy", cap.getvalue())
    return buf.getvalue()


@pytest.mark.parametrize(("name", "content"), list(_hostile_files()), ids=[n for n, _ in _hostile_files()])
def test_hostile_problem_files_are_refused_by_name(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidProblemError):
        Problem.load(path)


def test_a_file_beyond_max_bytes_is_refused_before_reading(tmp_path):
    path = tiny().save(tmp_path / "p.npz")
    with pytest.raises(InvalidProblemError, match="max_bytes"):
        Problem.load(path, max_bytes=64)


# -- Assignment.from_json ---------------------------------------------------------------------------------


def _assignment_doc(**changes):
    doc = json.loads(als.solve(tiny(), "flow").to_json())
    doc.update(changes)
    return doc


@pytest.mark.parametrize(
    ("changes", "parameter"),
    [
        ({"pairs": [[0, 1, 2]]}, "pairs"),
        ({"pairs": [0, 1, 2, 3]}, "pairs"),
        ({"pairs": [[0.5, 1]]}, "pairs"),
        ({"pairs": [[0, 1], [0, 1]]}, "pairs"),
        ({"pairs": [[-1, 0]]}, "pairs"),
        ({"pairs": [[9, 0]]}, "pairs"),
        ({"pairs": [[True, 0]]}, "pairs"),
        ({"status": "optimal", "objective": None}, "objective"),
        ({"status": "infeasible"}, "matrix"),
        ({"bound": 0.5}, "bound"),
        ({"status": "solved"}, "status"),
        ({"n_clients": -1}, "n_clients"),
        ({"n_clients": 2.5}, "n_clients"),
        ({"n_experts": "3"}, "n_experts"),
        ({"version": 2}, "version"),
        ({"objective": "high"}, "objective"),
        ({"stats": [1, 2]}, "stats"),
        ({"client_ids": [{"a": 1}] * 5}, "client_ids"),
        ({"format": "something.else"}, "format"),
    ],
)
def test_tampered_assignments_are_refused_by_name(changes, parameter):
    with pytest.raises(InvalidProblemError) as info:
        Assignment.from_json(json.dumps(_assignment_doc(**changes)))
    assert info.value.parameter == parameter


@pytest.mark.parametrize("text", [b"\xff\xfe", b"[" * 50_000, b"not json", b"[]"])
def test_assignment_text_that_is_not_a_document_is_refused(text):
    with pytest.raises(InvalidProblemError):
        Assignment.from_json(text)


def test_a_huge_stated_shape_does_not_allocate_n_by_e():
    doc = _assignment_doc(n_clients=10**6, n_experts=10**5, pairs=[[5, 7]], status="feasible", bound=None, gap=None)
    answer = Assignment.from_json(json.dumps(doc))
    assert answer.is_sparse and answer.shape == (10**6, 10**5) and answer.pairs.tolist() == [[5, 7]]
    with pytest.raises(InvalidProblemError) as info:
        Assignment.from_json(json.dumps(doc | {"n_clients": 10**9}))
    assert info.value.parameter == "n_clients"


def test_assignment_round_trips():
    answer = als.solve(tiny(), "flow")
    again = Assignment.from_json(answer.to_json())
    assert again.pairs.tolist() == answer.pairs.tolist() and again.status == answer.status


# -- problems from hypothesis: never anything but InvalidProblemError ---------------------------------------

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)


@given(
    fitness=st.one_of(
        st.lists(st.lists(NUMBERS, min_size=0, max_size=3), max_size=3),
        NUMBERS,
    ),
    capacity=NUMBERS,
    lower=NUMBERS,
    upper=st.one_of(NUMBERS, st.lists(NUMBERS, max_size=3)),
    penalty=NUMBERS,
)
@settings(max_examples=150, deadline=None)
def test_problem_construction_accepts_or_names_the_parameter(fitness, capacity, lower, upper, penalty):
    try:
        problem = Problem(fitness, capacity, client_min=lower, expert_max=upper, load_penalty=penalty)
    except InvalidProblemError as exc:
        assert exc.parameter in ("fitness", "client_capacity", "client_min", "expert_max", "expert_min", "load_penalty")
        return
    answer = als.solve(problem, "flow")
    if answer.has_solution:
        als.verify(problem, answer)


@given(
    indptr=st.lists(st.integers(-2, 6), min_size=0, max_size=4),
    indices=st.lists(st.integers(-2, 4), max_size=5),
    values=st.lists(st.one_of(st.floats(allow_nan=True), st.complex_numbers(max_magnitude=1e3)), max_size=5),
    n_experts=st.one_of(st.integers(-1, 4), st.floats(), st.booleans()),
)
@settings(max_examples=150, deadline=None)
def test_sparse_construction_accepts_or_names_the_parameter(indptr, indices, values, n_experts):
    try:
        sparse = SparseProblem(indptr, indices, values, n_experts, 1)
    except InvalidProblemError as exc:
        assert exc.parameter in ("indptr", "indices", "values", "n_experts")
        return
    answer = als.solve(sparse, "flow")
    assert answer.status in ("optimal", "infeasible")


@given(
    warm=st.one_of(
        st.none(),
        st.lists(st.lists(st.integers(-1, 2), min_size=3, max_size=3), min_size=5, max_size=5),
        st.text(max_size=3),
        st.integers(),
    ),
    seed=st.one_of(st.none(), st.integers(-3, 3), st.floats(), st.booleans()),
    limit=st.one_of(st.none(), st.floats(allow_nan=True), st.integers(-1, 3), st.text(max_size=2)),
    method=st.sampled_from(["auto", "flow", "greedy", "cpsat", "Flow", "", "simplex", 3]),
)
@settings(max_examples=100, deadline=None)
def test_solve_arguments_are_accepted_or_refused_by_name(warm, seed, limit, method):
    problem = tiny()
    try:
        answer = als.solve(problem, method, time_limit=limit, seed=seed, warm_start=warm)
    except InvalidProblemError as exc:
        assert exc.parameter in ("method", "time_limit", "seed", "warm_start")
        return
    assert_truthful(problem, answer, optimum(problem))
