"""Every aligner variant's measurement against issue 19's target, over every saved comparison.

    python benchmarks/run_federated_target.py   # reads benchmarks/results, writes results/federated_target.md

The target has three parts, each a paired comparison on the seeds both policies ran:

* **random**: at least 50% fewer rounds to 80% of the central accuracy than ``random``;
* **top-k**: at least 20% fewer than ``topk_affinity`` (per-client top-k by affinity);
* **FLEX-MoE**: final accuracy (mean of the last 10 rounds) at least that of ``flex_moe``;

and a part is *met* when its point estimate reaches the goal and its paired bootstrap 95% interval excludes 0
(lies above it); a comparison to which seeds were added after its first intervals had been read
(``run_federated.ADDED``) is read on all seeds at the level widened for that second look, 97.5%
(``run_federated.pair_level``). The whole target asks for all three on at least two of the issue's three tasks:
(a) multi-domain images, (b) MNIST shards, (c) Shakespeare. Rounds to target are restricted means with missed
targets counted at the budget (``run_federated.paired_rows``, the figures of each task's page); a comparison in
which neither policy reached 80% on any seed is *not estimable*, and one whose comparator was not run in that folder
is *not run*: neither is met.

Every comparison folder under the results counts (``results`` and each subfolder with a ``federated`` folder), at
its own budget and build, for today's task definitions only (``fedloop.tasks.version``). A part is counted for a
task when any of that task's folders meets it: the most lenient reading of the target, so that a "none" below
cannot come from the choice of folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_federated

ROOT = run_federated.RESULTS
#: The comparators of the three parts, the target fraction of the central accuracy, and each part's goal (the
#: smallest point estimate that meets it: a relative reduction of rounds, or a difference in final accuracy)
PARTS = (("random", 0.5), ("topk_affinity", 0.2), ("flex_moe", 0.0))
FRACTION = 0.8
#: Which of issue 18's three tasks each benchmark task stands for
ISSUE_TASK = {
    "multidomain": "(a) multi-domain",
    "multidomain4": "(a) multi-domain",
    "mnist_shards": "(b) MNIST shards",
    "mnist_shards_lite": "(b) MNIST shards",
    "shakespeare": "(c) Shakespeare",
    "shakespeare_scripts": "(c) Shakespeare",
}
#: The issue's tasks, in order, and the parts' names in the tables
ISSUE_TASKS = tuple(dict.fromkeys(ISSUE_TASK.values()))
PART_NAMES = ("random part", "top-k part", "FLEX-MoE part")
#: How many of the issue's tasks a policy must meet every part on
TASKS_NEEDED = 2


def is_aligner(policy: str) -> bool:
    """The project's aligner and its variants (``aligned`` and every ``aligned_...`` policy)."""
    return policy == "aligned" or policy.startswith("aligned_")


def comparisons(root: Path) -> list[tuple[str, str, Path]]:
    """(results folder label, task, task folder) of every comparison saved under ``root`` for today's task
    definitions: ``root/federated/<task>-<version>`` (label ``results``) and the same in each subfolder of
    ``root`` (label: the subfolder's name)."""
    found = []
    for label, base in run_federated.result_bases(root):
        for task in ISSUE_TASK:
            folder = run_federated.run_folder(base, task)
            if folder.is_dir() and any(folder.glob("*-seed*.json")):
                found.append((label, task, folder))
    return found


def met(interval: tuple[float, float, float] | None, goal: float) -> bool:
    """Whether a part is met: point estimate at least ``goal`` and the interval (95%, or the widened level of
    :func:`run_federated.pair_level`) above 0 (None: not estimable)."""
    return interval is not None and interval[0] >= goal and interval[1] > 0


