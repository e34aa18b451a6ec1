"""What the federated comparison costs, from the wall times saved with its runs and from today's code timed.

    python benchmarks/run_cost.py        # -> benchmarks/results/federated_cost.md

Runs saved since 2026-12-02 record their wall time (``wall_s``: two runs at a time on a 2-core machine, one per
core, as the benchmark is meant to run). Per results folder and task this tables the runs saved with it, the median
and range of a run's wall time and of a round's. It then projects the comparison issue 18 asks for, the
``CORE`` policies on ``SEEDS`` seeds over ``ROUNDS`` rounds on each of the three ``TASKS``, from each task's seconds
per round (the measurement below where one is saved, else the median of the folders named in ``TASKS``), and sets
it against the goal of about ``GOAL_HOURS`` hours on two cores: how many core-hours it needs, the hours on two cores
(half of that, two runs at a time), and the seconds per run that the goal would allow. A projection, not a measured
end to end run; the machine is shared, so the figures are what runs cost there, not speeds of any policy. An earlier
definition of a task (``FORMER``: ``mnist_shards`` before ``mnist_shards_lite``) is tabled beside today's, left out of
every total.

    python benchmarks/run_cost.py --measure   # -> results/round_cost.json, then the page (about 35 minutes)
    python benchmarks/run_cost.py --measure --fresh   # the same, timing every run again after a code change

The saved runs' wall times are those of the code they ran with, on the machines they ran on. ``--measure`` times
today's code here instead: every ``CORE`` policy on every task for ``MEASURE_ROUNDS`` rounds (a whole run of the
comparison, seed 0) after an untimed first one (which loads numba and OR-Tools), each run in a process of its own
with one thread, two at a time, as the benchmark runs. Where that measurement is saved, the projections use its
seconds per round (per task, the mean over the policies) and show the saved runs' medians beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_federated
from pool import run_pool

#: The comparison issue 18 names: its baselines that fit (all_experts exceeds the clients' slots), the aligner with
#: the exact and the greedy solve, and the two published-method policies of issue 19
CORE = (
    "random",
    "round_robin",
    "topk_affinity",
    "topk_capped",
    "dense",
    "aligned_value",
    "aligned_value_greedy",
    "flex_moe",
    "fedmoe",
)
SEEDS, ROUNDS, GOAL_HOURS = 10, 200, 3.0
#: The least issue 18 names: its baselines that fit and the aligner
ISSUE_LEAST = ("random", "round_robin", "topk_affinity", "topk_capped", "dense", "aligned_value")
#: Smaller sets of the ``CORE`` policies, for what fits the goal: the least issue 18 names, that with the comparator
#: of issue 19's target, and all of ``CORE``
POLICY_SETS: dict[str, tuple[str, ...]] = {
    "issue 18's baselines and `aligned_value`": ISSUE_LEAST,
    "those and `flex_moe`": (*ISSUE_LEAST, "flex_moe"),
    "all of the comparison above": CORE,
}
#: Per task, the results folder whose runs measure it at ROUNDS rounds (multidomain4's 200-round runs saved with
#: their wall time are those repeated after the second rebuild)
TASKS = {"mnist_shards_lite": "results", "multidomain4": "rebuild200", "shakespeare_scripts": "results"}
#: Earlier definitions of a task of ``TASKS``, each with the folder of its ``ROUNDS``-round runs: tabled beside today's
#: tasks for comparison, left out of every total. ``mnist_shards`` (28 x 28 images, two local epochs in batches of 32)
#: gave way to ``mnist_shards_lite`` (14 x 14, one epoch in batches of 64) for the goal.
FORMER = {"mnist_shards": "results"}
#: Rounds timed per run by ``--measure`` (a whole run of the comparison: a run's rounds need not cost alike), and the
#: file its measurement goes to under the results
MEASURE_ROUNDS = ROUNDS
MEASURED = "round_cost.json"
#: Per task (those of ``FORMER`` too), the results folder of its longest runs: where the best policy's curve is read
#: for where it levels off
LONGEST = {
    "mnist_shards_lite": "rounds800",
    "multidomain4": "rounds800",
    "shakespeare_scripts": "rounds400",
    "mnist_shards": "rounds800",
}


def levelling_budgets(root: Path) -> dict[str, dict | None]:
    """Per task of ``LONGEST``, where its best policy levels off in the longest runs (None: no runs there).

    The best policy is the one with the highest mean accuracy over the last rounds
    (``run_federated.level_rows``) among those run on at least ``SEEDS`` seeds at that budget. Its row is returned
    with the budget and the folder. ``near``, the first round at which its curve came within a point of where its
    runs ended, is the budget the projection uses: a plateau shown only when the verdict is "levelled off", and
    replaced by the runs' budget, a lower bound, when it is "still rising". A verdict read again after seeds were
    added (``run_federated.LEVEL_LOOKS``) is read at the interval widened for its looks (``looks`` in the row)."""
    found: dict[str, dict | None] = {}
    for task, folder in LONGEST.items():
        base = root if folder == "results" else root / folder
        # a missing folder globs to nothing: no runs
        runs = run_federated.load_runs(run_federated.run_folder(base, task))
        runs = {p: by_seed for p, by_seed in runs.items() if len(by_seed) >= SEEDS}
        if not runs:
            found[task] = None
            continue
        budget = run_federated.run_budget(runs)
        looks = run_federated.level_looks(folder, task)
        rows = run_federated.level_rows(runs, budget, level=run_federated.widened_level(looks))
        best = max(rows, key=lambda row: row["last"]) if rows else None
        found[task] = None if best is None else best | {"budget": budget, "folder": folder, "looks": looks}
    return found


def folder_costs(root: Path) -> list[dict]:
    """Per results folder under ``root`` (``root`` itself and its subfolders) and task folder, the wall times of the
    runs saved with one: ``{"folder", "task", "rounds", "runs", "timed", "per_run", "per_round"}``, the last two
    lists of seconds."""
    rows = []
    for label, base in run_federated.result_bases(root):
        for task_dir in sorted((base / "federated").glob("*-v*")):
            records = [rec for by_seed in run_federated.load_runs(task_dir).values() for rec in by_seed.values()]
            timed = [rec for rec in records if rec.get("wall_s") is not None]
            walls = [float(rec["wall_s"]) for rec in timed]
            rounds = {len(rec["accuracy"]) for rec in timed}
            if not walls:
                continue
            if len(rounds) != 1:
                raise ValueError(f"{task_dir}: runs of several budgets {sorted(rounds)} in one folder")
            n_rounds = rounds.pop()
            rows.append(
                {
                    "folder": label,
                    "task": task_dir.name.rsplit("-v", 1)[0],
                    "rounds": n_rounds,
                    "runs": len(records),
                    "timed": len(walls),
                    "per_run": walls,
                    "per_round": [w / n_rounds for w in walls],
                }
            )
    return rows


def time_rounds(task: str, policy: str, rounds: int, seed: int = 0) -> dict:
    """Seconds per round of one run of today's code: ``rounds`` rounds timed after an untimed first one
    (:func:`run_round.round_split`'s round totals)."""
    import run_round  # imports torch: only in the process that times the run

    per_round = [
        row["total_s"] for row in run_round.round_split(run_federated.config(task, policy, seed, rounds + 1, False))
    ]
    return {
        "task": task,
        "policy": policy,
        "seed": seed,
        "rounds": len(per_round),
        "seconds_per_round": statistics.fmean(per_round),
        "build": run_federated.build_environment(),
    }


def measure(
    root: Path,
    task_names: list[str],
    policies: tuple[str, ...],
    rounds: int = MEASURE_ROUNDS,
    workers: int = 2,
    command: str = "python benchmarks/run_cost.py --measure",
    fresh: bool = False,
) -> Path:
    """Time every policy on every task (:func:`time_rounds`), each run in a process of its own with one thread,
    ``workers`` at a time; writes ``root / MEASURED`` and returns its path.

    The file is rewritten as each run ends, so a crash loses only the runs in progress; a later call with the same
    ``rounds`` keeps the runs it holds (each with the time it ended) and times only the others; ``fresh`` times
    them all again (after a change to the code), replacing the file once the first run ends. If one run fails,
    the others still running are stopped and the error names the task and the policy."""
    out = root / MEASURED
    previous = json.loads(out.read_text()) if out.is_file() and not fresh else {}
    kept = previous.get("runs", []) if previous.get("rounds") == rounds else []
    done = {(row["task"], row["policy"]) for row in kept}
    jobs = [(task, policy) for task in task_names for policy in policies if (task, policy) not in done]
    env = os.environ | {"OMP_NUM_THREADS": "1"}  # one thread per process, as the comparison runs
    found: list[dict] = list(kept)

    def save() -> None:
        body = {"command": command, "rounds": rounds, "workers": workers, "runs": found}
        # the last run's end (runs saved before runs recorded their end carry the date of their measurement)
        body["date"] = max((row.get("ended", previous.get("date", "")) for row in found), default="")
        run_federated.write_whole(out, json.dumps(body, indent=1) + "\n")  # a crash mid-write keeps the last file

    def done_one(job, text: str) -> None:
        row = json.loads(text.strip().splitlines()[-1])
        found.append(row | {"ended": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")})
        save()
        print(
            f"[{len(found) - len(kept)}/{len(jobs)}] {row['task']} {row['policy']}: "
            f"{row['seconds_per_round']:.3f} s a round"
        )

    script = str(Path(__file__).resolve())
    argvs = [
        (f"timing {policy} on {task}", [sys.executable, script, "--time-one", task, policy, "--rounds", str(rounds)])
        for task, policy in jobs
    ]
    run_pool(argvs, workers, done_one, env=env)
    save()
    return out


def measured_rates(root: Path) -> tuple[dict[str, float], dict] | None:
    """Per task, the mean over the ``CORE`` policies of the measured seconds per round, and the measurement; None
    when none is saved or it lacks a ``CORE`` policy on a task of ``TASKS`` (a task of ``FORMER`` is left out where
    it lacks one)."""
    path = root / MEASURED
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    per = per_policy(saved)
    if any((task, policy) not in per for task in TASKS for policy in CORE):
        return None
    shown = [*TASKS, *(task for task in FORMER if all((task, policy) in per for policy in CORE))]
    return {task: statistics.fmean(per[(task, policy)] for policy in CORE) for task in shown}, saved


def per_policy(saved: dict) -> dict[tuple[str, str], float]:
    """``{(task, policy): seconds per round}`` of a measurement (``--measure``'s file, read)."""
    return {(row["task"], row["policy"]): row["seconds_per_round"] for row in saved["runs"]}


def levelling_rounds(levels: dict[str, dict | None]) -> dict[str, tuple[int, bool]]:
    """Per task of :func:`levelling_budgets` that has longest runs, the rounds the comparison would need: where its
    best policy came within a point of its end, or (still rising) its longest budget, a lower bound (True)."""
    out = {}
    for task, level in levels.items():
        if level is not None:
            rising = level["verdict"] == "still rising"
            out[task] = (level["budget"] if rising else level["near"], rising)
    return out


def policy_sets(per: dict[tuple[str, str], float], rounds: dict[str, tuple[int, bool]]) -> list[str]:
    """Table lines: each set of :data:`POLICY_SETS` on :data:`SEEDS` seeds of every task, at :data:`ROUNDS` rounds
    and at the levelling ``rounds`` (:func:`levelling_rounds`), from each policy's measured seconds per round
    ``per``; no lines when a policy of a set or a task's levelling rounds are missing."""
    if any((task, policy) not in per for task in TASKS for names in POLICY_SETS.values() for policy in names):
        return []
    if any(task not in rounds for task in TASKS):
        return []
    bound = any(rounds[task][1] for task in TASKS)
    more = "at least " if bound else ""
    lines = [
        "",
        "## Fewer policies",
        "",
        f"Each set of policies on {SEEDS} seeds of every task, from each policy's seconds per round measured above "
        f"(not the mean over all {len(CORE)}), at {ROUNDS} rounds and at the rounds of the table above. The goal is "
        f"about {GOAL_HOURS:g} hours on two cores:",
        "",
        f"| policies | n | core-hours, {ROUNDS} rounds | hours on two cores, {ROUNDS} rounds | times the goal, "
        f"{ROUNDS} rounds | core-hours, levelling rounds | hours on two cores, levelling rounds | times the goal, "
        "levelling rounds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, names in POLICY_SETS.items():
        short = sum(per[(task, p)] * ROUNDS for task in TASKS for p in names) * SEEDS / 3600
        long = sum(per[(task, p)] * rounds[task][0] for task in TASKS for p in names) * SEEDS / 3600
        lines.append(
            f"| {name} | {len(names)} | {short:.1f} | {short / 2:.1f} | {short / 2 / GOAL_HOURS:.1f} | "
            f"{more}{long:.1f} | {more}{long / 2:.1f} | {more}{long / 2 / GOAL_HOURS:.1f} |"
        )
    return lines


def render(root: Path = run_federated.RESULTS, command: str = "python benchmarks/run_cost.py") -> Path:
    rows = folder_costs(root)
    lines = [
        "# What the federated comparison costs",
        "",
        f"Command: `{command}`. Wall time of the runs saved with it (two runs at a time on a 2-core machine, on "
        "the machines and builds the folders' runs ran in, which `docs/benchmarks.md` names); median, with the "
        "range.",
        "",
        "| folder | task | rounds | runs | runs timed | seconds per run | seconds per round |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        run, rnd = r["per_run"], r["per_round"]
        lines.append(
            f"| {r['folder']} | {r['task']} | {r['rounds']} | {r['runs']} | {r['timed']} | "
            f"{statistics.median(run):.0f} ({min(run):.0f}-{max(run):.0f}) | "
            f"{statistics.median(rnd):.2f} ({min(rnd):.2f}-{max(rnd):.2f}) |"
        )
    by_key = {(r["folder"], r["task"]): r for r in rows}
    saved = {
        task: statistics.median(by_key[(folder, task)]["per_round"])
        for task, folder in (TASKS | FORMER).items()
        if (folder, task) in by_key
    }
    measured = measured_rates(root)
    lines += [
        "",
        "## Issue 18's comparison, projected",
        "",
        f"{len(CORE)} policies ({', '.join(CORE)}) x {SEEDS} seeds x {ROUNDS} rounds per task; the goal is about "
        f"{GOAL_HOURS:g} hours on two cores. "
        + (
            f"At each task's seconds per round measured with today's code (`{measured[1]['command']}`, "
            f"{measured[1]['date']}: each policy for {measured[1]['rounds']} rounds after an untimed first one, "
            f"seed 0, {measured[1]['workers']} runs at a time, one thread each; per task the mean over the "
            "policies), beside the median of the saved runs above (the code and machines they ran on)."
            if measured
            else "At each task's median seconds per round in the saved runs above (no measurement of today's "
            f"code saved: `{MEASURED}`)."
        ),
        "",
    ]
    rates = measured[0] if measured else saved
    missing = [task for task in TASKS if task not in rates]
    if missing:
        lines.append(f"Not projected: no timed runs of {', '.join(missing)}.")
    else:
        lines += [
            "| task | seconds per round, saved runs | seconds per round, today's code | seconds per run | runs "
            "| core-hours |",
            "|---|---|---|---|---|---|",
        ]
        total = 0.0
        for task in [*TASKS, *(task for task in FORMER if task in rates)]:
            per_run = rates[task] * ROUNDS
            hours = per_run * len(CORE) * SEEDS / 3600
            total += hours if task in TASKS else 0.0
            then = f"{saved[task]:.2f}" if task in saved else "-"
            now = f"{measured[0][task]:.2f}" if measured else "-"
            lines.append(f"| {_label(task)} | {then} | {now} | {per_run:.0f} | {len(CORE) * SEEDS} | {hours:.1f} |")
        runs = len(CORE) * SEEDS * len(TASKS)
        allowed = GOAL_HOURS * 2 * 3600 / runs
        lines += [
            f"| all | - | - | - | {runs} | {total:.1f} |",
            "",
            "| measure | value |",
            "|---|---|",
            f"| hours on two cores | {total / 2:.1f} |",
            f"| times the goal | {total / 2 / GOAL_HOURS:.1f} |",
            f"| seconds per run the goal allows | {allowed:.0f} |",
        ]
    levels = levelling_budgets(root)  # reads every longest run: once for both tables
    lines += plateau_projection(levels, rates)
    if measured:
        lines += policy_sets(per_policy(measured[1]), levelling_rounds(levels))
    out = root / "federated_cost.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def _label(task: str) -> str:
    """A task's name in the tables: a task of ``FORMER`` marked as left out of the totals."""
    return f"{task} (earlier definition, not in the total)" if task in FORMER else task


def plateau_projection(levels: dict[str, dict | None], rates: dict[str, float]) -> list[str]:
    """Table lines: the projection above (``rates``: seconds per round per task) at the budgets where each task's
    best policy levels off (``levels``, :func:`levelling_budgets`), a lower bound for a task whose best policy still
    rises at its longest budget."""
    lines = [
        "",
        "## At the budgets where the best policy levels off",
        "",
        f"The same {len(CORE)} policies x {SEEDS} seeds, each task at the round where its best policy (the highest "
        "mean accuracy over the last 50 rounds of its longest runs, among policies run on "
        f'{SEEDS} seeds or more) came within a point of its end (`federated_<task>.md`, "Where the curves level '
        'off"); where that policy still rises at the end of its runs, their budget, a lower bound. Where its '
        "verdict is undetermined, the last column says roughly how many seeds would settle it if the seeds' mean "
        "gain and spread stayed as measured (a normal approximation of the interval, "
        "`run_federated.seeds_to_settle`: for planning, not a result). A verdict read again after seeds were "
        'added is read at an interval widened for the looks (Bonferroni; `federated_<task>.md`, "seed set by seed '
        'set"), and the seeds it would need at that level.',
        "",
    ]
    shown = {task: levels.get(task) for task in TASKS}
    shown |= {task: levels[task] for task in FORMER if levels.get(task) is not None and task in rates}
    missing = [task for task, level in shown.items() if level is None or task not in rates]
    if missing:
        return [*lines, f"Not projected: no longest runs or no timed runs of {', '.join(missing)}."]
    lines += [
        "| task | longest runs (folder, rounds) | best policy | verdict | rounds | seconds per run | core-hours "
        "| seeds (n) | seeds the verdict would need |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    total, bound = 0.0, False
    needed = levelling_rounds(levels)
    for task, level in shown.items():
        rounds, rising = needed[task]
        per_run = rates[task] * rounds
        hours = per_run * len(CORE) * SEEDS / 3600
        if task in TASKS:
            total, bound = total + hours, bound or rising
        more = "at least " if rising else ""
        settle = "-" if level["verdict"] != "undetermined" or level["settle"] is None else f"about {level['settle']}"
        looked = (
            f" ({level['looks']} looks, {run_federated.widened_level(level['looks']):.1%} interval)"
            if level["looks"] > 1
            else ""
        )
        lines.append(
            f"| {_label(task)} | {level['folder']}, {level['budget']} | {level['policy']} | "
            f"{level['verdict']}{looked} | "
            f"{more}{rounds} | {more}{per_run:.0f} | {more}{hours:.1f} | {level['n']} | {settle} |"
        )
    more = "at least " if bound else ""
    return [
        *lines,
        f"| all | - | - | - | - | - | {more}{total:.1f} | - | - |",
        "",
        "| measure | value |",
        "|---|---|",
        f"| hours on two cores | {more}{total / 2:.1f} |",
        f"| times the goal | {more}{total / 2 / GOAL_HOURS:.1f} |",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help="time today's code first (results/round_cost.json)")
    parser.add_argument("--rounds", type=int, default=MEASURE_ROUNDS, help="rounds timed per run (default %(default)s)")
    parser.add_argument(
        "--fresh", action="store_true", help="with --measure: time every run again, not only those the file lacks"
    )
    parser.add_argument("--time-one", nargs=2, metavar=("TASK", "POLICY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error(f"--rounds: must be at least 2; got {args.rounds}")
    if args.fresh and not args.measure:
        parser.error("--fresh: times runs again, so it needs --measure")
    if args.time_one:
        print(json.dumps(time_rounds(*args.time_one, args.rounds)))
        return 0
    if args.measure:
        command = (
            "python benchmarks/run_cost.py --measure"
            + (f" --rounds {args.rounds}" if args.rounds != MEASURE_ROUNDS else "")
            + (" --fresh" if args.fresh else "")
        )
        out = measure(run_federated.RESULTS, [*TASKS, *FORMER], CORE, args.rounds, command=command, fresh=args.fresh)
        print(f"written {out}")
    print(f"written {render()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
