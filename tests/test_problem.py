"""The problem model: validation, immutability, serialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest

import alignsolve as als
from alignsolve import InvalidProblemError

F = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]


def bad(parameter, match=None, **kwargs):
    args = {"fitness": F, "client_capacity": 1, **kwargs}
    fitness, capacity = args.pop("fitness"), args.pop("client_capacity")
    with pytest.raises(InvalidProblemError, match=match) as info:
        als.Problem(fitness, capacity, **args)
    assert info.value.parameter == parameter
    assert isinstance(info.value, ValueError)
    assert parameter in str(info.value) and "got" in str(info.value)
    return info.value


def test_defaults_and_broadcasting():
    p = als.Problem(F, 2)
    assert p.shape == (3, 2)
    assert p.client_capacity.tolist() == [2, 2, 2]
    assert p.client_min.tolist() == [0, 0, 0]
    assert p.expert_min.tolist() == [0, 0] and p.expert_max.tolist() == [3, 3]
    assert p.allowed.all() and p.load_penalty == 0 and not p.is_generalised
    g = als.Problem(F, 2, cost=[1.0, 2.0], budget=3)
    assert g.is_generalised and g.cost.shape == (3, 2) and g.budget.tolist() == [3.0, 3.0, 3.0]


@pytest.mark.parametrize(
    "fitness,match",
    [
        ([[1.0, np.nan]], "finite"),
        ([[1.0, np.inf]], "finite"),
        ([1.0, 2.0], "2-D"),
        ([[]], "at least one"),
        ([["a", "b"]], "numeric"),
        ([[True, False]], "boolean"),
        ([[1 + 1j, 2]], "real"),
    ],
)
def test_bad_fitness(fitness, match):
    bad("fitness", match, fitness=fitness)


def test_nan_position_is_reported():
    err = bad("fitness", fitness=[[1.0, 2.0], [3.0, np.nan]])
    assert "(1, 1)" in str(err)


@pytest.mark.parametrize(
    "param,value,match",
    [
        ("client_capacity", -1, ">= 0"),
        ("client_capacity", [1, 2], r"shape \(3,\)"),
        ("client_capacity", 1.5, "integers"),
        ("client_capacity", np.nan, "finite"),
        ("client_min", [0, 2, 0], "<= client_capacity"),
        ("client_min", -1, ">= 0"),
        ("expert_min", [4, 0], "<= expert_max"),
        ("expert_max", [-1, 2], ">= 0"),
        ("expert_max", [1, 2, 3], r"shape \(2,\)"),
        ("allowed", [[1, 0], [1, 1], [0, 1]], "boolean"),
        ("allowed", np.ones((2, 2), bool), r"shape \(3, 2\)"),
        ("load_penalty", -0.5, ">= 0"),
        ("load_penalty", float("nan"), "finite"),
        ("load_penalty", "big", "real number"),
    ],
)
def test_bad_fields(param, value, match):
    kwargs = {param: value}
    if param == "client_capacity":
        bad(param, match, client_capacity=value)
    else:
        bad(param, match, **kwargs)


def test_generalised_fields():
    bad("budget", "together", cost=[[1, 1]] * 3)
    bad("cost", "together", budget=1.0)
    bad("cost", ">= 0", cost=[-1.0, 1.0], budget=1.0)
    bad("cost", "shape", cost=[1.0, 1.0, 1.0], budget=1.0)
    bad("budget", "finite", cost=[1.0, 1.0], budget=np.inf)


def test_integral_floats_are_accepted_for_counts():
    p = als.Problem(F, np.array([1.0, 2.0, 0.0]))
    assert p.client_capacity.dtype == np.int64 and p.client_capacity.tolist() == [1, 2, 0]


def test_callers_arrays_are_never_modified_and_problem_is_immutable():
    fit = np.array(F)
    cap = np.array([1, 1, 1])
    allowed = np.ones((3, 2), bool)
    before = (fit.copy(), cap.copy(), allowed.copy())
    p = als.Problem(fit, cap, allowed=allowed)
    for method in ("flow", "greedy", "random"):
        als.solve(p, method, seed=0)
    assert np.array_equal(fit, before[0]) and np.array_equal(cap, before[1]) and np.array_equal(allowed, before[2])
    assert fit.flags.writeable  # the caller's array is untouched, including its flags
    fit[0, 0] = 100.0  # and the problem holds its own copy
    assert p.fitness[0, 0] == 1.0
    with pytest.raises(ValueError):
        p.fitness[0, 0] = 5.0
    with pytest.raises(AttributeError):
        p.load_penalty = 3.0  # type: ignore[misc]


def test_replace_validates_again():
    p = als.Problem(F, 1)
    q = p.replace(expert_max=[1, 1])
    assert q.expert_max.tolist() == [1, 1] and p.expert_max.tolist() == [3, 3]
    with pytest.raises(InvalidProblemError, match="expert_min"):
        p.replace(expert_min=[5, 0])
    with pytest.raises(InvalidProblemError, match="replace"):
        p.replace(nonsense=1)


def test_relabel_reorders_every_field_and_keeps_the_objective():
    p = _full_problem()
    clients, experts = np.array([3, 0, 4, 1, 2]), np.array([2, 0, 1])
    q = p.relabel(clients, experts)
    assert q.load_penalty == p.load_penalty
    for name in ("fitness", "allowed", "cost"):
        assert np.array_equal(getattr(q, name), getattr(p, name)[np.ix_(clients, experts)])
    for name in ("client_capacity", "client_min", "budget"):
        assert np.array_equal(getattr(q, name), getattr(p, name)[clients])
    for name in ("expert_min", "expert_max"):
        assert np.array_equal(getattr(q, name), getattr(p, name)[experts])
    y = np.random.default_rng(1).random(q.shape) < 0.5
    x = np.zeros(p.shape, dtype=bool)
    x[np.ix_(clients, experts)] = y
    assert q.objective(y) == pytest.approx(p.objective(x))
    assert p.relabel(np.arange(5), np.arange(3)) == p
    for bad_clients, bad_experts, name in (
        ([0, 1, 2, 3], [0, 1, 2], "clients"),  # too short
        ([0, 1, 2, 3, 3], [0, 1, 2], "clients"),  # a repeat
        ([0.0, 1.0, 2.0, 3.0, 4.0], [0, 1, 2], "clients"),  # not integers
        (np.arange(5), [0, 1, 3], "experts"),  # out of range
    ):
        with pytest.raises(InvalidProblemError, match=rf"{name}: must be a permutation of range"):
            p.relabel(bad_clients, bad_experts)


def _full_problem():
    rng = np.random.default_rng(0)
    return als.Problem(
        rng.random((5, 3)),
        [1, 2, 3, 0, 2],
        client_min=[1, 0, 1, 0, 0],
        expert_min=[1, 0, 2],
        expert_max=[4, 3, 5],
        allowed=rng.random((5, 3)) < 0.8,
        load_penalty=0.25,
        cost=rng.random((5, 3)),
        budget=rng.random(5) * 2,
    )


def test_json_round_trip_is_lossless():
    p = _full_problem()
    q = als.Problem.from_json(p.to_json())
    assert p == q
    assert np.array_equal(p.fitness, q.fitness)  # bit-exact floats
    doc = json.loads(als.Problem(F, 1).to_json())
    assert doc["allowed"] is None and doc["format"] == "alignsolve.problem"


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_save_load_round_trip(tmp_path, suffix):
    p = _full_problem()
    path = p.save(tmp_path / f"p{suffix}")
    assert als.Problem.load(path) == p


def test_npz_with_objects_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(
        path,
        fitness=np.array([[1.0]]),
        client_capacity=np.array([1]),
        expert_min=np.array([{"payload": 1}], dtype=object),
    )
    with pytest.raises(InvalidProblemError, match="never unpickles"):
        als.Problem.load(path)


@pytest.mark.parametrize(
    "text,param",
    [
        ("{not json", "text"),
        ("[1, 2]", "text"),
        ('{"fitness": [[1.0]]}', "client_capacity"),
        ('{"fitness": [[1.0]], "client_capacity": 1, "colour": "red"}', "JSON document"),
        ('{"format": "other", "fitness": [[1.0]], "client_capacity": 1}', "format"),
        ('{"version": 99, "fitness": [[1.0]], "client_capacity": 1}', "version"),
        ('{"fitness": [[1.0]], "client_capacity": 1, "load_penalty": "abc"}', "load_penalty"),
        ('{"fitness": [[1.0]], "client_capacity": 1, "load_penalty": true}', "load_penalty"),
        ('{"fitness": [[1.0]], "client_capacity": 1, "load_penalty": [1, 2]}', "load_penalty"),
    ],
)
def test_bad_json(text, param):
    with pytest.raises(InvalidProblemError) as info:
        als.Problem.from_json(text)
    assert info.value.parameter == param


def test_bad_paths(tmp_path):
    with pytest.raises(InvalidProblemError, match="existing file"):
        als.Problem.load(tmp_path / "missing.json")
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(InvalidProblemError, match=r"\.json or \.npz"):
        als.Problem.load(tmp_path / "p.txt")
    with pytest.raises(InvalidProblemError, match=r"\.json or \.npz"):
        als.Problem(F, 1).save(tmp_path / "p.csv")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(InvalidProblemError, match="readable"):
        als.Problem.load(tmp_path / "broken.npz")


def test_objective_includes_penalty():
    p = als.Problem([[1.0, 2.0], [3.0, 4.0]], 2, load_penalty=0.5)
    x = np.array([[True, True], [False, True]])
    assert p.objective(x) == pytest.approx(1 + 2 + 4 - 0.5 * (1 + 4))
