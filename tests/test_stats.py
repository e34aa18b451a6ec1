"""Censoring-aware statistics: hand-computed Kaplan-Meier cases, restricted means, paired bootstrap."""

from __future__ import annotations

import math
import re
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedloop.stats import (
    area_under_curve,
    final_accuracy,
    kaplan_meier,
    km_median,
    paired_bootstrap,
    rank_test,
    relative_reduction,
    restricted_mean,
    rounds_to_target,
)
from tests.scripts import load_script


def test_rounds_to_target_counts_rounds_and_censors_at_the_budget():
    assert rounds_to_target([0.1, 0.5, 0.8, 0.9], 0.8) == (3, True)
    assert rounds_to_target([0.1, 0.5], 0.8) == (2, False)


def test_kaplan_meier_by_hand():
    # times 2, 3+, 4, 4, 6+: S(2) = 4/5, S(4) = 4/5 * (1 - 2/3) = 4/15.
    grid, survival = kaplan_meier([2, 3, 4, 4, 6], [True, False, True, True, False])
    assert grid.tolist() == [2, 4]
    assert survival == pytest.approx([0.8, 4 / 15])
    assert km_median([2, 3, 4, 4, 6], [True, False, True, True, False]) == 4


def test_median_not_reached_when_most_runs_are_censored():
    assert km_median([5, 10, 10, 10], [True, False, False, False]) is None


def test_restricted_mean_without_censoring_is_the_plain_mean():
    times = [3, 5, 7, 9]
    assert restricted_mean(times, [True] * 4, horizon=20) == pytest.approx(np.mean(times))


@given(
    times=st.lists(st.integers(1, 50), min_size=1, max_size=12),
    budget=st.integers(1, 50),
)
@settings(max_examples=60, deadline=None)
def test_restricted_mean_counts_censored_runs_at_the_budget(times, budget):
    # Every run censored at a common budget: the RMST is the mean of min(time, budget).
    clipped = [min(t, budget) for t in times]
    events = [t <= budget for t in times]
    assert restricted_mean(clipped, events, horizon=budget) == pytest.approx(np.mean(clipped))


def test_relative_reduction_and_paired_bootstrap():
    a = np.array([10, 12, 9, 11, 10])
    b = np.array([20, 25, 18, 22, 30])
    ev = np.ones(5, bool)
    point = relative_reduction(a, ev, b, ev, horizon=40)
    assert point == pytest.approx(1 - a.mean() / b.mean())
    est, lo, hi = paired_bootstrap(lambda idx: relative_reduction(a[idx], ev[idx], b[idx], ev[idx], 40), 5, seed=1)
    assert est == pytest.approx(point) and lo <= est <= hi and lo > 0
    again = paired_bootstrap(lambda idx: relative_reduction(a[idx], ev[idx], b[idx], ev[idx], 40), 5, seed=1)
    assert again == (est, lo, hi)


def test_rank_test_by_hand_with_ties_and_censoring():
    # two seeds with the same order of three runs: mean ranks 1, 2, 3 and Q = 12*2/(3*4) * (1 + 0 + 1) = 4, the
    # largest Q there is; a random relabelling reaches it when both seeds get the same order: p = 6/36
    q, p, ranks = rank_test([[10, 20, 30], [1, 2, 3]], permutations=20000, seed=3)
    assert q == pytest.approx(4.0) and list(ranks) == [1.0, 2.0, 3.0]
    assert p == pytest.approx(1 / 6, abs=0.01)
    # a run that misses at the budget ranks after one that reaches the target at that round; two that miss tie
    _, _, ranks = rank_test([[200, 200, 200, 50]], [[False, True, True, False]], permutations=1)
    assert list(ranks) == [2.0, 3.5, 3.5, 1.0]
    # runs that cannot be told apart: every relabelling gives the observed Q = 0, p = 1
    q, p, _ = rank_test(np.full((5, 3), 7.0), permutations=50)
    assert q == 0.0 and p == 1.0
    # deterministic given the seed
    assert rank_test([[3, 1, 2], [2, 1, 3]], seed=4)[:2] == rank_test([[3, 1, 2], [2, 1, 3]], seed=4)[:2]


def test_rank_test_agrees_with_friedman_without_ties_and_finds_a_consistent_order():
    from scipy.stats import friedmanchisquare

    rng = np.random.default_rng(0)
    x = rng.random((12, 4))
    q, p, _ = rank_test(x, permutations=4000)
    chi2 = friedmanchisquare(*x.T)
    assert q == pytest.approx(chi2.statistic)
    assert p == pytest.approx(chi2.pvalue, abs=0.05)  # chi-squared is an approximation at n = 12
    x[:, 0] -= 2.0  # one run first on every seed
    _, p, ranks = rank_test(x, permutations=4000)
    assert ranks[0] == 1.0 and p < 0.01


@pytest.mark.parametrize(
    ("values", "missed", "permutations", "message"),
    [
        ([1.0, 2.0], None, 10, "values: need shape (n >= 1 seeds, k >= 2 runs); got (2,)"),
        ([[1.0], [2.0]], None, 10, "k >= 2 runs); got (2, 1)"),
        ([[1.0, float("nan")]], None, 10, "values: must be finite"),
        ([[1.0, 2.0]], [[True]], 10, "missed: need the shape of values, (1, 2); got (1, 1)"),
        ([[1.0, 2.0]], None, 0, "permutations: must be >= 1; got 0"),
    ],
)
def test_rank_test_names_what_is_wrong_with_its_input(values, missed, permutations, message):
    with pytest.raises(ValueError) as err:
        rank_test(values, missed, permutations=permutations)
    assert message in str(err.value)


def test_curve_summaries():
    assert area_under_curve([0.0, 0.5, 1.0]) == pytest.approx(0.5)
    assert final_accuracy(list(range(20)), last=10) == pytest.approx(14.5)


def test_the_federated_comparison_runs_resumes_and_renders(tmp_path):
    import json
    import shutil

    module = load_script("benchmarks/run_federated.py")
    chosen = "aligned,aligned_value,aligned_value_topk,random,dense,flex_moe,fedmoe"
    args = ["--task", "smoke", "--quick", "--seeds", "2", "--rounds", "2", "--policies", chosen, "--out", str(tmp_path)]
    assert module.main(args) == 0
    report = (tmp_path / "federated_smoke.md").read_text()
    assert "| aligned |" in report and "| dense |" in report and "/2 /" in report  # n reached / n always shown
    assert (tmp_path / "federated_smoke.png").is_file()  # curves with bands
    saved = sorted(module.run_folder(tmp_path, "smoke").glob("*.json"))
    assert len(saved) == 2 * len(chosen.split(","))
    assert not list(module.run_folder(tmp_path, "smoke").glob("*.part"))  # each run's temporary file was moved in
    assert all(json.loads(path.read_text())["wall_s"] > 0 for path in saved)  # what each run cost
    build = json.loads(saved[0].read_text())["build"]  # and in which build: kernels and threads at least
    assert build["torch"] == torch.__version__ and build["threads"] == torch.get_num_threads() and build["kernels"]
    assert f"wall time per run (the {len(saved)} runs saved with it): median" in report
    assert "## `aligned_value` against each baseline" in report and "| flex_moe |" in report
    flex = report.split("## `flex_moe` against each baseline")[1].split("##")[0]
    assert "| fedmoe |" in flex and "flex_moe_nodeficit" not in flex  # only the comparisons that ran
    assert "Sanity gates: not measured." in report
    shutil.copytree(module.run_folder(tmp_path, "smoke"), module.run_folder(tmp_path / "long", "smoke"))
    (tmp_path / "gates.md").write_text("# gates\n")
    long = module.render("smoke", tmp_path / "long", "test").read_text()
    assert "Sanity gates: see `../gates.md`." in long  # a subfolder of the results shares their gates
    stamp = saved[0].stat().st_mtime_ns
    assert module.main(args) == 0  # resumes: nothing is run again
    assert saved[0].stat().st_mtime_ns == stamp


def test_a_reduction_is_not_estimable_when_both_policies_miss_the_target_everywhere(tmp_path):
    import json

    module = load_script("benchmarks/run_federated.py")
    folder = module.run_folder(tmp_path, "smoke")
    folder.mkdir(parents=True)
    (folder / "central.json").write_text(json.dumps({"accuracy": 0.9}))
    for policy, level in (("aligned", 0.1), ("random", 0.1), ("dense", 0.7), ("flex_moe", 0.1)):
        for seed in range(2):
            record = {
                "policy": policy,
                "seed": seed,
                "accuracy": [level] * 5,
                "bytes": [1] * 5,
                "latency": [1.0] * 5,
                "load_cv": [0.0] * 5,
                "loads": [[1, 1]] * 5,
            }
            (folder / f"{policy}-seed{seed}.json").write_text(json.dumps(record))
    text = module.render("smoke", tmp_path, "test").read_text()
    random_row = next(line for line in text.splitlines() if line.startswith("| random | 2 | not estimable"))
    assert random_row.count("not estimable") == 3  # no 0% tie at any target
    dense_row = next(line for line in text.splitlines() if line.startswith("| dense |") and "%" in line)
    assert "not estimable" in dense_row and "[" in dense_row  # 0.7 reaches the 70% target (0.63) only
    flex = text.split("## `flex_moe` against each baseline")[1].split("##")[0]
    assert "| random | 2 | not estimable" in flex and "| fedmoe |" not in flex  # only the comparisons that ran
    # seed by seed against aligned_value: sooner on seed 0, the same round on seed 1 (both miss), later on seed 2
    for policy, curves in (
        ("aligned_value", ([0.1, 0.1, 0.7, 0.7, 0.7], [0.1] * 5, [0.7] * 5)),
        ("topk_affinity", ([0.7] * 5, [0.1] * 5, [0.1, 0.1, 0.1, 0.1, 0.7])),
    ):
        for seed, acc in enumerate(curves):
            record = {"policy": policy, "seed": seed, "accuracy": acc, "bytes": [1] * 5, "latency": [1.0] * 5}
            record |= {"load_cv": [0.0] * 5, "loads": [[1, 1]] * 5}
            (folder / f"{policy}-seed{seed}.json").write_text(json.dumps(record))
    signs = module.render("smoke", tmp_path, "test").read_text().split("seed by seed")[1].split("\n## ")[0]
    # 70% (0.63): seed 0 sooner (1 < 3), seed 1 both miss (same), seed 2 later (5 > 1); 80% and 90%: all miss
    assert "| topk_affinity | 3 | 1 / 1 / 1 | 0 / 3 / 0 | 0 / 3 / 0 |" in signs
    assert "| random | 2 | 0 / 1 / 1 |" in signs  # no seed 2 of random: n is the seeds both ran
    for policy in ("aligned_value", "topk_affinity"):
        for path in folder.glob(f"{policy}-seed*.json"):
            path.unlink()
    for path in [*folder.glob("random-seed*.json"), *folder.glob("aligned-seed*.json")]:
        path.unlink()
    alone = module.render("smoke", tmp_path, "test").read_text()
    assert "## `flex_moe` against" not in alone  # none of its comparisons ran: no table without a row
    assert "wall time" not in text  # runs saved before their cost was recorded: no cost note
    runs = {"a": {0: {"wall_s": 30.0}, 1: {}}, "b": {0: {"wall_s": 10.0}, 1: {"wall_s": 50.0}}}
    assert module.cost_note(runs) == "; wall time per run (the 3 runs saved with it): median 30 s, 10-50 s"


