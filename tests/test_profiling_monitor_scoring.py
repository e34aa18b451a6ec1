"""Capacity profiling, the device-trace generator, the load monitor, the scorer and the privacy helper."""

from __future__ import annotations

import importlib.util
import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import alignsolve as als
from alignsolve.federated.privacy import _delta_of

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT.parent / "shared" / "data" / "device-traces"
FIGURES = ROOT / "datasets" / "device_profiles" / "device_figures.json"


def phone(**overrides):
    base = dict(compute_flops=1e9, memory_bytes=1e8, downlink_bps=8e6, uplink_bps=4e6, availability=0.9, n_samples=100)
    return als.ClientProfile(**{**base, **overrides})


# -- profiles and capacity -----------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, rule",
    [
        ("downlink_bps", 0.0, "must be finite and > 0"),
        ("uplink_bps", -1.0, "must be finite and > 0"),
        ("compute_flops", math.nan, "must be finite and > 0"),
        ("availability", 1.5, "must be in [0, 1]"),
        ("n_samples", -3, "must be an integer >= 0"),
        ("memory_bytes", "big", "must be a real number"),
    ],
)
def test_profile_rejects_bad_fields_naming_them(field, value, rule):
    with pytest.raises(als.InvalidReportError) as info:
        phone(**{field: value})
    assert info.value.parameter == f"ClientProfile.{field}"
    assert rule in str(info.value)


def test_profile_round_trips_and_refuses_unknown_fields():
    p = phone()
    assert als.ClientProfile.from_dict(p.to_dict()) == p
    with pytest.raises(als.InvalidReportError, match="unknown field"):
        als.ClientProfile.from_dict({**p.to_dict(), "gpu": 1})


def test_plan_capacity_matches_the_time_model_by_hand():
    # 1 MB experts, 2 MB shared part; 8 Mbit/s down, 4 Mbit/s up: 3 s per MB both ways.
    spec = als.ExpertSpec(param_bytes=1e6, flops_per_sample=1e6, shared_param_bytes=2e6, shared_flops_per_sample=1e7)
    p = phone(compute_flops=1e9, n_samples=100)
    plan = als.plan_capacity([p], spec, deadline=20.0, n_experts=4, local_epochs=2)
    base = 2e6 * 8 / 8e6 + 2e6 * 8 / 4e6 + 2 * 100 * 1e7 / 1e9  # 2 + 4 + 2 = 8 s
    per_expert = 1e6 * 8 / 8e6 + 1e6 * 8 / 4e6 + 2 * 100 * 1e6 / 1e9  # 1 + 2 + 0.2 = 3.2 s
    assert plan.base_time[0] == pytest.approx(base)
    assert plan.expert_time[0] == pytest.approx(np.full(4, per_expert))
    assert plan.capacity[0] == 3  # 8 + 3 * 3.2 = 17.6 <= 20 < 20.8
    assert plan.round_time(np.array([[1, 1, 1, 0]], bool))[0] == pytest.approx(base + 3 * per_expert)
    budget = als.plan_capacity([p], spec, deadline=20.0, n_experts=4, local_epochs=2, budget_mode=True)
    assert budget.budget[0] == pytest.approx(20.0 - base)
    assert budget.cost[0] == pytest.approx(plan.expert_time[0])
    # Memory: 4 bytes per parameter byte, 2 MB shared + k MB experts within 20 MB gives k = 3.
    tight = als.plan_capacity([phone(memory_bytes=20e6)], spec, deadline=1e6, n_experts=4)
    assert tight.capacity[0] == 3


def test_plan_capacity_names_why_a_client_is_ineligible():
    spec = als.ExpertSpec(param_bytes=1e6, flops_per_sample=0, shared_param_bytes=2e6)
    slow = phone(downlink_bps=1e3, uplink_bps=1e3)
    small = phone(memory_bytes=1e6)
    plan = als.plan_capacity([slow, small, phone()], spec, deadline=30.0, n_experts=3)
    assert plan.capacity.tolist()[:2] == [0, 0]
    assert "deadline" in plan.reasons[0] and "memory" in plan.reasons[1]
    assert plan.reasons[2] is None and plan.eligible.tolist() == [False, False, True]


