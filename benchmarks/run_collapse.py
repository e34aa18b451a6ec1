"""Router collapse and dead experts in the experts testbed, with and without feature normalisation.

For a task of :mod:`fedloop.tasks`, runs a few federated rounds of one policy twice, with
``feature_norm`` off and on (local training routing over ``--local-routing``, by default all
experts, where the collapse shows; everything else the task's), and after each round measures on
the first ``--probe`` test samples: the accuracy, the share of samples whose top-1 expert
is the most used one, the routing entropy (1: even over all experts, 0: one expert), and
the silent units (hidden units of an expert that no probe sample activates; an expert
with every unit silent outputs a constant).

It also measures where local training sends a client's data: at the initial model, for the
first ``--clients`` clients, the share of the client's samples whose top-1 expert is one of
its two assigned experts, before and after one local training (the task's epochs and step
size, routing over all experts with the others frozen), when it is assigned the two experts
its data are routed to most (``top``) or least (``bottom``).

    python benchmarks/run_collapse.py --task mnist_shards   # writes benchmarks/results/collapse.{csv,md}

Needs the real data: ``fedloop fetch all``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

import fedloop
from fedloop.client import train_local
from fedloop.loop import (
    LOCAL_ROUTING,
    build,
    build_model,
    evaluate_routing,
    local_training,
    routing_entropy,
    run_round,
)
from fedloop.model import silent_units
from fedloop.tasks import TASKS, federation, version

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ["task", "policy", "feature_norm", "seed", "round", "accuracy", "top_share", "entropy", "silent", "dead"]
DRIFT_FIELDS = ["task", "feature_norm", "seed", "client", "assigned", "experts", "before", "after"]


def drift(task: str, seed: int, clients: int, feature_norm: bool, quick: bool) -> list[dict]:
    """Share of each client's samples routed to its assigned experts before and after one local training."""
    cfg = fedloop.FedConfig(**(federation(task, quick, feature_norm=feature_norm) | {"seed": seed, "rounds": 1}))
    setup = build(cfg)
    rows = []
    for c in range(min(clients, len(setup.data.clients))):
        x, y = setup.data.clients[c]
        before = evaluate_routing(setup.model, x, y)[2]
        order = [int(j) for j in before.argsort(kind="stable")]
        for name, experts in (("top", order[-2:]), ("bottom", order[:2])):
            model = copy.deepcopy(setup.model)
            train_local(model, x, y, experts, **local_training(cfg), seed=seed, route_all=True)
            after = evaluate_routing(model, x, y)[2]
            rows.append(
                dict(
                    task=task,
                    feature_norm=feature_norm,
                    seed=seed,
                    client=c,
                    assigned=name,
                    experts=" ".join(map(str, experts)),
                    before=round(float(before[experts].sum()), 4),
                    after=round(float(after[experts].sum()), 4),
                )
            )
    return rows