def test_a_render_without_traces_or_pairs_removes_the_figures_an_earlier_render_drew(tmp_path):
    import json

    module = load_script("benchmarks/run_federated.py")
    folder = module.run_folder(tmp_path, "smoke")
    folder.mkdir(parents=True)
    (folder / "central.json").write_text(json.dumps({"accuracy": 0.9}))
    stale = [tmp_path / "federated_smoke_traces.png", tmp_path / "federated_smoke_pairs.png"]
    for path in stale:
        path.write_bytes(b"drawn from runs that are gone")
    record = {
        "accuracy": [0.5] * 3,
        "bytes": [1] * 3,
        "latency": [1.0] * 3,
        "load_cv": [0.0] * 3,
        "loads": [[1, 1]] * 3,
    }
    for seed in range(2):  # no aligned_value runs (no pairs) and no assignment traces
        (folder / f"random-seed{seed}.json").write_text(json.dumps(record | {"policy": "random", "seed": seed}))
    text = module.render("smoke", tmp_path, "test").read_text()
    assert not any(path.exists() for path in stale)
    assert "_traces.png" not in text and "_pairs.png" not in text
    (folder / "aligned_value-seed0.json").write_text(json.dumps(record | {"policy": "aligned_value", "seed": 0}))
    module.render("smoke", tmp_path, "test")
    assert stale[1].is_file()  # drawn again once there are pairs


