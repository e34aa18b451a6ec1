"""The GPU call's script (``benchmarks/run_cuda.py``): its page is what its raw files render to, its instances are
ones the generators build, and a federated run saves its rounds as it goes (the CPU standing in for the GPU)."""

from __future__ import annotations

import json
import re

import pytest

import alignsolve as als
from fedloop import stats
from tests.scripts import ROOT, load_script

RESULTS = ROOT / "benchmarks" / "results"


def test_the_committed_page_is_what_its_raw_files_render_to(tmp_path):
    if not (RESULTS / "cuda" / "env.json").exists():
        pytest.skip("no GPU call's files are committed (benchmarks/results/cuda/)")
    module = load_script("benchmarks/run_cuda.py")
    committed = (RESULTS / "cuda.md").read_text()
    command = re.search(r"this page: `([^`]*)`", committed).group(1)
    page = module.render(RESULTS / "cuda", tmp_path, command)
    assert page.read_text() == committed
    assert (tmp_path / "federated_cuda.png").stat().st_size > 0


def test_the_gpu_instances_are_ones_the_generators_build():
    cuda = load_script("benchmarks/run_cuda.py")
    relaxations = load_script("benchmarks/run_relaxations.py")
    n, e, k = cuda.DENSE[False]
    # the relaxation benchmark's GPU target and the call's dense instance are one instance, within generate's cap
    assert (n, e, k) == relaxations.CUDA_SIZE
    assert n * e <= als.generators.MAX_DENSE_CELLS
    with pytest.raises(als.InvalidProblemError, match="at most"):
        als.generate("skewed", n + 1, e, k)  # the cap is where the instance sits, so one more client is refused
    small = cuda.DENSE[True]
    assert als.generate("skewed", *small, seed=0).fitness.shape == small[:2]


def test_a_federated_run_saves_its_rounds_as_it_goes(tmp_path, monkeypatch):
    module = load_script("benchmarks/run_cuda.py")
    monkeypatch.setattr(module, "TASK", "smoke")  # synthetic data: no dataset cache needed
    module.federated_child(tmp_path, "random", "cpu", 2, rehearse=True)
    run = json.loads((tmp_path / "federated" / "cpu" / "random-seed0.json").read_text())
    assert run["rounds_done"] == run["rounds"] == 2
    assert len(run["round_s"]) == len(run["accuracy"]) == len(run["assigned"]) == 2
    assert all(s > 0 for s in run["round_s"])
    assert run["device"] == "cpu" and run["build"]["threads"] >= 1
    table = module.federated_table({"random": {"cpu": run}}, 0.5, {}, stats)
    assert table[2].startswith("| random | cpu | 2 / 2 |")


def test_the_layouts_call_rehearses_on_the_cpu_and_renders(tmp_path, monkeypatch):
    module = load_script("benchmarks/run_cuda.py")
    from alignsolve.solvers.sinkhorn import ops

    monkeypatch.setattr(module, "run_step", lambda *args, **kwargs: None)  # the CUDA tests skip here anyway
    module.layouts(tmp_path, rehearse=True)
    rows = json.loads((tmp_path / "solvers.json").read_text())
    assert [r["layout"] for r in rows] == ["dense", "grouped", "scatter"]
    assert all(r["status"] == "feasible" and 0 < r["relaxation_s"] <= r["seconds"] for r in rows)
    grouped, scatter = rows[1], rows[2]
    assert grouped["sweeps"] == scatter["sweeps"] and grouped["bound"] == pytest.approx(scatter["bound"], rel=1e-9)
    assert "aten::" in (tmp_path / "profile_grouped.txt").read_text()
    assert ops._Torch.sorted_segments is True  # the measurement puts the layout back
    section = "\n".join(module.layouts_section(tmp_path))
    assert "| sparse 2000 x 64, m = 8, k = 4 | grouped | feasible |" in section
    assert "GPU target (under 2 s): met" in section or "GPU target (under 2 s): missed" in section
