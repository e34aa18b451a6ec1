"""Hostile and careless input against the aligner, the two command lines and fedloop's data and screening."""

from __future__ import annotations

import gzip
import json
import math
import struct
import subprocess
import sys

import numpy as np
import pytest

import alignsolve as als
import fedloop
from alignsolve import InvalidProblemError
from fedloop import cli as fed_cli
from fedloop.aggregation import screen_updates
from fedloop.data import read_idx
from tests.test_fedloop import SMALL

SPEC = als.ExpertSpec(param_bytes=1e6, flops_per_sample=1e6)
PROFILE = als.ClientProfile(compute_flops=1e10, memory_bytes=1e9, downlink_bps=1e7, uplink_bps=1e7, n_samples=100)


def reports(n, e=4):
    return [als.ClientReport(i, PROFILE, routing=np.full(e, 1.0 / e)) for i in range(n)]


# -- the aligner ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2])
def test_a_round_with_fewer_clients_than_the_cohort_relaxes_and_reports(n):
    aligner = als.Aligner(4, SPEC, deadline=60.0, min_cohort=3)
    answer = aligner.assign(0, reports(n))
    assert answer.has_solution
    assert answer.stats["aligner"]["relaxed"]  # says what it gave up
    assert all(len(experts) == 0 for experts in answer.by_client().values())  # no expert below the cohort
    aligner.observe([als.ClientOutcome(cid, completed=True) for cid in answer.client_ids])


def test_fedloop_runs_a_round_smaller_than_the_cohort():
    history = fedloop.run(fedloop.FedConfig(**(SMALL | dict(per_round=2, min_cohort=3, rounds=1))))
    assert len(history.rounds) == 1


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        (dict(method="simplex"), "method"),
        (dict(method=3), "method"),
        (dict(time_limit=-1), "time_limit"),
        (dict(time_limit=math.nan), "time_limit"),
        (dict(time_limit="1"), "time_limit"),
        (dict(method="flow", solver_options={"sclae": 2}), "sclae"),
        (dict(method="sinkhorn", solver_options={"eps_decay": 2.0}), "eps_decay"),
        (dict(solver_options={"workers": 2}), "workers"),  # auto may run flow, which takes no workers
        (dict(solver_options=[("a", 1)]), "solver_options"),
        (dict(strict="yes"), "strict"),
        (dict(budget_mode=1), "budget_mode"),
    ],
)
def test_the_aligner_constructor_checks_everything_at_once(kwargs, parameter):
    with pytest.raises(InvalidProblemError) as info:
        als.Aligner(4, SPEC, deadline=60.0, **kwargs)
    assert info.value.parameter == parameter


def _state():
    aligner = als.Aligner(4, SPEC, deadline=60.0)
    answer = aligner.assign(0, reports(6))
    aligner.observe([als.ClientOutcome(cid, completed=True) for cid in answer.client_ids])
    aligner.assign(1, reports(6))
    return json.loads(aligner.to_json())


def _tamper(path, value):
    state = _state()
    node = state
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return json.dumps(state)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("version",), 2),
        (("version",), "1"),
        (("monitor",), KeyError),
        (("history",), KeyError),
        (("config",), "nope"),
        (("config", "n_experts"), "4"),
        (("config", "method"), "simplex"),
        (("config", "surprise"), 1),
        (("held",), [["c", [9]]]),
        (("held",), [["c", [-1]]]),
        (("held",), [[None, [0]]]),
        (("held",), {"c": [0]}),
        (("monitor", "clients_ema"), [math.nan] * 4),
        (("monitor", "samples_ema"), [1.0, 2.0]),
        (("monitor", "n_experts"), 5),
        (("pending", "pairs"), [[0, 7]]),
        (("pending", "pairs"), [[99, 0]]),
        (("pending", "n_samples"), [-1]),
        (("pending", "client_ids"), "abc"),
        (("last_round",), -3),
        (("history",), "abc"),
    ],
)
def test_a_tampered_aligner_state_is_refused_at_load(path, value):
    with pytest.raises(InvalidProblemError):
        als.Aligner.from_json(_tamper(path, value))


@pytest.mark.parametrize("text", [b"\xff", b"[" * 50_000, b"{}", b"[]", b"nan"])
def test_aligner_text_that_is_not_a_state_is_refused(text):
    with pytest.raises(InvalidProblemError):
        als.Aligner.from_json(text)


def test_an_untampered_state_still_loads():
    again = als.Aligner.from_json(json.dumps(_state()))
    assert again.last_round == 1 and again.pending is not None


# -- the alignsolve command -------------------------------------------------------------------------------