def test_an_earlier_task_definition_renders_as_a_record_beside_todays(tmp_path, capsys):
    import json

    from fedloop import tasks

    module = load_script("benchmarks/run_federated.py")
    assert module.run_folder(tmp_path, "multidomain").name == f"multidomain-{tasks.version('multidomain')}"
    assert module.run_folder(tmp_path, "mnist_shards").name == f"mnist_shards-{tasks.VERSION}"
    old = module.run_folder(tmp_path, "smoke", "v0")
    old.mkdir(parents=True)
    for seed in range(2):
        record = dict(policy="random", seed=seed, accuracy=[0.1, 0.2], bytes=[1] * 2, latency=[1.0] * 2)
        record |= dict(load_cv=[0.0] * 2, loads=[[1, 1]] * 2)
        (old / f"random-seed{seed}.json").write_text(json.dumps(record))
    assert module.main(["--task", "smoke", "--render", "--version", "v0", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "federated_smoke-v0.md").read_text()
    assert text.startswith("# Federated comparison: smoke v0 (") and "`federated_smoke-v0.png`" in text
    assert (tmp_path / "federated_smoke-v0.png").is_file() and not (tmp_path / "federated_smoke.md").exists()
    with pytest.raises(FileNotFoundError, match=r"no saved runs of task 'smoke' in .*smoke-v9"):
        module.render("smoke", tmp_path, "test", "v9")
    with pytest.raises(SystemExit):  # runs always use today's definition
        module.main(["--task", "smoke", "--version", "v0", "--out", str(tmp_path)])
    assert "--version: only with --render" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # it names a folder: nothing but a version tag
        module.main(["--task", "smoke", "--render", "--version", "../v0", "--out", str(tmp_path)])
    assert "--version: must be v followed by digits" in capsys.readouterr().err


def test_later_seeds_can_be_added_to_one_policy_without_the_earlier_ones(tmp_path, capsys):
    module = load_script("benchmarks/run_federated.py")
    common = ["--task", "smoke", "--quick", "--rounds", "2", "--policies", "random", "--out", str(tmp_path)]
    folder = module.run_folder(tmp_path, "smoke")
    assert module.main([*common, "--seeds", "2", "--first-seed", "3", "--shard", "1/2"]) == 0  # seeds 3-4, odd ones
    assert sorted(p.name for p in folder.glob("random-*.json")) == ["random-seed3.json"]
    stamp = (folder / "random-seed3.json").stat().st_mtime_ns
    assert module.main([*common, "--seeds", "2", "--first-seed", "3"]) == 0
    assert sorted(p.name for p in folder.glob("random-*.json")) == ["random-seed3.json", "random-seed4.json"]
    assert (folder / "random-seed3.json").stat().st_mtime_ns == stamp  # the saved seed is not run again
    for bad, message in (
        (["--first-seed", "-1"], "--first-seed: must be an integer >= 0; got -1"),
        (["--seeds", "0"], "--seeds: must be an integer >= 1; got 0"),
    ):
        with pytest.raises(SystemExit):
            module.main([*common, *bad])
        assert message in capsys.readouterr().err


def test_the_build_check_reruns_a_saved_runs_first_rounds_and_names_the_first_difference(tmp_path, capsys):
    import json

    module = load_script("benchmarks/check_build.py")
    module.run_federated.run_all("smoke", [1], 3, True, tmp_path, ("aligned_value",))
    path = module.run_federated.run_folder(tmp_path, "smoke") / "aligned_value-seed1.json"
    args = ["--task", "smoke", "--policy", "aligned_value", "--seed", "1", "--out", str(tmp_path)]
    assert module.main([*args, "--rounds", "2"]) == 0  # same process, same build: identical
    assert "identical" in capsys.readouterr().out
    record = json.loads(path.read_text())
    record["loads"][1][0] += 1  # as if this build had trained another expert in round 2
    path.write_text(json.dumps(record))
    assert module.main([*args, "--rounds", "3"]) == 1
    assert "from round 2 (loads)" in capsys.readouterr().out
    record["accuracy"][0] += 0.5
    path.write_text(json.dumps(record))
    log = tmp_path / "checks.md"
    assert module.main([*args, "--rounds", "1", "--log", str(log)]) == 1
    assert "from round 1 (accuracy)" in capsys.readouterr().out
    assert module.main([*args, "--rounds", "1", "--log", str(log)]) == 1  # appended, header written once
    rows = [line for line in log.read_text().splitlines() if line.startswith("| 20")]
    assert len(rows) == 2 and log.read_text().count("| date (UTC) |") == 1
    verdict = r"differs from round 1 \(accuracy\); \w+ kernels, \d+ threads?"
    assert re.search(r"--rounds 1 --log \S+` \| " + verdict + r" \|$", rows[0])
    for bad, message in (
        (["--rounds", "4"], "--rounds: must be an integer in [1, 3] (the saved run's); got 4"),
        (["--rounds", "0"], "got 0"),
        (["--seed", "7"], "no saved run aligned_value-seed7.json"),
    ):
        with pytest.raises(SystemExit):
            module.main([*args, *bad])
        assert message in capsys.readouterr().err


def test_the_build_check_compares_a_longer_saved_run_with_a_shorter_one_without_rerunning(tmp_path, capsys):
    import json

    module = load_script("benchmarks/check_build.py")
    long_dir, short_dir = tmp_path / "long", tmp_path / "short"
    module.run_federated.run_all("smoke", [0], 3, True, long_dir, ("random",))
    long_path = module.run_federated.run_folder(long_dir, "smoke") / "random-seed0.json"
    record = json.loads(long_path.read_text())
    short_path = module.run_federated.run_folder(short_dir, "smoke") / "random-seed0.json"
    short_path.parent.mkdir(parents=True)
    # the shorter budget's run: the longer one's first two rounds
    short_path.write_text(json.dumps({k: v[:2] if isinstance(v, list) else v for k, v in record.items()}))
    args = ["--task", "smoke", "--policy", "random", "--seed", "0", "--out", str(long_dir), "--against", str(short_dir)]
    log = tmp_path / "checks.md"
    assert module.main([*args, "--log", str(log)]) == 0
    assert "over its first 2 rounds" in capsys.readouterr().out  # the shorter run's rounds
    assert log.read_text().splitlines()[-1].endswith(f"against the saved run in {short_dir} |")
    record["accuracy"][1] += 0.5  # the longer run departs in round 2
    long_path.write_text(json.dumps(record))
    assert module.main(args) == 1 and "from round 2 (accuracy)" in capsys.readouterr().out
    assert module.main([*args, "--rounds", "1"]) == 0  # round 1 alone still agrees
    capsys.readouterr()
    with pytest.raises(SystemExit):
        module.main([*args, "--rounds", "3"])
    assert "--rounds: must be an integer in [1, 2] (the shorter saved run's); got 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module.main([*args[:-1], str(tmp_path / "nowhere")])
    assert "--against: no saved run random-seed0.json" in capsys.readouterr().err


def test_the_build_checks_log_names_the_variables_that_chose_the_build(tmp_path, capsys, monkeypatch):
    module = load_script("benchmarks/check_build.py")
    module.run_federated.run_all("smoke", [0], 1, True, tmp_path, ("random",))
    # a variable no library reads stands in for OMP_NUM_THREADS and the like, which would change this process
    monkeypatch.setattr(module.run_federated, "BUILD_VARIABLES", ("ALIGNSOLVE_TEST_ISA", "ALIGNSOLVE_TEST_UNSET"))
    monkeypatch.setenv("ALIGNSOLVE_TEST_ISA", "AVX2")
    monkeypatch.delenv("ALIGNSOLVE_TEST_UNSET", raising=False)
    log = tmp_path / "checks.md"
    args = ["--task", "smoke", "--policy", "random", "--seed", "0", "--out", str(tmp_path), "--rounds", "1"]
    assert module.main([*args, "--log", str(log)]) == 0
    assert "identical" in capsys.readouterr().out
    row = log.read_text().splitlines()[-1]
    assert "| `ALIGNSOLVE_TEST_ISA=AVX2 python benchmarks/check_build.py --task smoke" in row
    assert "ALIGNSOLVE_TEST_UNSET" not in row


def test_traces_are_added_to_a_saved_run_only_from_a_rerun_identical_over_the_whole_budget(tmp_path, capsys):
    import json

    module = load_script("benchmarks/add_traces.py")
    saved_dir, rerun_dir = tmp_path / "saved", tmp_path / "rerun"
    for where in (saved_dir, rerun_dir):
        module.run_federated.run_all("smoke", [0, 1, 2], 3, True, where, ("random",))
    folder = module.run_federated.run_folder(saved_dir, "smoke")
    for seed in (0, 1, 2):  # as saved before traces were recorded, with another machine's wall time
        path = folder / f"random-seed{seed}.json"
        record = json.loads(path.read_text())
        path.write_text(json.dumps({k: v for k, v in record.items() if k not in module.TRACES} | {"wall_s": 1.0}))
    damaged = folder / "random-seed1.json"
    record = json.loads(damaged.read_text())
    record["accuracy"][2] += 0.25  # as if the saved run had parted from the rerun in its last round
    damaged.write_text(json.dumps(record))
    rerun = json.loads((module.run_federated.run_folder(rerun_dir, "smoke") / "random-seed0.json").read_text())
    args = ["--task", "smoke", "--policy", "random", "--rerun", str(rerun_dir), "--out", str(saved_dir)]
    log = tmp_path / "checks.md"
    assert module.main([*args, "--seeds", "0-3", "--log", str(log)]) == 1
    out = capsys.readouterr().out
    assert "seed 0: identical over all 3 rounds; traces added" in out
    assert "seed 1: not added: accuracy differs" in out and "seed 3: not added: no saved run" in out
    added = json.loads((folder / "random-seed0.json").read_text())
    assert added["assigned"] == rerun["assigned"] and added["routed_share"] == rerun["routed_share"]
    assert added["wall_s"] == 1.0  # everything but the traces kept as saved
    assert "assigned" not in json.loads(damaged.read_text())
    assert len([line for line in log.read_text().splitlines() if line.startswith("| 20")]) == 4
    assert module.main([*args, "--seeds", "0"]) == 0 and "already traced" in capsys.readouterr().out
    assert module.mismatch({"accuracy": [1]}, {"accuracy": [1], "assigned": [{}], "routed_share": [1]}) is not None
    assert module.mismatch({"accuracy": [1], "loads": [[1]]}, {"accuracy": [1], "loads": [[1]]}) == (
        "the rerun has no traces"
    )
    for bad in ("x", "3-1", "-1"):
        with pytest.raises(SystemExit):
            module.main([*args, "--seeds", bad])
        assert "--seeds: must be K or K-L" in capsys.readouterr().err


def test_the_cost_table_takes_medians_of_the_timed_runs_and_projects_issue_18s_comparison(tmp_path, monkeypatch):
    import json

    module = load_script("benchmarks/run_cost.py")
    monkeypatch.setattr(module, "TASKS", {"a": "results", "b": "later"})
    monkeypatch.setattr(module, "FORMER", {"old": "results"})
    monkeypatch.setattr(module, "CORE", ("p", "q"))
    monkeypatch.setattr(module, "SEEDS", 3)
    monkeypatch.setattr(module, "ROUNDS", 10)
    monkeypatch.setattr(module, "GOAL_HOURS", 0.01)

    def save(folder, task, name, rounds, wall):
        path = folder / "federated" / f"{task}-v2" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        policy, seed = name.split("-seed")
        record = {"policy": policy, "seed": int(seed), "accuracy": [0.0] * rounds}
        path.write_text(json.dumps(record | ({} if wall is None else {"wall_s": wall})))

    for k, wall in enumerate((10.0, 20.0, 60.0, None)):  # one run saved before wall times were: counted, not timed
        save(tmp_path, "a", f"p-seed{k}", 5, wall)
    save(tmp_path / "later", "b", "p-seed0", 20, 40.0)
    save(tmp_path, "old", "p-seed0", 5, 100.0)  # an earlier definition of a task: tabled, left out of the totals
    text = module.render(tmp_path, "cmd").read_text()
    assert "| old (earlier definition, not in the total) | 20.00 | - | 200 | 6 | 0.3 |" in text
    assert "| results | a | 5 | 4 | 3 | 20 (10-60) | 4.00 (2.00-12.00) |" in text
    assert "| later | b | 20 | 1 | 1 | 40 (40-40) | 2.00 (2.00-2.00) |" in text
    # projected at 10 rounds: a 40 s and b 20 s per run, 2 policies x 3 seeds each: 240 + 120 s = 0.1 core-hours
    assert "| a | 4.00 | - | 40 | 6 | 0.1 |" in text and "| b | 2.00 | - | 20 | 6 | 0.0 |" in text
    assert "| all | - | - | - | 12 | 0.1 |" in text and "no measurement of today's code saved" in text
    assert "| hours on two cores | 0.1 |" in text and "| times the goal | 5.0 |" in text
    assert "| seconds per run the goal allows | 6 |" in text  # 0.01 h x 2 cores / 12 runs
    # a measurement of today's code replaces the saved medians, per task the mean over the policies
    measured = {"command": "cmd --measure", "date": "d", "rounds": 3, "workers": 2}
    rows = [("a", "p", 1.0), ("a", "q", 3.0), ("b", "p", 0.5)]
    runs = [{"task": t, "policy": p, "seconds_per_round": v} for t, p, v in rows]
    (tmp_path / module.MEASURED).write_text(json.dumps(measured | {"runs": runs}))
    text = module.render(tmp_path, "cmd").read_text()
    assert "no measurement" in text  # b lacks policy q: not a measurement of the comparison, not used
    runs.append({"task": "b", "policy": "q", "seconds_per_round": 1.5})
    (tmp_path / module.MEASURED).write_text(json.dumps(measured | {"runs": runs}))
    text = module.render(tmp_path, "cmd").read_text()
    assert "measured with today's code (`cmd --measure`, d: each policy for 3 rounds" in text
    # at 10 rounds: a at 2 s a round (the mean of 1 and 3) takes 20 s a run, b at 1 s 10 s
    assert "| a | 4.00 | 2.00 | 20 | 6 | 0.0 |" in text and "| b | 2.00 | 1.00 | 10 | 6 | 0.0 |" in text
    assert "| times the goal | 2.5 |" in text  # (120 + 60) s = 0.05 h, 0.025 h on two cores, 2.5 x 0.01 h
    (tmp_path / module.MEASURED).unlink()
    monkeypatch.setattr(module, "TASKS", {"a": "results", "c": "results"})
    assert "Not projected: no timed runs of c." in module.render(tmp_path, "cmd").read_text()
    save(tmp_path, "a", "q-seed0", 7, 1.0)
    with pytest.raises(ValueError, match="runs of several budgets"):
        module.render(tmp_path, "cmd")


def test_the_cost_measurement_times_todays_code_one_process_and_one_thread_per_run(tmp_path, capsys):
    import json

    module = load_script("benchmarks/run_cost.py")
    path = module.measure(tmp_path, ["smoke"], ("random", "aligned_value"), rounds=2, command="cmd")
    saved = json.loads(path.read_text())
    assert (saved["command"], saved["rounds"], saved["workers"]) == ("cmd", 2, 2)
    # the runs are listed as they ended (whichever of the two running ends first is collected first)
    assert sorted((r["task"], r["policy"], r["rounds"]) for r in saved["runs"]) == [
        ("smoke", "aligned_value", 2),
        ("smoke", "random", 2),
    ]
    assert [r["ended"] for r in saved["runs"]] == sorted(r["ended"] for r in saved["runs"])
    assert all(r["seconds_per_round"] > 0 and r["build"]["threads"] == 1 for r in saved["runs"])
    printed = capsys.readouterr().out
    assert "[1/2] smoke " in printed and "[2/2] smoke " in printed
    first_two = [r["policy"] for r in saved["runs"]]
    # a later call with the same rounds times only what the file lacks (a crash loses only the runs in progress)
    module.measure(tmp_path, ["smoke"], ("random", "round_robin"), rounds=2, command="cmd")
    assert "[1/1] smoke round_robin" in capsys.readouterr().out
    saved = json.loads(path.read_text())
    assert [r["policy"] for r in saved["runs"]] == [*first_two, "round_robin"]
    assert all(r["ended"] <= saved["date"] for r in saved["runs"])
    with pytest.raises(RuntimeError, match="timing nonesuch on smoke failed"):
        module.measure(tmp_path, ["smoke"], ("nonesuch",), rounds=2)
    assert len(json.loads(path.read_text())["runs"]) == 3  # the failure loses nothing saved
    module.measure(tmp_path, ["smoke"], ("random",), rounds=3)  # other rounds: a measurement of its own
    assert [(r["policy"], r["rounds"]) for r in json.loads(path.read_text())["runs"]] == [("random", 3)]
    before = json.loads(path.read_text())["runs"][0]
    module.measure(tmp_path, ["smoke"], ("random",), rounds=3, fresh=True)  # after a code change: timed again
    assert "[1/1] smoke random" in capsys.readouterr().out
    again = json.loads(path.read_text())["runs"]
    assert len(again) == 1 and again[0]["seconds_per_round"] != before["seconds_per_round"]
    with pytest.raises(SystemExit):
        module.main(["--rounds", "1"])
    assert "--rounds: must be at least 2; got 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module.main(["--fresh"])
    assert "--fresh: times runs again, so it needs --measure" in capsys.readouterr().err


def test_the_round_split_on_tasks_accounts_for_every_part_of_a_round(tmp_path, capsys):
    module = load_script("benchmarks/run_round.py")
    lines = module.task_lines(["smoke"], "aligned_value", 2)
    text = "\n".join(lines)
    assert "policy `aligned_value`, seed 0, 2 rounds after a warm-up round" in text and "1 thread" in text
    seconds = text.split("## Median seconds per round")[1].split("## Share of the time")[0]
    shares, against = text.split("## Share of the time")[1].split("## Against PyTorch's pools, in the same run")
    rows = {
        line.split(" | ")[0].strip("| "): float(line.split(" | ")[1].strip(" |%"))
        for line in seconds.splitlines()
        if line.startswith("| ") and not line.startswith("| part")
    }
    assert list(rows) == ["train", "reports", "evaluate", "aggregate", "solver", "other", "total"]
    assert all(rows[k] > 0 for k in ("train", "reports", "evaluate", "total"))
    parts = [
        float(line.split(" | ")[1].strip(" |%"))
        for line in shares.splitlines()
        if line.startswith("| ") and not line.startswith("| part")
    ]
    # the parts add up to the rounds' time ("other" is the rest), up to the rounding of each share
    assert len(parts) == 6 and sum(parts) == pytest.approx(100.0, abs=0.35)
    assert all(p > 0 for p in parts[:3])
    then_part, ratio_part = against.split("## Today's over PyTorch's pools")

    def table(part):
        return {
            line.split(" | ")[0].strip("| "): float(line.split(" | ")[1].strip(" |"))
            for line in part.splitlines()
            if line.startswith("| ") and not line.startswith("| part")
        }

    then, ratio = table(then_part), table(ratio_part)
    assert list(then) == list(ratio) == ["train", "reports", "evaluate", "total"]
    assert all(v > 0 for v in then.values())
    for part in ("train", "total"):  # today's over PyTorch's, from the 4-decimal cells
        assert ratio[part] == pytest.approx(rows[part] / then[part], rel=0.2)
    for bad, message in (
        (["--tasks", "--rounds", "1"], "--rounds: must be at least 2"),
        (["--tasks", "--policy", "nonesuch"], "--policy: must be one of"),
        (["--tasks", "--device", "cuda"], "--tasks: times the comparison as it runs, on the CPU"),
    ):
        with pytest.raises(SystemExit):
            module.main(bad)
        assert message in capsys.readouterr().err


def test_pytorch_pools_restores_fedloops_evaluation_paths_and_a_difference_stops_the_split(monkeypatch):
    from fedloop import loop, model, pools

    module = load_script("benchmarks/run_round.py")
    fast = model._conv_stack, loop.IMAGE_CHUNK

    def layers() -> list[type]:
        return [type(m) for m in model._conv_stack(1, (8, 16), 5, 7)]

    nn = torch.nn
    with pytest.raises(RuntimeError), module.pytorch_pools():
        assert layers() == [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Conv2d, nn.ReLU, nn.AdaptiveAvgPool2d, nn.Flatten]
        assert loop.IMAGE_CHUNK > 10**6
        raise RuntimeError
    assert (model._conv_stack, loop.IMAGE_CHUNK) == fast
    assert layers() == [nn.Conv2d, pools.MaxPool2, nn.ReLU, nn.Conv2d, nn.ReLU, pools.AvgPool, nn.Flatten]
    calls = iter([1.0, 1.0, 1.0, 2.0])  # the last of the four runs differs

    def differing(config, records):  # four runs, the last with other records
        records.append({"accuracy": next(calls)})
        return []

    monkeypatch.setattr(module, "round_split", differing)
    with pytest.raises(SystemExit, match="smoke: the records with PyTorch's pools and with fedloop's differ"):
        module.task_lines(["smoke"], "random", 1)


def test_the_cost_measurement_times_the_rounds_after_the_first_of_one_real_run():
    module = load_script("benchmarks/run_cost.py")
    row = module.time_rounds("smoke", "random", 2)
    assert (row["task"], row["policy"], row["seed"], row["rounds"]) == ("smoke", "random", 0, 2)
    assert row["seconds_per_round"] > 0 and row["build"]["torch"]


def test_the_cost_measurement_starts_the_next_run_as_soon_as_any_run_ends(tmp_path, monkeypatch):
    import json

    module = load_script("benchmarks/run_cost.py")
    started: list[str] = []
    polls = {"slow": 6, "fast": 1, "next": 1}  # how many polls each run takes to end

    class FakeRun:  # a run's process: its JSON line is written when it ends
        def __init__(self, argv, stdout, stderr, text, env):
            self.policy, self.stdout, self.returncode = argv[argv.index("--time-one") + 2], stdout, None
            self.left = polls[self.policy]
            started.append(self.policy)

        def poll(self):
            self.left -= 1
            if self.left <= 0 and self.returncode is None:
                row = {"task": "t", "policy": self.policy, "seconds_per_round": 1.0}
                self.stdout.write(json.dumps(row) + "\n")
                self.returncode = 0
            return self.returncode

    pool = sys.modules[module.run_pool.__module__]  # benchmarks/pool.py, which runs the processes
    monkeypatch.setattr(pool.subprocess, "Popen", FakeRun)
    monkeypatch.setattr(pool.time, "sleep", lambda _: None)
    path = module.measure(tmp_path, ["t"], ("slow", "fast", "next"), rounds=2)
    # "next" starts when "fast" ends, beside "slow" still running, and ends before it: two runs at a time throughout
    assert started == ["slow", "fast", "next"]
    assert [r["policy"] for r in json.loads(path.read_text())["runs"]] == ["fast", "next", "slow"]


def test_the_cost_table_projects_the_comparison_at_the_round_where_each_tasks_best_policy_levels_off(
    tmp_path, monkeypatch
):
    import json

    module = load_script("benchmarks/run_cost.py")
    monkeypatch.setattr(module, "TASKS", {"a": "results", "b": "results"})
    monkeypatch.setattr(module, "FORMER", {"z": "results"})
    monkeypatch.setattr(module, "LONGEST", {"a": "long", "b": "results", "z": "long"})
    monkeypatch.setattr(module, "CORE", ("p",))
    monkeypatch.setattr(module, "SEEDS", 2)
    monkeypatch.setattr(module, "GOAL_HOURS", 0.01)

    def save(folder, task, policy, seed, accuracy, wall=None):
        path = folder / "federated" / f"{task}-v2" / f"{policy}-seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"policy": policy, "seed": seed, "accuracy": accuracy}
        path.write_text(json.dumps(record | ({} if wall is None else {"wall_s": wall})))

    # the timed runs: 1 s a round on both tasks
    for task in ("a", "b"):
        save(tmp_path, task, "p", 0, [0.0] * 10, wall=10.0)
    text = module.render(tmp_path, "cmd").read_text()
    # no folder "long" yet, and task b's runs have one seed, fewer than SEEDS
    assert "Not projected: no longest runs or no timed runs of a, b." in text
    # task a's longest runs (16 rounds, window 4): "top" is at 0.495 over rounds 5-8 and 0.5 after: it gains
    # 0.005 over the last 8 rounds, under a point, and is within a point of its end from round 8; "low" is flat
    # and lower; "one" has a single seed, fewer than SEEDS: not a candidate for best however high
    for seed in range(2):
        save(tmp_path / "long", "a", "top", seed, [0.3] * 4 + [0.495] * 4 + [0.5] * 8)
        save(tmp_path / "long", "a", "low", seed, [0.1] * 16)
    save(tmp_path / "long", "a", "one", 0, [0.99] * 16)
    # task b's longest runs are its timed ones (10 rounds, window 2), rising to the end on both seeds
    save(tmp_path, "b", "p", 1, [r * 0.05 for r in range(1, 11)], wall=10.0)
    save(tmp_path, "b", "p", 0, [r * 0.05 for r in range(1, 11)], wall=10.0)
    # an earlier definition of a task, at 3 s a round, levelling off as task a does: tabled, not in the total
    save(tmp_path, "z", "p", 0, [0.0] * 10, wall=30.0)
    for seed in range(2):
        save(tmp_path / "long", "z", "top", seed, [0.3] * 4 + [0.495] * 4 + [0.5] * 8)
    text = module.render(tmp_path, "cmd").read_text()
    lines = text.splitlines()
    row_z = next(line for line in lines if line.startswith("| z (earlier definition, not in the total) | long, 16"))
    assert row_z.split(" | ")[2:6] == ["top", "levelled off", "8", "24"]  # 8 rounds at 3 s a round
    row_a = next(line for line in lines if line.startswith("| a | long, 16 |"))
    assert row_a.split(" | ")[2:6] == ["top", "levelled off", "8", "8"]  # 8 rounds at 1 s a round
    assert row_a.split(" | ")[7:] == ["2", "- |"]  # two seeds; a settled verdict needs none more
    row_b = next(line for line in lines if line.startswith("| b | results, 10 |"))
    assert row_b.split(" | ")[3:6] == ["still rising", "at least 10", "at least 10"]
    # (8 + 10 s) x 2 seeds = 36 s = 0.01 core-hours, 0.005 h on two cores: half the goal, a lower bound (b rises)
    assert "| hours on two cores | at least 0.0 |" in text and "| times the goal | at least 0.5 |" in text


def test_the_cost_page_sets_smaller_sets_of_policies_against_the_goal_from_each_policys_own_rate(monkeypatch):
    module = load_script("benchmarks/run_cost.py")
    monkeypatch.setattr(module, "TASKS", {"a": "results", "b": "results"})
    monkeypatch.setattr(module, "POLICY_SETS", {"cheap": ("p",), "both": ("p", "q")})
    monkeypatch.setattr(module, "SEEDS", 2)
    monkeypatch.setattr(module, "ROUNDS", 100)
    monkeypatch.setattr(module, "GOAL_HOURS", 0.1)
    # p costs 1 s a round and q 8 s, on both tasks
    per = {(task, policy): rate for task in "ab" for policy, rate in (("p", 1.0), ("q", 8.0))}
    # task a levelled off at round 50 of 200; task b still rises at the end of its 300 rounds: a lower bound
    levels = {
        "a": {"verdict": "levelled off", "budget": 200, "near": 50},
        "b": {"verdict": "still rising", "budget": 300, "near": None},
        "c": None,
    }
    rounds = module.levelling_rounds(levels)
    assert rounds == {"a": (50, False), "b": (300, True)}
    lines = module.policy_sets(per, rounds)
    rows = {
        line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in lines if line.startswith("| ") and "---" not in line
    }
    assert lines[1] == "## Fewer policies" and lines[5].startswith("| policies | n | core-hours, 100 rounds |")
    # cheap, 100 rounds: 1 s x 100 x 2 tasks x 2 seeds = 400 s = 0.11 core-hours, 0.06 h on two cores, 0.6 goals;
    # at the levelling rounds (50 + 300) x 2 seeds = 700 s = 0.19 core-hours, 0.10 h, 1.0 goal, at least
    assert rows["cheap"] == ["1", "0.1", "0.1", "0.6", "at least 0.2", "at least 0.1", "at least 1.0 |"]
    # both: nine times the cost of cheap
    assert rows["both"] == ["2", "1.0", "0.5", "5.0", "at least 1.8", "at least 0.9", "at least 8.8 |"]
    # a policy of a set never measured, or a task without longest runs: no table rather than a partial one
    assert module.policy_sets({k: v for k, v in per.items() if k != ("b", "q")}, rounds) == []
    assert module.policy_sets(per, {"a": (50, False)}) == []


def test_policies_with_different_seeds_are_compared_on_the_seeds_both_ran(tmp_path):
    import json

    module = load_script("benchmarks/run_federated.py")
    folder = module.run_folder(tmp_path, "smoke")
    folder.mkdir(parents=True)
    (folder / "central.json").write_text(json.dumps({"accuracy": 1.0}))
    # aligned reaches 0.8 at round 2 on seeds 0-1 and never on seeds 2-3; random ran seeds 0-1, dense seeds 2-3
    curves = {("aligned", s): [0.0, 0.0, 0.9, 0.9] if s < 2 else [0.1] * 4 for s in range(4)}
    curves |= {("random", s): [0.0, 0.0, 0.0, 0.9] for s in range(2)}
    curves |= {("dense", s): [0.0, 0.9, 0.9, 0.9] for s in range(2, 4)}
    curves |= {("flex_moe", s): [0.1] * 4 for s in range(7, 9)}  # no seed in common with aligned
    for (policy, seed), accuracy in curves.items():
        record = dict(policy=policy, seed=seed, accuracy=accuracy, bytes=[1] * 4, latency=[1.0] * 4)
        record |= dict(load_cv=[0.0] * 4, loads=[[1, 1]] * 4)
        (folder / f"{policy}-seed{seed}.json").write_text(json.dumps(record))
    text = module.render("smoke", tmp_path, "test").read_text()
    assert "seeds per policy: 4 seeds (`aligned`); 2 seeds (`random`); 2 seeds (`dense`); 2 seeds (`flex_moe`)" in text
    rows: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0][2:], line)  # the first table: one row per policy
    assert "| 2/4 /" in rows["aligned"] and "| 2/2 /" in rows["random"]  # each row over its own seeds
    table = text.split("## `aligned` against each baseline")[1]
    random_row = next(line for line in table.splitlines() if line.startswith("| random |"))
    dense_row = next(line for line in table.splitlines() if line.startswith("| dense |"))
    # seeds 0-1: aligned at round 2 (3 rounds), random at round 3 (4 rounds) -> 25% fewer; seeds 2-3: aligned
    # censored at the budget (4), dense at round 1 (2 rounds) -> aligned needs 100% more
    assert random_row.startswith("| random | 2 | +25% [+25%, +25%] | +25% [+25%, +25%]")
    assert dense_row.startswith("| dense | 2 | -100% [-100%, -100%]")
    assert "| flex_moe |" not in table.split("##")[0]  # nothing to pair with

    # a policy chosen after seeds 0-1 is tabled again on seeds 2 and up alone (random has none of them)
    module.UNSEEN["smoke"] = ("aligned", 2, ("random", "dense", "fedmoe"))  # fedmoe never ran: no row, no error
    try:
        text = module.render("smoke", tmp_path, "test").read_text()
    finally:
        del module.UNSEEN["smoke"]
    unseen = text.split("## Seeds 2 and up only (not seen when `aligned` was chosen)")[1].split("## Accuracy along")[0]
    assert "| dense | 2 | -100% [-100%, -100%]" in unseen and "| random |" not in unseen
    assert "| fedmoe |" not in text
    seen = text.split("## Seeds below 2 only (those `aligned` was chosen on)")[1].split("##")[0]
    assert "| random | 2 | +25% [+25%, +25%]" in seen and "| dense |" not in seen

    # seeds added to a longer-budget folder after its first seeds were read are tabled apart too, in that folder only
    longer = tmp_path / "rounds600"
    longer_folder = module.run_folder(longer, "smoke")
    longer_folder.mkdir(parents=True)
    for path in folder.iterdir():
        (longer_folder / path.name).write_text(path.read_text())
    module.ADDED[("rounds600", "smoke")] = (("aligned", 2, ("random", "dense")), ("dense", 3, ("aligned",)))
    module.LEVEL_LOOKS[("rounds600", "smoke")] = (2,)
    try:
        added = module.render("smoke", longer, "test").read_text()
        elsewhere = module.render("smoke", tmp_path, "test").read_text()
    finally:
        del module.ADDED[("rounds600", "smoke")], module.LEVEL_LOOKS[("rounds600", "smoke")]
    # and so is a levelling verdict read again after seeds were added: in that folder only
    assert "| aligned | 2 and up | 2 | 95.0% |" in added.split("seed set by seed set")[1].split("\n## ")[0]
    assert "seed set by seed set" not in elsewhere
    first = added.split("## Seeds below 2 only (the first set, `aligned` against)")[1].split("##")[0]
    later = added.split("## Seeds 2 and up only (added after the first set's intervals were read, `aligned` against)")
    later = later[1].split("##")[0]
    assert "| random | 2 | +25% [+25%, +25%]" in first and "| dense |" not in first
    assert "| dense | 2 | -100% [-100%, -100%]" in later and "| random |" not in later
    # a second reference in the same folder gets its own pair of tables, split at its own seed: dense (round 1, 2
    # rounds) against aligned (censored at 4) is +50% on seed 2 alone and on seed 3 alone
    for head in ("Seeds below 3 only (the first set,", "Seeds 3 and up only (added after the first set's intervals"):
        table = added.split(f"## {head}")[1].split("##")[0]
        assert "`dense` against" in table.splitlines()[0]
        assert "| aligned | 1 | +50% [+50%, +50%]" in table and "| random |" not in table
    assert "(the first set" not in elsewhere
    # the pooled comparisons of an entry are read at 97.5%, the sentence above the pooled table names them
    pooled = added.split("## `aligned` against each baseline")[1].split("##")[0]
    assert "; 97.5% for `random`, `dense`: seeds were added" in pooled
    # seeds added below the first set (read second): the first set is the seeds from 2 up, the added those below
    module.ADDED[("rounds600", "smoke")] = (("aligned", 2, ("random", "dense"), True),)
    try:
        below = module.render("smoke", longer, "test").read_text()
    finally:
        del module.ADDED[("rounds600", "smoke")]
    read = below.split("## Seeds 2 and up only (the first set, `aligned` against)")[1].split("##")[0]
    later = below.split("## Seeds below 2 only (added after the first set's intervals were read, `aligned` against)")
    assert (
        "| dense | 2 | -100% [-100%, -100%]" in read and "| random | 2 | +25% [+25%, +25%]" in later[1].split("##")[0]
    )
    assert below.index("Seeds 2 and up only (the first set") < below.index("Seeds below 2 only (added after")