def part_rows(
    runs: dict[str, dict[int, dict]], reference: float, budget: int, label: str = "", task: str = ""
) -> list[dict]:
    """Per aligner variant in ``runs`` (folder ``label``'s runs of ``task``, ``budget`` rounds), its three parts:
    ``{"policy", "parts": [{"base", "n", "level", "interval", "met", "status"} ...]}``, ``status`` one of
    "measured", "not estimable" (neither reached the target on any seed) and "not run" (no seed in common with the
    comparator); ``level`` that of :func:`run_federated.pair_level` for the folder and task."""
    summary = run_federated.target_hits(runs, reference)
    rows = []
    for policy in sorted(p for p in runs if is_aligner(p)):
        # only the 80% target's reductions are drawn: the other targets' bootstraps would go unread
        levels = {base: run_federated.pair_level(label, task, policy, base) for base, _ in PARTS}
        paired = run_federated.paired_rows(
            policy, [base for base, _ in PARTS], summary, runs, budget, (FRACTION,), levels=levels
        )
        by_base = {row["base"]: row for row in paired}
        parts = []
        for base, goal in PARTS:
            if base not in by_base:
                parts.append(
                    {"base": base, "n": 0, "level": levels[base], "interval": None, "met": False, "status": "not run"}
                )
                continue
            row = by_base[base]
            interval = row["final"] if base == "flex_moe" else row["targets"][0]
            status = "measured" if interval is not None else "not estimable"
            parts.append(
                {
                    "base": base,
                    "n": row["n"],
                    "level": row["level"],
                    "interval": interval,
                    "met": met(interval, goal),
                    "status": status,
                }
            )
        rows.append({"policy": policy, "parts": parts})
    return rows


def ledger(root: Path) -> list[dict]:
    """:func:`part_rows` of every comparison under ``root``, each row with ``label``, ``task``, ``budget`` added."""
    rows = []
    for label, task, folder in comparisons(root):
        central = folder / "central.json"
        if not central.exists():
            continue  # no central accuracy, no 80% target
        reference = json.loads(central.read_text())["accuracy"]
        runs = run_federated.load_runs(folder)
        budget = run_federated.run_budget(runs)
        for row in part_rows(runs, reference, budget, label, task):
            rows.append(row | {"label": label, "task": task, "budget": budget})
    return rows


def verdicts(rows: list[dict]) -> dict[str, dict]:
    """Per policy, the issue's tasks on which each part is met in some folder (``parts``: one set per part of
    ``PARTS``), those on which all three are met in one folder (``whole``), and whether the target is met
    (``target``: all three on at least ``TASKS_NEEDED`` tasks)."""
    found: dict[str, dict] = {}
    for row in rows:
        entry = found.setdefault(row["policy"], {"parts": [set() for _ in PARTS], "whole": set()})
        issue_task = ISSUE_TASK[row["task"]]
        for k, part in enumerate(row["parts"]):
            if part["met"]:
                entry["parts"][k].add(issue_task)
        if all(part["met"] for part in row["parts"]):
            entry["whole"].add(issue_task)
    for entry in found.values():
        entry["target"] = len(entry["whole"]) >= TASKS_NEEDED
    return found


def cell(part: dict) -> str:
    """A part as the table shows it: the interval and n (the table's last column says which parts are met).
    Reductions get one decimal (the task pages round to whole percents) and a point just under its goal two, so that
    it never reads as the goal."""
    if part["status"] != "measured":
        return part["status"]
    point, low, high = part["interval"]
    if part["base"] == "flex_moe":
        text = f"{point:+.3f} [{low:+.3f}, {high:+.3f}]"
    else:
        goal = dict(PARTS)[part["base"]]
        # a point just under the goal that one decimal would round up to it gets a second decimal
        shown = f"{point:+.2%}" if point < goal <= round(point, 3) else f"{point:+.1%}"
        text = f"{shown} [{low:+.1%}, {high:+.1%}]"
    # a part read at a widened level names it beside its n
    level = part.get("level", run_federated.LEVEL)
    return f"{text} ({part['n']})" if level == run_federated.LEVEL else f"{text} ({part['n']}, {level:.1%})"


