"""The shipped regression instances and the generator families."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import alignsolve as als

INSTANCES = Path(__file__).resolve().parents[1] / "datasets" / "instances"
MANIFEST = json.loads((INSTANCES / "manifest.json").read_text())["instances"]


@pytest.mark.parametrize("entry", MANIFEST, ids=[m["file"] for m in MANIFEST])
def test_regression_instance(entry):
    problem = als.Problem.load(INSTANCES / entry["file"])
    spec = {k: v for k, v in entry["generator"].items() if k != "name"}
    regenerated = als.generate(
        spec.pop("family"), spec.pop("n_clients"), spec.pop("n_experts"), spec.pop("capacity"), **spec
    )
    assert regenerated == problem, "the generator no longer reproduces the shipped instance"
    flow = als.solve(problem, "flow")
    assert flow.status == entry["status"]
    for method in ("greedy", "random"):
        result = als.solve(problem, method, seed=0)
        assert result.status == ("infeasible" if entry["optimum"] is None else "feasible")
        if result.has_solution:
            als.verify(problem, result)
            assert result.objective <= entry["optimum"] + 1e-9
    if entry["optimum"] is not None:
        assert flow.objective == pytest.approx(entry["optimum"], rel=1e-12)
        als.verify(problem, flow)


@pytest.mark.parametrize("family", sorted(als.FAMILIES))
def test_family_is_seeded_and_valid(family):
    a = als.generate(family, 60, 8, 2, seed=11)
    b = als.generate(family, 60, 8, 2, seed=11)
    assert a == b
    assert a.shape == (60, 8)
    if family in ("uniform", "skewed", "lowrank"):
        assert a != als.generate(family, 60, 8, 2, seed=12)
    feasible = als.diagnose(a) is None
    assert feasible == (family != "infeasible")


def test_bounds_follow_the_benchmark_rule():
    p = als.generate("uniform", 1000, 64, 4, expert_min_frac=0.5)
    mean = 1000 * 4 / 64
    assert (p.expert_max == int(np.ceil(1.1 * mean))).all()
    assert (p.expert_min == int(np.floor(0.5 * mean))).all()


def test_adversarial_family_halves_greedy():
    p = als.generate("adversarial", 40, 8, 2)
    ratio = als.solve(p, "greedy").objective / als.solve(p, "flow").objective
    assert 0.5 <= ratio < 0.6


def test_skewed_family_makes_the_load_bound_bind():
    p = als.generate("skewed", 400, 16, 2)
    a = als.solve(p, "flow")
    assert (a.loads == p.expert_max).sum() >= 3  # popular experts are full


@pytest.mark.parametrize(
    "kwargs,param",
    [
        (dict(family="nope"), "family"),
        (dict(n_clients=0), "n_clients"),
        (dict(capacity=9), "capacity"),
        (dict(capacity=True), "capacity"),
        (dict(expert_min_frac=1.5), "expert_min_frac"),
        (dict(expert_max_slack=-0.1), "expert_max_slack"),
        (dict(family="adversarial", capacity=5), "n_experts"),
    ],
)
def test_generator_bad_arguments(kwargs, param):
    args = dict(family="uniform", n_clients=10, n_experts=8, capacity=2) | kwargs
    with pytest.raises(als.InvalidProblemError) as info:
        als.generate(args.pop("family"), args.pop("n_clients"), args.pop("n_experts"), args.pop("capacity"), **args)
    assert info.value.parameter == param


@pytest.mark.parametrize("seed", range(3))
def test_greedy_and_random_stay_feasible_on_tight_medium_instances(seed):
    # Pinned loads on a 70% mask: the lower-bound pass usually gets stuck and the
    # augmenting-path repair has to finish the job.
    problem = als.generate("tight", 500, 16, 3, seed=seed)
    optimum = als.solve(problem, "flow").objective
    for method in ("greedy", "random"):
        result = als.solve(problem, method, seed=seed)
        als.verify(problem, result)
        assert result.objective <= optimum + 1e-9