def test_task_settings_and_the_central_reference_run(monkeypatch):
    from fedloop import tasks

    monkeypatch.setitem(
        tasks.TASKS,
        "tiny",
        dict(dataset="synthetic", data_options={"samples_per_client": 20, "test_size": 100}),
    )
    settings = tasks.federation("tiny", quick=True)
    assert settings["testbed"] == "experts" and settings["deadline_mode"] and settings["n_experts"] == 8
    assert tasks.federation("multidomain")["data_options"]["relabel"] is True
    # multidomain4: four of multidomain's domains, everything else as multidomain v3 (relabelled, normalised, masked)
    from fedloop.real_data import DOMAINS

    four, twelve = tasks.federation("multidomain4"), tasks.federation("multidomain")
    assert len(four["data_options"]["domains"]) == 4 and set(four["data_options"]["domains"]) < set(DOMAINS)
    assert {k: v for k, v in four.items() if k != "data_options"} == {
        k: v for k, v in twelve.items() if k != "data_options"
    }
    assert {k: v for k, v in four["data_options"].items() if k != "domains"} == {
        k: v for k, v in twelve["data_options"].items() if k != "domains"
    }
    # each task's expert width is the one its gates ran with; a task without one gets 8; an explicit width wins
    assert {t: tasks.federation(t)["expert_hidden"] for t in tasks.EXPERT_HIDDEN} == tasks.EXPERT_HIDDEN
    assert settings["expert_hidden"] == 8 and tasks.federation("mnist_shards", expert_hidden=5)["expert_hidden"] == 5
    # feature normalisation: the tasks listed in FEATURE_NORM only, unless asked
    assert tasks.federation("mnist_shards")["feature_norm"] and tasks.federation("multidomain")["feature_norm"]
    assert not tasks.federation("multidomain", feature_norm=False)["feature_norm"]
    # multidomain took both settings in its definition v3; a task not in VERSIONS keeps the common definition
    assert tasks.federation("multidomain")["local_routing"] == "assigned" and tasks.version("multidomain") == "v3"
    assert tasks.version("mnist_shards") == tasks.VERSION and tasks.version("tiny") == tasks.VERSION
    assert not settings["feature_norm"] and tasks.federation("tiny", feature_norm=True)["feature_norm"]
    assert tasks.federation("mnist_shards")["local_routing"] == "assigned"
    # the lite shards task: mnist_shards with smaller images and lighter local training, nothing else changed
    lite, shards = tasks.federation("mnist_shards_lite"), tasks.federation("mnist_shards")
    assert lite["data_options"] == shards["data_options"] | {"side": 14}
    assert (lite["local_epochs"], lite["batch_size"], shards["local_epochs"]) == (1, 64, 2)
    assert "batch_size" not in shards  # the FedConfig default, 32
    same = set(shards) - {"data_options", "local_epochs"}
    assert {k: lite[k] for k in same} == {k: shards[k] for k in same}
    assert settings["local_routing"] == "all" and tasks.federation("tiny", local_routing="assigned")[
        "local_routing"
    ] == ("assigned")
    # the router reads the features unless the task (ROUTER_INPUT) or the caller says otherwise
    assert settings["router_input"] == "features"
    assert tasks.federation("tiny", router_input="token")["router_input"] == "token"
    assert {t: tasks.federation(t)["router_input"] for t in tasks.ROUTER_INPUT} == tasks.ROUTER_INPUT
    with pytest.raises(ValueError, match="task"):
        tasks.federation("nope")
    one = tasks.central_accuracy("tiny", quick=True, seed=1, n_experts=1, epochs=1)
    again = tasks.central_accuracy("tiny", quick=True, seed=1, n_experts=1, epochs=1)
    many = tasks.central_accuracy("tiny", quick=True, seed=1, epochs=1)
    assert 0.0 <= one <= 1.0 and one == again  # the seed fixes data, initialisation and order
    assert 0.0 <= many <= 1.0
    assert 0.0 <= tasks.central_accuracy("tiny", quick=True, seed=1, epochs=1, feature_norm=True) <= 1.0


