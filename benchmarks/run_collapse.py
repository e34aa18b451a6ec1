"""Router collapse and dead experts in the experts testbed, with and without feature normalisation.

For a task of :mod:`fedloop.tasks`, runs a few federated rounds of one policy twice, with
``feature_norm`` off and on (everything else the task's), and after each round measures on
the first ``--probe`` test samples: the accuracy, the share of samples whose top-1 expert
is the most used one, the routing entropy (1: even over all experts, 0: one expert), and
the silent units (hidden units of an expert that no probe sample activates; an expert
with every unit silent outputs a constant).

    python benchmarks/run_collapse.py --task mnist_shards   # writes benchmarks/results/collapse.{csv,md}

Needs the real data: ``fedloop fetch all``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import datetime, timezone
from pathlib import Path

import fedloop
from fedloop.loop import build, build_model, evaluate_routing, routing_entropy, run_round
from fedloop.model import silent_units
from fedloop.tasks import TASKS, VERSION, federation

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ["task", "policy", "feature_norm", "seed", "round", "accuracy", "top_share", "entropy", "silent", "dead"]


def trace(task: str, policy: str, seed: int, rounds: int, feature_norm: bool, probe: int, quick: bool) -> list[dict]:
    """One run's per-round measurements (see the module docstring)."""
    settings = federation(task, quick, feature_norm=feature_norm) | {"seed": seed, "policy": policy, "rounds": rounds}
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
    parser.add_argument("--quick", action="store_true", help="the task's small federation (fedloop.tasks)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = [
        row
        for feature_norm in (False, True)
        for seed in range(args.seeds)
        for row in trace(args.task, args.policy, seed, args.rounds, feature_norm, args.probe, args.quick)
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "collapse.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    command = " ".join(["python benchmarks/run_collapse.py", *(argv if argv is not None else sys.argv[1:])])
    write_report(rows, args.out / "collapse.md", command, args.quick)
    return 0


def write_report(rows: list[dict], path: Path, command: str, quick: bool = False) -> None:
    first = rows[0]
    experts = federation(first["task"], quick)
    units = experts["n_experts"] * experts["expert_hidden"]
    last = max(r["round"] for r in rows)
    lines = [
        f"# Router collapse and dead experts ({datetime.now(timezone.utc):%Y-%m-%d}, `{command}`)",
        "",
        f"Task `{first['task']}` ({VERSION}), policy `{first['policy']}`; {experts['n_experts']} experts of "
        f"{experts['expert_hidden']} hidden units ({units} units). After rounds 1 and {last + 1}, on the first test "
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
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
