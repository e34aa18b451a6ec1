"""Where a federated round's time goes (issue 5): training, aggregation, solver.

    python benchmarks/run_round.py            # 20 clients x 16 experts, synthetic task, CPU
    python benchmarks/run_round.py --device cuda --device-note "H100"   # on a GPU (round_timing_cuda.md)
    python benchmarks/run_round.py --tasks    # the comparison's three tasks, one thread (round_timing_tasks.md)

One configuration: 40 clients, 20 per round, 16 experts, at most 2 per client, the
``aligned`` policy with ``flow``; 8 rounds after one warm-up round (numba and OR-Tools
load on first use). ``solver_s`` is the policy's whole ``assign`` (the aligner's
profiling, scoring and solving); ``train_s`` the clients' local training (one after
another in this process); ``aggregate_s`` screening and averaging; ``other`` the rest of
the round (clients' routing statistics for their reports, test evaluation). Writes
``benchmarks/results/round_timing.md``.

``--tasks`` times a round of each task of the federated comparison instead (``fedloop.tasks``: 100 clients,
10 per round, 16 experts), as the comparison runs it: one thread, one policy (``aligned_value`` unless
``--policy``), seed 0, ``TASK_ROUNDS`` rounds after the warm-up round. It splits "other" further into the sampled
clients' routing statistics for their reports and the test evaluation, and writes
``benchmarks/results/round_timing_tasks.md``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import fedloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).resolve().parent / "results"
#: What a round's time is split into: the wall-clock fields of ``fedloop.RoundRecord``, then the rest
PARTS = {
    "train_s": "train",
    "report_s": "reports",
    "evaluate_s": "evaluate",
    "aggregate_s": "aggregate",
    "solver_s": "solver",
}
#: Rounds run by default (the first untimed): the synthetic round's, and ``--tasks``'s per task
ROUNDS = 9
TASK_ROUNDS = 21


def round_split(config: fedloop.FedConfig) -> list[dict[str, float]]:
    """Per round after the first (which warms numba and OR-Tools up), the seconds of each of :data:`PARTS`, of
    ``other`` (the rest of the round) and the round's ``total``, wall clock from one round's end to the next's."""
    stamps = [time.perf_counter()]
    history = fedloop.run(config, on_round=lambda rec: stamps.append(time.perf_counter()))
    rows = []
    for r, total in zip(history.rounds[1:], (b - a for a, b in itertools.pairwise(stamps[1:]))):
        row = {name: float(getattr(history.records[r], name)) for name in PARTS}
        rows.append(row | {"other_s": total - sum(row.values()), "total_s": total})
    return rows


def task_lines(task_names: list[str], policy: str, rounds: int, seed: int = 0) -> list[str]:
    """``round_timing_tasks.md``: per task, each part's median seconds per round and its share of the time."""
    import run_federated

    torch.set_num_threads(1)  # as the comparison runs: one process per core, one thread each
    split = {task: round_split(run_federated.config(task, policy, seed, rounds + 1, False)) for task in task_names}
    names = [*PARTS, "other_s"]
    labels = [*PARTS.values(), "other"]
    env = run_federated.build_environment()
    lines = [
        "# Round time split on the comparison's tasks",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} on {platform.machine()} ({os.cpu_count()} cores), "
        f"torch {env['torch']} on the CPU, {env['kernels']} kernels, {env['threads']} thread, command "
        "`python benchmarks/run_round.py --tasks`. Each task's federation (`fedloop.tasks`), policy "
        f"`{policy}`, seed {seed}, {rounds} rounds after a warm-up round, in one process. Parts: the clients' local "
        "training, one after another (train); the sampled clients' routing statistics under the global model, for "
        "their reports (reports); the test evaluation of the new global model (evaluate); screening and averaging "
        "the updates (aggregate); the policy's whole `assign` (solver); the rest of the round (other).",
        "",
        "## Median seconds per round",
        "",
        "| part | " + " | ".join(task_names) + " |",
        "|---|" + "---|" * len(task_names),
    ]
    for name, label in zip(names, labels):
        cells = [f"{statistics.median(row[name] for row in split[task]):.4f}" for task in task_names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    totals = [f"{statistics.median(row['total_s'] for row in split[task]):.4f}" for task in task_names]
    lines += ["| total | " + " | ".join(totals) + " |", "", "## Share of the time", ""]
    lines += [
        "Each part's seconds summed over the timed rounds, over their total:",
        "",
        "| part | " + " | ".join(task_names) + " |",
        "|---|" + "---|" * len(task_names),
    ]
    for name, label in zip(names, labels):
        cells = [
            f"{sum(row[name] for row in split[task]) / sum(row['total_s'] for row in split[task]):.1%}"
            for task in task_names
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device-note", default="")
    parser.add_argument(
        "--rounds", type=int, help=f"rounds run, the first untimed (default {ROUNDS}, with --tasks {TASK_ROUNDS})"
    )
    parser.add_argument("--device", default="cpu", help="torch device for the model and local training")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument("--tasks", action="store_true", help="time the federated comparison's tasks instead")
    parser.add_argument("--policy", default="aligned_value", help="the policy --tasks times (default %(default)s)")
    args = parser.parse_args(argv)
    RESULTS = args.out
    if args.tasks:
        import run_cost
        import run_federated

        if args.device != "cpu":
            parser.error("--tasks: times the comparison as it runs, on the CPU; drop --device")
        if args.policy not in run_federated.POLICIES:
            parser.error(f"--policy: must be one of run_federated.POLICIES; got {args.policy!r}")
    rounds = args.rounds if args.rounds is not None else TASK_ROUNDS if args.tasks else ROUNDS
    if rounds < 2:
        parser.error(f"--rounds: must be at least 2 (the first is untimed); got {rounds}")
    if args.tasks:
        lines = task_lines(list(run_cost.TASKS), args.policy, rounds - 1)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "round_timing_tasks.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    config = fedloop.FedConfig(
        n_clients=40, per_round=20, n_experts=16, max_experts=2, rounds=rounds, seed=0, device=args.device
    )
    rows = round_split(config)
    # this table's "other" keeps the reports and the evaluation (its format predates their split)
    parts = {name: [row[name] for row in rows] for name in ("train_s", "aggregate_s", "solver_s")}
    totals = [row["total_s"] for row in rows]
    parts["other_s"] = [t - sum(p[i] for p in parts.values()) for i, t in enumerate(totals)]
    share = {name: statistics.median(v[i] / totals[i] for i in range(len(rows))) for name, v in parts.items()}
    lines = [
        "# Round time split",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d} on {platform.machine()} ({os.cpu_count()} cores)"
        f"{' ' + args.device_note if args.device_note else ''}, torch {torch.__version__} on {args.device}, "
        f"command `python benchmarks/run_round.py{' --device ' + args.device if args.device != 'cpu' else ''}`.",
        f"20 clients per round x 16 experts, synthetic task, aligned/flow; median of {len(rows)} rounds "
        "after a warm-up round.",
        "",
        "| part | median seconds per round | median share of the round |",
        "|---|---|---|",
    ]
    for name, values in parts.items():
        lines.append(f"| {name.removesuffix('_s')} | {statistics.median(values):.4f} | {share[name]:.2%} |")
    lines.append(f"| total | {statistics.median(totals):.4f} | 100% |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "round_timing.md" if args.device == "cpu" else f"round_timing_{args.device.replace(':', '')}.md"
    (RESULTS / name).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