def test_the_gates_script_shards_its_runs_resumes_and_names_its_setting(monkeypatch, tmp_path, capsys):
    import csv

    from fedloop import tasks

    monkeypatch.setitem(
        tasks.TASKS, "tiny", dict(dataset="synthetic", data_options={"samples_per_client": 20, "test_size": 60})
    )
    module = load_script("benchmarks/run_gates.py")
    base = ["--task", "tiny", "--quick", "--seeds", "1", "--epochs", "1", "--rounds", "1", "--out", str(tmp_path)]
    module.main([*base, "--feature-norm", "on", "--local-routing", "all", "--shard", "0/2"])
    first = list(csv.DictReader(open(tmp_path / "gates_quick.csv")))
    assert [(r["gate"], r["arm"]) for r in first] == [("central", "E experts"), ("federated", "topk_affinity")]
    module.main([*base, "--feature-norm", "on", "--shard", "1/2"])
    module.main([*base, "--feature-norm", "on"])  # every run is there: nothing runs again
    rows = list(csv.DictReader(open(tmp_path / "gates_quick.csv")))
    assert len(rows) == 4 and rows[:2] == first  # one header, each run once
    assert {r["setting"] for r in rows} == {f"{tasks.VERSION} epochs=1 rounds=1 expert_hidden=8 feature_norm"}
    md = (tmp_path / "gates_quick.md").read_text()
    assert f"| tiny | {tasks.VERSION} epochs=1 rounds=1 expert_hidden=8 feature_norm | central |" in md
    assert md.count("| incomplete (1 of 2 seeds) |") == 2  # one seed is no verdict, either way
    module.main([*base, "--local-routing", "assigned"])  # a new setting: its own rows
    rows = list(csv.DictReader(open(tmp_path / "gates_quick.csv")))
    assert {r["setting"] for r in rows[4:]} == {
        f"{tasks.VERSION} epochs=1 rounds=1 expert_hidden=8 local_routing=assigned"
    }
    module.main([*base, "--rounds", "2", "--gate", "federated"])  # one gate only: its arms, nothing else
    rows = list(csv.DictReader(open(tmp_path / "gates_quick.csv")))
    assert [(r["gate"], r["setting"]) for r in rows[8:]] == [
        ("federated", f"{tasks.VERSION} epochs=1 rounds=2 expert_hidden=8")
    ] * 2
    with pytest.raises(SystemExit):
        module.main([*base, "--shard", "2/2"])
    assert "--shard: must be K/M" in capsys.readouterr().err


def test_routing_entropy_is_one_when_even_and_zero_on_one_expert():
    import numpy as np

    from fedloop.loop import routing_entropy

    assert routing_entropy(np.full(8, 1 / 8)) == pytest.approx(1.0)
    assert routing_entropy(np.array([0.0, 1.0, 0.0, 0.0])) == 0.0
    assert str(routing_entropy(np.array([0.0, 1.0]))) == "0.0"  # not -0.0 (tables print "-0.00")
    half = routing_entropy(np.array([0.5, 0.5, 0.0, 0.0]))
    assert half == pytest.approx(0.5)  # log 2 / log 4
    assert routing_entropy(np.array([1.0])) == 0.0


def test_each_scoring_ablation_changes_one_weight_of_aligned_value():

    import alignsolve as als

    module = load_script("benchmarks/run_federated.py")

    def weights(policy):
        cfg = module.config("smoke", policy, 0, 2, True)
        cfg.validate()
        return als.ScoringWeights(**cfg.score_weights).__dict__

    base = weights("aligned_value")
    terms = ("affinity", "loss", "capability", "load", "switching")
    for term in terms:
        changed = {k for k, v in weights(f"aligned_value_no{term}").items() if v != base[k]}
        assert changed == {term} and weights(f"aligned_value_no{term}")[term] == 0.0
    assert {k for k, v in weights("aligned_value_staleness").items() if v != base[k]} == {"staleness"}
    assert {k for k, v in weights("aligned_value_explore").items() if v != base[k]} == {"explore"}
    assert weights("aligned_value_explore")["explore"] == 0.5 and base["explore"] == 0.0
    assert {k for k, v in weights("aligned_value_explore_heavy").items() if v != base[k]} == {"explore"}
    assert weights("aligned_value_explore_heavy")["explore"] == 1.0
    assert set(module.REFERENCES["aligned_value"]) >= {f"aligned_value_no{t}" for t in terms}
    full = module.config("smoke", "aligned_value", 0, 2, True).__dict__
    for policy, epsilon in (("aligned_value_private", 1.0), ("aligned_value_private_eps8", 8.0)):
        private = module.config("smoke", policy, 0, 2, True).__dict__
        assert {k for k in full if private[k] != full[k]} == {"report_epsilon"} and private["report_epsilon"] == epsilon


def test_each_queue_ablation_changes_one_weight_of_the_aligner_with_the_deficit_queue():

    import alignsolve as als

    module = load_script("benchmarks/run_federated.py")

    def settings(policy):
        cfg = module.config("smoke", policy, 0, 2, True)
        cfg.validate()
        return als.ScoringWeights(**cfg.score_weights).__dict__, (cfg.load_target, cfg.load_signal)

    base, bounds = settings("aligned_value_uniform_queue")
    assert bounds == ("uniform", "queue")
    explore, explore_bounds = settings("aligned_value_uniform_queue_explore")
    assert explore_bounds == bounds and {k for k in base if explore[k] != base[k]} == {"explore"}
    assert explore["explore"] == 0.5
    terms = ("value", "loss", "capability", "switching")
    for term in terms:
        weights, their_bounds = settings(f"aligned_value_uniform_queue_no{term}")
        assert {k for k, v in weights.items() if v != base[k]} == {term} and weights[term] == 0.0
        assert their_bounds == bounds
    ablations = {f"aligned_value_uniform_queue_no{t}" for t in terms}
    assert set(module.REFERENCES["aligned_value_uniform_queue"]) >= ablations | {"flex_moe"}
    assert not ablations & set(module.REFERENCES["aligned_value"])  # their own table, not aligned_value's


