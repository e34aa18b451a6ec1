"""The Flower strategy and client app: against a fake grid, and end to end in Flower's simulation engine."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed (pip install 'alignsolve[flower]')")

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid

import alignsolve as als
import fedloop
from fedloop.flower import AlignedMoEStrategy
from fedloop.flower.client_app import handle_query, handle_train
from tests.test_fedloop import SMALL as LOOP_SMALL

SMALL = LOOP_SMALL | dict(n_clients=6, per_round=4)


def small(**overrides):
    return fedloop.FedConfig(**(SMALL | overrides))


@pytest.fixture(autouse=True)
def task_identity():
    """Flower stamps each Message with the running task's identity: a SuperLink sets it, here the fake grid does."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


class FakeGrid(Grid):
    """In-process nodes: node 100 + i is fedloop client i; ``silent`` nodes never reply to train messages."""

    def __init__(self, config, silent=()):
        self.config = config
        self.silent = set(silent)
        self.sent: list[Message] = []

    def get_node_ids(self):
        return [100 + i for i in range(self.config.n_clients)]

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            self.sent.append(msg)
            node = msg.metadata.dst_node_id
            context = Context(
                run_id=1,
                node_id=node,
                node_config={"partition-id": node - 100, "num-partitions": self.config.n_clients},
                state=RecordDict(),
                run_config={},
            )
            if msg.metadata.message_type == "query":
                replies.append(handle_query(msg, context, self.config))
            elif node not in self.silent:
                replies.append(handle_train(msg, context, self.config))
        return replies

    # The abstract surface the fake does not need.
    def create_message(self, *args, **kwargs):
        raise NotImplementedError

    def get_nodes(self):
        raise NotImplementedError

    def pull_messages(self, *args, **kwargs):
        raise NotImplementedError

    def push_messages(self, *args, **kwargs):
        raise NotImplementedError

    @property
    def run(self):
        raise NotImplementedError

    def set_run(self, run_id):
        raise NotImplementedError


def test_each_node_gets_exactly_its_assigned_experts():
    cfg = small(rounds=1)
    strategy = AlignedMoEStrategy(cfg)
    grid = FakeGrid(cfg)
    messages = list(strategy.configure_train(1, strategy.initial_arrays(), None, grid))
    assigned = strategy.assignments[0]
    assert messages and len(messages) == len(assigned)
    by_node = {cid: strategy.node_of[cid] for cid in assigned}
    for msg in messages:
        cid = next(c for c, n in by_node.items() if n == msg.metadata.dst_node_id)
        experts = [int(j) for j in msg.content["config"]["experts"]]
        assert experts == assigned[cid]
        keys = msg.content["arrays"].to_torch_state_dict().keys()
        carried = {int(k.split(".")[1]) for k in keys if k.startswith("experts.")}
        assert carried == set(experts)  # only the assigned experts travel
        assert any(k.startswith("router.") for k in keys) and any(k.startswith("head.") for k in keys)


@pytest.mark.parametrize(
    "options",
    [{}, {"report_epsilon": 2.0}, {"report_epsilon": 2.0, "report_mechanism": "top1"}, {"feature_norm": True}],
    ids=["plain-reports", "private-reports", "top1-reports", "feature-norm"],
)
def test_strategy_over_a_fake_grid_reproduces_the_in_process_run(options):
    # private reports: the client app noises them as the loop does; feature_norm: normalisation statistics travel
    cfg = small(**options)
    strategy = AlignedMoEStrategy(cfg)
    result = strategy.start(grid=FakeGrid(cfg), initial_arrays=strategy.initial_arrays(), num_rounds=cfg.rounds)
    reference = fedloop.run(cfg)
    # Same sampling, reports, assignments and aggregation: the same records, wall clock aside.
    assert strategy.history.deterministic() == reference.deterministic()
    assert result.train_metrics_clientapp[cfg.rounds]["accuracy"] == pytest.approx(reference.column("accuracy")[-1])


def test_a_node_that_does_not_reply_is_a_dropout():
    cfg = small(rounds=1, per_round=6)
    probe = AlignedMoEStrategy(cfg)
    list(probe.configure_train(1, probe.initial_arrays(), None, FakeGrid(cfg)))
    victim = next(iter(probe.assignments[0]))
    strategy = AlignedMoEStrategy(cfg)
    grid = FakeGrid(cfg, silent={100 + fedloop.build(cfg).data.client_ids.index(victim)})
    strategy.start(grid=grid, initial_arrays=strategy.initial_arrays(), num_rounds=1)
    record = strategy.history.records[0]
    assert victim in record.dropped and victim not in record.trained
    assert np.isfinite(record.accuracy)