@settings(max_examples=60)
@given(
    st.lists(st.floats(1e5, 1e7), min_size=3, max_size=3),
    st.floats(1e8, 1e10),
    st.floats(1e6, 5e7),
    st.floats(1e5, 1e7),
    st.floats(5.0, 120.0),
    st.integers(0, 500),
)
def test_any_set_within_capacity_meets_the_deadline_and_memory(sizes, flops, memory, bandwidth, deadline, n_samples):
    spec = als.ExpertSpec(param_bytes=sizes, flops_per_sample=[3 * s for s in sizes], shared_param_bytes=5e5)
    p = phone(
        compute_flops=flops, memory_bytes=memory, downlink_bps=bandwidth, uplink_bps=bandwidth / 2, n_samples=n_samples
    )
    plan = als.plan_capacity([p], spec, deadline=deadline, n_experts=3)
    k = int(plan.capacity[0])
    allowed = np.flatnonzero(plan.allowed[0])
    for size in range(1, k + 1):
        for subset in combinations(allowed, size):
            m = np.zeros((1, 3), bool)
            m[0, list(subset)] = True
            assert plan.round_time(m)[0] <= deadline * (1 + 1e-9)
            assert spec.memory_factor * (5e5 + sum(sizes[j] for j in subset)) <= memory * (1 + 1e-9)


def test_expert_spec_validates_per_expert_lengths():
    spec = als.ExpertSpec(param_bytes=[1.0, 2.0], flops_per_sample=1.0)
    with pytest.raises(als.InvalidProblemError, match="n_experts = 3"):
        spec.per_expert(3)
    with pytest.raises(als.InvalidProblemError, match=r"ExpertSpec\.param_bytes"):
        als.ExpertSpec(param_bytes=[1.0, -2.0], flops_per_sample=1.0)
    assert als.ExpertSpec.from_dict(spec.to_dict()) == spec


# -- the trace-calibrated generator ---------------------------------------------------------


def test_sample_profiles_is_seeded_and_heterogeneity_is_a_knob():
    a = als.sample_profiles(200, seed=3)
    assert a == als.sample_profiles(200, seed=3)
    assert a != als.sample_profiles(200, seed=4)
    same = als.sample_profiles(50, seed=3, heterogeneity="none")
    assert len({(p.compute_flops, p.memory_bytes, p.downlink_bps, p.uplink_bps) for p in same}) == 1

    def log_spread(profiles):
        return float(np.std(np.log([p.compute_flops for p in profiles])))

    spreads = [log_spread(als.sample_profiles(2000, seed=0, heterogeneity=h)) for h in ("low", "trace", "high")]
    assert spreads[0] < spreads[1] < spreads[2]
    assert spreads[1] == pytest.approx(2 * spreads[0], rel=1e-6)  # the exponent scales log-deviations
    with pytest.raises(als.InvalidProblemError, match="heterogeneity"):
        als.sample_profiles(3, heterogeneity="extreme")


def test_sample_profiles_follow_the_shipped_quantiles():
    fig = als.DeviceFigures.load()
    profiles = als.sample_profiles(20000, seed=1, flops_at_median=1.0, memory_fraction=1.0)
    compute = np.array([p.compute_flops for p in profiles])
    ram = np.array([p.memory_bytes for p in profiles]) / 2**30
    down = np.array([p.downlink_bps for p in profiles]) / 1e3
    for values, table in ((compute, fig.compute_relative), (ram, fig.ram_gb), (down, fig.downlink_kbps)):
        for q in (0.1, 0.5, 0.9):
            expected = np.interp(q, fig.levels, table)
            assert np.quantile(values, q) == pytest.approx(expected, rel=0.06)
    # Newer phones have more compute and more RAM: the copula keeps the traces' rank correlation.
    ranks = np.argsort(np.argsort(compute)), np.argsort(np.argsort(ram))
    assert np.corrcoef(*ranks)[0, 1] > 0.6


