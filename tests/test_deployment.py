"""Flower's deployment engine end to end: a SuperLink and SuperNodes as processes on loopback, ``flwr run``.

Also the device measurement a deployed ClientApp makes (``profile="measure"``), with an
injected clock.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import alignsolve as als
import fedloop
from fedloop.flower.deploy import Deployment, alive, cli_missing
from fedloop.flower.device import DeviceMeter, Measurement, available_memory, training_flops_per_sample
from tests.test_flower import task_identity  # noqa: F401 - the fixture Flower's messages need in-process

# -- the measurement, with an injected clock --------------------------------------------------------------------


class Ticks:
    """A clock that advances by ``step`` seconds per reading."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def _model(feature_norm: bool = False):
    return fedloop.model.MoE((6,), 3, 4, top_k=2, hidden=8, expert_hidden=5, feature_norm=feature_norm)


@pytest.mark.parametrize("feature_norm", [False, True])
def test_compute_is_the_planners_flops_over_the_timed_pass_and_weights_do_not_move(feature_norm):
    model = _model(feature_norm)  # with feature_norm the timed pass would move normalisation statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    meter = DeviceMeter(clock=Ticks(0.25), batch=4, memory=lambda: 1e9)
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    flops = meter.measure_compute(model, x, y, round=3)
    per_sample = 6.0 * (model.shared_parameters() + 2 * model.expert_parameters(0))
    assert training_flops_per_sample(model) == per_sample
    assert flops == pytest.approx(4 * per_sample / 0.25)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not meter.due(7) and meter.due(8)  # refreshed every 5 rounds


def test_link_rates_are_effective_rates_of_the_messages_already_exchanged():
    meter = DeviceMeter(memory=lambda: None)
    assert meter.observe_download(1_000_000, sent_at=100.0, received_at=102.0) == pytest.approx(4e6)
    assert meter.observe_download(1000, sent_at=5.0, received_at=4.0) == pytest.approx(8000 / 1e-3)  # clock skew
    fallback = als.ClientProfile(compute_flops=1e9, memory_bytes=2e9, downlink_bps=1e6, uplink_bps=5e5)
    p = meter.profile(fallback, n_samples=7)
    assert p.uplink_bps == p.downlink_bps  # no upload timed yet: the downlink stands in
    meter.observe_upload(250_000, 1.0)
    p = meter.profile(fallback, n_samples=7)
    assert p.uplink_bps == pytest.approx(2e6) and p.n_samples == 7
    assert p.compute_flops == 1e9 and p.memory_bytes == 2e9  # not measured yet: the fallback's


def test_the_measurement_survives_its_record_and_bad_settings_are_refused():
    meter = DeviceMeter(state=Measurement(compute_flops=3e9, compute_round=2, downlink_bps=1e6))
    again = DeviceMeter.from_dict(meter.to_dict())
    assert again.state == meter.state
    with pytest.raises(ValueError, match="refresh_every"):
        DeviceMeter(refresh_every=0)
    with pytest.raises(ValueError, match="batch"):
        DeviceMeter(batch=True)


def test_available_memory_takes_the_tighter_of_the_machine_and_the_cgroup(tmp_path):
    (tmp_path / "meminfo").write_text("MemTotal: 8000000 kB\nMemAvailable: 4000000 kB\n")
    cg = tmp_path / "cg"
    cg.mkdir()
    (cg / "memory.max").write_text("3000000000\n")
    (cg / "memory.current").write_text("1000000000\n")
    assert available_memory(str(tmp_path / "meminfo"), str(cg)) == 2e9
    (cg / "memory.max").write_text("max\n")
    assert available_memory(str(tmp_path / "meminfo"), str(cg)) == 4000000 * 1024.0


