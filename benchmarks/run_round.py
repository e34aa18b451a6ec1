"""Where a federated round's time goes (issue 5): training, aggregation, solver.

    python benchmarks/run_round.py            # 20 clients x 16 experts, synthetic task, CPU
    python benchmarks/run_round.py --device cuda --device-note "H100"   # on a GPU (round_timing_cuda.md)

One configuration: 40 clients, 20 per round, 16 experts, at most 2 per client, the
``aligned`` policy with ``flow``; 8 rounds after one warm-up round (numba and OR-Tools
load on first use). ``solver_s`` is the policy's whole ``assign`` (the aligner's
profiling, scoring and solving); ``train_s`` the clients' local training (one after
another in this process); ``aggregate_s`` screening and averaging; ``other`` the rest of
the round (clients' routing statistics for their reports, test evaluation). Writes
``benchmarks/results/round_timing.md``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import fedloop

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device-note", default="")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--device", default="cpu", help="torch device for the model and local training")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    RESULTS = args.out
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    config = fedloop.FedConfig(
        n_clients=40, per_round=20, n_experts=16, max_experts=2, rounds=args.rounds, seed=0, device=args.device
    )
    stamps = [time.perf_counter()]
    history = fedloop.run(config, on_round=lambda rec: stamps.append(time.perf_counter()))
    rows = [history.records[r] for r in history.rounds[1:]]  # the first round warms numba and OR-Tools up
    parts = {name: [getattr(rec, name) for rec in rows] for name in ("train_s", "aggregate_s", "solver_s")}
    totals = [b - a for a, b in itertools.pairwise(stamps[1:])]
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