def test_shipped_figures_carry_their_provenance():
    doc = json.loads(FIGURES.read_text())
    prov = doc["provenance"]
    assert "PKU-Chengxu/FLASH" in prov["source"] and "BSD-2-Clause" in prov["source"]
    assert prov["files"]["ai_benchmark_devices.json"]["records"] == 333
    assert prov["script"] == "datasets/device_profiles/derive_device_figures.py"
    # The package reads the same table.
    assert als.DeviceFigures.load().ram_gb.tolist() == doc["ram_gb"]


@pytest.mark.skipif(
    not TRACES.is_dir(), reason="the device traces (../shared/data/device-traces) are not on this machine"
)
def test_figures_re_derive_from_the_traces():
    spec = importlib.util.spec_from_file_location(
        "derive", ROOT / "datasets" / "device_profiles" / "derive_device_figures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.derive(TRACES) == json.loads(FIGURES.read_text())


# -- load monitor ---------------------------------------------------------------------------------


def test_gini_known_values():
    assert als.gini([1, 1, 1, 1]) == 0.0
    assert als.gini([0, 0, 0, 4]) == pytest.approx(0.75)  # 1 - 1/n
    assert als.gini([0, 0]) == 0.0
    assert als.gini([1, 3]) == pytest.approx(0.25)


def test_monitor_smooths_and_reports_balance():
    m = als.LoadMonitor(3, smoothing=0.5)
    assert m.max_min_ratio == 1.0 and m.load_cv == 0.0
    assert m.deficit == pytest.approx(np.zeros(3))
    m.update(0, [2, 1, 0], [200, 100, 0], loss=[1.0, 2.0, np.nan])
    assert m.samples_ema.tolist() == [200, 100, 0]
    assert m.max_min_ratio == math.inf and m.summary()["max_min_ratio"] is None
    m.update(1, [0, 1, 2], [0, 100, 200], loss=[np.nan, 1.0, 3.0])
    assert m.samples_ema.tolist() == [100, 100, 100]
    assert m.load_cv == 0.0 and m.load_gini == 0.0 and m.max_min_ratio == 1.0
    assert m.loss_ema[0] == 1.0 and m.loss_ema[1] == 1.5 and m.loss_ema[2] == 3.0
    assert m.staleness(3).tolist() == [3, 2, 2]
    assert m.clients_total.tolist() == [2, 2, 2]


def test_monitor_rejects_bad_updates_without_touching_its_state():
    m = als.LoadMonitor(2)
    m.update(0, [1, 1], [10, 10])
    before = m.to_json()
    for args in ((0, [1, 1], [1, 1]), (1, [1], [1, 1]), (1, [1, np.nan], [1, 1]), (1, [1, 1], [-1, 1])):
        with pytest.raises(als.InvalidReportError):
            m.update(*args)
    assert m.to_json() == before
    assert als.LoadMonitor.from_json(before) == m


def test_monitor_deficit_follows_the_target_share():
    m = als.LoadMonitor(2, target_share=[3, 1])
    m.update(0, [1, 1], [50, 50])
    assert m.deficit == pytest.approx([0.25, -0.25])
    with pytest.raises(als.InvalidProblemError, match="target_share"):
        als.LoadMonitor(2, target_share=[1, -1])


# -- scoring --------------------------------------------------------------------------------------


def test_each_term_is_normalised_and_weighted_as_documented():
    scorer = als.FitnessScorer()
    routing = np.array([[3.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    loss = np.array([[1.0, 3.0, 0.5], [np.nan, np.nan, np.nan]])
    s = scorer.score(
        routing,
        loss=loss,
        capability=np.full((2, 3), 0.5),
        deficit=np.array([1 / 3, 0.0, -1 / 3]),
        staleness=np.array([0, 5, 50]),
        held=np.array([[True, False, False], [False, False, False]]),
    )
    t = s.terms
    assert t["affinity"][0] == pytest.approx([0.75, 0.25, 0.0])
    assert t["affinity"][1] == pytest.approx([1 / 3] * 3)  # no routing mass: uniform
    assert t["loss"][0] == pytest.approx([0.5, 0.5, 0.0])  # 0.75*1 and 0.25*3 share the loss
    assert t["loss"][1].tolist() == [0.0, 0.0, 0.0]  # no loss vector: no loss term
    assert t["load"] == pytest.approx([1.0, 0.0, -1.0])
    assert t["staleness"] == pytest.approx([0.0, 1 - math.exp(-1), 1 - math.exp(-10)])
    assert t["switching"][0].tolist() == [0.0, 1.0, 1.0]
    w = s.weights
    expected = (
        w["affinity"] * t["affinity"]
        + w["loss"] * t["loss"]
        + w["capability"] * t["capability"]
        + w["load"] * t["load"]
        + w["staleness"] * t["staleness"]
        - w["switching"] * t["switching"]
    )
    assert s.fitness == pytest.approx(expected)


def test_load_weight_grows_with_imbalance_and_is_capped():
    scorer = als.FitnessScorer(als.ScoringWeights(load=0.5), load_gain=2.0, max_load_boost=3.0)
    assert scorer.load_weight(0.0) == 0.5
    assert scorer.load_weight(0.25) == pytest.approx(0.75)
    assert scorer.load_weight(10.0) == pytest.approx(1.5)
    assert scorer.load_weight(math.nan) == 0.5


def test_load_pressure_is_the_load_term_itself_unboosted():
    scorer = als.FitnessScorer(als.ScoringWeights(load=0.5), load_gain=2.0, max_load_boost=3.0)
    routing = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    pressure = np.array([0.0, 0.4, -1.0])
    s = scorer.score(routing, load_pressure=pressure)
    assert s.weights["load"] == 0.5  # no boost, whatever the imbalance the pressure stands for
    np.testing.assert_array_equal(s.terms["load"], pressure)
    without = scorer.score(routing)
    np.testing.assert_allclose(s.fitness - without.fitness, np.tile(0.5 * pressure, (2, 1)))
    # the same term through deficit and target needs a unit target and no boost: the two roads agree
    via_deficit = scorer.score(routing, deficit=pressure, target_share=np.ones(3), load_cv=0.0)
    np.testing.assert_array_equal(s.fitness, via_deficit.fitness)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"load_pressure": [0.0, 0.5]}, r"load_pressure.*\(3,\)"),
        ({"load_pressure": [0.0, 0.5, 1.5]}, r"load_pressure.*\[-1, 1\]"),
        ({"load_pressure": [0.0, np.nan, 0.0]}, "load_pressure.*finite"),
        ({"load_pressure": [0.0, 0.1, 0.0], "deficit": [0.0, 0.1, 0.0]}, "load_pressure.*together with deficit"),
        ({"load_pressure": [0.0, 0.1, 0.0], "load_cv": 0.3}, "load_pressure.*together with load_cv"),
    ],
)
def test_load_pressure_refuses_bad_values_and_a_second_load_input(kwargs, match):
    with pytest.raises(als.InvalidProblemError, match=match):
        als.FitnessScorer().score(np.ones((2, 3)), **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"capability": np.full((2, 3), np.nan)}, r"capability: must be finite \(no NaN or inf\); got nan at index"),
        ({"capability": np.ones((3, 2))}, r"capability: must have shape \(2, 3\).*got shape \(3, 2\)"),
        ({"capability": [["a"] * 3] * 2}, "capability: must be numeric; got dtype <U1"),
        ({"capability": 0.5}, r"capability: must have shape \(2, 3\); got shape \(\)"),  # refused before as well
        ({"deficit": [0.0, np.inf, 0.0]}, "deficit: must be finite.*got inf at index 1"),
        ({"deficit": np.ones(5)}, r"deficit: must have shape \(3,\).*got shape \(5,\)"),
        ({"deficit": np.ones(3), "target_share": [0.5, -0.1, 0.6]}, "target_share: must be >= 0; got -0.1 at index 1"),
        ({"deficit": np.ones(3), "target_share": np.ones(2)}, r"target_share: must have shape \(3,\)"),
        ({"staleness": [1.0, np.nan, 2.0]}, "staleness: must be finite.*got nan at index 1"),
        ({"staleness": np.ones(2)}, r"staleness: must have shape \(3,\)"),
        ({"held": np.ones((3, 3), dtype=bool)}, r"held: must have shape \(2, 3\); got shape \(3, 3\)"),
        ({"held": np.full((2, 3), 2)}, r"held: must be boolean \(or 0/1\); got 2 at index \(0, 0\)"),
        ({"held": [[0, 1, 0.5], [0, 0, 0]]}, r"held: must be boolean \(or 0/1\); got 0.5 at index \(0, 2\)"),
        ({"held": [["x"] * 3] * 2}, r"held: must be boolean \(or 0/1\); got dtype <U1"),
    ],
)
def test_every_per_pair_and_per_expert_input_is_checked_by_name(kwargs, match):
    # before, a NaN here came out as NaN fitness and a wrong shape as numpy's broadcasting error
    with pytest.raises(als.InvalidProblemError, match=match):
        als.FitnessScorer().score(np.ones((2, 3)), **kwargs)
    # the valid forms still score: 0/1 numbers for held, a scalar staleness for every expert
    fine = als.FitnessScorer().score(np.ones((2, 3)), held=np.eye(2, 3, dtype=int), staleness=4)
    assert np.isfinite(fine.fitness).all()


