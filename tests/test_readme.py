"""The README's and the docs' Python examples run as written (each file in order, in one namespace of its own)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def run_blocks(path: Path) -> int:
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(path), "exec"), namespace)
    return len(blocks)


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_blocks(README) >= 1
    out = capsys.readouterr().out
    assert "optimal" in out
    # The printed infeasibility message is the one the README quotes.
    assert "infeasible - total expert_min (4) exceeds total client_capacity (3)" in out


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_docs_python_blocks_run(path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the examples write files
    run_blocks(path)
    if path.name == "solver.md":
        out = capsys.readouterr().out
        assert "optimal" in out and "infeasible - total expert_min (4) exceeds total client_capacity (3)" in out
        assert (tmp_path / "round.json").exists()


def test_readme_is_a_front_door_and_its_links_resolve():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    for page in ("README.md", *(str(p.relative_to(ROOT)) for p in DOCS)):
        body = (ROOT / page).read_text()
        assert "../shared" not in body  # the project speaks for itself
        for target in re.findall(r"\]\(([^)#]+)\)", body):
            if target.startswith("http"):
                continue
            assert ((ROOT / page).parent / target).exists(), f"{page}: broken link {target}"


def test_every_interval_and_four_decimal_figure_in_the_readme_is_in_a_results_file():
    """The README quotes the results; a figure typed by hand or left stale after a rerender is caught here."""
    results = "\n".join(p.read_text() for p in sorted((ROOT / "benchmarks" / "results").rglob("*.md")))
    results = results.replace("+", "")  # the README may drop the sign of a positive reduction
    text = README.read_text()
    intervals = re.findall(r"[-+]?\d+(?:\.\d+)?%? \[[-+]?\d+(?:\.\d+)?%?, [-+]?\d+(?:\.\d+)?%?\]", text)
    figures = re.findall(r"(?<![\d.])0\.\d{4}(?!\d)", text)
    assert intervals and figures  # the pattern still finds what the README quotes
    missing = [f for f in intervals + figures if f.replace("+", "") not in results]
    assert not missing, f"README figures not found in benchmarks/results: {missing}"
