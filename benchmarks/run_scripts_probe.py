"""Why federated training stalls on ``shakespeare_scripts``: does the global model answer in the input's script?

On ``shakespeare_scripts`` each speaker writes in one of four scripts whose characters share no
id (``fedloop.real_data.load_shakespeare(scripts=4)``), and a client holds one script only.
For each task (by default ``shakespeare`` and ``shakespeare_scripts``) this runs ``--rounds``
federated rounds of one policy (default ``topk_affinity``, the federated gate's better arm) on
``--seeds`` seeds with the task's settings but free to answer in any script
(``answer_in_script`` off unless ``--answer-in-script on``), and every ``--every`` rounds
measures the global model on the test set: its accuracy, the share of its answers that lie in the script of the
input's last character (``in script``; 1 on ``shakespeare``, which has one script), and its
accuracy on the inputs it answers in the right script.

    python benchmarks/run_scripts_probe.py     # writes benchmarks/results/scripts_probe.{csv,md}

Needs the real data: ``fedloop fetch shakespeare``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

import fedloop
from fedloop.loop import build, build_model, run_round
from fedloop.model import script_of
from fedloop.tasks import TASKS, federation

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ["task", "policy", "seed", "round", "accuracy", "in_script", "accuracy_in_script"]


@torch.no_grad()
def script_answers(model: fedloop.MoE, x: torch.Tensor, y: torch.Tensor, scripts: int) -> tuple[float, float, float]:
    """(accuracy, share of answers in the last input character's script, accuracy on those answers).

    Scripts as :func:`fedloop.model.script_of` lays them out over the model's classes; inputs whose last
    character is unknown (the shared last id) belong to no script and are left out of the two script measures.
    """
    was_training = model.training
    model.eval()
    logits = model(x).logits
    model.train(was_training)
    pred = logits.argmax(dim=1)
    last = script_of(x[:, -1], logits.shape[1], scripts)
    known = last < scripts
    right = (script_of(pred, logits.shape[1], scripts) == last) & known
    accuracy = float((pred == y).float().mean())
    in_script = float(right.sum() / known.sum()) if bool(known.any()) else float("nan")
    correct = float(((pred == y) & right).sum() / right.sum()) if bool(right.any()) else float("nan")
    return accuracy, in_script, correct


def probe(
    task: str,
    policy: str,
    seed: int,
    rounds: int,
    every: int,
    answer_in_script: bool = False,
) -> list[dict]:
    """One run's measurements after rounds ``every``, ``2 every``, ... and the last (see the module docstring)."""
    settings = federation(task) | {"seed": seed, "policy": policy, "rounds": rounds}
    settings |= {"answer_in_script": answer_in_script}
    cfg = fedloop.FedConfig(**settings)
    setup = build(cfg)
    local = build_model(cfg, setup.data)
    scripts = int(setup.data.info.get("scripts", 1))
    x, y = setup.data.test
    rows = []
    for r in range(rounds):
        run_round(setup, r, local)
        if (r + 1) % every == 0 or r == rounds - 1:
            accuracy, in_script, correct = script_answers(setup.model, x, y, scripts)
            rows.append(
                dict(
                    task=task,
                    policy=policy,
                    seed=seed,
                    round=r + 1,
                    accuracy=round(accuracy, 4),
                    in_script=round(in_script, 4),
                    accuracy_in_script=round(correct, 4),
                )
            )
    return rows


def write_report(rows: list[dict], path: Path, command: str, answer_in_script: bool = False) -> None:
    lines = [
        f"# Answers in the input's script ({datetime.now(timezone.utc):%Y-%m-%d}, `{command}`)",
        "",
        f"`answer_in_script` {'on' if answer_in_script else 'off'}. "
        "The global model after each listed round, on the task's test set, mean over seeds (n): accuracy; "
        "`in script`, the share of its answers in the script of the input's last character (inputs whose last "
        "character is unknown left out); and its accuracy on the inputs it answers in the right script. A client "
        "holds one script only, so nothing in its local training contrasts one script with another.",
        "",
        "| task | policy | round | seeds (n) | accuracy | in script | accuracy when in script |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, policy, rnd in sorted({(r["task"], r["policy"], r["round"]) for r in rows}):
        got = [r for r in rows if (r["task"], r["policy"], r["round"]) == (task, policy, rnd)]
        mean = {f: statistics.fmean(r[f] for r in got) for f in ("accuracy", "in_script", "accuracy_in_script")}
        lines.append(
            f"| {task} | {policy} | {rnd} | {len(got)} | {mean['accuracy']:.3f} | {mean['in_script']:.3f} | "
            f"{mean['accuracy_in_script']:.3f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="shakespeare,shakespeare_scripts", help="comma-separated tasks")
    parser.add_argument("--policy", default="topk_affinity")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--every", type=int, default=20, help="measure after every this many rounds")
    parser.add_argument(
        "--answer-in-script",
        choices=("on", "off"),
        default="off",
        help="the model answers in the last input character's script (FedConfig.answer_in_script)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    chosen = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(chosen) - {t for t in TASKS if TASKS[t]["dataset"] == "shakespeare"})
    if unknown or not chosen:
        parser.error(f"--tasks: must name Shakespeare tasks of fedloop.tasks; got {args.tasks!r}")
    for name, value in (("--seeds", args.seeds), ("--rounds", args.rounds), ("--every", args.every)):
        if value < 1:
            parser.error(f"{name}: must be >= 1; got {value}")
    rows = [
        row
        for task in chosen
        for seed in range(args.seeds)
        for row in probe(task, args.policy, seed, args.rounds, args.every, args.answer_in_script == "on")
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "scripts_probe.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    command = " ".join(["python benchmarks/run_scripts_probe.py", *(argv if argv is not None else sys.argv[1:])])
    write_report(rows, args.out / "scripts_probe.md", command, args.answer_in_script == "on")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
