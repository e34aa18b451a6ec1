"""The report builds: from the committed results, and in quick mode from small runs of every benchmark."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_make_paper():
    spec = importlib.util.spec_from_file_location("make_paper", ROOT / "paper" / "make_paper.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_renders_every_directive_from_the_committed_results(tmp_path):
    make_paper = load_make_paper()
    report = make_paper.render(make_paper.RESULTS, tmp_path, quick=False)
    text = report.read_text()
    assert "{{" not in text  # every directive was replaced
    assert "Not measured" not in text and "not available" not in text and "[not measured" not in text
    for heading in ("Solver benchmark", "Convergence", "The 37% claim", "Limitations"):
        assert heading in text
    for image in re.findall(r"\]\((figures/[^)]+)\)", text):
        assert (tmp_path / image).is_file()


def test_the_committed_report_is_the_one_the_committed_results_render(tmp_path):
    # Every number of the report's prose comes from a results file through a directive: a report edited by hand,
    # or results changed without `make paper`, differ here.
    make_paper = load_make_paper()
    rendered = make_paper.render(make_paper.RESULTS, tmp_path, quick=False).read_text()
    assert rendered == (ROOT / "paper" / "report.md").read_text(), "run `make paper` and commit paper/report.md"


def test_cell_directives_read_one_table_cell_or_say_not_measured(tmp_path):
    make_paper = load_make_paper()
    (tmp_path / "t.md").write_text(
        "# T\n\n| a | b |\n|---|---|\n| x | 1 |\n\n## part two\n\n| a | b | c |\n|---|---|---|\n"
        "| x | 2.345 | z |\n| x & y | 3 | w |\n"
    )
    assert make_paper._cell(tmp_path, "t.md||x|b", False) == "1"
    assert make_paper._cell(tmp_path, "t.md|part two|x|b|.1f", False) == "2.3"
    assert make_paper._cell(tmp_path, "t.md|part two|x|c", False) == "z"  # first table with the column
    assert "not measured" in make_paper._cell(tmp_path, "t.md||y|b", False)
    assert "not measured" in make_paper._cell(tmp_path, "missing.md||x|b", False)
    with pytest.raises(ValueError, match="NAME"):
        make_paper._cell(tmp_path, "t.md|x", False)


def test_a_figure_in_a_results_subfolder_is_copied_into_the_same_subfolder(tmp_path):
    make_paper = load_make_paper()
    (tmp_path / "res" / "long").mkdir(parents=True)
    (tmp_path / "res" / "long" / "f.png").write_bytes(b"png")
    text = make_paper._figure(tmp_path / "res", tmp_path / "out", "long/f.png", "cap", False)
    assert "](figures/long/f.png)" in text and (tmp_path / "out" / "figures" / "long" / "f.png").read_bytes() == b"png"


def test_missing_results_are_flagged_not_dropped(tmp_path):
    make_paper = load_make_paper()
    text = make_paper.render(tmp_path / "empty", tmp_path / "out", quick=False).read_text()
    assert "Not measured" in text and "solvers.md" in text and "targets.md" in text


@pytest.mark.slow
def test_quick_mode_regenerates_every_table_and_figure(tmp_path):
    make_paper = load_make_paper()
    assert make_paper.main(["--quick", "--jobs", "2", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    missing = re.findall(r"Not measured\*\*: `[^`]*?([a-z_]+\.md)` is missing", text)
    # Only the Flower table may be missing, and only without the flower extra; the real-data tables (the gates, the
    # collapse study, the client skew, the scripts probe and the comparison) need `fedloop fetch` (and the gates, the
    # collapse study, the probe and the comparison minutes to hours), so quick mode never makes them.
    allowed = {"gates.md", "collapse.md", "client_skew.md", "scripts_probe.md", "federated_mnist_shards.md"}
    allowed |= {"federated_mnist_shards_lite.md"}
    # the comparisons' tables, rounds800/, rounds600/, rounds400/ and rounds300/ (the longer budgets), rebuild200/ and
    # rebuild600/ among them
    allowed |= {"federated_multidomain.md", "federated_multidomain-v2.md", "federated_multidomain4.md"}
    allowed |= {"federated_shakespeare_scripts.md"}
    # read from the comparisons' saved runs, which quick mode never makes
    allowed |= {"federated_cost.md", "federated_target.md"}
    allowed |= {"round_timing_tasks.md"}  # times the comparison's tasks, which need `fedloop fetch`
    allowed |= {"cuda.md"}  # measured on a lent GPU (benchmarks/run_cuda.py), which no quick run has
    allowed |= set() if importlib.util.find_spec("flwr") else {"flower_overhead.md"}
    assert set(missing) <= allowed, missing
    figures = re.findall(r"Figure not available\*\*: `([^`]+)`", text)
    assert set(figures) <= {
        "federated_multidomain.png",
        "federated_multidomain-v2.png",
        "federated_multidomain4.png",
        "federated_multidomain4_traces.png",
        "federated_multidomain4_pairs.png",
        "federated_mnist_shards.png",
        "federated_mnist_shards_pairs.png",
        "federated_mnist_shards_draws.png",
        "rounds600/federated_multidomain.png",
        "rounds600/federated_multidomain4.png",
        "rounds300/federated_mnist_shards.png",
        "rounds600/federated_mnist_shards.png",
        "rounds800/federated_mnist_shards.png",
        "federated_mnist_shards_lite.png",
        "rounds800/federated_mnist_shards_lite.png",
        "rounds800/federated_multidomain4.png",
        "rounds400/federated_shakespeare_scripts.png",
        "rebuild200/federated_multidomain4.png",
        "rebuild600/federated_multidomain4.png",
        "federated_cuda.png",
    }, figures
    assert "quick runs" in text


def test_parallel_quick_runs_keep_each_output_and_stop_at_a_failure(tmp_path, capsys):
    import subprocess
    import sys

    make_paper = load_make_paper()
    marker = tmp_path / "late"
    ok = [sys.executable, "-c", "print('first' + ' done')"]
    bad = [sys.executable, "-c", "import sys; print('broken'); sys.exit(3)"]
    late = [sys.executable, "-c", f"import time; time.sleep(30); open({str(marker)!r}, 'w')"]
    make_paper.run_all([ok, ok], jobs=2)
    assert capsys.readouterr().out.count("first done") == 2
    with pytest.raises(subprocess.CalledProcessError) as failed:
        make_paper.run_all([late, bad], jobs=2)
    assert failed.value.returncode == 3 and "broken" in failed.value.output
    assert not marker.exists()  # the script still running was stopped, not waited for
    with pytest.raises(SystemExit):
        make_paper.main(["--quick", "--jobs", "0"])
