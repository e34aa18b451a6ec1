"""Whether this environment reproduces a saved federated run: reruns its first rounds and compares them.

    python benchmarks/check_build.py --task multidomain4 --policy random --seed 10 \\
        --out benchmarks/results/rounds600 --rounds 3

A seed fixes a run's partition, participation, profiles and initialisation, not its floating-point arithmetic,
which follows the processor, the library builds and the thread count (``docs/benchmarks.md``). Runs added to a
saved comparison are paired with its runs either way; whether they also ran in the same build decides whether the
new runs' trajectories can be compared round for round with the saved ones. This script reruns the first
``--rounds`` rounds of one saved run (``run_federated.config``, the saved run's task, policy and seed, a budget of
``--rounds``) and reports the first round whose test accuracy, expert loads or assignment differs from the saved
record, or that none does. With ``--against FOLDER`` it reruns nothing and compares the saved run with the saved run
of the same task, policy and seed in another results folder, over the shorter one's rounds (a longer budget's run
whose first rounds should be the shorter budget's run). Exit status 0: identical; 1: differs. ``--log FILE`` also
appends the verdict, with the date and the command, to a Markdown table (``benchmarks/results/build_checks.md`` for
the committed checks). The verdict of a rerun names the instruction set of torch's kernels and the thread count it
ran with, and the logged command starts with those of ``run_federated.BUILD_VARIABLES`` that were set, so that it
reruns the same build:

    OMP_NUM_THREADS=1 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python benchmarks/check_build.py --task mnist_shards --policy flex_moe --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_federated

import fedloop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=[*sorted(run_federated.tasks.TASKS), "smoke"])
    parser.add_argument("--policy", required=True, choices=run_federated.POLICIES)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument(
        "--rounds", type=int, help="how many first rounds to rerun (default 3) or, with --against, to compare"
    )
    parser.add_argument(
        "--against",
        type=Path,
        help="rerun nothing: compare with the saved run of the same task, policy and seed in this results folder "
        "(a run of another budget), over the shorter run's rounds unless --rounds says fewer",
    )
    parser.add_argument("--out", type=Path, default=run_federated.RESULTS, help="the results folder of the run")
    parser.add_argument("--log", type=Path, help="a Markdown file to append the verdict to (created with a header)")
    args = parser.parse_args(argv)
    path = run_federated.run_path(run_federated.run_folder(args.out, args.task), args.policy, args.seed)
    if not path.is_file():
        parser.error(f"--out: no saved run {path.name} in {path.parent}")
    saved = json.loads(path.read_text())
    limit = len(saved["accuracy"])
    other = None
    if args.against is not None:
        other_path = run_federated.run_folder(args.against, args.task) / path.name
        if not other_path.is_file():
            parser.error(f"--against: no saved run {path.name} in {other_path.parent}")
        other = json.loads(other_path.read_text())
        limit = min(limit, len(other["accuracy"]))
    rounds = args.rounds if args.rounds is not None else limit if other is not None else min(3, limit)
    if not 1 <= rounds <= limit:
        whose = "the shorter saved run's" if other is not None else "the saved run's"
        parser.error(f"--rounds: must be an integer in [1, {limit}] ({whose}); got {rounds}")
    if other is None:
        history = fedloop.run(run_federated.config(args.task, args.policy, args.seed, rounds, quick=False))
        rerun = json.loads(json.dumps(run_federated.record_of(args.policy, args.seed, history)))
    else:
        # the other run's first rounds only: a longer run goes on where the shorter one stopped
        rerun = {name: value[:rounds] if isinstance(value, list) else value for name, value in other.items()}
    found = run_federated.first_difference(saved, rerun)
    word, detail = (
        ("identical", f"over its first {rounds} rounds (accuracy, loads, assignments)")
        if found is None
        else ("differs", f"from round {found[0]} ({found[1]})")
    )
    build = run_federated.build_environment()
    where = (
        f"{build['kernels']} kernels, {build['threads']} thread" + ("s" if build["threads"] != 1 else "")
        if other is None
        else f"against the saved run in {args.against}"
    )
    verdict = f"{word} {detail}; {where}"
    print(f"{word}: {path} {detail} ({where})")
    if args.log is not None:
        # the variables that chose this build go before the command, so that the logged line reruns the same build
        # (two saved runs compared ran in whatever builds they ran in: no variable chooses anything then)
        chosen = [f"{name}={build[name]}" for name in run_federated.BUILD_VARIABLES if name in build and other is None]
        command = " ".join([*chosen, "python benchmarks/check_build.py", *(argv if argv is not None else sys.argv[1:])])
        append_log(args.log, [(f"`{command}`", verdict)])
    return 0 if found is None else 1


def append_log(path: Path, rows: list[tuple[str, str]]) -> None:
    """Append ``(command cell, verdict)`` rows, dated now, to the Markdown table of build checks at ``path``
    (created with its header when missing; ``add_traces.py`` logs there too)."""
    if not path.exists():
        path.write_text(
            "# Build checks\n\nWhether this environment reproduced a saved run's first rounds "
            "(`benchmarks/check_build.py`; a seed fixes the partition, participation, profiles and "
            "initialisation, the build the arithmetic).\n\n| date (UTC) | command | verdict |\n|---|---|---|\n"
        )
    with path.open("a") as log:
        for command, verdict in rows:
            log.write(f"| {datetime.now(timezone.utc):%Y-%m-%d %H:%M} | {command} | {verdict} |\n")


if __name__ == "__main__":
    raise SystemExit(main())