def trace(
    task: str, policy: str, seed: int, rounds: int, feature_norm: bool, probe: int, quick: bool, routing: str = "all"
) -> list[dict]:
    """One run's per-round measurements (see the module docstring)."""
    fed = federation(task, quick, feature_norm=feature_norm, local_routing=routing)
    settings = fed | {"seed": seed, "policy": policy, "rounds": rounds}
    cfg = fedloop.FedConfig(**settings)
    setup = build(cfg)
    local = build_model(cfg, setup.data)
    x, y = (t[:probe] for t in setup.data.test)
    rows = []
    for r in range(rounds):
        run_round(setup, r, local)
        accuracy, _, share = evaluate_routing(setup.model, x, y)
        silent = silent_units(setup.model, x)
        rows.append(
            dict(
                task=task,
                policy=policy,
                feature_norm=feature_norm,
                seed=seed,
                round=r,
                accuracy=round(accuracy, 4),
                top_share=round(float(share.max()), 4),
                entropy=round(routing_entropy(share), 4),
                silent=int(silent.sum()),
                dead=int((silent == cfg.expert_hidden).sum()),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="mnist_shards")
    parser.add_argument("--policy", default="topk_affinity")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--probe", type=int, default=1000, help="test samples the routing is measured on")
    parser.add_argument("--clients", type=int, default=10, help="clients whose local routing drift is measured")
    parser.add_argument(
        "--local-routing", choices=LOCAL_ROUTING, default="all", help="local routing of the per-round runs"
    )
    parser.add_argument("--quick", action="store_true", help="the task's small federation (fedloop.tasks)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = [
        row
        for feature_norm in (False, True)
        for seed in range(args.seeds)
        for row in trace(
            args.task, args.policy, seed, args.rounds, feature_norm, args.probe, args.quick, args.local_routing
        )
    ]
    drifts = [
        row
        for feature_norm in (False, True)
        for seed in range(args.seeds)
        for row in drift(args.task, seed, args.clients, feature_norm, args.quick)
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    for name, fields, table in (("collapse.csv", FIELDS, rows), ("collapse_drift.csv", DRIFT_FIELDS, drifts)):
        with open(args.out / name, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(table)
    command = " ".join(["python benchmarks/run_collapse.py", *(argv if argv is not None else sys.argv[1:])])
    write_report(rows, drifts, args.out / "collapse.md", command, args.quick, args.local_routing)
    return 0


def write_report(
    rows: list[dict], drifts: list[dict], path: Path, command: str, quick: bool = False, routing: str = "all"
) -> None:
    first = rows[0]
    experts = federation(first["task"], quick)
    units = experts["n_experts"] * experts["expert_hidden"]
    last = max(r["round"] for r in rows)
    lines = [
        f"# Router collapse and dead experts ({datetime.now(timezone.utc):%Y-%m-%d}, `{command}`)",
        "",
        f"Task `{first['task']}` ({version(first['task'])}), policy `{first['policy']}`; "
        f"{experts['n_experts']} experts of {experts['expert_hidden']} hidden units ({units} units); "
        f"local training routes over {routing} experts "
        f"(`local_routing={routing}`). After rounds 1 and {last + 1}, on the first test "
        "samples: accuracy, the share routed to the most used expert, the routing entropy (1 even, 0 one expert), "
        "the silent units (no sample activates them) and the dead experts (every unit silent).",
        "",
        "| feature_norm | seed | accuracy (1 / last) | top expert share (1 / last) | routing entropy (1 / last) "
        "| silent units (1 / last) | dead experts (1 / last) |",
        "|---|---|---|---|---|---|---|",
    ]
    for feature_norm in (False, True):
        for seed in sorted({r["seed"] for r in rows}):
            run = [r for r in rows if r["feature_norm"] == feature_norm and r["seed"] == seed]
            a, b = run[0], run[-1]
            lines.append(
                f"| {'on' if feature_norm else 'off'} | {seed} | {a['accuracy']:.3f} / {b['accuracy']:.3f} | "
                f"{a['top_share']:.2f} / {b['top_share']:.2f} | {a['entropy']:.2f} / {b['entropy']:.2f} | "
                f"{a['silent']} / {b['silent']} | {a['dead']} / {b['dead']} |"
            )
    lines += [
        "",
        "## Where local training sends a client's data",
        "",
        "At the initial model: the share of a client's samples routed to its two assigned experts before and after "
        "one local training, mean over the clients measured (n), when it is assigned the experts its data are routed "
        "to most (top) or least (bottom).",
        "",
        "| feature_norm | seed | assigned | n | share before | share after |",
        "|---|---|---|---|---|---|",
    ]
    for feature_norm in (False, True):
        for seed in sorted({d["seed"] for d in drifts}):
            for assigned in ("top", "bottom"):
                key = (feature_norm, seed, assigned)
                got = [d for d in drifts if (d["feature_norm"], d["seed"], d["assigned"]) == key]
                before = statistics.fmean(d["before"] for d in got)
                after = statistics.fmean(d["after"] for d in got)
                lines.append(
                    f"| {'on' if feature_norm else 'off'} | {seed} | {assigned} | {len(got)} | "
                    f"{before:.3f} | {after:.3f} |"
                )
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