@pytest.mark.usefixtures("task_identity")
def test_measuring_clients_report_their_device_and_learn_their_uplink():
    """Over the in-process grid of tests/test_flower.py, with each node's Flower context kept between messages."""
    from flwr.app import Context, RecordDict

    from fedloop.flower import AlignedMoEStrategy
    from fedloop.flower.client_app import DEVICE_KEY
    from tests.test_flower import FakeGrid, small

    class MeasuringGrid(FakeGrid):
        def __init__(self, config):
            super().__init__(config)
            self.states = {}

        def send_and_receive(self, messages, *, timeout=None):
            from fedloop.flower.client_app import handle_query, handle_train

            replies = []
            for msg in messages:
                node = msg.metadata.dst_node_id
                context = Context(
                    run_id=1,
                    node_id=node,
                    node_config={
                        "partition-id": node - 100,
                        "num-partitions": self.config.n_clients,
                        "profile": "measure",
                    },
                    state=self.states.setdefault(node, RecordDict()),
                    run_config={},
                )
                handler = handle_query if msg.metadata.message_type == "query" else handle_train
                replies.append(handler(msg, context, self.config))
            return replies

    # measured rates include every overhead of a message's trip: the deadline is given in seconds, not calibrated
    # on the simulated profile table (whose phones would be far faster than these overheads)
    cfg = small(rounds=3, per_round=6, deadline=300.0)
    strategy = AlignedMoEStrategy(cfg)
    grid = MeasuringGrid(cfg)
    strategy.start(grid=grid, initial_arrays=strategy.initial_arrays(), num_rounds=3)
    table = {cid: p for cid, p in zip(strategy.setup.data.client_ids, strategy.setup.profiles)}
    for plan in strategy.plans.values():
        for cid, entry in plan.items():
            reported = entry["profile"]
            assert reported["compute_flops"] != table[cid].compute_flops  # measured, not the table's
            assert entry["capacity"] >= len(entry["experts"])
    assert any(entry["experts"] for plan in strategy.plans.values() for entry in plan.values())
    saved = [dict(state[DEVICE_KEY]) for state in grid.states.values() if DEVICE_KEY in state]
    assert saved and all("compute_flops" in s and "downlink_bps" in s for s in saved)
    assert strategy.uploads and any("uplink_bps" in s for s in saved)  # a later report carried the timed upload


def test_an_unknown_profile_source_is_refused():
    from flwr.app import Context, RecordDict

    from fedloop.flower.client_app import _measures

    ctx = Context(run_id=1, node_id=1, node_config={"profile": "guess"}, state=RecordDict(), run_config={})
    with pytest.raises(ValueError, match="profile: must be one of table, measure"):
        _measures(ctx)


# -- the deployment ---------------------------------------------------------------------------------------------

MISSING = cli_missing()
DEPLOYED = dict(
    n_clients=3,
    per_round=3,
    n_experts=4,
    rounds=2,
    hidden=8,
    expert_hidden=8,
    local_epochs=1,
    max_experts=2,
    # Seconds a round may take on this loopback deployment, where each message starts a ClientApp process: the
    # run's calibrated deadline comes from the simulated profile table, not from what these devices measure.
    deadline=300.0,
    data_options={"samples_per_client": 30, "test_size": 100},
)


#: Seconds to wait for a deployed run's results: a guard against a hung deployment, not a speed target. Every
#: message starts a ClientApp process (torch imported afresh, seconds each), and under CI the deployment shares two
#: cores with the other pytest worker: the TLS run has taken 149 s of a 150 s limit and missed it once.
RESULTS_TIMEOUT = 480.0
#: Seconds a deployed round waits for replies before a node counts as dropped (the fault test kills one). Live
#: nodes must answer well within it on a loaded machine (each reply starts a ClientApp process).
ROUND_TIMEOUT = 60.0


def _check(results: dict, rounds: int = 2, unanswered: tuple = ()) -> None:
    """Every assignment within the slots planned from the profile the client measured; loads capped.

    ``unanswered``: (round, client id) pairs whose node was not there to report (the table's profile stands in).
    """
    history, clients = results["history"], results["clients"]
    records = history["records"]
    assert [r["round"] for r in records] == list(range(rounds))
    assert history["config"]["runtime"] == "flower"
    cfg = fedloop.FedConfig(**DEPLOYED)
    setup = fedloop.build(cfg)
    table = {cid: p.to_dict() for cid, p in zip(setup.data.client_ids, setup.profiles)}
    for r, plan in clients.items():
        profiles = [als.ClientProfile.from_dict(e["profile"]) for e in plan.values()]
        for cid, e in plan.items():
            if (int(r), cid) not in unanswered:
                assert e["profile"] != table[cid]  # measured, not the table's
        again = als.plan_capacity(
            profiles,
            setup.spec,
            history["config"]["deadline_s"],
            n_experts=cfg.n_experts,
            local_epochs=cfg.local_epochs,
            max_experts=cfg.max_experts,
        )
        loads = np.zeros(cfg.n_experts, dtype=int)
        for k, (cid, entry) in enumerate(plan.items()):
            if (int(r), cid) in unanswered:  # no report: no slot, whatever its stand-in profile would give
                assert entry["capacity"] == 0 and entry["experts"] == []
                continue
            assert entry["capacity"] == again.capacity[k]
            assert len(entry["experts"]) <= entry["capacity"]
            assert all(again.allowed[k, j] for j in entry["experts"])
            loads[entry["experts"]] += 1
        slots = sum(e["capacity"] for e in plan.values())
        assert loads.max() <= max(1, math.ceil(1.25 * slots / cfg.n_experts - 1e-9))
        assert records[int(r)]["loads"] == loads.tolist()
        assert loads.sum() > 0  # clients were given experts: the check above is not vacuous


@pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
def test_a_tls_deployment_on_loopback_runs_two_rounds_with_measured_profiles(tmp_path):
    """TLS with certificates made here; the insecure deployment is the fault test's below (the same checks)."""
    with Deployment(tmp_path, DEPLOYED, tls=True) as dep:
        dep.start_superlink()
        for i in range(DEPLOYED["n_clients"]):
            dep.start_supernode(i)
        app = dep.prepare_app()
        dep.submit(app)
        results = dep.wait_for_results(timeout=RESULTS_TIMEOUT)
    _check(results)
    assert len(dep.stopped) > len(dep.procs)  # Flower's own processes were found and stopped with them
    assert not [pid for pid in dep.stopped if alive(pid)]  # every process the test started is gone


# -- faults, in-process (the same strategy code the deployment runs) --------------------------------------------


@pytest.mark.usefixtures("task_identity")
def test_a_late_node_is_greeted_at_the_next_round_and_an_unknown_one_gets_no_experts():
    from tests.test_flower import FakeGrid, small

    class LateGrid(FakeGrid):
        """Node 100 + n - 1 connects only from the second round on."""

        def __init__(self, config):
            super().__init__(config)
            self.round = 0

        def get_node_ids(self):
            ids = super().get_node_ids()
            return ids if self.round >= 1 else ids[:-1]

    cfg = small(rounds=2, per_round=6)
    strategy = fedloop.flower.AlignedMoEStrategy(cfg, min_nodes=cfg.n_clients - 1, wait_for_nodes=1.0)
    grid = LateGrid(cfg)
    late = strategy.setup.data.client_ids[-1]
    list(strategy.configure_train(1, strategy.initial_arrays(), None, grid))
    first = strategy.plans[0]  # every client is sampled (per_round = n_clients)
    assert first[late]["capacity"] == 0 and first[late]["experts"] == []
    assert late not in strategy.node_of
    grid.round = 1
    strategy._pending = None
    list(strategy.configure_train(2, strategy.initial_arrays(), None, grid))
    assert late in strategy.node_of  # greeted at the start of the next round
    assert strategy.plans[1][late]["capacity"] > 0


@pytest.mark.usefixtures("task_identity")
def test_a_restarted_strategy_resumes_from_its_checkpoint(tmp_path):
    from tests.test_flower import FakeGrid, small

    cfg = small(rounds=3)
    whole = fedloop.flower.AlignedMoEStrategy(cfg)
    whole.start(grid=FakeGrid(cfg), initial_arrays=whole.initial_arrays(), num_rounds=3)
    ckpt = tmp_path / "checkpoint.pt"
    first = fedloop.flower.AlignedMoEStrategy(small(rounds=1), checkpoint=ckpt)
    first.start(grid=FakeGrid(cfg), initial_arrays=first.initial_arrays(), num_rounds=1)
    again = fedloop.flower.AlignedMoEStrategy(cfg, checkpoint=ckpt, resume=True)
    assert again.first == 1
    again.start(grid=FakeGrid(cfg), initial_arrays=again.initial_arrays(), num_rounds=2)
    assert again.history.deterministic() == whole.history.deterministic()
    with pytest.raises(fedloop.loop.CheckpointError, match="another configuration"):
        fedloop.flower.AlignedMoEStrategy(small(rounds=3, lr=0.5), checkpoint=ckpt, resume=True)


