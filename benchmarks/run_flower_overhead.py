"""Per-round overhead of the Flower paths against the in-process loop (issues 7 and 22).

    python benchmarks/run_flower_overhead.py     # a few minutes on 2 cores

One configuration (10 clients, 6 per round, 8 experts, the aligned policy with flow, 5
rounds), run three times: by :func:`fedloop.run` in this process; by
:func:`fedloop.flower.run_simulation` in Flower's simulation engine (Ray backend, one
SuperNode per client, 1 CPU per client on 2 CPUs); and in Flower's deployment engine on
loopback (:class:`fedloop.flower.deploy.Deployment`: a SuperLink and 10 SuperNode processes,
insecure, ``flwr run``; the clients report the profile table's entries, so the records can be
compared). Each round's wall time: between successive round records in-process; from
``configure_train`` to the end of ``aggregate_train`` on Flower (start-up and the first-round
handshake excluded from the median by dropping round 0). Every run is checked to produce the
in-process records. Writes ``benchmarks/results/flower_overhead.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import fedloop
from fedloop.flower import run_simulation
from fedloop.flower.deploy import Deployment, cli_missing
from fedloop.history import History

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument(
        "--no-deployment", action="store_true", help="skip the deployment engine (minutes on 2 cores): quick mode"
    )
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

    deployed_rounds: list[float] = []
    deployed_total, deployed_same = float("nan"), False
    missing = "skipped (--no-deployment)" if args.no_deployment else cli_missing()
    if missing is None:
        with tempfile.TemporaryDirectory() as tmp, Deployment(tmp, config.to_dict(), profile="table") as dep:
            start = time.perf_counter()
            dep.start_superlink()
            for i in range(config.n_clients):
                dep.start_supernode(i)
            dep.submit(dep.prepare_app())
            results = dep.wait_for_results(timeout=1800)
            deployed_total = time.perf_counter() - start
        deployed_rounds = [results["timings"][k] for k in sorted(results["timings"], key=int)]
        deployed_same = History.from_json(json.dumps(results["history"])).deterministic() == local.deterministic()

    med_local = statistics.median(local_rounds[1:])
    med_flower = statistics.median(flower_rounds[1:])
    lines = [
        "# Flower overhead per round",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d} on {platform.machine()} ({os.cpu_count()} cores), "
        "command `python benchmarks/run_flower_overhead.py`.",
        f"10 clients (one SuperNode each), 6 per round, 8 experts, aligned/flow, {args.rounds} rounds; "
        "median over rounds after the first.",
        f"Same records as in-process (wall clock aside): simulation {same}, deployment {deployed_same}.",
        "",
        "| runtime | median seconds per round | first round | whole run (s) |",
        "|---|---|---|---|",
        f"| in-process (`fedloop.run`) | {med_local:.3f} | {local_rounds[0]:.3f} | {local_total:.1f} |",
        f"| Flower simulation (Ray) | {med_flower:.3f} | {flower_rounds[0]:.3f} | {flower_total:.1f} |",
    ]
    if deployed_rounds:
        med_deployed = statistics.median(deployed_rounds[1:])
        lines.append(
            f"| Flower deployment (loopback, 10 SuperNode processes) | {med_deployed:.3f} | "
            f"{deployed_rounds[0]:.3f} | {deployed_total:.1f} |"
        )
    lines += [
        "",
        f"Simulation's per-round overhead: {med_flower - med_local:.3f} s ({med_flower / med_local:.1f}x the "
        "in-process round). The whole-run figure includes Ray's start-up and the clients' data loading in their "
        "actors.",
    ]
    if deployed_rounds:
        lines.append(
            f"Deployment's per-round overhead: {med_deployed - med_local:.3f} s ({med_deployed / med_flower:.1f}x the "
            "simulation's round): every message starts a ClientApp process that imports torch and loads its data; "
            "the whole-run figure includes starting the SuperLink, the SuperNodes and the ServerApp."
        )
    else:
        lines.append(f"Deployment not measured: {missing}.")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "flower_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
