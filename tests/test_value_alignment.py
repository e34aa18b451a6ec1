"""Issue 19's pieces: the value term, load bounds that follow the routing's demand, the published-method policies."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

import alignsolve as als
from fedloop import FedConfig, make_policy, run
from fedloop.loop import ConfigError, build
from fedloop.published import FedMoEPolicy, FlexMoEPolicy
from tests.test_aligner import SPEC, make_clients, reports_for

E = 6

# -- value term --------------------------------------------------------------------------------------------------------


def test_value_is_routed_share_times_loss_relative_to_the_rounds_largest():
    routing = np.array([[3.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    loss = np.array([[2.0, 4.0, 1.0], [1.0, 1.0, 3.0]])
    v = als.FitnessScorer().score(routing, loss=loss).terms["value"]
    raw = np.array([[0.75 * 2.0, 0.25 * 4.0, 0.0], [0.0, 0.5 * 1.0, 0.5 * 3.0]])
    np.testing.assert_allclose(v, raw / raw.max())
    assert v.max() == 1.0 and v.min() >= 0.0
    # unlike the loss term, rows do not each sum to 1: the client the model fits worse counts more
    q = als.FitnessScorer().score(routing, loss=loss).terms["loss"]
    np.testing.assert_allclose(q.sum(axis=1), 1.0)
    assert v[0].sum() != pytest.approx(v[1].sum())


def test_value_fills_a_missing_loss_with_the_median_and_falls_back_to_affinity():
    routing = np.array([[1.0, 0.0], [0.0, 1.0]])
    loss = np.array([[2.0, 2.0], [np.nan, np.nan]])
    v = als.FitnessScorer().score(routing, loss=loss).terms["value"]
    np.testing.assert_allclose(v, [[1.0, 0.0], [0.0, 1.0]])  # the second client counts the median loss, 2
    no_loss = als.FitnessScorer().score(np.array([[2.0, 2.0], [4.0, 0.0]])).terms["value"]
    np.testing.assert_allclose(no_loss, [[0.5, 0.5], [1.0, 0.0]])


def test_value_at_the_mean_loss_scale_is_affinity_times_the_loss_relative_to_the_mean():
    routing = np.array([[3.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 1.0, 2.0]])
    loss = np.array([[5.0, 4.0, 1.0], [1.0, 1.0, 0.0], [np.nan] * 3])
    v = als.FitnessScorer(value_scale="mean_loss").score(routing, loss=loss).terms["value"]
    mean = loss[:2].mean()  # 2.0: the third client sent no loss vector and counts the mean, so its row is A
    a = routing / routing.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(v, a * np.vstack([loss[:2] / mean, np.ones((1, 3))]))
    assert v[0, 0] == pytest.approx(0.75 * 2.5)  # not capped at 1: a pair 2.5 times the mean loss
    # no loss at all, or losses that are all 0: every pair's loss is the mean, and V is the affinity
    for no_signal in (None, np.zeros((3, 3))):
        np.testing.assert_allclose(
            als.FitnessScorer(value_scale="mean_loss").score(routing, loss=no_signal).terms["value"], a
        )


def test_the_aligner_reduced_to_affinity_value_and_queue_at_the_mean_loss_scale_scores_as_flex_moe():
    """Weights 1, 1 and 0.5 on affinity, value and a deficit queue, the rest 0: ``u (1 + l / mean l) + 0.5 H``."""
    rng = np.random.default_rng(7)
    routing, loss, queue = rng.random((9, E)), rng.uniform(0.1, 3.0, (9, E)), rng.uniform(0.0, 4.0, E)
    loss[4] = np.nan
    weights = als.ScoringWeights(
        affinity=1.0, value=1.0, loss=0.0, capability=0.0, load=0.5, staleness=0.0, switching=0.0
    )
    pressure = queue / (1.0 + queue.max())  # the deficit queue read as a score term (alignsolve's deficit_pressure)
    scores = als.FitnessScorer(weights, value_scale="mean_loss").score(routing, loss=loss, load_pressure=pressure)
    usage = routing / routing.sum(axis=1, keepdims=True)
    relative = np.where(np.isnan(loss), 1.0, loss / np.nanmean(loss))
    np.testing.assert_allclose(scores.fitness, usage * (1.0 + relative) + 0.5 * pressure, rtol=0, atol=1e-12)
    # the two scales differ by one factor per round, mean l / max A l, for every client that sent a loss vector:
    # what moves between them is the value term's weight against the other terms, round by round
    default = als.FitnessScorer(weights).score(routing, loss=loss, load_pressure=pressure)
    sent = ~np.isnan(loss).any(axis=1)
    factor = np.nanmean(loss) / np.max(usage[sent] * loss[sent])
    np.testing.assert_allclose(default.terms["value"][sent] / scores.terms["value"][sent], factor)


@pytest.mark.parametrize("bogus", ["mean", "", None, 1, ["max"]])
def test_value_scale_is_checked_and_survives_the_scorers_dict_and_a_checkpoint(bogus):
    with pytest.raises(als.InvalidProblemError, match="value_scale: must be one of max, mean_loss; got"):
        als.FitnessScorer(value_scale=bogus)
    scorer = als.FitnessScorer(value_scale="mean_loss")
    assert als.FitnessScorer.from_dict(scorer.to_dict()).value_scale == "mean_loss"
    assert "value_scale='mean_loss'" in repr(scorer)
    old = {k: v for k, v in scorer.to_dict().items() if k != "value_scale"}  # saved before the option existed
    assert als.FitnessScorer.from_dict(old).value_scale == "max"
    aligner = als.Aligner(E, SPEC, 1e6, scorer=scorer)
    assert als.Aligner.from_json(aligner.to_json()).scorer.value_scale == "mean_loss"
    with pytest.raises(ConfigError, match=re.escape(f"value_scale: must be one of max, mean_loss; got {bogus!r}")):
        FedConfig(value_scale=bogus).validate()
    data = {"samples_per_client": 20, "test_size": 50}
    setup = build(
        FedConfig(
            dataset="synthetic", n_clients=6, per_round=3, n_experts=3, data_options=data, value_scale="mean_loss"
        )
    )
    assert setup.policy.aligner.scorer.value_scale == "mean_loss"


@pytest.mark.parametrize(("term", "sign"), [("value", 1.0), ("price", -1.0)])
def test_a_term_off_by_default_enters_linearly_with_its_weight(term, sign):
    """The value term (0: the first scorer) and the price (0: no bar on a pair) add ``sign * w * term`` to F."""
    rng = np.random.default_rng(0)
    routing, loss = rng.dirichlet(np.ones(E), 8), rng.uniform(0.1, 3.0, (8, E))
    base = als.FitnessScorer().score(routing, loss=loss)
    assert getattr(als.ScoringWeights(), term) == 0.0
    on = als.FitnessScorer(als.ScoringWeights(**{term: 2.0})).score(routing, loss=loss)
    np.testing.assert_allclose(on.fitness - base.fitness, sign * 2.0 * on.terms[term])
    assert on.weights[term] == 2.0
    if term == "price":  # the same for every pair: a constant shift of F
        np.testing.assert_array_equal(on.terms["price"], np.ones((8, E)))
    with pytest.raises(als.InvalidProblemError, match=rf"weights\.{term}"):
        als.ScoringWeights(**{term: -1.0})


# -- load bounds following demand ----------------------------------------------------------------------------------


def test_demand_bounds_give_each_expert_its_share_of_the_slots_and_unused_experts_one():
    profiles, routing = make_clients(30, seed=3)
    routing[:, -1] = 0.0  # nobody routes to the last expert
    aligner = als.Aligner(E, SPEC, 1e6, method="flow", load_target="demand", min_cohort=0, balance_tolerance=0.25)
    reports = reports_for(0, profiles, routing, np.random.default_rng(4))
    a = aligner.assign(0, reports)
    problem = aligner.last_problem
    rows = {rep.client_id: rep for rep in reports}
    shares = np.stack([np.asarray(rows[cid].routing) / np.sum(rows[cid].routing) for cid in a.client_ids])
    slots = problem.client_capacity.sum()
    wanted = np.maximum(1, np.ceil(1.25 * slots * shares.mean(axis=0) - 1e-9)).astype(int)
    np.testing.assert_array_equal(problem.expert_max, np.minimum(len(a.client_ids), wanted))
    assert problem.expert_max[-1] == 1
    assert (a.loads <= problem.expert_max).all()
    assert a.stats["aligner"]["load_target"] == "demand"
    als.verify(problem, a)


def test_demand_bounds_let_a_popular_expert_take_more_than_the_uniform_cap():
    profiles, _ = make_clients(20, seed=5)
    routing = np.tile([0.9, 0.02, 0.02, 0.02, 0.02, 0.02], (20, 1))
    reports = [als.ClientReport(f"c{i}", p, routing[i]) for i, p in enumerate(profiles)]
    kwargs = dict(method="flow", min_cohort=0, balance_tolerance=0.25, max_experts=1)
    uniform = als.Aligner(E, SPEC, 1e6, **kwargs).assign(0, reports)
    demand = als.Aligner(E, SPEC, 1e6, load_target="demand", **kwargs).assign(0, reports)
    assert uniform.loads[0] <= math.ceil(1.25 * uniform.loads.sum() / E)
    assert demand.loads[0] > uniform.loads[0]


@pytest.mark.parametrize(
    ("option", "choices", "default", "other"),
    [("load_target", "uniform, demand", "uniform", "demand"), ("tie_break", "solver, shuffle", "solver", "shuffle")],
)
def test_an_aligner_option_is_checked_and_survives_a_checkpoint(option, choices, default, other):
    with pytest.raises(als.InvalidProblemError, match=f"{option}: must be one of {choices}; got bogus"):
        als.Aligner(E, SPEC, 1.0, **{option: "bogus"})
    aligner = als.Aligner(E, SPEC, 1e6, **{option: other})
    assert getattr(als.Aligner.from_json(aligner.to_json()), option) == other
    old = aligner.state_dict()
    del old["config"][option]  # a checkpoint written before the option existed
    assert getattr(als.Aligner.from_state(old), option) == default
    with pytest.raises(ConfigError, match=f"{option}: must be one of {choices}; got 'x'"):
        FedConfig(**{option: "x"}).validate()
    data = {"samples_per_client": 20, "test_size": 50}
    setup = build(
        FedConfig(dataset="synthetic", n_clients=6, per_round=3, n_experts=3, data_options=data, **{option: other})
    )
    assert getattr(setup.policy.aligner, option) == other


# -- published-method policies -------------------------------------------------------------------------------------


def _reports(routing, loss=None):
    return [
        als.ClientReport(i, None, np.asarray(r, dtype=float), None if loss is None else loss[i])
        for i, r in enumerate(routing)
    ]


def test_fedmoe_keeps_the_fewest_experts_covering_the_activations_within_the_slots():
    routing = [[0.95, 0.05, 0, 0], [0.5, 0.4, 0.1, 0], [0.3, 0.3, 0.2, 0.2], [0.1, 0.0, 0.9, 0.0]]
    allowed = np.ones((4, 4), dtype=bool)
    allowed[3, 2] = False  # its favourite is out of reach: it takes the next allowed one
    capacity = np.array([2, 2, 2, 1])
    out = FedMoEPolicy(coverage=0.9).assign(0, _reports(routing), capacity, allowed, np.random.default_rng(0))
    assert out[0].tolist() == [True, False, False, False]  # one expert covers 95%
    assert out[1].tolist() == [True, True, False, False]  # two reach 90%
    assert out[2].sum() == 2  # never more than the slots
    assert out[3].tolist() == [True, False, False, False]
    assert not (out & ~allowed).any()


def test_fedmoe_breaks_ties_in_share_towards_the_higher_loss():
    loss = np.array([[0.5, 2.0, 0.1]])
    out = FedMoEPolicy().assign(0, _reports([[0.5, 0.5, 0.0]], loss), np.array([1]), np.ones((1, 3), bool), None)
    assert out.tolist() == [[False, True, False]]


def test_flex_moe_respects_slots_and_load_cap_and_its_deficit_favours_neglected_experts():
    n, e = 12, 4
    routing = np.tile([0.7, 0.2, 0.05, 0.05], (n, 1))
    capacity, allowed = np.ones(n, dtype=np.int64), np.ones((n, e), dtype=bool)
    policy = make_policy("flex_moe", balance_tolerance=0.0)
    assert isinstance(policy, FlexMoEPolicy)
    first = policy.assign(0, _reports(routing), capacity, allowed, None)
    assert (first.sum(axis=1) == 1).all() and first.sum(axis=0).max() <= math.ceil(n / e)
    # force a round that starves experts 2 and 3; their queues grow, and the next round leans to them
    starved = FlexMoEPolicy(balance_tolerance=2.0, deficit_weight=5.0)
    for r in range(3):
        starved.assign(r, _reports(routing), capacity, allowed, None)
    assert starved.queue[2] > 0 and starved.queue[0] == 0
    restored = FlexMoEPolicy(balance_tolerance=2.0, deficit_weight=5.0)
    restored.load_state(starved.state())
    np.testing.assert_array_equal(restored.queue, starved.queue)
    a = starved.assign(3, _reports(routing), capacity, allowed, None)
    b = restored.assign(3, _reports(routing), capacity, allowed, None)
    np.testing.assert_array_equal(a, b)


def test_deficit_weight_reaches_the_flex_moe_policy_and_zero_leaves_the_queue_out_of_the_score():
    cfg = FedConfig(n_clients=6, per_round=3, n_experts=3, rounds=1, policy="flex_moe", deficit_weight=0.0)
    cfg.hidden, cfg.expert_hidden, cfg.data_options = 8, 4, {"samples_per_client": 20, "test_size": 50}
    assert build(cfg).policy.deficit_weight == 0.0
    n, e = 12, 4
    routing = np.tile([0.7, 0.2, 0.05, 0.05], (n, 1))
    capacity, allowed = np.ones(n, dtype=np.int64), np.ones((n, e), dtype=bool)
    plain, pushed = FlexMoEPolicy(2.0, deficit_weight=0.0), FlexMoEPolicy(2.0, deficit_weight=5.0)
    a = sum(plain.assign(r, _reports(routing), capacity, allowed, None).sum(axis=0) for r in range(3))
    b = sum(pushed.assign(r, _reports(routing), capacity, allowed, None).sum(axis=0) for r in range(3))
    # without the deficit the scores never change, so the starved experts stay starved; with it they are taken
    assert a[2:].sum() == 0 and b[2:].sum() > 0
    with pytest.raises(ConfigError, match="deficit_weight: must be a finite number >= 0; got -1"):
        FedConfig(policy="flex_moe", deficit_weight=-1.0).validate()


def test_flex_moe_with_ties_at_random_returns_another_optimum_of_the_same_problem():
    # clients 0-3 route to expert 0 alone, clients 4-7 to nothing in particular: their pairs tie on the deficit bonus
    n, e = 8, 4
    routing = np.zeros((n, e))
    routing[:4, 0] = 1.0
    routing[4:] = 0.25
    capacity, allowed = np.full(n, 2, dtype=np.int64), np.ones((n, e), dtype=bool)

    def first_round(**kw):
        policy = FlexMoEPolicy(0.25, **kw)
        out = policy.assign(3, _reports(routing), capacity, allowed, None)
        score = routing * 2.0  # u (1 + l / mean l) with no loss reported; the queue starts empty
        return out, float(score[out].sum())

    _, best = first_round()
    matrices = set()
    for seed in range(6):
        out, value = first_round(tie_break="shuffle", seed=seed)
        assert value == pytest.approx(best, abs=1e-12)  # an optimum of the same problem
        assert (out.sum(axis=1) <= capacity).all() and out.sum(axis=0).max() <= math.ceil(1.25 * 16 / e)
        np.testing.assert_array_equal(out, first_round(tie_break="shuffle", seed=seed)[0])  # same seed, same answer
        matrices.add(out.tobytes())
    assert len(matrices) > 1  # the seed moves which tied optimum comes back
    with pytest.raises(ValueError, match="tie_break: must be one of solver, shuffle; got 'first'"):
        FlexMoEPolicy(tie_break="first")
    cfg = FedConfig(n_clients=6, per_round=3, n_experts=3, rounds=1, policy="flex_moe", tie_break="shuffle", seed=5)
    cfg.hidden, cfg.expert_hidden, cfg.data_options = 8, 4, {"samples_per_client": 20, "test_size": 50}
    policy = build(cfg).policy
    assert (policy.tie_break, policy.seed) == ("shuffle", 5)


def test_solve_with_random_ties_maps_the_answer_back_and_keeps_the_proof():
    problem = als.Problem(np.ones((5, 3)), 1, expert_max=2)  # every assignment that fills the slots is optimal
    run_flow = lambda p: als.solve(p, "flow")  # noqa: E731
    plain = run_flow(problem)
    answers = [als.solve_with_random_ties(problem, run_flow, (7, r)) for r in range(5)]
    for a in answers:
        assert a.status == "optimal" and a.objective == pytest.approx(plain.objective)
        als.verify(problem, a.matrix)  # raises on any violated constraint
        rows, cols = (np.asarray(a.stats["tie_break"][k]) for k in ("client_order", "expert_order"))
        np.testing.assert_array_equal(np.sort(rows), np.arange(5))
        np.testing.assert_array_equal(np.sort(cols), np.arange(3))
        assert "certificate" not in a.stats
    assert len({a.matrix.tobytes() for a in answers}) > 1
    again = als.solve_with_random_ties(problem, run_flow, (7, 2))
    np.testing.assert_array_equal(again.matrix, answers[2].matrix)


def test_published_policies_run_in_the_loop():
    for name in ("flex_moe", "fedmoe"):
        cfg = FedConfig(n_clients=6, per_round=3, n_experts=3, rounds=2, policy=name, hidden=8, expert_hidden=4)
        cfg.data_options = {"samples_per_client": 20, "test_size": 50}

        history = run(cfg)
        assert len(history.rounds) == 2
        loads = np.array([history.records[r].loads for r in history.rounds])
        assert loads.sum() > 0


# -- load term reading a deficit queue -----------------------------------------------------------------------------


def _queue_aligner(**kwargs):
    weights = als.ScoringWeights(affinity=1.0, loss=0.0, capability=0.0, load=5.0, staleness=0.0, switching=0.0)
    base = dict(method="flow", min_cohort=0, load_signal="queue", scorer=als.FitnessScorer(weights))
    return als.Aligner(E, SPEC, 1e6, **(base | kwargs))


def test_the_queue_grows_for_an_expert_left_out_and_then_draws_clients_to_it():
    profiles, routing = make_clients(12, seed=2)
    routing[:] = 0.0
    routing[:, 0] = 1.0  # every client's data routes to expert 0 alone
    rng = np.random.default_rng(3)
    aligner = _queue_aligner(balance_tolerance=10.0, max_experts=1)  # no cap binds, one slot each
    first = aligner.assign(0, reports_for(0, profiles, routing, rng))
    slots = first.matrix.sum()
    loads = first.matrix.sum(axis=0)
    # H_j = max(0, slots / E - load_j): the experts left out gain the round's mean load, the taken ones nothing
    np.testing.assert_allclose(aligner.queue, np.maximum(0.0, slots / E - loads))
    assert first.stats["aligner"]["queue"] == aligner.queue.tolist()
    assert aligner.queue[0] == 0.0 and (aligner.queue[loads == 0] > 0).all()
    second = aligner.assign(1, reports_for(1, profiles, routing, rng))
    # with the queue read by a heavy load weight, the experts left out in round 0 now draw clients
    assert second.matrix[:, loads == 0].sum() > 0
    # the share signal (the default) keeps no queue
    plain = als.Aligner(E, SPEC, 1e6, method="flow", min_cohort=0, max_experts=1)
    plain.assign(0, reports_for(0, profiles, routing, np.random.default_rng(3)))
    assert not plain.queue.any()


def test_the_queue_survives_a_checkpoint_and_bad_values_are_refused():
    profiles, routing = make_clients(20, seed=4)
    rng = np.random.default_rng(5)
    aligner = _queue_aligner(balance_tolerance=10.0, max_experts=1)  # uneven loads: the queue fills
    for r in range(3):
        aligner.assign(r, reports_for(r, profiles, routing, rng))
    assert aligner.queue.any()
    text = aligner.to_json()
    back = als.Aligner.from_json(text)
    np.testing.assert_array_equal(back.queue, aligner.queue)
    assert back.load_signal == "queue" and back.to_json() == text
    reports = reports_for(3, profiles, routing, rng)
    assert back.assign(3, reports).by_client() == aligner.assign(3, reports).by_client()
    doc = json.loads(text)
    del doc["queue"]  # a state saved before the queue existed starts from an empty queue
    assert not als.Aligner.from_json(json.dumps(doc)).queue.any()
    for bad in ([1.0] * (E - 1), [-1.0] * E, [float("nan")] * E, "x"):
        doc["queue"] = bad
        with pytest.raises(als.InvalidProblemError, match="queue"):
            als.Aligner.from_json(json.dumps(doc))
    with pytest.raises(als.InvalidProblemError, match="load_signal: must be one of share, queue; got bogus"):
        als.Aligner(E, SPEC, 1e6, load_signal="bogus")
    with pytest.raises(ConfigError, match="load_signal: must be one of share, queue; got 'x'"):
        FedConfig(load_signal="x").validate()


def test_demand_bounds_keep_the_secure_aggregation_cohort():
    profiles, routing = make_clients(30, seed=8)
    routing[:, -1] = 0.0  # an expert nobody routes to: its cap (1) is below the cohort
    aligner = als.Aligner(E, SPEC, 1e6, method="flow", load_target="demand", min_cohort=2)
    a = aligner.assign(0, reports_for(0, profiles, routing, np.random.default_rng(9)))
    assert a.has_solution
    loads = a.loads
    assert not ((loads > 0) & (loads < 2)).any()  # no expert aggregated from a single client


# -- uncertainty of a pair (explore term) ------------------------------------------------------------------------------


def test_explore_is_one_over_root_one_plus_the_pair_count_and_off_by_default():
    routing = np.array([[3.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    counts = np.array([[0.0, 3.0, 8.0], [1.0, 0.0, 0.25]])
    on = als.FitnessScorer(als.ScoringWeights(explore=0.5))
    s = on.score(routing, pair_counts=counts)
    np.testing.assert_allclose(s.terms["explore"], 1.0 / np.sqrt(1.0 + counts))
    np.testing.assert_allclose(
        s.fitness - on.score(routing, pair_counts=np.zeros((2, 3))).fitness, 0.5 * (1.0 / np.sqrt(1.0 + counts) - 1.0)
    )
    # never trained: 1 everywhere, a constant that moves no client's choice
    np.testing.assert_array_equal(on.score(routing).terms["explore"], np.ones((2, 3)))
    # weight 0 (the default): the counts change no score, bit for bit
    off = als.FitnessScorer()
    assert off.weights.explore == 0.0
    np.testing.assert_array_equal(off.score(routing, pair_counts=counts).fitness, off.score(routing).fitness)


@pytest.mark.parametrize(
    "counts, rule",
    [
        (np.zeros((2, 2)), r"pair_counts: must have shape \(2, 3\); got shape \(2, 2\)"),
        (np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 0.0]]), r"pair_counts: must be finite and >= 0; got -1.0 at \[0, 1\]"),
        (np.array([[0.0, 0.0, 0.0], [0.0, 0.0, np.nan]]), r"pair_counts: must be finite and >= 0; got nan at \[1, 2\]"),
        (np.array([[np.inf, 0.0, 0.0], [0.0, 0.0, 0.0]]), r"pair_counts: must be finite and >= 0; got inf at \[0, 0\]"),
    ],
)
def test_bad_pair_counts_are_refused_with_the_rule_and_value(counts, rule):
    with pytest.raises(als.InvalidProblemError, match=rule):
        als.FitnessScorer().score(np.ones((2, 3)), pair_counts=counts)


def _explore_aligner(**kwargs):
    weights = als.ScoringWeights(affinity=1.0, loss=0.0, capability=0.0, load=0.0, staleness=0.0, switching=0.0)
    base = dict(method="flow", min_cohort=0, max_experts=1, balance_tolerance=1e6)
    return als.Aligner(E, SPEC, 1e6, **(base | {"scorer": als.FitnessScorer(weights)} | kwargs))


def test_a_client_moves_to_the_pair_it_has_trained_least_and_the_count_decays():
    profiles, routing = make_clients(1, seed=6)
    routing[:] = 0.0
    routing[0, :2] = [0.55, 0.45]  # two experts nearly tied; affinity alone always picks expert 0
    plain = dict(affinity=1.0, loss=0.0, capability=0.0, load=0.0, staleness=0.0, switching=0.0)

    def rounds(aligner, n):
        picks = []
        for r in range(n):
            a = aligner.assign(r, [als.ClientReport("c", profiles[0], routing[0])])
            aligner.observe([als.ClientOutcome("c", completed=True)])
            picks.append(int(np.flatnonzero(a.matrix[0])[0]))
        return picks

    assert rounds(_explore_aligner(), 4) == [0, 0, 0, 0]
    explorer = _explore_aligner(scorer=als.FitnessScorer(als.ScoringWeights(**plain, explore=0.5)), pair_halflife=10.0)
    picks = rounds(explorer, 4)
    # round 0: no counts, expert 0; round 1: 0.55 + 0.5/sqrt(2) < 0.45 + 0.5, so expert 1; then back and forth
    assert picks[:2] == [0, 1] and set(picks) == {0, 1}
    since, counts = explorer.pair_counts["c"]
    assert since == 3
    expected = np.zeros(E)
    for r, j in enumerate(picks):
        expected[j] += 0.5 ** ((3 - r) / 10.0)
    np.testing.assert_allclose(counts, expected)
    # the count as seen at a later round has halved every pair_halflife rounds
    np.testing.assert_allclose(explorer._counts_at("c", 23), expected / 4)
    # a dropped client's round is not counted
    explorer.assign(4, [als.ClientReport("c", profiles[0], routing[0])])
    explorer.observe([als.ClientOutcome("c", completed=False)])
    assert explorer.pair_counts["c"][0] == 3
    # without the term no count is kept
    plain = _explore_aligner()
    rounds(plain, 2)
    assert plain.pair_counts == {}


def test_pair_counts_survive_a_checkpoint_and_bad_values_are_refused():
    profiles, routing = make_clients(20, seed=4)
    rng = np.random.default_rng(5)
    weights = als.ScoringWeights(explore=0.5)
    aligner = als.Aligner(
        E, SPEC, 1e6, method="flow", min_cohort=0, scorer=als.FitnessScorer(weights), pair_halflife=7.0
    )
    for r in range(3):
        a = aligner.assign(r, reports_for(r, profiles, routing, rng))
        aligner.observe([als.ClientOutcome(cid, completed=True) for cid in a.client_ids])
    assert aligner.pair_counts
    text = aligner.to_json()
    back = als.Aligner.from_json(text)
    assert back.pair_halflife == 7.0 and back.to_json() == text
    assert back.pair_counts.keys() == aligner.pair_counts.keys()
    for cid, (since, counts) in aligner.pair_counts.items():
        assert back.pair_counts[cid][0] == since
        np.testing.assert_array_equal(back.pair_counts[cid][1], counts)
    reports = reports_for(3, profiles, routing, rng)
    assert back.assign(3, reports).by_client() == aligner.assign(3, reports).by_client()
    doc = json.loads(text)
    del doc["pair_counts"]  # a state saved before the term existed starts with no counts
    assert als.Aligner.from_json(json.dumps(doc)).pair_counts == {}
    for bad in (
        "x",
        [["c", 0, [1.0] * (E - 1)]],
        [["c", 0, [-1.0] * E]],
        [["c", -2, [0.0] * E]],
        [["c", 0, [float("nan")] * E]],
        [["c", 0]],
        [[None, 0, [0.0] * E]],
        [["c", 0, ["a"] * E]],
        [["c", 99, [0.0] * E]],  # dated after the last assigned round (2): it would grow until round 99
    ):
        doc["pair_counts"] = bad
        with pytest.raises(als.InvalidProblemError, match="pair_counts"):
            als.Aligner.from_json(json.dumps(doc))
    for bad in (0.0, -1.0, float("nan"), "x"):
        with pytest.raises(als.InvalidProblemError, match="pair_halflife: must be a finite number of rounds > 0"):
            als.Aligner(E, SPEC, 1e6, pair_halflife=bad)


# -- price of training and empty slots -----------------------------------------------------------------------------


def _concentrated(n):
    """n clients with two slots each whose data all route to one expert (client i to expert i % E)."""
    profiles, _ = make_clients(n, seed=11)
    routing = np.zeros((n, E))
    routing[np.arange(n), np.arange(n) % E] = 1.0
    return [als.ClientReport(f"c{i}", p, routing[i], loss=np.ones(E)) for i, p in enumerate(profiles)]


def test_with_empty_slots_allowed_a_priced_pair_worth_less_is_left_out():
    reports = _concentrated(12)
    weights = als.ScoringWeights(capability=0.0, load=0.0, switching=0.0, price=0.5)
    kwargs = dict(method="flow", min_cohort=0, balance_tolerance=10.0, max_experts=2)
    full = als.Aligner(E, SPEC, 1e6, scorer=als.FitnessScorer(weights), **kwargs).assign(0, reports)
    sparse = als.Aligner(E, SPEC, 1e6, scorer=als.FitnessScorer(weights), min_slots=0, **kwargs)
    a = sparse.assign(0, reports)
    problem = sparse.last_problem
    assert (full.matrix.sum(axis=1) == problem.client_capacity).all()  # filled: a second, worthless expert each
    assert not problem.client_min.any() and (problem.client_capacity >= 2).any()
    # each client keeps the one expert its data reach (score 1 + 0.5 - 0.5 > 0); the others score below 0
    by_client = a.by_client()
    assert all(by_client[f"c{i}"] == [i % E] for i in range(12) if problem.client_capacity[i] > 0)
    assert a.stats["aligner"]["relaxed"] == []
    als.verify(problem, a)


def test_min_slots_is_a_floor_that_holds_even_when_every_pair_scores_below_zero():
    reports = _concentrated(12)
    weights = als.ScoringWeights(capability=0.0, load=0.0, switching=0.0, price=5.0)  # every pair below 0
    kwargs = dict(method="flow", min_cohort=0, balance_tolerance=10.0, max_experts=2)
    for k, floor in ((0, 0), (1, 1), (2, 2)):
        aligner = als.Aligner(E, SPEC, 1e6, scorer=als.FitnessScorer(weights), min_slots=k, **kwargs)
        a = aligner.assign(0, reports)
        cap = aligner.last_problem.client_capacity
        np.testing.assert_array_equal(aligner.last_problem.client_min, np.minimum(cap, floor))
        np.testing.assert_array_equal(a.matrix.sum(axis=1), np.minimum(cap, floor))  # nothing above the floor
        if k == 1:  # the one kept is the expert its data reach
            assert all(a.by_client()[f"c{i}"] == [i % E] for i in range(12) if cap[i] > 0)


def test_min_slots_is_checked_and_survives_a_checkpoint():
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(als.InvalidProblemError, match="min_slots"):
            als.Aligner(E, SPEC, 1.0, min_slots=bad)
    aligner = als.Aligner(E, SPEC, 1e6, min_slots=1)
    assert als.Aligner.from_json(aligner.to_json()).min_slots == 1
    old = aligner.state_dict()
    del old["config"]["min_slots"]  # a checkpoint written before the option existed
    assert als.Aligner.from_state(old).min_slots is None
    for bad in (-1, 1.0, True):
        with pytest.raises(ConfigError, match="min_slots: must be None"):
            FedConfig(min_slots=bad).validate()
    data = {"samples_per_client": 20, "test_size": 50}
    setup = build(FedConfig(dataset="synthetic", n_clients=6, per_round=3, n_experts=3, min_slots=1, data_options=data))
    assert setup.policy.aligner.min_slots == 1


# -- how ties among optima fall ------------------------------------------------------------------------------------


def _twins(n=12):
    """n clients with the same device and the same routing: every row of F is the same, so optima tie."""
    profiles, _ = make_clients(1, seed=1)
    return [als.ClientReport(f"c{i}", profiles[0], np.ones(E)) for i in range(n)]


def test_shuffled_ties_fall_at_random_on_an_optimum_of_the_same_problem():
    reports = _twins()
    got = {}
    for tie_break in als.TIE_BREAKS:
        for seed in range(4):
            aligner = als.Aligner(
                E, SPEC, 1e6, method="flow", min_cohort=0, max_experts=2, tie_break=tie_break, seed=seed
            )
            got[tie_break, seed] = (aligner.assign(0, reports), aligner.last_problem)
    best = got["solver", 0][0].objective
    for (tie_break, _seed), (a, problem) in got.items():
        assert a.status == "optimal"  # relabelling keeps the solver's proof
        assert a.objective == pytest.approx(best, rel=1e-12, abs=1e-12)
        assert problem.objective(a.matrix) == pytest.approx(best, rel=1e-12, abs=1e-12)
        assert ("tie_break" in a.stats) == (tie_break == "shuffle")
        if tie_break == "shuffle":  # the orders are permutations, and the certificate of the shuffled problem is gone
            orders = a.stats["tie_break"]
            assert sorted(orders["client_order"]) == list(range(12)) and sorted(orders["expert_order"]) == list(
                range(E)
            )
            assert "certificate" not in a.stats
    distinct = {tb: len({got[tb, s][0].matrix.tobytes() for s in range(4)}) for tb in als.TIE_BREAKS}
    assert distinct["solver"] == 1  # the flow solver's arc order decides every tie the same way
    assert distinct["shuffle"] > 1  # the seed moves which tied optimum comes back
    again = als.Aligner(E, SPEC, 1e6, method="flow", min_cohort=0, max_experts=2, tie_break="shuffle", seed=2)
    assert np.array_equal(again.assign(0, reports).matrix, got["shuffle", 2][0].matrix)  # same seed, same answer


def test_shuffling_leaves_a_unique_optimum_and_every_guarantee_in_place():
    """Without ties the shuffled solve returns the very same assignment, relaxed rounds and budget mode included."""
    profiles, routing = make_clients(30, seed=6)
    for kwargs in (
        dict(method="flow", min_cohort=3, max_experts=2),  # cohort and cap bounds permuted with the experts
        dict(method="cpsat", budget_mode=True, min_cohort=1, time_limit=5.0),  # per-pair costs and budgets permuted
    ):
        pair = [als.Aligner(E, SPEC, 15.0, tie_break=tb, seed=4, **kwargs) for tb in als.TIE_BREAKS]
        rng = np.random.default_rng(9)
        for r in range(3):
            reports = reports_for(r, profiles, routing, rng)
            plain, shuffled = (al.assign(r, reports) for al in pair)
            assert shuffled.status == plain.status
            assert shuffled.stats["aligner"]["relaxed"] == plain.stats["aligner"]["relaxed"]
            assert shuffled.by_client() == plain.by_client()
            for al, a in zip(pair, (plain, shuffled)):
                al.observe([als.ClientOutcome(cid, samples=10.0 * row) for cid, row in zip(a.client_ids, a.matrix)])


def test_a_shuffled_round_without_a_solution_explains_itself_in_the_problems_own_indices():
    # client 0 must fill 2 slots and may train expert 4 only: the explanation names client 0
    allowed = np.ones((4, E), dtype=bool)
    allowed[0, :] = False
    allowed[0, 4] = True
    problem = als.Problem(np.ones((4, E)), 2, client_min=2, expert_max=3, allowed=allowed)
    plain = als.solve(problem, "flow")
    assert plain.status == "infeasible" and "client 0 " in plain.message
    for seed in range(4):  # a shuffled order would move client 0 elsewhere on most seeds
        aligner = als.Aligner(E, SPEC, 1e6, method="flow", tie_break="shuffle", seed=seed)
        answer = aligner._solve(problem, 0)
        assert answer.status == "infeasible" and answer.message == plain.message and "tie_break" not in answer.stats