# -- faults, deployed ---------------------------------------------------------------------------------------------

TRAIN_RECEIVED = "Receiving: train message"


@pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
def test_deployed_faults_a_late_node_a_killed_node_and_a_restarted_server_app(tmp_path):
    """One federation, three faults: node 2 joins during round 0, node 1 is killed mid-round 1, then the run is
    submitted again with ``resume`` and one more round (a restarted ServerApp continues from the checkpoint)."""
    fed = DEPLOYED
    ids = fedloop.build(fedloop.FedConfig(**fed)).data.client_ids
    with Deployment(tmp_path, fed, tls=False) as dep:
        dep.start_superlink()
        dep.start_supernode(0)
        dep.start_supernode(1)
        dep.submit(dep.prepare_app(round_timeout=ROUND_TIMEOUT, min_nodes=2))
        # round 0 is training without node 2
        dep.wait_for_log("supernode0", TRAIN_RECEIVED, timeout=RESULTS_TIMEOUT)
        dep.start_supernode(2)
        # round 1's train message reached node 1
        dep.wait_for_log("supernode1", TRAIN_RECEIVED, count=2, timeout=RESULTS_TIMEOUT)
        dep.stop("supernode1")
        first = dep.wait_for_results(timeout=RESULTS_TIMEOUT)
        (dep.out / "clients.json").unlink()
        dep.fedconfig = fed | {"rounds": 3}
        dep.submit(dep.prepare_app(round_timeout=ROUND_TIMEOUT, min_nodes=2, resume=True))
        resumed = dep.wait_for_results(timeout=RESULTS_TIMEOUT)
    rounds = first["history"]["records"]
    assert [r["round"] for r in rounds] == [0, 1]
    plan0, plan1 = first["clients"]["0"], first["clients"]["1"]
    assert plan0[ids[2]]["experts"] == [] and plan0[ids[2]]["capacity"] == 0  # not connected yet: no slot
    assert plan1[ids[2]]["experts"] and ids[2] in rounds[1]["trained"]  # assigned from the next round
    assert plan1[ids[1]]["experts"] and ids[1] in rounds[1]["dropped"]  # killed mid-round: a dropout
    assert np.isfinite(rounds[1]["accuracy"]) and rounds[1]["completed"] >= 1  # and the round completed
    _check(first, rounds=2, unanswered={(0, ids[2])})
    _check(resumed, rounds=3, unanswered={(0, ids[2]), (2, ids[1])})
    assert len(dep.stopped) > len(dep.procs)  # Flower's own processes were found and stopped with them
    assert not [pid for pid in dep.stopped if alive(pid)]  # every process the test started is gone
    again = resumed["history"]["records"]
    assert [r["round"] for r in again] == [0, 1, 2]
    assert again[:2] == rounds  # the restarted ServerApp continued: the first rounds are not run again
    assert resumed["clients"]["2"][ids[1]]["experts"] == []  # the dead node did not answer: no experts


def test_the_deployment_page_gives_the_commands_the_harness_runs(tmp_path):
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "deployment.md").read_text()
    for tls in (False, True):
        dep = Deployment(tmp_path / str(tls), DEPLOYED, tls=tls)
        argv = [*dep.superlink_argv(), *dep.supernode_argv(0, 9094)]
        flags = [a for a in argv if a.startswith("--")]
        assert flags and all(flag in page for flag in flags), [f for f in flags if f not in page]
        assert dep.supernode_argv(0, 9094)[-1] in page  # partition-id=0 num-partitions=3 profile="measure"
    assert "flwr run . deploy" in page and "make_certificates" in page and "[superlink.deploy]" in page


@pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
def test_a_harness_stopped_by_sigterm_still_stops_its_superlink(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys, time\n"
        "from fedloop.flower.deploy import Deployment\n"
        "with Deployment(sys.argv[1], {'n_clients': 1}) as dep:\n"
        "    dep.start_superlink()\n"
        "    print(dep.procs['superlink'].pid, flush=True)\n"
        "    time.sleep(300)\n"
    )
    harness = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        superlink = int(harness.stdout.readline())
        harness.send_signal(signal.SIGTERM)  # what a timeout sends
        harness.wait(timeout=60)
        deadline = time.monotonic() + 30
        while alive(superlink) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(superlink)
    finally:
        harness.kill()
