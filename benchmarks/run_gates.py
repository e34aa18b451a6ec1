"""The sanity gates of the federated benchmark: does the testbed make experts matter at all?

Before any policy comparison on a task, two gates must pass (otherwise the comparison
cannot tell policies apart, and it is not run on that task):

1. **central**: trained centrally on the pooled training data (Adam, ``--epochs``), the
   MoE with E experts (top-1 routing) beats the same network with one expert, at the same
   per-sample compute (one expert of the same size runs per sample either way);
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

import fedloop
from fedloop.loop import LOCAL_ROUTING
from fedloop.model import ROUTER_INPUTS
from fedloop.tasks import CENTRAL_EPOCHS, TASKS, VERSION, central_accuracy, federation, parse_shard

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ["task", "gate", "arm", "seed", "accuracy", "seconds", "setting"]
#: Paired seeds a gate needs before it is called passed or failed (``--quick``: 2); a shard that finishes first
#: renders the others' rows as incomplete, not as a verdict on one seed.
MIN_PAIRS = 3


def federated_accuracy(fed: dict, seed: int, policy: str, rounds: int) -> float:
    """Mean test accuracy of the last 5 rounds of a run with ``policy`` in the federation ``fed``."""
    settings = fed | {"seed": seed, "policy": policy, "rounds": rounds}
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
    parser.add_argument(
        "--epochs", type=int, default=CENTRAL_EPOCHS, help="central gate: epochs over the pooled data (Adam)"
    )
    parser.add_argument("--rounds", type=int, default=60, help="federated gate: rounds per run")
    parser.add_argument("--margin", type=float, default=0.02)
    parser.add_argument(
        "--expert-hidden",
        type=int,
        default=None,
        help="hidden units of each expert (default: the task's, fedloop.tasks.EXPERT_HIDDEN)",
    )
    parser.add_argument(
        "--feature-norm",
        choices=("on", "off"),
        default=None,
        help="batch normalisation of the encoder's features (default: the task's, fedloop.tasks.FEATURE_NORM)",
    )
    parser.add_argument(
        "--local-routing",
        choices=LOCAL_ROUTING,
        default=None,
        help="federated gate: local training routes over all experts or the assigned ones "
        "(default: the task's, fedloop.tasks.LOCAL_ROUTING)",
    )
    parser.add_argument(
        "--router-input",
        choices=ROUTER_INPUTS,
        default=None,
        help="what the router reads: the encoder's features or (token data) the last token's embedding "
        "(default: the task's, fedloop.tasks.ROUTER_INPUT)",
    )
    parser.add_argument(
        "--answer-in-script",
        choices=("on", "off"),
        default=None,
        help="token data in several scripts: answer in the last input token's script "
        "(default: the task's, fedloop.tasks.ANSWER_IN_SCRIPT)",
    )
    parser.add_argument(
        "--gate",
        choices=("both", "central", "federated"),
        default="both",
        help="run one gate only (the central gate does not depend on --rounds or --local-routing)",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--shard",
        default="0/1",
        help="K/M: only the runs i (arms by seeds, in order) with i %% M == K (M processes, one CSV)",
    )
    args = parser.parse_args(argv)
    try:
        k, m = parse_shard(args.shard)
    except ValueError as err:
        parser.error(str(err))
    if args.quick:
        args.epochs, args.rounds, args.seeds = min(args.epochs, 2), min(args.rounds, 8), min(args.seeds, 2)
    suffix = "_quick" if args.quick else ""
    path = args.out / f"gates{suffix}.csv"
    args.out.mkdir(parents=True, exist_ok=True)
    done = _done(path)
    fn = None if args.feature_norm is None else args.feature_norm == "on"
    # the task's settings unless given
    ais = None if args.answer_in_script is None else args.answer_in_script == "on"
    fed = federation(args.task, args.quick, args.expert_hidden, fn, args.local_routing, args.router_input, ais)
    eh, fn, routing, router = fed["expert_hidden"], fed["feature_norm"], fed["local_routing"], fed["router_input"]
    ais = fed["answer_in_script"]
    setting = f"{VERSION} epochs={args.epochs} rounds={args.rounds} expert_hidden={eh}" + (" feature_norm" * fn)
    setting += f" local_routing={routing}" * (routing != "all") + f" router_input={router}" * (router != "features")
    setting += " answer_in_script" * ais
    q = args.quick

    def central(seed: int, n_experts: int | None = None) -> float:
        return central_accuracy(
            args.task,
            quick=q,
            seed=seed,
            n_experts=n_experts,
            epochs=args.epochs,
            expert_hidden=eh,
            feature_norm=fn,
            router_input=router,
            answer_in_script=ais,
        )

    arms = [("central", "E experts", central), ("central", "1 expert", lambda s: central(s, 1))]
    for policy in ("topk_affinity", "bottomk_affinity"):
        arms.append(("federated", policy, lambda s, p=policy: federated_accuracy(fed, s, p, args.rounds)))
    try:  # exclusive creation: shards started together write the header once
        with open(path, "x", newline="") as fh:
            csv.DictWriter(fh, fieldnames=FIELDS).writeheader()
    except FileExistsError:
        pass
    jobs = [
        (gate, arm, measure, seed)
        for gate, arm, measure in arms
        for seed in range(args.seeds)
        if args.gate in ("both", gate)
    ]
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        for i, (gate, arm, measure, seed) in enumerate(jobs):
            if i % m != k or (args.task, setting, gate, arm, seed) in done:
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
    command = " ".join(["python benchmarks/run_gates.py", *(argv if argv is not None else sys.argv[1:])])
    write_report(path, args.out / f"gates{suffix}.md", args.margin, command, 2 if args.quick else MIN_PAIRS)
    return 0


def write_report(csv_path: Path, md_path: Path, margin: float, command: str, min_pairs: int = MIN_PAIRS) -> None:
    """Render the gates of every (task, setting) in ``csv_path``; fewer than ``min_pairs`` paired seeds: incomplete."""
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    lines = [
        f"# Sanity gates ({datetime.now(timezone.utc):%Y-%m-%d}, last run `{command}`)",
        "",
        f"Each {VERSION} row's setting gives the options it ran with: `python benchmarks/run_gates.py --task TASK "
        "--epochs E --rounds R --expert-hidden H --feature-norm on|off --local-routing all|assigned "
        "--router-input features|token --answer-in-script on|off` reproduces it (on where the setting says "
        "`feature_norm`: the encoder's features batch-normalised, `FedConfig.feature_norm`; `assigned` where it says "
        "`local_routing=assigned`: local training routes over the assigned experts only; `token` where it says "
        "`router_input=token`: the router reads the embedding of the last input token; on where it says "
        "`answer_in_script`: the model answers in the script of the last input character). "
        "v1 rows ran with the task's first definition (four domains without relabelling, 300 samples per client, "
        "federated lr 0.05 and one local epoch, central SGD): "
        "they are the record of the gate that failed and made the task change. Rows whose setting says "
        "`encoder=maxpool` ran with the first sequence encoder, which took the maximum of its convolutions over "
        "positions instead of the last position's features; it is no longer in the code and they are a record. "
        "The federated comparison's `multidomain` definition v3 (`fedloop.tasks.VERSIONS`) is its v2 row with "
        "`feature_norm local_routing=assigned`; `multidomain4` is that definition on four of its twelve domains "
        "(`fedloop.tasks.MULTIDOMAIN4`).",
        "",
        f"A gate passes when the mean paired difference is at least {margin} and every seed's is positive, over at "
        f"least {min_pairs} paired seeds (fewer: incomplete).",
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
            if len(seeds) < min_pairs:
                verdict = f"incomplete ({len(seeds)} of {min_pairs} seeds)"
            else:
                verdict = "**yes**" if ok else "**no**"
            arms = (
                f"{good} {statistics.fmean(a.values()):.3f} (n={len(a)}); "
                f"{bad} {statistics.fmean(b.values()):.3f} (n={len(b)})"
            )
            lines.append(
                f"| {task} | {setting} | {gate} | {arms} | {', '.join(f'{d:+.3f}' for d in diffs)} | {mean:+.3f} | "
                f"{verdict} |"
            )
    md_path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
