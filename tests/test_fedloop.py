"""fedloop: aggregation, the masked MoE, local training, policies, data loaders, faults, checkpoints, resume, CLI."""

from __future__ import annotations

import gzip
import json
import math
import struct

import numpy as np
import pytest
import torch

import alignsolve as als
import fedloop
from fedloop import cli
from fedloop.client import client_statistics, train_local
from fedloop.data import (
    dirichlet_label_partition,
    load_digits_data,
    load_idx_folder,
    make_latent_domains,
    read_idx,
    shard_partition,
)
from fedloop.loop import routed_share
from fedloop.model import MoE, split_state
from fedloop.policies import make_policy

SMALL = dict(
    n_clients=8,
    per_round=5,
    n_experts=4,
    rounds=3,
    hidden=16,
    expert_hidden=16,
    local_epochs=1,
    data_options={"samples_per_client": 40, "test_size": 200},
)


def small(**overrides):
    return fedloop.FedConfig(**(SMALL | overrides))


# -- aggregation --------------------------------------------------------------------------------------


def test_weighted_average_is_exact():
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(0.0)}
    b = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor(4.0)}
    out = fedloop.weighted_average([a, b], [1, 3])
    assert out["w"].tolist() == [2.5, 5.0] and out["b"].item() == 3.0
    assert fedloop.aggregate_shared([a, b], [10, 10])["w"].tolist() == [2.0, 4.0]
    with pytest.raises(ValueError, match="weights"):
        fedloop.weighted_average([a, b], [0, 0])
    with pytest.raises(ValueError, match="keys differ"):
        fedloop.weighted_average([a, {"w": a["w"]}], [1, 1])


def test_experts_average_over_their_trainers_and_untrained_ones_keep_their_weights():
    current = {0: {"experts.0.w": torch.tensor([0.0])}, 1: {"experts.1.w": torch.tensor([5.0])}}
    contributions = {
        0: [({"experts.0.w": torch.tensor([2.0])}, 1.0), ({"experts.0.w": torch.tensor([8.0])}, 2.0)],
        1: [({"experts.1.w": torch.tensor([100.0])}, 0.0)],  # routed nothing to it: ignored
    }
    out = fedloop.aggregate_experts(current, contributions)
    assert out[0]["experts.0.w"].tolist() == [6.0]
    assert out[1]["experts.1.w"] is current[1]["experts.1.w"]


def test_screening_rejects_non_finite_and_outsized_updates():
    norms = {"a": 1.0, "b": 1.2, "c": 0.9, "d": 50.0, "e": math.nan}
    rejected = fedloop.screen_updates(norms, factor=10)
    assert set(rejected) == {"d", "e"}
    assert "NaN" in rejected["e"] and "median" in rejected["d"]
    assert fedloop.screen_updates({"a": 1.0, "b": 100.0}) == {}  # too few for a median rule


# -- model and client ---------------------------------------------------------------------------------------


def test_masked_router_never_routes_to_unassigned_experts():
    torch.manual_seed(0)
    model = MoE((6,), 3, 6, top_k=2)
    x = torch.randn(256, 6)
    for allowed in ([4], [0, 5], [1, 2, 3]):
        mask = torch.zeros(6, dtype=torch.bool)
        mask[allowed] = True
        out = model(x, mask=mask)
        assert set(out.top.unique().tolist()) <= set(allowed)
        assert out.top.shape[1] == min(2, len(allowed))
    with pytest.raises(ValueError, match="mask"):
        model(x, mask=torch.zeros(6, dtype=torch.bool))


