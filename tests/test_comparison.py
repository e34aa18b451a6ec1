"""The comparison in one command (benchmarks/run_comparison.py) and the process pool it shares with run_cost."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from tests.scripts import load_script


def test_the_pool_runs_jobs_a_few_at_a_time_and_stops_the_rest_when_one_fails(monkeypatch):
    pool = load_script("benchmarks/pool.py")
    done: list[tuple[str, str]] = []
    python = sys.executable
    jobs = [(name, [python, "-c", f"print('{name}')"]) for name in ("a", "b", "c")]
    pool.run_pool(jobs, 2, lambda key, text: done.append((key, text.strip())))
    assert sorted(done) == [("a", "a"), ("b", "b"), ("c", "c")]

    started: list[subprocess.Popen] = []

    class Recorded(subprocess.Popen):  # the real thing, kept to look at afterwards
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(pool.subprocess, "Popen", Recorded)
    done.clear()
    jobs = [
        ("slow", [python, "-c", "import time; time.sleep(60)"]),
        ("bad", [python, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"]),
        ("never", [python, "-c", "print('never')"]),
    ]
    with pytest.raises(RuntimeError, match=r"run bad failed \(exit 3\): boom"):
        pool.run_pool(jobs, 2, lambda key, text: done.append((key, text)))
    # the slow run was stopped, not waited for; the run after the failure never started
    assert len(started) == 2 and started[0].returncode is not None and started[0].returncode != 0
    assert done == []
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers: must be an integer >= 1"):
            pool.run_pool([], bad, lambda key, text: None)


def test_the_missing_runs_come_seed_by_seed(tmp_path):
    module = load_script("benchmarks/run_comparison.py")
    folder = module.run_federated.run_folder(tmp_path, "smoke")
    folder.mkdir(parents=True)
    (folder / "random-seed0.json").write_text("{}")
    missing = module.missing_runs(tmp_path, ["smoke"], ["random", "aligned_value"], 2)
    # seed 0's saved run is skipped; every policy of seed 0 comes before any of seed 1
    assert missing == [("smoke", "aligned_value", 0), ("smoke", "random", 1), ("smoke", "aligned_value", 1)]


def test_the_quick_comparison_runs_what_is_missing_and_resumes(tmp_path, capsys):
    module = load_script("benchmarks/run_comparison.py")
    assert module.main(["--quick", "--out", str(tmp_path)]) == 0
    folder = module.run_federated.run_folder(tmp_path, "smoke")
    saved = sorted(p.name for p in folder.glob("*-seed*.json"))
    assert saved == [f"{p}-seed{s}.json" for p in ("aligned_value", "random") for s in (0, 1)]
    record = json.loads((folder / "random-seed1.json").read_text())
    assert len(record["accuracy"]) == 3 and record["wall_s"] > 0
    page = tmp_path / "federated_smoke.md"
    assert "`python benchmarks/run_comparison.py --quick --out" in page.read_text().splitlines()[0]
    out = capsys.readouterr().out
    assert "0 of 4 runs already saved; 4 to run, 2 at a time" in out and "[4/4] smoke" in out

    # nothing missing: nothing runs, and the page is left as it was
    stamp = page.stat().st_mtime_ns
    assert module.main(["--quick", "--out", str(tmp_path)]) == 0
    assert "4 of 4 runs already saved; 0 to run" in capsys.readouterr().out
    assert page.stat().st_mtime_ns == stamp
    # a run lost (a crash before it was saved): only it runs again, and the page is rendered anew
    (folder / "aligned_value-seed1.json").unlink()
    assert module.main(["--quick", "--out", str(tmp_path), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "3 of 4 runs already saved; 1 to run, 1 at a time" in out and "[1/1] smoke aligned_value seed 1" in out
    assert (folder / "aligned_value-seed1.json").exists() and page.stat().st_mtime_ns != stamp


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tasks", "nonesuch"], "--tasks: must name some of"),
        (["--tasks", ","], "--tasks: must name some of"),
        (["--policies", "random,nonesuch"], "--policies: must name some of"),
        (["--seeds", "0"], "--seeds: must be an integer >= 1; got 0"),
        (["--rounds", "1"], "--rounds: must be an integer >= 2; got 1"),
        (["--jobs", "0"], "--jobs: must be an integer >= 1; got 0"),
    ],
)
def test_the_comparison_refuses_bad_arguments_naming_them(tmp_path, capsys, args, message):
    module = load_script("benchmarks/run_comparison.py")
    with pytest.raises(SystemExit):
        module.main([*args, "--out", str(tmp_path)])
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_seeds_saved_by_two_processes_at_once_are_all_kept(tmp_path, monkeypatch):
    module = load_script("benchmarks/run_federated.py")
    folder = tmp_path / "f"
    folder.mkdir()

    def read(data):
        time.sleep(0.3)  # read, then write late: without the lock the second writer drops the first one's seed
        return len(data.client_ids)

    threads = [
        threading.Thread(target=module._save_per_seed, args=(folder, "x.json", "smoke", [seed], True, read))
        for seed in (0, 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(json.loads((folder / "x.json").read_text())) == ["0", "1"]
    assert [p.name for p in folder.iterdir()] == ["x.json"]  # no lock file, no part file left behind