def test_simulation_matches_the_in_process_assignments(tmp_path):
    """4 SuperNodes, 2 rounds, in Flower's simulation engine (Ray), telemetry off, a temporary Flower home."""
    pytest.importorskip("ray", reason="Flower's simulation engine needs ray (pip install 'flwr[simulation]')")
    script = textwrap.dedent(
        """
        import json, sys
        import fedloop
        from fedloop.flower import run_simulation
        cfg = fedloop.FedConfig(n_clients=4, per_round=3, n_experts=4, rounds=2, hidden=16, expert_hidden=16,
                                local_epochs=1, data_options={"samples_per_client": 40, "test_size": 200})
        history = run_simulation(cfg, num_cpus=2, cpus_per_client=1.0)
        reference = fedloop.run(cfg)
        print("RESULT", json.dumps({"flower": history.deterministic(), "local": reference.deterministic()}))
        """
    )
    env = dict(
        os.environ,
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_HOME=str(tmp_path / "flwr-home"),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_ADDRESS="",
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stderr[-3000:]
    import json

    doc = json.loads(lines[-1][len("RESULT ") :])
    assert [r["loads"] for r in doc["flower"]] == [r["loads"] for r in doc["local"]]
    assert doc["flower"] == doc["local"]


def test_profiles_travel_in_the_query_replies(monkeypatch):
    import fedloop.flower.client_app as client_app

    cfg = small(rounds=1, per_round=6)
    data, model, profiles = client_app._local(cfg)
    slow = profiles[0].to_dict() | {"downlink_bps": 1.0, "uplink_bps": 1.0}  # cannot download anything in time
    patched = [als.ClientProfile(**slow), *profiles[1:]]
    monkeypatch.setattr(client_app, "_local", lambda config: (data, model, patched))
    strategy = AlignedMoEStrategy(cfg)
    list(strategy.configure_train(1, strategy.initial_arrays(), None, FakeGrid(cfg)))
    # The server planned with the profile the client sent, not its own table: client 0 has no slot.
    assert data.client_ids[0] not in strategy.assignments[0]
    assert strategy.setup.profiles[0].downlink_bps > 1.0


def _tampered(reply, kind):
    """A copy of a train reply broken in one way."""
    from flwr.app import ArrayRecord, MetricRecord

    content = RecordDict(dict(reply.content.items()))
    state = content["arrays"].to_torch_state_dict()
    key = next(k for k in state if k.startswith("experts."))
    if kind == "shape":
        state[key] = state[key].reshape(-1)[:-1].clone()
    elif kind == "extra":
        state["experts.99.w"] = state[key].clone()
    elif kind == "missing":
        del state[key]
    elif kind == "shared_missing":
        del state[next(k for k in state if k.startswith("head."))]
    if kind in ("shape", "extra", "missing", "shared_missing"):
        content["arrays"] = ArrayRecord(state)
    elif kind == "no_metrics":
        del content["metrics"]
    elif kind == "routed":
        import torch

        content["routed"] = ArrayRecord({"routed": torch.zeros(1, dtype=torch.float64)})
    elif kind == "negative":
        content["metrics"] = MetricRecord({"n-samples": -5, "train-loss": 1.0})
    elif kind == "no_info":
        del content["info"]
    return Message(content, reply_to=reply)


class TamperingGrid(FakeGrid):
    """Breaks the train reply of node ``victim`` in the way ``kind`` says."""

    def __init__(self, config, victim, kind):
        super().__init__(config)
        self.victim, self.kind = victim, kind

    def send_and_receive(self, messages, *, timeout=None):
        replies = super().send_and_receive(messages, timeout=timeout)
        out = []
        for msg, reply in zip(messages, replies):
            train = msg.metadata.message_type != "query"
            out.append(_tampered(reply, self.kind) if train and msg.metadata.dst_node_id == self.victim else reply)
        return out


@pytest.mark.parametrize(
    "kind", ["shape", "extra", "missing", "shared_missing", "no_metrics", "routed", "negative", "no_info"]
)
def test_a_malformed_reply_is_that_clients_dropout_and_the_round_completes(kind, caplog):
    cfg = small(rounds=1, per_round=6)
    probe = AlignedMoEStrategy(cfg)
    list(probe.configure_train(1, probe.initial_arrays(), None, FakeGrid(cfg)))
    victim = next(iter(probe.assignments[0]))
    node = 100 + fedloop.build(cfg).data.client_ids.index(victim)
    strategy = AlignedMoEStrategy(cfg)
    with caplog.at_level("WARNING"):
        strategy.start(grid=TamperingGrid(cfg, node, kind), initial_arrays=strategy.initial_arrays(), num_rounds=1)
    record = strategy.history.records[0]
    assert victim in record.dropped and victim not in record.trained
    assert record.trained  # the others were aggregated
    assert np.isfinite(record.accuracy)
    assert any("dropped" in r.message for r in caplog.records)