def test_local_training_leaves_untouched_experts_bit_identical():
    torch.manual_seed(0)
    model = MoE((6,), 3, 5, top_k=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    res = train_local(model, x, y, [1, 3], epochs=2, lr=0.5, seed=1)
    after = model.state_dict()
    for key in before:
        changed = not torch.equal(before[key], after[key])
        if key.startswith(("experts.0.", "experts.2.", "experts.4.")):
            assert not changed, key
    assert set(res.experts) == {1, 3}
    assert any(not torch.equal(before[k], res.experts[1][k]) for k in res.experts[1])
    assert res.routed[[0, 2, 4]].sum() == 0 and res.routed[[1, 3]].sum() > 0
    routing, loss = client_statistics(model, x, y)
    assert routing.sum() == pytest.approx(1.0) and routing.shape == (5,)
    assert np.all(np.isnan(loss) | (loss >= 0))
    shared, experts = split_state(model.state_dict())
    assert set(experts) == set(range(5)) and not any(k.startswith("experts.") for k in shared)


def test_cnn_encoder_runs_on_images():
    model = MoE((1, 8, 8), 10, 3, top_k=1)
    assert model(torch.rand(4, 1, 8, 8)).logits.shape == (4, 10)


# -- policies ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", fedloop.POLICIES)
def test_every_policy_respects_capacity_and_masks(name):
    rng = np.random.default_rng(0)
    e = 5
    profiles = als.sample_profiles(12, seed=0, n_samples=50)
    reports = [als.ClientReport(i, p, rng.dirichlet(np.ones(e))) for i, p in enumerate(profiles)]
    spec = als.ExpertSpec(param_bytes=5e5, flops_per_sample=1e6, shared_param_bytes=1e6)
    plan = als.plan_capacity(profiles, spec, 12.0, n_experts=e, max_experts=3)
    aligner = als.Aligner(e, spec, 12.0, max_experts=3) if name == "aligned" else None
    labels = {i: rng.integers(0, 20, size=7) for i in range(12)} if name == "oracle_labels" else None
    policy = make_policy(name, aligner=aligner, label_counts=labels)
    for r in range(3):
        m = policy.assign(r, reports, plan.capacity, plan.allowed, rng)
        assert m.shape == (12, e)
        if policy.respects_capacity:
            assert np.all(m.sum(axis=1) <= plan.capacity)
            assert not np.any(m & ~plan.allowed)
        else:
            assert m.all()
        policy.observe([als.ClientOutcome(i) for i in range(12) if m[i].any()] if name == "aligned" else [])
    with pytest.raises(ValueError, match="policy"):
        make_policy("greedy_magic")


def test_sticky_random_gives_a_client_the_same_experts_at_every_visit():
    e, n = 6, 8
    reports = [als.ClientReport(f"c{i}", None, np.full(e, 1 / e)) for i in range(n)]
    capacity, allowed = np.full(n, 2), np.ones((n, e), dtype=bool)
    policy = make_policy("sticky_random", seed=3)
    first = policy.assign(0, reports, capacity, allowed, np.random.default_rng(0))
    # another round, another generator, the clients in another order: each keeps its experts
    again = policy.assign(5, reports[::-1], capacity[::-1], allowed, np.random.default_rng(9))
    assert np.array_equal(again[::-1], first)
    assert (first.sum(axis=1) == 2).all()
    # the permutation depends on the seed: another seed moves some client
    assert not np.array_equal(make_policy("sticky_random", seed=4).assign(0, reports, capacity, allowed, None), first)
    # a disallowed expert is skipped, the next one in the client's order taken
    allowed[0, np.flatnonzero(first[0])[0]] = False
    out = policy.assign(1, reports, capacity, allowed, None)
    assert out[0].sum() == 2 and not np.any(out[0] & ~allowed[0])


def test_oracle_labels_sends_each_class_to_its_home_experts():
    e, k = 16, 10
    counts = {"a": np.eye(k)[3] * 50 + np.eye(k)[7] * 10, "b": np.eye(k)[7] * 40, "c": np.eye(k)[0] * 5}
    policy = make_policy("oracle_labels", label_counts=counts)
    assert policy.homes(3, e) == [3, 13] and policy.homes(7, e) == [7] and policy.homes(12, 5) == [2]
    reports = [als.ClientReport(cid, None, np.full(e, 1 / e)) for cid in counts]
    capacity, allowed = np.array([2, 2, 2]), np.ones((3, e), dtype=bool)
    out = policy.assign(0, reports, capacity, allowed, None)
    assert out[0, 7] and out[0, [3, 13]].sum() == 1 and out[0].sum() == 2  # its two classes, most samples first
    assert np.flatnonzero(out[1]).tolist() == [7]  # one class: one expert, the second slot left empty
    assert out[2, [0, 10]].sum() == 1 and out[2].sum() == 1
    # one slot: the class with the most samples; the same home expert at every visit
    one = policy.assign(1, reports, np.array([1, 1, 1]), allowed, None)
    assert np.array_equal(one[0], out[0] & np.isin(np.arange(e), [3, 13]))
    # a class whose home expert is disallowed is skipped: no expert of another class is trained in its place
    allowed[1, 7] = False
    assert not policy.assign(2, reports, capacity, allowed, None)[1].any()


@pytest.mark.parametrize(
    "counts, match",
    [
        ({}, "one K for all"),
        ({"a": np.ones(3), "b": np.ones(4)}, "one K for all"),
        ({"a": np.ones((2, 2))}, "one K for all"),
        ({"a": np.array([1.0, -1.0])}, "finite and >= 0; not so for client 'a'"),
        ({"a": np.array([1.0, np.nan])}, "finite and >= 0"),
    ],
)
def test_oracle_labels_refuses_bad_counts(counts, match):
    with pytest.raises(ValueError, match=match):
        make_policy("oracle_labels", label_counts=counts)


def test_oracle_labels_needs_counts_and_every_reporting_client():
    with pytest.raises(ValueError, match="label_counts: the oracle_labels policy needs"):
        make_policy("oracle_labels")
    policy = make_policy("oracle_labels", label_counts={"a": np.ones(3)})
    reports = [als.ClientReport("z", None, np.full(4, 0.25))]
    with pytest.raises(ValueError, match="client 'z' has no entry"):
        policy.assign(0, reports, np.array([1]), np.ones((1, 4), dtype=bool), None)


def test_oracle_labels_runs_in_the_loop_from_the_clients_labels():
    cfg = small(policy="oracle_labels", rounds=2)
    setup = fedloop.build(cfg)
    y0 = setup.data.clients[0][1]
    counts = setup.policy.label_counts[setup.data.client_ids[0]]
    assert counts.sum() == y0.numel() and counts.size == setup.data.n_classes
    history = fedloop.run(cfg)
    assert len(history.rounds) == 2


def test_topk_capped_keeps_loads_under_the_aligners_cap():
    rng = np.random.default_rng(1)
    e, n = 4, 20
    # Every client prefers expert 0: uncapped top-k would load it with all 20.
    reports = [als.ClientReport(i, None, np.array([0.7, 0.1, 0.1, 0.1])) for i in range(n)]
    capacity, allowed = np.ones(n, dtype=np.int64), np.ones((n, e), dtype=bool)
    out = make_policy("topk_capped", balance_tolerance=0.25).assign(0, reports, capacity, allowed, rng)
    cap = math.ceil(1.25 * n / e)
    assert out.sum(axis=0).max() <= cap and out.sum(axis=0)[0] == cap
    assert (out.sum(axis=1) == 1).all()  # nobody left without an expert while others have room
    assert make_policy("topk_affinity").assign(0, reports, capacity, allowed, rng).sum(axis=0)[0] == n


# -- data ------------------------------------------------------------------------------------------------------------


def write_idx(path, array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(body) if path.suffix == ".gz" else body)


def test_idx_loader_reads_tiny_files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 4, 4), dtype=np.uint8)
    labels = (np.arange(30) % 3).astype(np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:6])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:6])
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), images)
    data = load_idx_folder(tmp_path, 3, partition="iid")
    assert data.input_shape == (1, 4, 4) and data.n_classes == 3 and sum(data.n_samples) == 30
    assert float(data.clients[0][0].max()) <= 1.0
    floats = np.arange(6, dtype=">f4").reshape(2, 3)
    write_idx(tmp_path / "f.idx", floats, code=0x0D)
    assert read_idx(tmp_path / "f.idx").tolist() == [[0, 1, 2], [3, 4, 5]]
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="promises 10"):
        read_idx(tmp_path / "short")
    with pytest.raises(FileNotFoundError, match="t10k"):
        (tmp_path / "t10k-labels-idx1-ubyte").unlink()
        load_idx_folder(tmp_path, 3)