@settings(max_examples=60)
@given(
    st.integers(1, 6),
    st.integers(1, 5),
    st.floats(-1e300, 1e300),
    st.floats(0, 1e300),
    st.floats(0, 1e6),
)
def test_scores_are_always_finite(n, e, big, loss_scale, cv):
    rng = np.random.default_rng(n * 10 + e)
    routing = rng.normal(size=(n, e)) * big
    loss = rng.random((n, e)) * loss_scale
    deficit = rng.normal(size=e) * 1e300
    for scale in als.VALUE_SCALES:
        scorer = als.FitnessScorer(als.ScoringWeights(value=1.0), value_scale=scale)
        with np.errstate(over="ignore"):  # a mean of losses near the float maximum may overflow to inf
            s = scorer.score(routing, loss=loss, deficit=deficit, staleness=rng.integers(0, 10**9, e), load_cv=cv)
        assert np.all(np.isfinite(s.fitness)), scale


def test_scorer_refuses_bad_weights_naming_them():
    with pytest.raises(als.InvalidProblemError, match=r"weights\.load"):
        als.ScoringWeights(load=-1.0)
    with pytest.raises(als.InvalidProblemError, match="routing"):
        als.FitnessScorer().score(np.array([[np.nan, 1.0]]))
    scorer = als.FitnessScorer(als.ScoringWeights(affinity=2.0), load_gain=1.0)
    assert als.FitnessScorer.from_dict(scorer.to_dict()).to_dict() == scorer.to_dict()