def test_client_skew_is_zero_for_the_pooled_mix_and_large_for_disjoint_clients(monkeypatch, tmp_path):
    import numpy as np

    from fedloop import tasks

    module = load_script("benchmarks/run_client_skew.py")
    same = [np.array([0, 1, 2, 3]), np.array([3, 2, 1, 0])]
    assert module.mean_tv(same, 4) == pytest.approx(0.0)
    apart = [np.array([0, 0]), np.array([1, 1])]
    assert module.mean_tv(apart, 2) == pytest.approx(0.5)  # each holds one of two even halves
    assert module.mean_tv([np.zeros(5, dtype=int)] * 3, 1) == 0.0
    assert 0.0 <= module.random_split_tv(apart, 2) <= 0.5
    plays = module.by_play({"b|X": "abab", "a|Y": "cc", "a|Z": "ccc", "b|W": "a"})
    assert [p.tolist() for p in plays] == [module.encode_text("ccccc").tolist(), module.encode_text("aabab").tolist()]
    monkeypatch.setitem(
        tasks.TASKS, "tiny", dict(dataset="synthetic", data_options={"samples_per_client": 20, "test_size": 60})
    )
    assert module.main(["--tasks", "tiny", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "client_skew.md").read_text()
    assert "| tiny | label | 100 |" in text
    with pytest.raises(SystemExit):
        module.main(["--tasks", "nope", "--out", str(tmp_path)])


def test_a_policy_keeps_one_colour_in_every_panel_of_the_curves(tmp_path):
    import numpy as np

    from fedloop import plots

    panels = {"left": {"a": None, "b": None}, "right": {"a": None, "c": None, "b": None}}
    assert plots.panel_colours(panels) == {"a": "C0", "b": "C1", "c": "C2"}
    many = plots.panel_colours({"p": {f"x{i}": None for i in range(21)}})
    from matplotlib.colors import to_hex

    assert many["x0"] == to_hex("C0") and many["x9"] == to_hex("C9")  # the first ten keep the cycle's hues
    assert len(set(list(many.values())[:20])) == 20  # twenty names, twenty colours
    assert many["x20"] == many["x0"]  # beyond twenty they repeat
    styles = plots.panel_styles({"p": {f"x{i}": None for i in range(41)}})
    assert styles["x0"] == styles["x19"] == "-" and styles["x20"] == "--" and styles["x40"] == ":"
    curves = {name: np.full((2, 3), 0.5) for name in ("a", "b")}
    path = plots.plot_accuracy_panels({"l": curves, "r": {"b": curves["b"]}}, tmp_path / "p.png", targets=[0.4])
    assert path.is_file()


def test_accuracy_along_the_budget_is_the_mean_of_the_last_rounds_at_each_quarter():
    module = load_script("benchmarks/run_federated.py")
    rising = {0: {"accuracy": [r / 40 for r in range(1, 41)]}, 1: {"accuracy": [0.5] * 40}}
    lines = module.along_the_budget({"a": rising, "b": {0: {"accuracy": [0.1] * 20}}}, 40, window=2)
    assert lines[5] == "| policy | seeds (n) | round 10 | round 20 | round 30 | round 40 |"
    # policy a, round 10: seed 0 averages rounds 9 and 10 (0.2375), seed 1 is flat at 0.5
    assert lines[7] == "| a | 2 | 0.3688 | 0.4938 | 0.6188 | 0.7438 |"
    assert lines[8] == "| b | 1 | 0.1000 | 0.1000 | - | - |"  # a run shorter than the round is not averaged
    short = module.along_the_budget({"a": rising}, 4)  # a budget shorter than the window: the window shrinks to it
    assert short[5] == "| policy | seeds (n) | round 4 |"
    assert short[7] == "| a | 2 | 0.2812 |"  # seed 0 averages rounds 1-4 (0.0625), seed 1 is flat at 0.5


def test_levelling_off_reads_the_gain_over_the_last_two_windows_and_where_the_curve_came_within_a_point():
    module = load_script("benchmarks/run_federated.py")
    budget = 16  # window 4: the last 4 rounds against the 4 rounds ending 8 rounds earlier
    assert module.level_window(budget) == 4 and module.level_window(600) == 50 and module.level_window(3) == 1
    flat = {s: {"accuracy": [0.5 + 0.001 * s] * budget} for s in range(4)}
    # rises 0.01 a round to round 10, then flat
    rising = {s: {"accuracy": [min(r, 10) * 0.01 + 0.1 * s for r in range(1, budget + 1)]} for s in range(4)}
    # seed by seed the gain is +0.3 or -0.3: the interval straddles the tolerance
    mixed = {s: {"accuracy": [0.5] * 8 + [0.5 + (0.3 if s % 2 else -0.3)] * 8} for s in range(4)}
    short = {0: {"accuracy": [0.9] * (budget - 1)}}  # shorter than the budget: left out, no row
    lines = module.levelling_off({"flat": flat, "rising": rising, "mixed": mixed, "short": short}, budget)
    assert lines[5].startswith("| policy | seeds (n) | last 4 rounds | gain over the last 8 rounds |")
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in lines[7:]}
    assert set(rows) == {"flat", "rising", "mixed"}
    assert rows["flat"][3:5] == ["+0.0000 [+0.0000, +0.0000]", "levelled off"]
    assert rows["flat"][5] == "8 |"  # within a point of the end from the first window end on
    # every seed gains 0.035: rounds 13-16 average 0.10 above its offset, rounds 5-8 0.065
    assert rows["rising"][3] == "+0.0350 [+0.0350, +0.0350]" and rows["rising"][4] == "still rising"
    # rounds 9-12 average 0.0975, within 0.01 of the last window; rounds 5-8 are not
    assert rows["rising"][5] == "12 |"
    assert rows["mixed"][4] == "undetermined" and rows["mixed"][1] == "4"
    too_short = module.levelling_off({"flat": flat}, 2)
    assert too_short[-1].startswith("| (budget of 2 rounds: too short for two windows)")
    # how many seeds would settle a verdict at the measured mean and spread: the mixed policy's gains are +-0.3
    # around 0, 0.01 below the tolerance, so about (1.96 x 0.346 / 0.01)^2 seeds
    settle = {row["policy"]: row["settle"] for row in module.level_rows({"mixed": mixed, "flat": flat}, budget)}
    assert abs(settle["mixed"] - math.ceil((1.96 * np.std([0.3, -0.3, 0.3, -0.3], ddof=1) / 0.01) ** 2)) <= 1
    assert module.seeds_to_settle(np.array([-0.02, 0.0, 0.02])) == 16  # sd 0.02, mean 0.01 under the tolerance
    assert module.seeds_to_settle(np.array([0.0, 0.0, 0.0])) == 2  # no spread: two, the fewest that have one
    assert module.seeds_to_settle(np.array([0.0, 0.02])) is None  # mean at the tolerance: nothing settles it
    assert module.seeds_to_settle(np.array([0.5])) is None  # one seed has no spread to measure


def test_a_levelling_verdict_read_again_after_seeds_were_added_is_tabled_set_by_set_and_widened_for_the_looks():
    module = load_script("benchmarks/run_federated.py")
    budget = 16  # window 4
    # seed s gains (s - 3.5) / 100 over the last 8 rounds: the first four seeds lose, the next four gain
    runs = {"p": {s: {"accuracy": [0.5] * 8 + [0.5 + (s - 3.5) / 100] * 8} for s in range(8)}}
    lines = module.levelling_by_set(runs, budget, (4,))
    assert "after the verdict on the seeds below 4 had been read" in lines[3] and "one of 2 looks" in lines[3]
    assert lines[5].startswith("| policy | seeds | seeds (n) | interval | gain over the last 8 rounds | verdict |")
    rows = [line.split(" | ") for line in lines[7:]]
    assert [row[1:4] for row in rows] == [
        ["below 4", "4", "95.0%"],
        ["4 and up", "4", "95.0%"],
        ["all (2 looks)", "8", "97.5%"],
    ]
    assert rows[0][4].startswith("-0.0200 ") and rows[1][4].startswith("+0.0200 ") and rows[2][4].startswith("+0.0000 ")
    # all seeds at the widened level: the same point, an interval holding the 95% one, and the verdict read from it
    (pooled,) = module.level_rows(runs, budget)
    (widened,) = module.level_rows(runs, budget, level=0.975)
    assert widened["gain"][0] == pooled["gain"][0]
    assert widened["gain"][1] <= pooled["gain"][1] and widened["gain"][2] >= pooled["gain"][2]
    assert rows[2][4] == f"{widened['gain'][0]:+.4f} [{widened['gain'][1]:+.4f}, {widened['gain'][2]:+.4f}]"
    assert widened["settle"] >= pooled["settle"]  # a wider interval needs more seeds to clear the tolerance
    assert module.widened_level(1) == pytest.approx(0.95) and module.widened_level(2) == pytest.approx(0.975)
    # a third look: three sets, all seeds at 98.3%
    three = module.levelling_by_set(runs, budget, (2, 4))
    assert "below 2 and again on those below 4 had been read" in three[3] and "one of 3 looks" in three[3]
    labels = [line.split(" | ")[1:4] for line in three[7:]]
    assert labels == [
        ["below 2", "2", "95.0%"],
        ["2 to 3", "2", "95.0%"],
        ["4 and up", "4", "95.0%"],
        ["all (3 looks)", "8", "98.3%"],
    ]
    # (2.2414 x 0.02 / 0.01)^2 = 20.1 at 97.5%, against 16 at 95%
    assert module.seeds_to_settle(np.array([-0.02, 0.0, 0.02]), level=0.975) == 21


def test_draws_rank_a_seeds_runs_test_them_and_measure_their_range(tmp_path, monkeypatch):
    module = load_script("benchmarks/run_federated.py")
    missed = (4, False)  # a budget of 4 rounds
    summary = {
        ("a", 0.7): {0: (1, True), 1: (2, True)},
        ("b", 0.7): {0: (3, True), 1: missed},
        ("c", 0.7): {0: missed, 1: missed, 2: (1, True)},
    }
    summary |= {(p, f): {s: missed for s in range(3)} for p in "abc" for f in (0.8, 0.9)}
    finals = {"a": (0.5, 0.5), "b": (0.6, 0.6), "c": (0.4, 0.7, 0.1)}
    runs = {p: {s: {"accuracy": [acc] * 4} for s, acc in enumerate(accs)} for p, accs in finals.items()}
    lines = module.draws("a", ("a", "b", "c"), summary, runs)
    assert lines[1] == "## Draws of `a`'s scores"
    rows = {line.split(" | ")[0][2:]: line for line in lines if line.startswith("| ")}
    # seed 2 is c's alone: n = 2. At 70%: seed 0 ranks a, b, c; on seed 1 b and c both miss and tie (2.5 each);
    # the 80% and 90% targets nobody reaches: all tied. Final accuracy, highest first: b a c, then c b a
    assert rows["a"] == "| a | 2 | 1.00 | 2.00 | 2.00 | 2.50 |"
    assert rows["b"] == "| b | 2 | 2.25 | 2.00 | 2.00 | 1.50 |"
    assert rows["c"] == "| c | 2 | 2.75 | 2.00 | 2.00 | 2.00 |"
    # Q = 12 * 2 / (3 * 4) * ((1 - 2)^2 + 0.25^2 + 0.75^2) = 3.25
    assert rows["rank test"].startswith("| rank test | 2 | Q = 3.25, p = ")
    assert "| no draw reached it | no draw reached it | Q = 1.00, p = " in rows["rank test"]  # (0.5^2 + 0.5^2) * 2
    # ranges: 70% from 1 to 4 rounds on seed 0 and 2 to 4 on seed 1; final accuracy 0.2 on both
    assert rows["range within a seed"] == "| range within a seed | 2 | 2.5 rounds | - | - | 0.200 |"
    # the figure: a row of panels per group with two or more seeds in common, none without
    monkeypatch.setattr(module, "DRAWS", {"a": ("a", "b", "c"), "z": ("a", "nobody")})
    assert module.plot_draws(summary, runs, tmp_path / "d.png").is_file()
    monkeypatch.setattr(module, "DRAWS", {"z": ("a", "nobody")})
    assert module.plot_draws(summary, runs, tmp_path / "e.png") is None
    # a draw with fewer than two seeds in common leaves nothing to test
    assert module.draws("a", ("a", "c"), summary, runs) != []
    runs["c"] = {2: runs["c"][2]}
    assert module.draws("a", ("a", "c"), summary, runs) == []


def test_expert_use_reads_loads_on_every_run_and_assignment_traces_where_saved(tmp_path):
    module = load_script("benchmarks/run_federated.py")
    nan = float("nan")
    traced = {
        "loads": [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]],
        "routed_share": [0.5, nan, 1.0, 0.0],  # a round nobody was assigned in (NaN) is left out of its mean
        "assigned": [{}, {}, {"mnist-inverted-0": [2], "fashion-1": [3]}, {"mnist-2": [2], "fashion-3": [3]}],
    }
    untraced = {"loads": [[4, 0, 0, 0]] * 4}
    runs = {"a": {0: traced}, "b": {0: untraced}}
    lines = module.expert_use(runs, 4, by_domain=True, window=2)
    # a: 2 experts and 2 pairs a round; last 2 rounds' loads (0, 0, 2, 2) give 2 effective experts and full overlap;
    # purity: expert 2 is trained by two domains once each (mnist-inverted is not mnist), expert 3 twice by fashion
    assert lines[-2] == "| a | 1 | 2.0 | 2.00 | 2.0 | 1.00 | 1 | 0.50 | 0.50 | 0.75 | - |"  # no client returns
    assert lines[-1] == "| b | 1 | 1.0 | 4.00 | 1.0 | 1.00 | 0 | - | - | - | - |"  # one expert, four clients on it
    assert module.expert_use(runs, 4, by_domain=False, window=2)[-2].endswith("| 0.50 | 0.50 | - | - |")
    one_expert = {"loads": [[3]] * 4, "routed_share": [1.0] * 4, "assigned": [{"mnist-0": [0]}] * 4}
    assert module.expert_use({"dense": {0: one_expert}}, 4, by_domain=True, window=2)[-1].endswith(
        "| 0 | - | - | - | - |"
    )
    assert module.plot_traces({"b": {0: untraced}, "dense": {0: one_expert}}, tmp_path / "t.png") is None
    assert module.plot_traces(runs, tmp_path / "t.png", smooth=2).is_file()
    # domains read from a map (a speaker's id does not name its script): seed 0's clients, seed 1 without one
    speakers = dict(traced, assigned=[{}, {}, {"kent": [2], "lear": [3]}, {"edgar": [2], "goneril": [3]}])
    named = {0: {"kent": "script0", "edgar": "script0", "lear": "script1", "goneril": "script2"}}
    mapped = module.expert_use({"a": {0: speakers, 1: speakers}}, 4, by_domain=False, window=2, domains=named)
    assert "domain purity of the last 2 rounds" in mapped[3]
    assert mapped[-1] == "| a | 2 | 2.0 | 2.00 | 2.0 | 1.00 | 2 | 0.50 | 0.50 | 0.75 | - |"  # seed 1 has no purity
    unnamed = module.expert_use({"a": {1: speakers}}, 4, by_domain=False, window=2, domains=named)
    assert unnamed[-1].endswith("| 0.50 | 0.50 | - | - |")
    private = module.expert_use({"aligned_value_private": {0: traced}, "b": {0: untraced}}, 4, True, window=2)
    assert private[-4] == "| aligned_value_private | 1 | 2.0 | 2.00 | 2.0 | 1.00 | 1 | 0.50* | 0.50* | 0.75 | - |"
    assert private[-1].startswith("\\*: share of the noised")  # the mark is explained under the table
    assert not any("noised" in line for line in lines)  # and only where a private policy's share is shown


