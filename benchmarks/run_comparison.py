"""Issue 18's comparison in one command: every policy of ``run_cost.CORE`` on ``run_cost.SEEDS`` paired seeds of each
task of ``run_cost.TASKS`` over ``run_cost.ROUNDS`` rounds, two runs at a time, resumable.

    python benchmarks/run_comparison.py            # the whole comparison into benchmarks/results (hours: see below)
    python benchmarks/run_comparison.py --quick    # a few minutes: the smoke task, two policies, two seeds, 3 rounds

Each run is a process of its own with one thread (``run_federated.run_all`` for one task, policy and seed), and the
next starts as soon as any ends (``pool.run_pool``), so both cores stay busy to the end whatever each task's runs
cost. Runs go seed by seed (every task and policy of seed 0, then of seed 1, ...), so a comparison stopped early
holds whole paired seeds. A run already saved in the results folder is skipped: after a crash or a stop the same
command runs only what is missing (a run in progress is lost, never half saved: ``run_all`` writes each record whole).
Each task's central reference run (``central.json``, which sets the targets) comes first, one process per task. At the
end it renders the page of every task that got a new run (``federated_<task>.md``, with this command in its header)
and leaves the others as they were.

What the whole comparison costs on two cores is projected by ``run_cost.py`` (``results/federated_cost.md``); the
runs it saves carry their wall time, from which ``run_cost.py`` tables what they cost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_cost
import run_federated
from pool import run_pool

#: What ``--quick`` runs: small enough for CI, on the synthetic smoke task (no download), through the same path
QUICK = {"tasks": ("smoke",), "policies": ("random", "aligned_value"), "seeds": 2, "rounds": 3}


def missing_runs(out: Path, task_names: list[str], policies: list[str], seeds: int) -> list[tuple[str, str, int]]:
    """The (task, policy, seed) runs not saved under ``out`` yet, seed by seed: every task and policy of the first
    seed, then of the next, so that the runs done first form whole paired seeds."""
    return [
        (task, policy, seed)
        for seed in range(seeds)
        for task in task_names
        for policy in policies
        if not run_federated.run_path(run_federated.run_folder(out, task), policy, seed).exists()
    ]


def run_one(task: str, policy: str, seed: int, rounds: int, quick: bool, out: Path) -> dict:
    """One run, saved by ``run_federated.run_all`` (which also writes the task's central run when it is missing);
    returns what the progress line shows."""
    run_federated.run_all(task, [seed], rounds, quick, out, (policy,))
    record = json.loads(run_federated.run_path(run_federated.run_folder(out, task), policy, seed).read_text())
    return {"final": run_federated.stats.final_accuracy(record["accuracy"]), "wall_s": record["wall_s"]}


def compare(
    out: Path,
    task_names: list[str],
    policies: list[str],
    seeds: int,
    rounds: int,
    quick: bool,
    workers: int,
    command: str,
) -> list[Path]:
    """Run what is missing of the comparison into ``out``, ``workers`` runs at a time, then render the pages of the
    tasks that got new runs; returns those pages."""
    script = str(Path(__file__).resolve())
    env = os.environ | {"OMP_NUM_THREADS": "1"}  # one thread per process: two processes share two cores
    common = ["--rounds", str(rounds), "--out", str(out), *(["--quick"] if quick else [])]
    # the central runs first, one process per task: two runs of one task must not both start it
    centrals = [task for task in task_names if run_federated.central_missing(task, out)]
    if centrals:
        print(f"central runs: {', '.join(centrals)}", flush=True)
        run_pool(
            [(f"central {task}", [sys.executable, script, "--central-one", task, *common]) for task in centrals],
            workers,
            lambda key, text: print(f"{key}: {text.strip()}", flush=True),
            env=env,
        )
    jobs = missing_runs(out, task_names, policies, seeds)
    total = len(task_names) * len(policies) * seeds
    print(f"{total - len(jobs)} of {total} runs already saved; {len(jobs)} to run, {workers} at a time", flush=True)
    started, done, touched = time.perf_counter(), [0], set()

    def done_one(key: tuple[str, str, int], text: str) -> None:
        done[0] += 1
        touched.add(key[0])
        row = json.loads(text.strip().splitlines()[-1])
        elapsed = time.perf_counter() - started
        left = elapsed / done[0] * (len(jobs) - done[0])
        print(
            f"[{done[0]}/{len(jobs)}] {key[0]} {key[1]} seed {key[2]}: final accuracy {row['final']:.3f}, "
            f"{row['wall_s']:.0f} s; {elapsed / 60:.0f} min so far, about {left / 60:.0f} min left",
            flush=True,
        )

    argvs = [
        ((task, policy, seed), [sys.executable, script, "--run-one", task, policy, str(seed), *common])
        for task, policy, seed in jobs
    ]
    run_pool(argvs, workers, done_one, env=env)
    pages = [run_federated.render(task, out, command) for task in task_names if task in touched]
    if jobs:
        print(f"{len(jobs)} runs in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return pages


def _names(text: str, known: tuple[str, ...] | list[str], flag: str) -> list[str]:
    names = [name for name in text.split(",") if name]
    unknown = sorted(set(names) - set(known))
    if unknown or not names:
        raise ValueError(f"{flag}: must name some of {', '.join(known)}; got {text!r}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=run_federated.RESULTS, help="results folder (default %(default)s)")
    # defaults None: the comparison's, or with --quick QUICK's, unless given
    parser.add_argument("--tasks", help=f"comma-separated (default {','.join(run_cost.TASKS)})")
    parser.add_argument("--policies", help=f"comma-separated (default {','.join(run_cost.CORE)})")
    parser.add_argument("--seeds", type=int, help=f"seeds 0 .. SEEDS - 1 (default {run_cost.SEEDS})")
    parser.add_argument("--rounds", type=int, help=f"default {run_cost.ROUNDS}")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="the smoke task, two policies, two seeds, 3 rounds")
    parser.add_argument("--run-one", nargs=3, metavar=("TASK", "POLICY", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--central-one", metavar="TASK", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    full = {
        "tasks": tuple(run_cost.TASKS),
        "policies": run_cost.CORE,
        "seeds": run_cost.SEEDS,
        "rounds": run_cost.ROUNDS,
    }
    for name, value in (QUICK if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, ",".join(value) if isinstance(value, tuple) else value)
    if args.run_one:
        task, policy, seed = args.run_one
        print(json.dumps(run_one(task, policy, int(seed), args.rounds, args.quick, args.out)))
        return 0
    if args.central_one:
        folder = run_federated.ensure_central(args.central_one, args.quick, args.out)
        print(f"accuracy {json.loads((folder / 'central.json').read_text())['accuracy']:.4f}")
        return 0
    given = argv if argv is not None else sys.argv[1:]
    try:
        task_names = _names(args.tasks, [*run_federated.tasks.TASKS, "smoke"], "--tasks")
        policies = _names(args.policies, run_federated.POLICIES, "--policies")
    except ValueError as err:
        parser.error(str(err))
    for flag, value, least in (("--seeds", args.seeds, 1), ("--rounds", args.rounds, 2), ("--jobs", args.jobs, 1)):
        if value < least:
            parser.error(f"{flag}: must be an integer >= {least}; got {value}")
    command = " ".join(["python benchmarks/run_comparison.py", *given])
    pages = compare(args.out, task_names, policies, args.seeds, args.rounds, args.quick, args.jobs, command)
    for page in pages:
        print(f"written {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