# -- privacy ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("epsilon, delta", [(0.1, 1e-5), (0.5, 1e-6), (1.0, 1e-5), (4.0, 1e-5), (20.0, 1e-8)])
def test_gaussian_sigma_is_the_smallest_that_meets_delta(epsilon, delta):
    sigma = als.gaussian_sigma(2.0, epsilon, delta)
    assert _delta_of(sigma, 2.0, epsilon) <= delta
    assert _delta_of(sigma * (1 - 1e-6), 2.0, epsilon) > delta
    if epsilon < 1:  # tighter than the classical calibration where that one is valid
        assert sigma < 2.0 * math.sqrt(2 * math.log(1.25 / delta)) / epsilon


def test_mechanism_clips_noises_and_states_its_sigma():
    mech = als.GaussianMechanism(epsilon=1.0, delta=1e-5, routing_clip=1.0, loss_clip=2.0)
    assert mech.sensitivity() == pytest.approx(2 * math.sqrt(2))
    routing = np.array([0.7, 0.2, 0.1, 0.0])
    loss = np.array([3.0, 4.0, 0.0, 0.0])  # norm 5: clipped to 2
    draws = [mech.privatize(routing, loss, rng=seed) for seed in range(4000)]
    r = np.stack([d.routing for d in draws])
    ell = np.stack([d.loss for d in draws])
    assert r.mean(axis=0) == pytest.approx(routing, abs=0.12 * draws[0].sigma_routing)
    assert ell.mean(axis=0) == pytest.approx([1.2, 1.6, 0.0, 0.0], abs=0.12 * draws[0].sigma_loss)
    assert r.std() == pytest.approx(draws[0].sigma_routing, rel=0.05)
    assert draws[0].sigma_loss == pytest.approx(2.0 * draws[0].sigma_routing)
    assert mech.privatize(routing, rng=1).loss is None
    with pytest.raises(als.InvalidProblemError, match="delta"):
        als.GaussianMechanism(epsilon=1.0, delta=0.0)
    with pytest.raises(als.InvalidProblemError, match="loss"):
        mech.privatize(routing, [1.0, np.nan, 0, 0])