def test_repeated_pairs_counts_a_returning_clients_experts_given_again_in_the_window():
    module = load_script("benchmarks/run_federated.py")
    assigned = [
        {"x": [0, 1], "y": [2]},
        {"z": [3]},
        {"x": [1, 2], "y": []},  # x keeps expert 1 of its two; y is left out and keeps its last experts
        {"x": [1], "y": [2, 3], "w": [0]},  # x again keeps 1; y keeps 2 from round 0; w is new
    ]
    # whole run: round 2 gives x 1 of 2 again; round 3 gives x 1 of 1 and y 1 of 2: 3 of 5
    assert module.repeated_pairs(assigned, 4) == pytest.approx(3 / 5)
    assert module.repeated_pairs(assigned, 1) == pytest.approx(2 / 3)  # the last round only
    assert module.repeated_pairs(assigned[:2], 2) is None  # nobody returns
    runs = {"a": {0: {"loads": [[1, 1, 1, 0]] * 4, "routed_share": [0.5] * 4, "assigned": assigned}}}
    assert module.expert_use(runs, 4, by_domain=False, window=2)[-1].endswith("| - | 0.60 |")  # rounds 2-3: 3 of 5


def test_class_purity_counts_the_slots_whose_client_holds_each_experts_most_held_class(tmp_path, monkeypatch):
    module = load_script("benchmarks/run_federated.py")
    held = {"p": [0, 1], "q": [1], "r": [2, 3], "s": [3]}
    assigned = [{"p": [0], "q": [0, 1]}, {"r": [1], "s": [0]}, {"p": [1]}]
    # expert 0: p, q, s -> class 1 held by p and q: 2 of 3; expert 1: q, r, p -> class 1 by q and p: 2 of 3
    assert module.group_purity(assigned, held) == pytest.approx(4 / 6)
    assert module.group_purity([{"p": [0], "q": [0]}], held) == 1.0  # both hold class 1
    assert np.isnan(module.group_purity([{}], held))
    runs = {"a": {0: {"loads": [[2, 1]] * 3, "routed_share": [0.5] * 3, "assigned": assigned}}}
    lines = module.expert_use(runs, 3, by_domain=False, window=3, classes={0: held})
    assert "class purity of the last 3 rounds" in lines[3] and "class purity, last 3" in lines[5]
    assert lines[-1].endswith("| 0.67 | 0.00 |")  # purity, then repeated pairs: p, the one to return, changes expert
    # domains take precedence: a task with domains has domain purity whatever classes are given
    named = module.expert_use(
        runs, 3, by_domain=False, window=3, domains={0: dict.fromkeys(held, "d")}, classes={0: held}
    )
    assert "domain purity, last 3" in named[5] and named[-1].endswith("| 1.00 | 0.00 |")
    # a seed without classes has no purity
    assert module.expert_use(runs, 3, by_domain=False, window=3, classes={1: held})[-1].endswith("| - | 0.00 |")

    # save_classes: the classes with a quarter of a client's samples or more, per seed, loaded once per seed
    class Data:
        n_classes = 4

        def __init__(self, seed):
            self.client_ids = ["c0", "c1"]
            self.clients = [(None, torch.tensor([0] * 6 + [1] * seed)), (None, torch.tensor([3] * 5))]

    seen = []
    monkeypatch.setattr(module, "config", lambda task, policy, seed, rounds, quick: seed)
    monkeypatch.setattr(module.fedloop.loop, "load_data", lambda seed: seen.append(seed) or Data(seed))
    path = module.save_classes(tmp_path, "t", [0, 2], quick=False)
    assert module.load_classes(tmp_path) == {0: {"c0": [0], "c1": [3]}, 2: {"c0": [0, 1], "c1": [3]}}
    assert module.save_classes(tmp_path, "t", [2, 0], quick=False) == path and seen == [0, 2]  # saved seeds kept
    assert module.load_classes(tmp_path / "none") == {}


def test_traces_figure_leaves_unassigned_rounds_out_of_its_moving_means(tmp_path, monkeypatch):
    module = load_script("benchmarks/run_federated.py")
    drawn = {}
    monkeypatch.setattr(module.plots, "plot_accuracy_panels", lambda panels, path, **kw: drawn.update(panels) or path)
    run = {"loads": [[1, 0]] * 4, "routed_share": [0.5, float("nan"), 0.5, 0.5], "assigned": [{"x-0": [0]}] * 4}
    module.plot_traces({"a": {0: run}}, tmp_path / "t.png", smooth=2)
    share = next(curves for title, curves in drawn.items() if title.startswith("routed share"))
    assert share["a (n=1)"].tolist() == [[0.5, 0.5, 0.5]]  # not 0.25 where the window holds the NaN round


def test_paired_rows_give_the_tables_figures_and_the_intervals_figure_draws_them(tmp_path, monkeypatch):
    module = load_script("benchmarks/run_federated.py")
    # targets of a central accuracy of 1: ref passes 0.8 at round 2 (3 rounds) on both seeds, base at round 3 (4
    # rounds): 25% fewer rounds at 70% and 80%; neither reaches 90%; final accuracy (mean of the last 10 rounds,
    # here all 4): 0.425 against 0.2125
    runs = {"ref": {s: {"accuracy": [0.0, 0.0, 0.85, 0.85]} for s in (0, 1)}}
    runs["base"] = {s: {"accuracy": [0.0, 0.0, 0.0, 0.85]} for s in (0, 1, 2)}
    summary = {
        (p, f): {s: module.stats.rounds_to_target(r["accuracy"], f) for s, r in by_seed.items()}
        for p, by_seed in runs.items()
        for f in module.FRACTIONS
    }
    rows = module.paired_rows("ref", ["base", "never_ran"], summary, runs, 4)
    assert [(r["base"], r["n"]) for r in rows] == [("base", 2)]  # seed 2 unpaired; a policy without runs: no row
    (row,) = rows
    assert row["targets"][0] == pytest.approx((0.25, 0.25, 0.25)) and row["targets"][2] is None
    assert row["final"] == pytest.approx((0.2125, 0.2125, 0.2125))
    lines = module.reduction_table("ref", rows)
    cells = "+25% [+25%, +25%] | +25% [+25%, +25%] | not estimable (neither reached it) | +0.212 [+0.212, +0.212]"
    assert lines[-1] == f"| base | 2 | {cells} |"
    assert module.reduction_table("ref", []) == [] and module.plot_pairs("ref", [], tmp_path / "x.png") is None

    drawn = {}
    monkeypatch.setattr(
        module.plots,
        "plot_intervals",
        lambda panels, labels, path, **kw: drawn.update(kw, panels=panels, labels=labels) or path,
    )
    module.plot_pairs("ref", rows, tmp_path / "p.png")
    # the 90% target, which no row can estimate, gets no panel; the relative panels are drawn as percentages
    assert list(drawn["panels"]) == [
        "70% target: fewer rounds (relative)",
        "80% target: fewer rounds (relative)",
        "final accuracy: difference",
    ]
    assert drawn["labels"] == ["base (n=2)"] and drawn["percent"] == [True, True, False]
    assert "unless named" not in drawn["title"]

    # a comparison read again after seeds were added: its row carries the widened level, which the sentence above
    # the table and the figure's label name
    (wide,) = module.paired_rows("ref", ["base"], summary, runs, 4, levels={"base": 0.975})
    assert row["level"] == 0.95 and wide["level"] == 0.975 and wide["targets"][0] == pytest.approx((0.25, 0.25, 0.25))
    intro = module.reduction_table("ref", [wide])[3]
    assert "2000 resamples; 97.5% for `base`: seeds were added to these comparisons" in intro
    assert "97.5%" not in module.reduction_table("ref", rows)[3]
    module.plot_pairs("ref", [wide], tmp_path / "w.png")
    assert drawn["labels"] == ["base (n=2, 97.5%)"] and "unless named" in drawn["title"]


def test_a_comparison_with_seeds_added_after_a_look_is_read_at_the_widened_level(monkeypatch):
    module = load_script("benchmarks/run_federated.py")
    monkeypatch.setattr(module, "ADDED", {("rounds600", "t"): (("a", 10, ("b", "c")),)})
    # either way round, in that folder and task only
    assert module.added_looks("rounds600", "t", "a", "b") == 2 and module.added_looks("rounds600", "t", "c", "a") == 2
    assert module.added_looks("rounds600", "t", "a", "d") == 1 and module.added_looks("rounds600", "t", "b", "c") == 1
    assert module.added_looks("results", "t", "a", "b") == 1 and module.added_looks("rounds600", "u", "a", "b") == 1
    assert module.pair_level("rounds600", "t", "b", "a") == pytest.approx(0.975)
    assert module.pair_level("results", "t", "a", "b") == 0.95
    monkeypatch.setattr(module, "LEVEL_LOOKS", {("rounds800", "t"): (20, 48)})
    assert module.level_looks("rounds800", "t") == 3 and module.level_looks("rounds800", "u") == 1


def test_the_draws_figure_checks_one_value_per_seed(tmp_path):
    from fedloop import plots

    panels = {"p": ([0, 1], {"a": ([1.0, 2.0], [False, True]), "b": ([3.0, 3.0], [True, True])})}
    assert plots.plot_draws(panels, tmp_path / "f.png", columns=2, title="t").is_file()
    panels["q"] = ([0, 1], {"a": ([1.0], [False])})
    with pytest.raises(ValueError, match=r"panels\['q'\]\['a'\]: need one value and one missed flag per seed \(2\)"):
        plots.plot_draws(panels, tmp_path / "g.png")


def test_the_intervals_figure_draws_cells_it_cannot_estimate_and_checks_their_number(tmp_path):
    from fedloop import plots

    panels = {"a": [(0.2, 0.1, 0.3), None], "b": [(-0.1, -0.2, 0.05), (0.0, -0.1, 0.1)]}
    assert plots.plot_intervals(panels, ["x", "y"], tmp_path / "f.png", percent=[True]).is_file()
    with pytest.raises(ValueError, match=r"panels\['a'\]: must hold one cell per label \(3\); got 2"):
        plots.plot_intervals(panels, ["x", "y", "z"], tmp_path / "g.png")


