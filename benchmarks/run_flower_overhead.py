"""Per-round overhead of the Flower path against the in-process loop (issue 7).

    python benchmarks/run_flower_overhead.py     # about a minute on 2 cores

One configuration (10 clients, 6 per round, 8 experts, the aligned policy with flow, 5
rounds), run twice: by :func:`fedloop.run` in this process, and by
:func:`fedloop.flower.run_simulation` in Flower's simulation engine (Ray backend, one
SuperNode per client, 1 CPU per client on 2 CPUs). Each round's wall time: between
successive round records in-process; from ``configure_train`` to the end of
``aggregate_train`` on Flower (Ray's start-up and the first-round handshake excluded from
the median by dropping round 0). Both runs are checked to produce the same records.
Writes ``benchmarks/results/flower_overhead.md``.
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

import fedloop
from fedloop.flower import run_simulation

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    RESULTS = args.out
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    config = fedloop.FedConfig(n_clients=10, per_round=6, n_experts=8, rounds=args.rounds, seed=0)
    stamps = [time.perf_counter()]
    start = time.perf_counter()
    local = fedloop.run(config, on_round=lambda rec: stamps.append(time.perf_counter()))
    local_total = time.perf_counter() - start
    local_rounds = [b - a for a, b in itertools.pairwise(stamps)]

    sink: list = []
    start = time.perf_counter()
    flower = run_simulation(config, num_cpus=2, cpus_per_client=1.0, strategy_sink=sink)
    flower_total = time.perf_counter() - start
    flower_rounds = [sink[0].round_seconds[r] for r in sorted(sink[0].round_seconds)]
    same = flower.deterministic() == local.deterministic()

    med_local = statistics.median(local_rounds[1:])
    med_flower = statistics.median(flower_rounds[1:])
    lines = [
        "# Flower overhead per round",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d} on {platform.machine()} ({os.cpu_count()} cores), "
        "command `python benchmarks/run_flower_overhead.py`.",
        f"10 clients (one SuperNode each), 6 per round, 8 experts, aligned/flow, {args.rounds} rounds; "
        "median over rounds after the first.",
        f"Both runs give the same records (wall clock aside): {same}.",
        "",
        "| runtime | median seconds per round | first round | whole run (s) |",
        "|---|---|---|---|",
        f"| in-process (`fedloop.run`) | {med_local:.3f} | {local_rounds[0]:.3f} | {local_total:.1f} |",
        f"| Flower simulation (Ray) | {med_flower:.3f} | {flower_rounds[0]:.3f} | {flower_total:.1f} |",
        "",
        f"Flower's per-round overhead: {med_flower - med_local:.3f} s ({med_flower / med_local:.1f}x the in-process "
        "round). The whole-run figure includes Ray's start-up and the clients' data loading in their actors.",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "flower_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
