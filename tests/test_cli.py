"""The command line: subcommands, outputs and exit codes (0 solved, 2 bad input, 3 infeasible)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import alignsolve as als
from alignsolve.cli import main


def test_generate_then_solve(tmp_path, capsys):
    inst = tmp_path / "p.npz"
    assert (
        main(
            [
                "generate",
                "--family",
                "skewed",
                "--clients",
                "50",
                "--experts",
                "6",
                "--capacity",
                "2",
                "--seed",
                "3",
                "-o",
                str(inst),
            ]
        )
        == 0
    )
    out = tmp_path / "a.json"
    assert main(["solve", str(inst), "--method", "flow", "--output", str(out)]) == 0
    screen = capsys.readouterr().out
    assert "optimal" in screen and "objective" in screen
    a = als.Assignment.from_json(out.read_text())
    als.verify(als.Problem.load(inst), a)


def test_infeasible_exits_3(tmp_path, capsys):
    inst = tmp_path / "p.json"
    main(
        ["generate", "--family", "infeasible", "--clients", "20", "--experts", "5", "--capacity", "2", "-o", str(inst)]
    )
    assert main(["solve", str(inst), "--method", "greedy"]) == 3
    assert "infeasible" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["solve", "missing.json"],
        ["solve", "{inst}", "--method", "simplex"],
        ["solve", "{inst}", "--time-limit", "-1"],
        [
            "generate",
            "--family",
            "uniform",
            "--clients",
            "0",
            "--experts",
            "4",
            "--capacity",
            "2",
            "-o",
            "{tmp}/x.json",
        ],
        ["generate", "--family", "galaxy", "--clients", "5", "--experts", "4", "--capacity", "2", "-o", "{tmp}/x.json"],
        ["frobnicate"],
    ],
)
def test_bad_input_exits_2(tmp_path, capsys, argv):
    inst = tmp_path / "ok.json"
    als.Problem([[1.0]], 1).save(inst)
    (tmp_path / "bad.json").write_text("{")
    argv = [a.format(inst=inst, tmp=tmp_path) for a in argv]
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own errors (unknown choice or command)
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert "error" in err


def test_corrupt_instance_exits_2(tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"fitness": [[1, NaN]], "client_capacity": 1}')
    assert main(["solve", str(tmp_path / "bad.json")]) == 2
    assert "fitness: must be finite" in capsys.readouterr().err


def test_info_and_demo(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "flow" in out and "ortools" in out
    assert main(["demo", "--clients", "200", "--experts", "8", "--capacity", "2"]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "greedy" in out


def test_console_entry_point_runs_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "alignsolve", "info"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "methods:" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "alignsolve", "solve", "/nonexistent.json"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "existing file" in proc.stderr