def render(rows: list[dict], command: str) -> str:
    """The markdown page: the verdict per policy first, then every comparison's parts."""
    found = verdicts(rows)
    whole = sorted(p for p, v in found.items() if v["target"])
    one_part = sorted(p for p, v in found.items() if any(len(tasks_met) >= TASKS_NEEDED for tasks_met in v["parts"]))
    n_folders = len({(row["label"], row["task"]) for row in rows})
    lines = [
        f"# Issue 19's target, variant by variant ({datetime.now(timezone.utc):%Y-%m-%d}, `{command}`)",
        "",
        "Parts of the target: at least 50% fewer rounds to 80% of the central accuracy than `random`, at least 20% "
        "fewer than `topk_affinity`, final accuracy (mean of the last 10 rounds) at least the FLEX-MoE-style "
        "policy's; a part is met when its point estimate reaches that and its paired bootstrap 95% interval lies "
        "above 0 (97.5% on all seeds of a comparison to which seeds were added after a look). The target: all "
        "three on at least two of the issue's three tasks. Every aligner variant in every "
        f"saved comparison ({n_folders} task folders, each at its own budget and build), a part counted for a task "
        "when any of that task's folders meets it.",
        "",
        "## Verdict",
        "",
        "| measure | value |",
        "|---|---|",
        f"| aligner variants measured | {len(found)} |",
        f"| variants meeting the target | {len(whole)} |",
        f"| variants meeting all three parts on one task | {sum(1 for v in found.values() if v['whole'])} |",
        f"| variants meeting one part on two tasks or more | {len(one_part)} |",
        "",
        "Variants meeting the target: " + (", ".join(f"`{p}`" for p in whole) if whole else "none") + ".",
        "Variants meeting one part on two tasks or more: "
        + (", ".join(f"`{p}`" for p in one_part) if one_part else "none")
        + ".",
        "",
        "## Variants meeting each part, by task",
        "",
        "How many aligner variants meet each part on each of the issue's tasks (in at least one of the task's "
        "folders):",
        "",
        "| part | " + " | ".join(ISSUE_TASKS) + " |",
        "|---|" + "---|" * len(ISSUE_TASKS),
    ]
    for k, name in enumerate(PART_NAMES):
        counts = [sum(1 for v in found.values() if task in v["parts"][k]) for task in ISSUE_TASKS]
        lines.append(f"| {name} | " + " | ".join(str(c) for c in counts) + " |")
    lines += [
        "",
        "## The issue's tasks on which each part is met",
        "",
        "A task is listed under a part when at least one of its folders meets that part; under all three when one "
        "folder meets all three:",
        "",
        "| policy | random part | top-k part | FLEX-MoE part | all three |",
        "|---|---|---|---|---|",
    ]
    for policy in sorted(found):
        entry = found[policy]
        cells = [", ".join(sorted(t)) or "-" for t in (*entry["parts"], entry["whole"])]
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Every comparison",
        "",
        "Each part's paired bootstrap 95% interval over the n seeds both policies ran (n in brackets, with the level "
        "where it is not 95%: seeds added to that comparison after its first intervals had been read make the "
        "interval on all seeds a second look, read at 97.5%): the relative "
        "reduction of the restricted mean rounds to 80% of the central accuracy, and the difference in final "
        "accuracy. Folder `results` holds the 200-round comparisons, the others are named by their budget or "
        'build (`docs/benchmarks.md`, "Which build a run is in").',
        "",
        "| task | folder | rounds | policy | fewer rounds than random | fewer than top-k | final accuracy vs "
        "FLEX-MoE-style | parts met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: (r["task"], r["budget"], r["label"], r["policy"])):
        cells = [cell(part) for part in row["parts"]]
        names = [name.removesuffix(" part") for name, part in zip(PART_NAMES, row["parts"]) if part["met"]]
        lines.append(
            f"| {row['task']} | {row['label']} | {row['budget']} | {row['policy']} | "
            + " | ".join(cells)
            + f" | {', '.join(names) or 'none'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT, help="the results folder to read (default: %(default)s)")
    parser.add_argument(
        "--out", type=Path, help="the page to write (default: federated_target.md in the results folder)"
    )
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        parser.error(f"--results: must be a folder; got {str(args.results)!r}")
    rows = ledger(args.results)
    if not rows:
        parser.error(f"--results: no comparison with an aligner variant and a central run under {args.results}")
    out = args.out or args.results / "federated_target.md"
    out.write_text(render(rows, "python benchmarks/run_federated_target.py"))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