def test_partitions_cover_every_sample_once():
    labels = np.repeat(np.arange(5), 40)
    rng = np.random.default_rng(0)
    for parts in (dirichlet_label_partition(labels, 7, 0.3, rng), shard_partition(labels, 10, 2, rng)):
        joined = np.concatenate(parts)
        assert sorted(joined.tolist()) == list(range(200))
    shards = shard_partition(labels, 10, 2, np.random.default_rng(1))
    assert max(len(np.unique(labels[p])) for p in shards) <= 2  # pathological: few classes each
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_label_partition(labels, 3, 0.0, rng)


def test_latent_domains_and_digits():
    a = make_latent_domains(6, samples_per_client=30, seed=2)
    b = make_latent_domains(6, samples_per_client=30, seed=2)
    assert torch.equal(a.clients[3][0], b.clients[3][0]) and a.client_ids == b.client_ids
    assert a.client_ids[0].startswith("client-0-d")  # natural ids name the dominant domain
    assert a.test[0].shape[1] == a.input_shape[0]
    digits = load_digits_data(5, partition="shards", image=True)
    assert digits.input_shape == (1, 8, 8) and sum(digits.n_samples) + digits.test[1].numel() == 1797


# -- the loop ------------------------------------------------------------------------------------------------------


def test_three_round_end_to_end_run_writes_history_and_checkpoint(tmp_path):
    history = fedloop.run(small(policy="aligned"), out_dir=tmp_path)
    assert history.rounds == [0, 1, 2]
    rec = history.records[2]
    assert 0 <= rec.accuracy <= 1 and rec.bytes_down > 0 and rec.latency_s > 0 and len(rec.loads) == 4
    assert (tmp_path / "history.csv").exists() and (tmp_path / "checkpoint.pt").exists()
    frame = history.to_frame()
    assert list(frame.index) == [0, 1, 2] and "load_gini" in frame
    assert fedloop.History.from_json(history.to_json()).deterministic() == history.deterministic()


