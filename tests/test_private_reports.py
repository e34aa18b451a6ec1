"""Private client reports in the federated loop: validation, the mechanism on the client, what the scorer sees."""

from __future__ import annotations

import numpy as np
import pytest

import fedloop
from fedloop.client import private_report
from fedloop.loop import ConfigError

SMALL = dict(n_clients=6, per_round=4, n_experts=4, rounds=2, hidden=16, expert_hidden=8, testbed="experts")


@pytest.mark.parametrize(
    "field, value",
    [
        ("report_epsilon", 0.0),
        ("report_epsilon", -1.0),
        ("report_epsilon", float("nan")),
        ("report_epsilon", True),
        ("report_epsilon", "1"),
        ("report_delta", 1.0),
        ("report_delta", 0.0),
        ("report_mechanism", "laplace"),
        ("report_mechanism", None),
    ],
)
def test_a_bad_privacy_budget_is_refused_by_name(field, value):
    with pytest.raises(ConfigError, match=field):
        fedloop.FedConfig(**(SMALL | {field: value})).validate()


def test_reports_are_unchanged_without_a_budget_and_noised_reproducibly_with_one():
    routing = np.array([0.5, 0.5, 0.0, 0.0])
    loss = np.array([1.2, 0.8, np.nan, np.nan])
    plain = fedloop.FedConfig(**SMALL)
    assert private_report(routing, loss, plain, 3, 1)[0] is routing
    private = fedloop.FedConfig(**(SMALL | {"report_epsilon": 1.0}))
    r1, l1 = private_report(routing, loss, private, 3, 1)
    r2, l2 = private_report(routing, loss, private, 3, 1)
    assert np.array_equal(r1, r2) and np.array_equal(l1, l2)  # same seed, round and client: same noise
    assert np.all(np.isfinite(l1))  # a NaN would tell which experts the client's data avoid
    assert not np.allclose(r1, routing)
    other = private_report(routing, loss, private, 4, 1)[0]
    assert not np.array_equal(other, r1)  # fresh noise every round
    # a looser budget adds less noise (same draws, smaller scale)
    loose = fedloop.FedConfig(**(SMALL | {"report_epsilon": 50.0}))
    assert np.abs(private_report(routing, loss, loose, 3, 1)[0] - routing).sum() < np.abs(r1 - routing).sum()


def test_the_policy_sees_only_the_privatised_reports():
    seen = []

    class Spy(fedloop.policies.Policy):
        def assign(self, r, reports, capacity, allowed, rng):
            seen.append([np.asarray(rep.routing, float) for rep in reports])
            return np.zeros(allowed.shape, dtype=bool)

    for epsilon in (None, 1.0):
        setup = fedloop.build(fedloop.FedConfig(**(SMALL | {"report_epsilon": epsilon})))
        setup.policy = Spy()
        fedloop.loop.begin_round(setup, 0)
    plain, noised = seen
    assert all(np.isclose(v.sum(), 1.0) and v.min() >= 0 for v in plain)  # shares, as measured
    assert any(v.min() < 0 or not np.isclose(v.sum(), 1.0) for v in noised)  # noise the server cannot undo
    history = fedloop.run(fedloop.FedConfig(**(SMALL | {"report_epsilon": 1.0, "policy": "aligned"})))
    assert len(history.records) == 2 and np.all(np.isfinite(history.column("accuracy")))


def test_a_top1_report_is_a_one_hot_vector_without_loss_and_reproducible():
    routing = np.array([0.1, 0.6, 0.3, 0.0])
    loss = np.array([1.2, 0.8, 0.5, np.nan])
    cfg = fedloop.FedConfig(**(SMALL | {"report_epsilon": 1.0, "report_mechanism": "top1"}))
    sent = [private_report(routing, loss, cfg, r, 2) for r in range(400)]
    assert all(lo is None for _, lo in sent)  # the loss never leaves the client
    vectors = np.stack([v for v, _ in sent])
    assert np.all(vectors.sum(axis=1) == 1.0) and set(np.unique(vectors)) == {0.0, 1.0}
    again = private_report(routing, loss, cfg, 7, 2)[0]
    assert np.array_equal(again, vectors[7])  # seeded by (seed, round, client): the Flower client sends the same
    # the top expert (1) is sent about as often as randomized response promises, 0.475 with 4 experts at epsilon 1
    assert vectors[:, 1].mean() == pytest.approx(1 / (1 + 3 * np.exp(-1.0)), abs=0.08)
    # a budget huge enough sends the top expert every time
    loose = fedloop.FedConfig(**(SMALL | {"report_epsilon": 700.0, "report_mechanism": "top1"}))
    assert all(private_report(routing, loss, loose, r, 2)[0][1] == 1.0 for r in range(50))
    # without a budget the mechanism is not used: reports go as measured
    plain = fedloop.FedConfig(**(SMALL | {"report_mechanism": "top1"}))
    assert private_report(routing, loss, plain, 3, 1)[0] is routing


def test_a_run_with_top1_reports_scores_one_hot_vectors_and_finishes():
    seen = []

    class Spy(fedloop.policies.Policy):
        def assign(self, r, reports, capacity, allowed, rng):
            seen.append([(np.asarray(rep.routing, float), rep.loss) for rep in reports])
            return np.zeros(allowed.shape, dtype=bool)

    cfg = fedloop.FedConfig(**(SMALL | {"report_epsilon": 2.0, "report_mechanism": "top1"}))
    setup = fedloop.build(cfg)
    setup.policy = Spy()
    fedloop.loop.begin_round(setup, 0)
    assert all(v.sum() == 1.0 and v.max() == 1.0 and loss is None for v, loss in seen[0])
    for policy in ("aligned", "flex_moe", "fedmoe"):  # every policy that reads reports takes one without loss
        options = SMALL | {"report_epsilon": 2.0, "report_mechanism": "top1", "policy": policy}
        history = fedloop.run(fedloop.FedConfig(**options))
        assert len(history.records) == 2 and np.all(np.isfinite(history.column("accuracy")))
