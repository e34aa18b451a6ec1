"""The external references of the benchmarks agree with alignsolve where they are valid."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import alignsolve as als


def _references():
    """benchmarks/references.py, loaded from its file (the benchmarks folder is scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "references.py"
    spec = importlib.util.spec_from_file_location("references", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_refs = _references()
linprog_textbook, lsa_slot_expanded = _refs.linprog_textbook, _refs.lsa_slot_expanded


@pytest.mark.parametrize("seed", range(6))
def test_slot_expanded_linear_sum_assignment_equals_flow_with_one_expert_per_client(seed):
    rng = np.random.default_rng(seed)
    n, e = 30, 6
    fit = rng.normal(size=(n, e))  # negatives too: a client may stay idle
    problem = als.Problem(fit, 1, expert_max=rng.integers(1, 8, e), allowed=rng.random((n, e)) < 0.8)
    x, objective = lsa_slot_expanded(problem)
    flow = als.solve(problem, "flow")
    als.verify(problem, als.Assignment("feasible", "", x, objective))
    assert objective == pytest.approx(flow.objective, abs=1e-9)


def test_slot_expanded_refuses_what_it_cannot_model():
    with pytest.raises(ValueError, match="capacity 1"):
        lsa_slot_expanded(als.Problem(np.ones((3, 2)), 2))


@pytest.mark.parametrize("family", ["uniform", "skewed", "tight"])
def test_linprog_lp_equals_flow_on_the_unit_variant(family):
    problem = als.generate(family, 60, 8, 2, seed=1)
    assert linprog_textbook(problem) == pytest.approx(als.solve(problem, "flow").objective, rel=1e-7, abs=1e-7)