def _alignsolve(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "alignsolve", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("bad.json", b"{not json"),
        ("deep.json", b"[" * 100_000),
        ("bytes.json", b"\xff\xfe\x00"),
        ("bad.npz", b"PK\x03\x04garbage"),
        ("p.txt", b"{}"),
    ],
)
def test_alignsolve_solve_answers_bad_files_in_one_line(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    done = _alignsolve("solve", str(tmp_path / name))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("alignsolve: error:")


def test_alignsolve_solve_missing_file_and_bad_method(tmp_path):
    for args in (["solve", str(tmp_path / "none.json")], ["solve", str(tmp_path / "p.json"), "--method", "x"]):
        als.generate("uniform", 5, 3, 1).save(tmp_path / "p.json")
        done = _alignsolve(*args)
        assert done.returncode == 2 and "Traceback" not in done.stderr


def test_alignsolve_generate_refuses_impossible_sizes_before_allocating(tmp_path):
    out = tmp_path / "huge.npz"
    args = ["--family", "uniform", "--clients", "100000", "--experts", "100000", "--capacity", "2", "-o", str(out)]
    done = _alignsolve("generate", *args)
    assert done.returncode == 2 and "n_clients * n_experts" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()
    args = ["--family", "uniform", "--clients", "0", "--experts", "3", "--capacity", "1"]
    args += ["-o", str(tmp_path / "x.json")]
    done = _alignsolve("generate", *args)
    assert done.returncode == 2 and "n_clients" in done.stderr


# -- the fedloop command ----------------------------------------------------------------------------------

COMMON = ["--clients", "6", "--per-round", "4", "--experts", "3", "--rounds", "1", "--no-progress"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--lr", "inf"], "lr"),
        (["run", "--lr", "nan"], "lr"),
        (["run", "--seed", "-1"], "seed"),
        (["compare", "--seeds", "0"], "--seeds"),
        (["compare", "--policies", ""], "--policies"),
        (["compare", "--policies", " , "], "--policies"),
        (["compare", "--target", "nan"], "--target"),
        (["compare", "--target", "1.5"], "--target"),
        (["run", "--policy", "best"], "policy"),
    ],
)
def test_fedloop_validates_every_argument_before_any_work(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert fed_cli.main([*args, *COMMON, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()  # nothing was trained or written


def test_fedloop_out_must_be_a_folder(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("x")
    assert fed_cli.main(["run", *COMMON, "--out", str(target)]) == 2
    assert "--out" in capsys.readouterr().err
    assert target.read_text() == "x"


# -- fedloop's data and screening -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x01\x02\x08\x01", "not an IDX"),
        (b"\x00\x00\x08", "not an IDX"),
        (bytes([0, 0, 8, 0]), "1 to 8 dimensions"),
        (bytes([0, 0, 8, 200]) + b"\x00" * 16, "1 to 8 dimensions"),
        (bytes([0, 0, 8, 3]) + struct.pack(">2I", 1, 1), "truncated"),
        (bytes([0, 0, 8, 3]) + struct.pack(">3I", 4_000_000_000, 4_000_000_000, 4_000_000_000), "max_bytes"),
        (bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + b"\x00" * 5, "more bytes than"),
        (bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 3) + b"\x00" * 5, "fewer than"),
    ],
)
def test_hostile_idx_files_are_refused_by_name(tmp_path, content, message):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_a_corrupt_gzip_idx_is_refused(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + b"abc")[:-6])
    with pytest.raises(ValueError, match="IDX"):
        read_idx(path)


def test_screening_catches_a_blown_up_update_without_other_clients():
    # One or two updates: no median to compare with, the norm of the weights still bounds them.
    assert screen_updates({"a": 1e6}, reference={"a": 3.0}) != {}
    assert screen_updates({"a": 1e6, "b": 0.1}, reference={"a": 3.0, "b": 3.0}).keys() == {"a"}
    assert screen_updates({"a": 0.5}, reference={"a": 3.0}) == {}


def test_a_huge_update_in_a_two_client_round_is_not_averaged():
    from fedloop.loop import sample_round

    config = fedloop.FedConfig(**(SMALL | dict(per_round=2, rounds=1, policy="round_robin")))
    _, _, ids, lost = sample_round(fedloop.build(config), 0)
    victim = next(cid for cid, gone in zip(ids, lost) if not gone)
    faulty = fedloop.FedConfig(**(SMALL | dict(per_round=2, rounds=1, policy="round_robin")))
    faulty.faults.huge.append([0, victim])
    record = fedloop.run(faulty).records[0]
    assert victim in record.rejected and "norm" in record.rejected[victim]
    assert math.isfinite(record.accuracy)
