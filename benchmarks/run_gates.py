"""The sanity gates of the federated benchmark: does the testbed make experts matter at all?

Before any policy comparison on a task, two gates must pass (otherwise the comparison
cannot tell policies apart, and it is not run on that task):

1. **central**: trained centrally on the pooled training data, the MoE with E experts
   (top-1 routing) beats the same network with one expert, at the same per-sample
   compute (one expert of the same size runs per sample either way);
2. **federated**: a run whose experts are each trained by the clients whose data the
   router sends to them (``topk_affinity``) beats one whose experts are trained by the
   clients whose data the router sends elsewhere (``bottomk_affinity``), on paired seeds.

Both use the ``experts`` testbed (no path around the experts, routing over all experts,
router rows per expert). A gate passes when the mean paired difference is at least
``--margin`` (default 0.02 accuracy) and every seed's difference is positive.

    python benchmarks/run_gates.py --task multidomain          # writes benchmarks/results/gates.{csv,md}
    python benchmarks/run_gates.py --task multidomain --quick  # small, minutes

Rows are appended to the CSV as they finish and a rerun skips the rows already there
(resumable). Needs the real data: ``fedloop fetch all``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

import fedloop
from fedloop.model import MoE

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ["task", "gate", "arm", "seed", "accuracy", "seconds", "setting"]

TASKS = {
    "multidomain": dict(dataset="multidomain", data_options={"samples_per_client": 300, "test_per_domain": 500}),
    "mnist_shards": dict(dataset="mnist", data_options={"partition": "shards", "shards": 2, "test_size": 2000}),
    "shakespeare": dict(dataset="shakespeare", data_options={"max_samples": 300}),
}


def federation(task: str, quick: bool, expert_hidden: int = 4) -> dict:
    base = dict(
        n_clients=40 if quick else 100,
        per_round=4 if quick else 10,
        n_experts=8 if quick else 16,
        max_experts=2,
        top_k=1,
        hidden=64,
        expert_hidden=expert_hidden,
        testbed="experts",
        deadline_mode=True,
        local_epochs=1,
        lr=0.05,
    )
    return base | TASKS[task]


def central_accuracy(task: str, quick: bool, seed: int, n_experts: int, epochs: int, expert_hidden: int) -> float:
    """Test accuracy of the testbed's MoE trained centrally on every client's training data pooled."""
    cfg = fedloop.FedConfig(**(federation(task, quick, expert_hidden) | {"seed": seed}))
    data = fedloop.build(cfg).data
    x = torch.cat([c[0] for c in data.clients])
    y = torch.cat([c[1] for c in data.clients])
    torch.manual_seed(seed)
    model = MoE(
        data.input_shape,
        data.n_classes,
        n_experts,
        top_k=1,
        hidden=cfg.hidden,
        expert_hidden=cfg.expert_hidden,
        vocab=data.n_classes if data.info.get("tokens") else None,
        residual=False,
    )
    optimiser = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            out = model(x[idx])
            loss = F.cross_entropy(out.logits, y[idx]) + cfg.aux_weight * out.aux
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        return float((model(data.test[0]).logits.argmax(1) == data.test[1]).float().mean())


def federated_accuracy(task: str, quick: bool, seed: int, policy: str, rounds: int, expert_hidden: int) -> float:
    """Mean test accuracy of the last 5 rounds of a run with ``policy``."""
    settings = federation(task, quick, expert_hidden) | {"seed": seed, "policy": policy, "rounds": rounds}
    cfg = fedloop.FedConfig(**settings)
    history = fedloop.run(cfg)
    return float(np.mean(history.column("accuracy")[-5:]))


def _done(path: Path) -> dict[tuple[str, str, str, str, int], dict]:
    if not path.exists():
        return {}
    with open(path, newline="") as fh:
        return {(r["task"], r["setting"], r["gate"], r["arm"], int(r["seed"])): r for r in csv.DictReader(fh)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="multidomain")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5, help="central gate: epochs over the pooled data")
    parser.add_argument("--rounds", type=int, default=60, help="federated gate: rounds per run")
    parser.add_argument("--margin", type=float, default=0.02)
    parser.add_argument(
        "--expert-hidden", type=int, default=4, help="hidden units of each expert (small: experts hold the capacity)"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.rounds, args.seeds = min(args.epochs, 2), min(args.rounds, 8), min(args.seeds, 2)
    suffix = "_quick" if args.quick else ""
    path = args.out / f"gates{suffix}.csv"
    args.out.mkdir(parents=True, exist_ok=True)
    done = _done(path)
    eh = args.expert_hidden
    setting = f"epochs={args.epochs} rounds={args.rounds} expert_hidden={eh}"
    n_experts = federation(args.task, args.quick)["n_experts"]
    q = args.quick
    arms = [
        ("central", "E experts", lambda s: central_accuracy(args.task, q, s, n_experts, args.epochs, eh)),
        ("central", "1 expert", lambda s: central_accuracy(args.task, q, s, 1, args.epochs, eh)),
    ]
    for policy in ("topk_affinity", "bottomk_affinity"):
        arms.append(("federated", policy, lambda s, p=policy: federated_accuracy(args.task, q, s, p, args.rounds, eh)))
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        for gate, arm, measure in arms:
            for seed in range(args.seeds):
                if (args.task, setting, gate, arm, seed) in done:
                    continue
                start = time.perf_counter()
                accuracy = measure(seed)
                row = dict(
                    task=args.task,
                    gate=gate,
                    arm=arm,
                    seed=seed,
                    accuracy=round(accuracy, 4),
                    seconds=round(time.perf_counter() - start, 1),
                    setting=setting,
                )
                writer.writerow(row)
                fh.flush()
                done[(args.task, setting, gate, arm, seed)] = row
                print(row, flush=True)
    write_report(
        path, args.out / f"gates{suffix}.md", args.margin, " ".join(["python benchmarks/run_gates.py", *sys.argv[1:]])
    )
    return 0


def write_report(csv_path: Path, md_path: Path, margin: float, command: str) -> None:
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    lines = [
        f"# Sanity gates ({datetime.now(timezone.utc):%Y-%m-%d}, last run `{command}`)",
        "",
        "Each row's setting gives the options it ran with: `python benchmarks/run_gates.py --task TASK "
        "--epochs E --rounds R --expert-hidden H` reproduces it.",
        "",
        f"A gate passes when the mean paired difference is at least {margin} and every seed's is positive.",
        "",
        "| task | setting | gate | arms (mean accuracy, n) | paired differences | mean | passes |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, setting in sorted({(r["task"], r["setting"]) for r in rows}):
        for gate, (good, bad) in (
            ("central", ("E experts", "1 expert")),
            ("federated", ("topk_affinity", "bottomk_affinity")),
        ):
            a = {
                int(r["seed"]): float(r["accuracy"])
                for r in rows
                if (r["task"], r["setting"], r["gate"], r["arm"]) == (task, setting, gate, good)
            }
            b = {
                int(r["seed"]): float(r["accuracy"])
                for r in rows
                if (r["task"], r["setting"], r["gate"], r["arm"]) == (task, setting, gate, bad)
            }
            seeds = sorted(set(a) & set(b))
            if not seeds:
                continue
            diffs = [a[s] - b[s] for s in seeds]
            mean = statistics.fmean(diffs)
            ok = mean >= margin and all(d > 0 for d in diffs)
            arms = (
                f"{good} {statistics.fmean(a.values()):.3f} (n={len(a)}); "
                f"{bad} {statistics.fmean(b.values()):.3f} (n={len(b)})"
            )
            lines.append(
                f"| {task} | {setting} | {gate} | {arms} | {', '.join(f'{d:+.3f}' for d in diffs)} | {mean:+.3f} | "
                f"{'**yes**' if ok else '**no**'} |"
            )
    md_path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
