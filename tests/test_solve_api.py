"""The entry point's argument checking, the registry and the verifier."""

from __future__ import annotations

import numpy as np
import pytest

import alignsolve as als
from alignsolve import ConstraintViolation, InvalidProblemError, MethodUnavailableError
from alignsolve.solvers import METHODS, MethodSpec


def small():
    return als.Problem([[1.0, 2.0], [3.0, 4.0]], 1)


def test_available_methods_lists_the_installed_ones():
    names = als.available_methods()
    assert names[0] == "auto" and {"flow", "greedy", "random"} <= set(names)
    info = {m["name"]: m for m in als.method_info()}
    assert info["flow"]["guarantee"] == "exact"


def test_unknown_method_names_the_choices():
    with pytest.raises(InvalidProblemError, match="must be one of auto, flow") as info:
        als.solve(small(), "simplex")
    assert info.value.parameter == "method"


def test_missing_extra_gives_the_pip_command(monkeypatch):
    monkeypatch.setitem(
        METHODS,
        "fake",
        MethodSpec("fake", "alignsolve.solvers.fake", ("no_such_pkg_xyz",), "cvxpy", "bound", True, "test double"),
    )
    with pytest.raises(MethodUnavailableError, match=r'pip install "alignsolve\[cvxpy\]"'):
        als.solve(small(), "fake")
    assert "fake" not in als.available_methods()


@pytest.mark.parametrize(
    "kwargs,param",
    [
        (dict(time_limit=0), "time_limit"),
        (dict(time_limit=-1.0), "time_limit"),
        (dict(time_limit="soon"), "time_limit"),
        (dict(seed=-1), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(chunk_size=3), "chunk_size"),
    ],
)
def test_bad_solve_arguments(kwargs, param):
    with pytest.raises(InvalidProblemError) as info:
        als.solve(small(), "greedy", **kwargs)
    assert info.value.parameter == param


def test_problem_must_be_a_problem():
    with pytest.raises(InvalidProblemError, match=r"alignsolve\.Problem"):
        als.solve([[1.0]], "flow")  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["flow", "random", "sinkhorn"])
def test_generalised_variant_is_refused_with_a_pointer(method):
    p = als.Problem([[1.0, 2.0]], 2, cost=[1.0, 1.0], budget=1.0)
    with pytest.raises(InvalidProblemError, match="generalised") as info:
        als.solve(p, method)
    assert "cpsat" in str(info.value) and "milp" in str(info.value)


@pytest.mark.parametrize("method", ["greedy", "cpsat", "milp", "lp", "auto"])
def test_generalised_variant_is_solved(method):
    p = als.Problem([[1.0, 2.0]], 2, cost=[1.0, 1.0], budget=1.0)
    a = als.solve(p, method)
    assert a.objective == 2.0 and a.matrix.tolist() == [[False, True]]


def test_flow_accepts_and_reports_an_ignored_time_limit():
    a = als.solve(small(), "flow", time_limit=5)
    assert a.stats["time_limit_ignored"] is True


def test_verify_lists_every_violation():
    p = als.Problem(
        [[1.0, 2.0], [3.0, 4.0]],
        1,
        client_min=[1, 0],
        expert_min=[0, 1],
        expert_max=[1, 1],
        allowed=np.array([[True, False], [True, True]]),
    )
    x = np.array([[True, True], [False, False]])  # client 0 over capacity, uses a forbidden pair
    with pytest.raises(ConstraintViolation) as info:
        als.verify(p, x)
    text = "\n".join(info.value.violations)
    assert "not allowed" in text and "client_capacity" in text
    y = np.array([[False, False], [True, False]])
    with pytest.raises(ConstraintViolation) as info:
        als.verify(p, y)
    text = "\n".join(info.value.violations)
    assert "client_min" in text and "expert_min" in text
    z = np.array([[True, False], [True, False]])
    with pytest.raises(ConstraintViolation, match="expert_max"):
        als.verify(p, z)
    als.verify(p, np.array([[True, False], [False, True]]))


def test_verify_checks_budgets_shape_and_reported_objective():
    g = als.Problem([[1.0, 2.0]], 2, cost=[[1.0, 2.0]], budget=2.5)
    with pytest.raises(ConstraintViolation, match="budget"):
        als.verify(g, np.array([[True, True]]))
    als.verify(g, np.array([[False, True]]))
    p = small()
    with pytest.raises(ConstraintViolation, match="shape"):
        als.verify(p, np.zeros((3, 2), bool))
    with pytest.raises(ConstraintViolation, match="0/1"):
        als.verify(p, np.full((2, 2), 2))
    a = als.solve(p, "flow")
    forged = als.Assignment(status=a.status, message="", matrix=a.matrix, objective=a.objective + 1)
    with pytest.raises(ConstraintViolation, match="objective"):
        als.verify(p, forged)
    infeasible = als.solve(als.Problem([[1.0]], 1, expert_min=1, allowed=np.array([[False]])), "flow")
    with pytest.raises(InvalidProblemError, match="solution"):
        als.verify(p, infeasible)


def test_assignment_rejects_bad_status():
    with pytest.raises(InvalidProblemError, match="status"):
        als.Assignment(status="great", message="", matrix=np.zeros((1, 1), bool), objective=0.0)  # type: ignore[arg-type]


def test_infeasibility_messages_name_the_constraint():
    cases = {
        "total expert_min": als.Problem([[1.0, 1.0]], 1, expert_min=1, expert_max=3),
        "total client_min": als.Problem([[1.0], [1.0]], 1, client_min=1, expert_max=1),
        "expert 1 has 1 allowed clients": als.Problem(
            [[1.0, 1.0], [1.0, 1.0]], 2, expert_min=[0, 2], allowed=np.array([[True, True], [True, False]])
        ),
        "client 0 has 1 allowed experts": als.Problem([[1.0, 1.0]], 2, client_min=2, allowed=np.array([[True, False]])),
    }
    for fragment, problem in cases.items():
        for method in ("flow", "greedy", "random"):
            a = als.solve(problem, method)
            assert a.status == "infeasible"
            assert fragment in a.message, (method, a.message)
            assert "certificate" in a.stats


def test_flow_pricing_options_are_validated_and_reported():
    p = als.generate("skewed", 300, 16, 2, seed=0)
    with pytest.raises(als.InvalidProblemError, match="candidates"):
        als.solve(p, "flow", pricing=True, candidates=-1)
    small = als.solve(p, "flow")
    assert small.stats["pricing"] is False  # below PRICING_PAIRS the dense graph is used
    priced = als.solve(p, "flow", pricing=True, candidates=2)
    assert priced.objective == pytest.approx(small.objective)
    assert priced.stats["candidate_pairs"] < int(p.allowed.sum())
    assert len(priced.stats["priced_in"]) == priced.stats["pricing_rounds"]
