"""Build the reproduction report ``paper/report.md`` from the benchmark results.

    python paper/make_paper.py            # from the committed results in benchmarks/results (seconds)
    python paper/make_paper.py --quick    # re-runs every benchmark small into paper/quick/ first (a few minutes)
    python paper/make_paper.py --quick --jobs 2   # the same, two benchmark scripts at a time

The report's prose lives in ``paper/report.template.md``. Directives in it are replaced:

* ``{{include:NAME}}`` - the results file ``NAME`` (markdown), its H1 title dropped and its headings demoted;
* ``{{figure:NAME|CAPTION}}`` - the image ``NAME`` from the results folder, copied next to the report;
* ``{{cell:NAME|SECTION|ROW|COLUMN}}`` and ``{{cell:NAME|SECTION|ROW|COLUMN|FORMAT}}`` - one
  number of the prose, taken from a table of the results file ``NAME``: the first table
  after the first heading that contains ``SECTION`` (empty: from the top) with a column
  headed ``COLUMN``, in its first row whose leading cells are ``ROW`` (cells joined by
  `` & ``); ``FORMAT`` (a Python format spec such as ``.1f``) re-formats a numeric cell.
  The prose never types a measured figure: it names where the figure lives;
* ``{{source}}`` - where the numbers come from (the results folder, quick or full).

A directive whose file is missing becomes a visible "not measured" note: the report never
silently drops a table. Quick mode writes ``paper/quick/report.md`` from quick runs of every
benchmark script (the solver benchmark without the fresh-process memory measurements);
its numbers are a smoke test of the pipeline, not results.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = ROOT / "benchmarks" / "results"
TEMPLATE = HERE / "report.template.md"

QUICK_COMMANDS = [
    ["benchmarks/run_targets.py", "--quick", "--no-memory", "--seeds", "2"],
    ["benchmarks/run_solvers.py", "--quick", "--seeds", "1", "--families", "skewed", "single"],
    ["benchmarks/run_relaxations.py", "--quick"],
    ["benchmarks/run_scale.py", "--quick"],
    ["benchmarks/run_alignment.py", "--quick"],
    ["benchmarks/run_round.py", "--rounds", "3"],
    ["benchmarks/run_convergence.py", "--quick"],
]
# Quick runs write these names instead of the full runs' ones.
QUICK_NAMES = {
    "solvers.md": "solvers_quick.md",
    "targets.md": "targets_quick.md",
    "relaxations.md": "relaxations_quick.md",
    "scale.md": "scale_quick.md",
    "scale.png": "scale_quick.png",
    "solvers_time.png": "solvers_quick_time.png",
    "solvers_pareto.png": "solvers_quick_pareto.png",
    "solvers_memory.png": "solvers_quick_memory.png",
}


def _include(results: Path, name: str, quick: bool) -> str:
    path = results / (QUICK_NAMES.get(name, name) if quick else name)
    if not path.is_file():
        return f"> **Not measured**: `{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}` is missing.\n"
    lines = path.read_text().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join("#" + line if line.startswith("#") else line for line in lines).strip() + "\n"


def _table_cell(text: str, section: str, row: str, column: str) -> str | None:
    """The cell of ``column`` in the first matching row of the first table after ``section`` (None: not there)."""
    lines = text.splitlines()
    start = 0
    if section:
        heads = [i for i, line in enumerate(lines) if line.startswith("#") and section in line]
        if not heads:
            return None
        start = heads[0]
    key = [cell.strip() for cell in row.split("&")]
    header: list[str] | None = None  # the current table's header; None outside a table
    for line in lines[start:]:
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif header and column in header and cells[: len(key)] == key:
            index = header.index(column)
            return cells[index] if index < len(cells) else None
    return None


def _cell(results: Path, spec: str, quick: bool) -> str:
    parts = [part.strip() for part in spec.split("|")]
    if len(parts) not in (4, 5):
        raise ValueError(f"cell directive: needs NAME|SECTION|ROW|COLUMN[|FORMAT]; got {spec!r}")
    name, section, row, column = parts[:4]
    path = results / (QUICK_NAMES.get(name, name) if quick else name)
    value = _table_cell(path.read_text(), section, row, column) if path.is_file() else None
    if value is None:
        return f"**[not measured: {name} | {section} | {row} | {column}]**"
    if len(parts) == 5:
        try:
            return format(float(value), parts[4])
        except ValueError:
            return value
    return value


def _figure(results: Path, out_dir: Path, name: str, caption: str, quick: bool) -> str:
    src = results / (QUICK_NAMES.get(name, name) if quick else name)
    if not src.is_file():
        return f"> **Figure not available**: `{name}` was not produced by this run.\n"
    target = out_dir / "figures" / name
    target.parent.mkdir(parents=True, exist_ok=True)  # a results subfolder's figure keeps its subfolder
    shutil.copyfile(src, target)
    return f"![{caption}](figures/{name})\n\n*{caption}*\n"


def render(results: Path, out_dir: Path, *, quick: bool) -> Path:
    text = TEMPLATE.read_text()
    shown = results.relative_to(ROOT) if results.is_relative_to(ROOT) else results
    source = (
        f"quick runs into `{shown}` (a smoke test: small sizes, few seeds; not results)"
        if quick
        else "the committed full runs in `benchmarks/results/` (each table names its command and machine)"
    )
    text = text.replace("{{source}}", source)
    text = re.sub(r"\{\{include:([^}]+)\}\}", lambda m: _include(results, m.group(1).strip(), quick), text)
    text = re.sub(r"\{\{cell:([^}]+)\}\}", lambda m: _cell(results, m.group(1), quick), text)
    text = re.sub(
        r"\{\{figure:([^|}]+)\|([^}]+)\}\}",
        lambda m: _figure(results, out_dir, m.group(1).strip(), m.group(2).strip(), quick),
        text,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / "report.md"
    report.write_text(text)
    return report


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def run_all(commands: list[list[str]], jobs: int) -> None:
    """Run ``commands`` from the repository root, at most ``jobs`` at a time.

    Each script writes files of its own, so they may overlap. One at a time, a script's output goes straight to
    the terminal; in parallel it goes to a file of its own and is printed when the script ends, so that outputs
    do not interleave. The first failure stops the scripts still running and raises ``CalledProcessError`` with
    its output.
    """
    if jobs == 1:
        for command in commands:
            print("running", " ".join(command[1:]), flush=True)
            subprocess.run(command, cwd=ROOT, check=True)
        return
    waiting, running = list(commands), []
    with tempfile.TemporaryDirectory() as logs:
        try:
            while waiting or running:
                while waiting and len(running) < jobs:
                    command = waiting.pop(0)
                    print("started", " ".join(command[1:]), flush=True)
                    log = Path(logs, f"{len(waiting)}.log")
                    with open(log, "w") as fh:
                        proc = subprocess.Popen(command, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, text=True)
                    running.append((command, proc, log))
                for item in [item for item in running if item[1].poll() is not None]:
                    command, proc, log = item
                    running.remove(item)
                    out = log.read_text()
                    print(f"finished {' '.join(command[1:])} (exit {proc.returncode})\n{out}", flush=True)
                    if proc.returncode:
                        raise subprocess.CalledProcessError(proc.returncode, command, output=out)
                time.sleep(0.2)
        finally:
            for _, proc, _ in running:
                proc.kill()
                proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="re-run every benchmark small first")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default paper/, or paper/quick/)")
    parser.add_argument("--jobs", type=_positive, default=1, help="quick mode: benchmark scripts run at a time")
    args = parser.parse_args(argv)
    if args.quick:
        out_dir = args.out or HERE / "quick"
        results = out_dir / "results"
        results.mkdir(parents=True, exist_ok=True)
        commands = list(QUICK_COMMANDS)
        if importlib.util.find_spec("flwr") is not None:  # the Flower table needs the flower extra
            # the deployment arm starts 11 Flower processes and one more per message: minutes, not quick
            commands.append(["benchmarks/run_flower_overhead.py", "--rounds", "3", "--no-deployment"])
        run_all([[sys.executable, *command, "--out", str(results)] for command in commands], args.jobs)
    else:
        out_dir = args.out or HERE
        results = RESULTS
    report = render(results, out_dir, quick=args.quick)
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