def test_a_round_records_the_seconds_of_its_reports_and_evaluation_and_an_older_history_reads_them_as_nan():
    history = fedloop.run(small(policy="aligned", rounds=2))
    for rec in history.records.values():
        assert rec.report_s > 0 and rec.evaluate_s > 0  # computed in this process
    assert {"report_s", "evaluate_s"} <= set(fedloop.history.WALL_CLOCK_FIELDS)
    assert not {"report_s", "evaluate_s"} & set(history.deterministic()[0])
    old = history.to_dict()
    for row in old["records"]:
        del row["report_s"], row["evaluate_s"]
    again = fedloop.History.from_json(json.dumps(old))
    assert all(math.isnan(r.report_s) and math.isnan(r.evaluate_s) for r in again.records.values())
    # reports sent by the clients (as on Flower) cost the server's process nothing
    setup = fedloop.build(small(policy="random"))
    first = fedloop.loop.begin_round(setup, 0)
    assert first.report_s > 0
    assert fedloop.loop.begin_round(setup, 0, reports=first.reports).report_s == 0.0


def test_routed_share_is_the_reported_routing_on_the_assigned_experts():
    """1 when every client trains every expert; per-client top-1 by routing share takes the most a client can."""
    full = fedloop.run(small(policy="all_experts", rounds=2))
    assert [full.records[r].routed_share for r in full.rounds] == pytest.approx([1.0, 1.0])
    runs = {name: fedloop.run(small(policy=name, rounds=2, max_experts=1)) for name in ("random", "topk_affinity")}
    for history in runs.values():
        for rec in history.records.values():
            counts = np.zeros(4, dtype=int)
            for experts in rec.assigned.values():
                counts[experts] += 1
            assert counts.tolist() == rec.loads and 0.0 <= rec.routed_share <= 1.0
    # round 0: same model, clients, reports and slots under both policies; top-1 takes each client's largest share
    assert runs["topk_affinity"].records[0].routed_share >= runs["random"].records[0].routed_share
    assert set(runs["random"].records[0].assigned) == set(runs["topk_affinity"].records[0].assigned)


