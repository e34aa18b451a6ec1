"""Add assignment traces to saved federated runs from whole reruns that reproduce them.

    python benchmarks/add_traces.py --task mnist_shards --policy flex_moe --seeds 0-9 \\
        --rerun /tmp/rerun --out benchmarks/results --log benchmarks/results/build_checks.md

Runs saved before the assignments were recorded have no traces (``routed_share``, ``assigned``), and the
traces' measures (routed share, purity, repeated pairs) leave them out. In a build that reproduces them
(``check_build.py``) a rerun of the same run gives the same trajectory and its traces. For each seed, this compares
every per-round field that the saved run and the rerun (run with ``run_federated.run_all`` into ``--rerun``, over
the same budget) both hold, round for round over the whole budget. Only where all are equal does it write the
rerun's traces into the saved record; every other field (its wall time too) stays as it was. A seed whose rerun
differs, or has no traces, is named and left alone. Exit status 0: every seed's traces added (or already there);
1: some seed's not. ``--log FILE`` appends each seed's verdict to the table ``check_build.py`` keeps
(``check_build.append_log``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import check_build
import run_federated

#: What a rerun adds to a saved run that has none
TRACES = ("routed_share", "assigned")
#: Fields that describe the run's cost and build on its machine, not its trajectory
NOT_COMPARED = ("wall_s", "build", *TRACES)


def mismatch(saved: dict, rerun: dict) -> str | None:
    """Why ``rerun`` cannot give ``saved`` its traces (the first field that differs, or what is missing); None if
    it can. Both are records as ``run_federated.run_all`` saves them, read back from JSON."""
    if not all(rerun.get(name) for name in TRACES):
        return "the rerun has no traces"
    shared = sorted((set(saved) & set(rerun)) - set(NOT_COMPARED))
    if "accuracy" not in shared or "loads" not in shared:
        return "the records share no accuracy or loads to compare"
    for name in shared:
        if saved[name] != rerun[name]:
            return f"{name} differs"
    return None


def parse_seeds(text: str) -> list[int]:
    """``"3"`` or ``"0-9"`` (both ends included) as a list of seeds."""
    low, _, high = text.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        raise ValueError(f"--seeds: must be K or K-L with integers K <= L; got {text!r}") from None
    if first < 0 or last < first:
        raise ValueError(f"--seeds: must be K or K-L with integers 0 <= K <= L; got {text!r}")
    return list(range(first, last + 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=[*sorted(run_federated.tasks.TASKS), "smoke"])
    parser.add_argument("--policy", required=True, choices=run_federated.POLICIES)
    parser.add_argument("--seeds", required=True, help="K or K-L")
    parser.add_argument("--rerun", type=Path, required=True, help="the results folder the reruns were saved in")
    parser.add_argument("--out", type=Path, default=run_federated.RESULTS, help="the results folder of the runs")
    parser.add_argument("--log", type=Path, help="a Markdown file to append the verdicts to")
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        parser.error(str(exc))
    verdicts = []
    for seed in seeds:
        path = run_federated.run_path(run_federated.run_folder(args.out, args.task), args.policy, seed)
        again = run_federated.run_path(run_federated.run_folder(args.rerun, args.task), args.policy, seed)
        name = path.name
        if not path.is_file() or not again.is_file():
            verdicts.append((seed, f"not added: no {'saved run' if not path.is_file() else 'rerun'} {name}"))
            continue
        saved, rerun = json.loads(path.read_text()), json.loads(again.read_text())
        if all(saved.get(key) for key in TRACES):
            verdicts.append((seed, "already traced"))
            continue
        why = mismatch(saved, rerun)
        if why is not None:
            verdicts.append((seed, f"not added: {why}"))
            continue
        rounds = len(saved["accuracy"])
        path.write_text(json.dumps(saved | {key: rerun[key] for key in TRACES}))
        verdicts.append((seed, f"identical over all {rounds} rounds; traces added"))
    for seed, verdict in verdicts:
        print(f"{args.policy} seed {seed}: {verdict}")
    if args.log is not None:
        command = " ".join(["python benchmarks/add_traces.py", *(argv if argv is not None else sys.argv[1:])])
        check_build.append_log(args.log, [(f"`{command}` (seed {seed})", verdict) for seed, verdict in verdicts])
    ok = all(v == "already traced" or v.endswith("traces added") for _, v in verdicts)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
