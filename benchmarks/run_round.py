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
``benchmarks/results/round_timing_tasks.md``. Each task runs twice more, before and after the two timed runs, as
it ran before ``fedloop.pools`` and ``fedloop.loop.IMAGE_CHUNK`` (a ReLU then PyTorch's pool kernels, test batches
of 1024 in one forward pass: :func:`pytorch_pools`), so that what they save is a ratio measured in one run; the
four runs' records must agree (accuracy, losses, routing) or the script stops.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import torch

import fedloop
from fedloop.history import WALL_CLOCK_FIELDS

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


def round_split(config: fedloop.FedConfig, records: list | None = None) -> list[dict[str, float]]:
    """Per round after the first (which warms numba and OR-Tools up), the seconds of each of :data:`PARTS`, of
    ``other`` (the rest of the round) and the round's ``total``, wall clock from one round's end to the next's.
    ``records``, given, receives each round's record without its wall-clock fields."""
    stamps = [time.perf_counter()]
    history = fedloop.run(config, on_round=lambda rec: stamps.append(time.perf_counter()))
    if records is not None:
        records += [
            {k: v for k, v in rec.items() if k not in WALL_CLOCK_FIELDS} for rec in history.to_dict()["records"]
        ]
    rows = []
    for r, total in zip(history.rounds[1:], (b - a for a, b in itertools.pairwise(stamps[1:]))):
        row = {name: float(getattr(history.records[r], name)) for name in PARTS}
        rows.append(row | {"other_s": total - sum(row.values()), "total_s": total})
    return rows


@contextlib.contextmanager
def pytorch_pools() -> Iterator[None]:
    """Run as before ``fedloop.pools`` and the image chunks: the image encoder is a ReLU then PyTorch's max-pool,
    and PyTorch's mean-pool (``_conv_stack(native=True)``), and a test batch of 1024 images goes through the model
    in one pass."""
    from fedloop import loop, model

    saved = model._conv_stack, loop.IMAGE_CHUNK
    model._conv_stack, loop.IMAGE_CHUNK = functools.partial(saved[0], native=True), 1 << 30
    try:
        yield
    finally:
        model._conv_stack, loop.IMAGE_CHUNK = saved


def _same(a: list[dict], b: list[dict]) -> bool:
    """Two runs' records equal, NaN equal to NaN."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def task_lines(task_names: list[str], policy: str, rounds: int, seed: int = 0) -> list[str]:
    """``round_timing_tasks.md``: per task, each part's median seconds per round and its share of the time."""
    import run_federated

    torch.set_num_threads(1)  # as the comparison runs: one process per core, one thread each
    split: dict[str, list[dict[str, float]]] = {}
    before: dict[str, list[dict[str, float]]] = {}
    for task in task_names:
        config = run_federated.config(task, policy, seed, rounds + 1, False)
        records: list[list[dict]] = []
        # in the order PyTorch's, today's, today's, PyTorch's: a drift in the shared machine's speed during the
        # four runs weighs on both sides alike
        for pytorch in (True, False, False, True):
            records.append([])
            with pytorch_pools() if pytorch else contextlib.nullcontext():
                rows = round_split(config, records[-1])
            (before if pytorch else split).setdefault(task, []).extend(rows)
        if not all(_same(records[0], other) for other in records[1:]):
            raise SystemExit(f"{task}: the records with PyTorch's pools and with fedloop's differ")
    names = [*PARTS, "other_s"]
    labels = [*PARTS.values(), "other"]
    env = run_federated.build_environment()
    lines = [
        "# Round time split on the comparison's tasks",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} on {platform.machine()} ({os.cpu_count()} cores), "
        f"torch {env['torch']} on the CPU, {env['kernels']} kernels, {env['threads']} thread, command "
        "`python benchmarks/run_round.py --tasks`. Each task's federation (`fedloop.tasks`), policy "
        f"`{policy}`, seed {seed}, {rounds} rounds after a warm-up round, run twice (medians over the {2 * rounds} "
        "timed rounds), in one process. Parts: the clients' local "
        "training, one after another (train); the sampled clients' routing statistics under the global model, for "
        "their reports (reports); the test evaluation of the new global model (evaluate); screening and averaging "
        "the updates (aggregate); the policy's whole `assign` (solver); the rest of the round (other).",
        "",
        "## Median seconds per round",
        "",
    ]

    def median(runs: dict, name: str, task: str) -> float:
        return statistics.median(row[name] for row in runs[task])

    def table(rows: list[tuple[str, list[str]]]) -> list[str]:
        head = ["| part | " + " | ".join(task_names) + " |", "|---|" + "---|" * len(task_names)]
        return head + [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]

    timed = [*zip(names, labels), ("total_s", "total")]
    lines += table([(label, [f"{median(split, name, t):.4f}" for t in task_names]) for name, label in timed])
    lines += ["", "## Share of the time", "", "Each part's seconds summed over the timed rounds, over their total:", ""]
    lines += table(
        [
            (label, [f"{sum(r[name] for r in split[t]) / sum(r['total_s'] for r in split[t]):.1%}" for t in task_names])
            for name, label in zip(names, labels)
        ]
    )
    compared = (("train_s", "train"), ("report_s", "reports"), ("evaluate_s", "evaluate"), ("total_s", "total"))
    lines += [
        "",
        "## Against PyTorch's pools, in the same run",
        "",
        "Each task also ran twice with the image encoder's pools as PyTorch's kernels, its first ReLU before the "
        "max-pool on the whole map, and each test batch of 1024 in one forward pass (`run_round.pytorch_pools`), "
        "as before the compiled pools of `fedloop.pools` (the ReLU after the max-pool: `fedloop.model._conv_stack`) "
        "and `fedloop.loop.IMAGE_CHUNK`: first and last, around the two runs of the first table, so that a drift in "
        "the shared machine's speed weighs on both alike. The four runs' records are identical (accuracy, losses, "
        "routing, every round). The Shakespeare task has no pools and no images: its ratios are the noise between "
        "runs of the same code. Median seconds per round with PyTorch's pools:",
        "",
    ]
    lines += table([(label, [f"{median(before, name, t):.4f}" for t in task_names]) for name, label in compared])
    lines += [
        "",
        "## Today's over PyTorch's pools",
        "",
        "Each part's median seconds per round in the first table over the same in the table above:",
        "",
    ]
    lines += table(
        [
            (label, [f"{median(split, name, t) / median(before, name, t):.2f}" for t in task_names])
            for name, label in compared
        ]
    )
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