def test_routed_share_of_a_private_report_stays_a_share():
    """A noised report has negative entries and does not sum to 1: they are clipped and the rest renormalised, so
    the share of all experts is 1 and every share lies in [0, 1]."""
    full = fedloop.run(small(policy="all_experts", rounds=2, report_epsilon=0.1))
    assert [full.records[r].routed_share for r in full.rounds] == pytest.approx([1.0, 1.0])
    noisy = fedloop.run(small(policy="topk_affinity", rounds=2, max_experts=1, report_epsilon=0.1))
    assert all(0.0 <= rec.routed_share <= 1.0 for rec in noisy.records.values())
    assert routed_share([-0.5, 0.25, 0.75, 0.0], np.array([False, True, False, False])) == pytest.approx(0.25)
    assert math.isnan(routed_share([-1.0, 0.0], np.array([True, False])))  # no mass left: no share


def test_bytes_are_exact_tensor_sizes():
    cfg = small(policy="all_experts", rounds=1)
    setup = fedloop.build(cfg)
    history = fedloop.run(cfg)
    rec = history.records[0]
    full = sum(t.numel() * t.element_size() for t in setup.model.state_dict().values())
    assert rec.bytes_down == rec.participants * full
    assert rec.bytes_up == (rec.participants - len(rec.dropped)) * full


def test_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = small(policy="aligned", rounds=5)
    straight = fedloop.run(cfg, out_dir=tmp_path / "a")

    class Killed(Exception):
        pass

    def kill_after_round_3(rec):
        if rec.round == 2:
            raise Killed

    with pytest.raises(Killed):
        fedloop.run(cfg, out_dir=tmp_path / "b", on_round=kill_after_round_3)
    assert fedloop.load_checkpoint(tmp_path / "b" / "checkpoint.pt")["round"] == 2
    resumed = fedloop.run(cfg, out_dir=tmp_path / "b", resume=True)
    assert resumed.deterministic() == straight.deterministic()
    with pytest.raises(fedloop.CheckpointError, match="another configuration"):
        fedloop.run(small(policy="aligned", rounds=5, seed=1), out_dir=tmp_path / "b", resume=True)


def test_truncated_or_tampered_checkpoints_give_clear_errors(tmp_path):
    path = fedloop.save_checkpoint(tmp_path / "c.pt", {"round": 1, "w": torch.ones(3)})
    assert fedloop.load_checkpoint(path)["w"].tolist() == [1.0, 1.0, 1.0]
    raw = path.read_bytes()
    (tmp_path / "short.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(fedloop.CheckpointError, match="truncated or was modified"):
        fedloop.load_checkpoint(tmp_path / "short.pt")
    tampered = bytearray(raw)
    tampered[-20] ^= 0xFF
    (tmp_path / "t.pt").write_bytes(bytes(tampered))
    with pytest.raises(fedloop.CheckpointError, match="checksum"):
        fedloop.load_checkpoint(tmp_path / "t.pt")
    (tmp_path / "x.pt").write_bytes(b"hello")
    with pytest.raises(fedloop.CheckpointError, match="not a fedloop checkpoint"):
        fedloop.load_checkpoint(tmp_path / "x.pt")
    assert not (tmp_path / "c.pt.tmp").exists()  # written then renamed


def test_injected_faults_are_survived(caplog):
    cfg = dict(policy="round_robin", rounds=2, n_clients=14, per_round=14)
    clean = fedloop.run(small(**cfg)).records[0]
    # Clients whose updates count in round 0 without faults (sampling and availability are seeded);
    # the median rule needs three finite updates besides the faulty ones.
    done = clean.trained
    assert len(done) >= 6
    a, b, c = done[:3]
    faults = fedloop.FaultPlan(drop=[[0, a]], nan=[[0, b]], huge=[[0, c]])
    with caplog.at_level("WARNING", logger="fedloop"):
        history = fedloop.run(small(**cfg, faults=faults))
    rec = history.records[0]
    assert a in rec.dropped
    assert "NaN" in rec.rejected[b] and "median" in rec.rejected[c]
    assert rec.completed == clean.completed - 3
    assert any(b in r.message for r in caplog.records)
    assert all(math.isfinite(v) for v in (rec.accuracy, history.records[1].accuracy))


def test_stragglers_are_dropped_in_deadline_mode():
    history = fedloop.run(small(policy="all_experts", rounds=1, deadline_mode=True))
    rec = history.records[0]
    assert rec.dropped and rec.completed < rec.participants  # every expert cannot fit the deadline


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(dataset="cifar"), "dataset"),
        (dict(policy="best"), "policy"),
        (dict(max_experts=9), "experts per client"),
        (dict(n_clients=0), "n_clients"),
        (dict(per_round=20), "per_round"),
        (dict(dataset="idx"), "data_dir"),
        (dict(data_options={"alpha": -1.0}), "alpha"),
    ],
)
def test_bad_configurations_fail_before_training(overrides, message):
    with pytest.raises(fedloop.ConfigError, match=message):
        fedloop.build(small(**overrides))