@pytest.mark.parametrize("epsilon, e", [(1.0, 16), (4.0, 4), (0.2, 2)])
def test_randomized_response_sends_the_top_expert_with_its_stated_probability(epsilon, e):
    mech = als.RandomizedResponse(epsilon)
    p = mech.keep_probability(e)
    assert p == pytest.approx(math.exp(epsilon) / (math.exp(epsilon) + e - 1))
    routing = np.linspace(1.0, 2.0, e)[::-1]  # expert 0 is the top one
    gen = np.random.default_rng(0)
    n = 40000
    counts = np.bincount([mech.privatize(routing, rng=gen) for _ in range(n)], minlength=e) / n
    q = (1 - p) / (e - 1)
    # within 5 standard errors of the stated probabilities: the true one and each other one
    assert counts[0] == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / n))
    assert counts[1:] == pytest.approx(np.full(e - 1, q), abs=5 * math.sqrt(q * (1 - q) / n))
    # epsilon-DP: whatever the input, every output's probability is within e^epsilon of any other input's
    assert p / q == pytest.approx(math.exp(epsilon))


def test_randomized_response_edge_cases_and_hostile_input():
    assert als.RandomizedResponse(800.0).keep_probability(16) == 1.0  # no overflow at a huge budget
    # any expert can be sent, one the client never routes to included: otherwise the output would reveal it
    assert {als.RandomizedResponse(1.0).privatize([0.0, 3.0, 3.0], rng=s) for s in range(200)} == {0, 1, 2}
    assert als.RandomizedResponse(50.0).privatize([0.0, 3.0, 3.0], rng=1) == 1  # a tie goes to the first
    assert als.RandomizedResponse(0.1).privatize([5.0], rng=1) == 0  # one expert: nothing to hide
    # no mass: a uniform draw, the same whatever the budget
    empty = [als.RandomizedResponse(50.0).privatize(np.zeros(4), rng=s) for s in range(200)]
    assert set(empty) == {0, 1, 2, 3}
    for bad in (0.0, -1.0, float("inf"), float("nan"), True, "1"):
        with pytest.raises(als.InvalidProblemError, match="epsilon"):
            als.RandomizedResponse(bad)
    mech = als.RandomizedResponse(1.0)
    for routing in ([], [[1.0, 0.0]], [1.0, np.nan], [1.0, -0.5], [np.inf, 0.0]):
        with pytest.raises(als.InvalidProblemError, match="routing"):
            mech.privatize(routing, rng=0)
    for n_experts in (0, -2, 1.5, True):
        with pytest.raises(als.InvalidProblemError, match="n_experts"):
            mech.keep_probability(n_experts)