def test_ablations_and_most_variants_stay_out_of_the_figures_but_not_the_tables(tmp_path, monkeypatch):
    module = load_script("benchmarks/run_federated.py")
    assert module.ABLATION.search("aligned_value_noprofiling") and module.ABLATION.search("flex_moe_nodeficit")
    assert not module.ABLATION.search("aligned_value_greedy") and not module.ABLATION.search("aligned_value_uniform")
    drawn = {}
    monkeypatch.setattr(module.plots, "plot_accuracy_panels", lambda panels, path, **kw: drawn.update(panels) or path)
    run = {"accuracy": [0.5] * 4, "loads": [[1, 1]] * 4, "routed_share": [0.5] * 4, "assigned": [{"x-0": [0]}] * 4}
    names = ("aligned_value", "random", "aligned_value_greedy", "aligned_value_noload", "aligned_value_topk")
    runs = {p: {0: run} for p in names}
    module.plot_curves(runs, 1.0, tmp_path / "c.png")
    assert list(drawn["variants"]) == ["aligned_value (n=1)", "aligned_value_greedy (n=1)", "aligned_value_topk (n=1)"]
    drawn.clear()
    module.plot_traces(runs, tmp_path / "t.png", smooth=2)
    share = next(curves for title, curves in drawn.items() if title.startswith("routed share"))
    assert list(share) == ["aligned_value (n=1)", "random (n=1)", "aligned_value_topk (n=1)"]


def test_a_repeated_colour_is_drawn_in_another_line_style(tmp_path, monkeypatch):
    import numpy as np

    from fedloop import plots

    drawn = {}
    real = plots._band

    def record(ax, x, curves, label, color=None, linestyle="-"):
        drawn[label] = (color, linestyle)
        real(ax, x, curves, label, color, linestyle)

    monkeypatch.setattr(plots, "_band", record)
    curves = {f"p{i}": np.full((2, 5), 0.01 * i) for i in range(22)}
    plots.plot_accuracy_panels({"l": curves}, tmp_path / "s.png", legend_loc="below", sharey=False)
    assert drawn["p20"][0] == drawn["p0"][0] and drawn["p20"][1] != drawn["p0"][1]
    assert len(set(drawn.values())) == 22  # no two curves alike


def test_a_legend_below_the_panels_is_drawn(tmp_path):
    import numpy as np

    from fedloop import plots

    curves = {f"p{i}": np.full((2, 5), 0.1 * i) for i in range(7)}
    path = plots.plot_accuracy_panels({"l": curves}, tmp_path / "b.png", legend_loc="below", sharey=False)
    assert path.is_file()
    from matplotlib.image import imread

    many = {f"p{i}": np.full((2, 5), 0.01 * i) for i in range(30)}
    longer = plots.plot_accuracy_panels({"l": many}, tmp_path / "m.png", legend_loc="below", sharey=False)
    # ten rows of names below the panel instead of three: the figure grows to hold them
    assert imread(longer).shape[0] > imread(path).shape[0] + 60
    # names too long for three a row: fewer columns, so the legend stays within its panel's width
    named = {f"{'a_very_long_variant_name_' * 2}{i}": np.full((2, 5), 0.1 * i) for i in range(7)}
    wide = plots.plot_accuracy_panels({"l": named}, tmp_path / "w.png", legend_loc="below", sharey=False)
    assert imread(wide).shape[1] <= imread(path).shape[1] + 10


def test_the_budget_ceiling_is_the_reduction_a_baseline_censored_everywhere_gives():
    module = load_script("benchmarks/run_federated.py")
    # 70%: reached at 50 on seed 0, missed on seed 1 (censored at 100): RMST 75; 80%: missed on both; 90%: at 20, 40
    hits = {
        0.7: {0: (50, True), 1: (100, False)},
        0.8: {0: (100, False), 1: (100, False)},
        0.9: {0: (20, True), 1: (40, True)},
    }
    summary = {("a", f): v for f, v in hits.items()}
    lines = module.budget_ceiling(["a"], summary, 100)
    assert lines[-1] == "| a | 2 | 25% | 0% | 70% |"
    never = module.stats.relative_reduction([50, 100], [True, False], [100, 100], [False, False], 100)
    assert never == pytest.approx(0.25)  # the ceiling is what a baseline that never reaches the target gives
    slower = module.stats.relative_reduction([50, 100], [True, False], [90, 100], [True, False], 100)
    assert slower < 0.25  # any baseline that reaches it at all gives less
    assert module.budget_ceiling([], summary, 100) == []


def test_the_runs_a_variant_leaves_unchanged_are_counted_and_the_others_dated(tmp_path):
    import json

    module = load_script("benchmarks/run_federated.py")
    folder = module.run_folder(tmp_path, "smoke")
    folder.mkdir(parents=True)
    base = [0.1, 0.2, 0.3, 0.4, 0.5]
    curves = {
        "aligned_value": {0: base, 1: base, 2: base},
        # the same run on seeds 0 and 1, parting at round 3 on seed 2 (and at round 2 in its assignments on seed 1)
        "aligned_value_nocapability": {0: base, 1: base, 2: [0.1, 0.2, 0.9, 0.4, 0.5]},
        "aligned_value_noload": {0: [0.2] * 5, 1: [0.3] * 5},  # never the same run: no row
    }
    for policy, by_seed in curves.items():
        for seed, acc in by_seed.items():
            moved = policy.endswith("capability") and seed == 1
            assigned = [{"c0": [0]}, {"c0": [1 if moved else 0]}, {"c0": [0]}, {"c0": [0]}, {"c0": [0]}]
            record = {"policy": policy, "seed": seed, "accuracy": acc, "bytes": [1] * 5, "latency": [1.0] * 5}
            record |= {"load_cv": [0.0] * 5, "loads": [[1, 1]] * 5, "assigned": assigned, "routed_share": [0.5] * 5}
            (folder / f"{policy}-seed{seed}.json").write_text(json.dumps(record))
    text = module.render("smoke", tmp_path, "test").read_text()
    section = text.split("## Runs that are `aligned_value`'s, round for round")[1].split("\n## ")[0]
    assert "| aligned_value_nocapability | 3 | 1 | 0 | 1: 2, 2: 3 |" in section
    assert "aligned_value_noload" not in section
    assert module.same_runs({"aligned_value_noload": {0: {"accuracy": base}}}) == []  # no reference: nothing
    assert module.same_runs({"random": {0: {"accuracy": base}}}) == []


def test_the_target_ledger_meets_a_part_only_when_the_point_reaches_the_goal_and_the_interval_excludes_0(
    tmp_path, monkeypatch
):
    import json

    module = load_script("benchmarks/run_federated_target.py")

    def curve(reach, level=0.85, rounds=20):
        """0.5 until round ``reach`` (1-based; None: never), then ``level``."""
        return [0.5 if reach is None or r < reach else level for r in range(1, rounds + 1)]

    def save(base, task, policy, curves, version="v2"):
        folder = base / "federated" / f"{task}-{version}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "central.json").write_text(json.dumps({"accuracy": 1.0}))
        for seed, accuracy in enumerate(curves):
            (folder / f"{policy}-seed{seed}.json").write_text(
                json.dumps({"policy": policy, "seed": seed, "accuracy": accuracy})
            )

    # MNIST shards: random reaches 80% at round 20 on three seeds and at round 2 on the fourth
    shards = [
        ("random", [curve(20), curve(20), curve(20), curve(2)]),
        ("topk_affinity", [curve(10)] * 4),
        ("flex_moe", [curve(8)] * 4),
        # round 1 everywhere, and higher at the end than flex_moe: every part met
        ("aligned_win", [curve(1, 0.9)] * 4),
        # 58% fewer rounds than random on the point, but the fourth seed flips it: the interval reaches below 0
        ("aligned_mixed", [curve(2), curve(2), curve(2), curve(20)]),
        # sooner than random on every seed, 45% fewer rounds on the whole: the interval above 0, the point under 50%
        ("aligned_near", [curve(11), curve(11), curve(11), curve(1)]),
    ]
    for policy, curves in shards:
        save(tmp_path, "mnist_shards", policy, curves)
    save(tmp_path, "mnist_shards", "aligned_win", [curve(None)] * 4, version="v1")  # an old definition: ignored
    # four domains, at a longer budget in a subfolder: the winner again; the scripts without top-k, nobody at 80%
    for policy, curves in (("random", [curve(20)] * 4), ("topk_affinity", [curve(10)] * 4)):
        save(tmp_path / "rounds600", "multidomain4", policy, curves)
    save(tmp_path / "rounds600", "multidomain4", "flex_moe", [curve(8)] * 4)
    save(tmp_path / "rounds600", "multidomain4", "aligned_win", [curve(1, 0.9)] * 4)
    for policy, level in (("random", 0.6), ("flex_moe", 0.6), ("aligned_win", 0.7)):
        save(tmp_path, "shakespeare_scripts", policy, [[0.5] * 19 + [level]] * 4)

    rows = module.ledger(tmp_path)
    by = {(row["label"], row["task"], row["policy"]): row["parts"] for row in rows}
    assert ("results", "mnist_shards", "random") not in by  # only aligner variants have rows
    # seeds added to one comparison after a look: that part is read at 97.5%, the folder's others at 95%
    monkeypatch.setattr(
        module.run_federated, "ADDED", {("results", "mnist_shards"): (("aligned_mixed", 2, ("random",)),)}
    )
    widened = {(row["label"], row["task"], row["policy"]): row["parts"] for row in module.ledger(tmp_path)}[
        ("results", "mnist_shards", "aligned_mixed")
    ]
    assert [part["level"] for part in widened] == [0.975, 0.95, 0.95]
    low, high = widened[0]["interval"][1:], by[("results", "mnist_shards", "aligned_mixed")][0]["interval"][1:]
    assert low[0] <= high[0] and low[1] >= high[1]  # the widened interval holds the 95% one
    assert module.cell(widened[0]).endswith(" (4, 97.5%)") and module.cell(widened[1]).endswith(" (4)")
    monkeypatch.setattr(module.run_federated, "ADDED", {})
    win = by[("results", "mnist_shards", "aligned_win")]
    assert [part["met"] for part in win] == [True, True, True]
    mixed = by[("results", "mnist_shards", "aligned_mixed")][0]
    assert mixed["interval"][0] >= 0.5 and mixed["interval"][1] <= 0 and not mixed["met"]
    near = by[("results", "mnist_shards", "aligned_near")][0]
    assert 0 < near["interval"][1] and near["interval"][0] < 0.5 and not near["met"]
    scripts = by[("results", "shakespeare_scripts", "aligned_win")]
    assert [part["status"] for part in scripts] == ["not estimable", "not run", "measured"]
    assert [part["met"] for part in scripts] == [False, False, True]
    found = module.verdicts(rows)
    assert found["aligned_win"]["target"] and found["aligned_win"]["whole"] == {
        "(a) multi-domain",
        "(b) MNIST shards",
    }
    assert not found["aligned_mixed"]["target"]
    text = module.render(rows, "cmd")
    assert "Variants meeting the target: `aligned_win`." in text
    assert "| variants meeting one part on two tasks or more | 1 |" in text
    both = "(a) multi-domain, (b) MNIST shards"
    assert f"| aligned_win | {both} | {both} | {both}, (c) Shakespeare | {both} |" in text
    assert "| shakespeare_scripts | results | 20 | aligned_win | not estimable | not run |" in text
    assert " | random, top-k, FLEX-MoE |" in text and " | FLEX-MoE |" in text
    # per part and task, the variants meeting it: aligned_win everywhere but the scripts' round parts
    assert "| random part | 1 | 1 | 0 |" in text and "| FLEX-MoE part | 1 | 1 | 1 |" in text
    assert module.main(["--results", str(tmp_path), "--out", str(tmp_path / "t.md")]) == 0
    assert (tmp_path / "t.md").read_text().splitlines()[1:] == text.splitlines()[1:]
    with pytest.raises(SystemExit):
        module.main(["--results", str(tmp_path / "missing")])
    # a point just under its goal never shows as the goal
    part = {"base": "topk_affinity", "n": 20, "interval": (0.19955, 0.055, 0.311), "met": False, "status": "measured"}
    assert module.cell(part) == "+19.96% [+5.5%, +31.1%] (20)"
    assert module.cell(part | {"interval": (0.2, 0.055, 0.311), "met": True}) == "+20.0% [+5.5%, +31.1%] (20)"