def test_device_is_validated():
    with pytest.raises(fedloop.ConfigError, match="device"):
        fedloop.build(small(device="tpu"))
    if not torch.cuda.is_available():
        with pytest.raises(fedloop.ConfigError, match="CUDA is not available"):
            fedloop.build(small(device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine (run on a lent GPU)")
def test_the_loop_runs_on_cuda_like_on_cpu(tmp_path):
    # round_robin's assignment does not depend on the model, so traffic must match exactly.
    cpu = fedloop.run(small(rounds=2, policy="round_robin"))
    gpu = fedloop.run(small(rounds=2, policy="round_robin", device="cuda"), out_dir=tmp_path)
    assert gpu.column("bytes_down") == cpu.column("bytes_down")
    assert gpu.column("accuracy") == pytest.approx(cpu.column("accuracy"), abs=0.05)
    assert fedloop.load_checkpoint(tmp_path / "checkpoint.pt")["model"]["head.weight"].device.type == "cpu"


def test_cli_run_and_compare(tmp_path, capsys):
    common = ["--clients", "6", "--per-round", "4", "--experts", "3", "--rounds", "2", "--no-progress"]
    assert cli.main(["run", *common, "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "history.png").exists()
    assert (
        cli.main(["compare", *common, "--policies", "aligned,random", "--seeds", "2", "--out", str(tmp_path / "c")])
        == 0
    )
    out = capsys.readouterr().out
    assert "| aligned |" in out and "rounds to target" in out
    assert (tmp_path / "c" / "comparison.png").exists() and (tmp_path / "c" / "comparison.json").exists()
    assert cli.main(["run", "--dataset", "cifar", "--out", str(tmp_path / "x")]) == 2
    assert "dataset: must be one of" in capsys.readouterr().err


def test_ablation_knobs_change_what_they_say():
    with pytest.raises(fedloop.ConfigError, match="score_weights"):
        fedloop.build(small(score_weights={"gravity": 1.0}))
    with pytest.raises(fedloop.ConfigError, match="score_weights"):
        fedloop.build(small(score_weights={"load": -1.0}))
    weights = fedloop.build(small(score_weights={"load": 0.0, "switching": 0.0})).policy.aligner.scorer.weights
    assert weights.load == 0.0 and weights.switching == 0.0 and weights.affinity == 1.0
    profiled = fedloop.run(small(rounds=1, max_experts=3))
    blind = fedloop.run(small(rounds=1, max_experts=3, capacity_profiling=False))
    # Without profiling every client gets max_experts slots, so traffic and the straggler's latency grow.
    assert blind.records[0].bytes_down > profiled.records[0].bytes_down
    assert blind.records[0].latency_s > profiled.records[0].latency_s
