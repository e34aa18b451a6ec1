"""How closely the methods that take a ``time_limit`` keep it: ``milp`` and ``cpsat``.

Each row solves one instance with one limit in this process (after a warm-up call that
imports and compiles what the method needs) and records the wall time of the whole
``alignsolve.solve`` call, its ratio to the limit, the status and whether an answer came
back. Instances: unit assignment problems N x N with one slot per client and expert (the
hardest shape for HiGHS's root LP here) and the ``budget`` family.

    python benchmarks/run_time_limits.py            # writes benchmarks/results/time_limits.{csv,md}
    python benchmarks/run_time_limits.py --quick    # small, for CI-sized checks
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import alignsolve as als

RESULTS = Path(__file__).resolve().parent / "results"


def instances(quick: bool):
    rng = np.random.default_rng(0)
    sizes = (100,) if quick else (300, 500)
    for n in sizes:
        yield f"assignment {n}x{n}", als.Problem(rng.random((n, n)), 1, expert_max=1)
    n = 200 if quick else 1000
    yield f"budget {n}x32 k=4", als.generate("budget", n, 32, 4, seed=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    limits = (0.5,) if args.quick else (0.5, 1.0, 3.0)
    warm = als.generate("uniform", 20, 4, 2, seed=0)
    for method in ("milp", "cpsat", "greedy"):
        als.solve(warm, method)
    rows = []
    for name, problem in instances(args.quick):
        for method in ("milp", "cpsat"):
            for limit in limits:
                start = time.perf_counter()
                answer = als.solve(problem, method, time_limit=limit, workers=2) if method == "cpsat" else None
                if answer is None:
                    answer = als.solve(problem, method, time_limit=limit)
                wall = time.perf_counter() - start
                rows.append(
                    {
                        "instance": name,
                        "method": method,
                        "limit_s": limit,
                        "wall_s": round(wall, 3),
                        "ratio": round(wall / limit, 2),
                        "status": answer.status,
                        "answer": answer.has_solution,
                        "from": answer.stats.get("answer_from", method),
                    }
                )
                print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    with open(args.out / f"time_limits{suffix}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    command = "python benchmarks/run_time_limits.py" + (" --quick" if args.quick else "")
    lines = [
        f"# Time limits kept ({stamp}, `{command}`, {os.cpu_count()} CPUs, Python {sys.version.split()[0]})",
        "",
        "Wall time of the whole `alignsolve.solve` call against its `time_limit` (one run each; cpsat with 2 workers).",
        "",
        "| instance | method | limit (s) | wall (s) | wall / limit | status | answer | answer from |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['instance']} | {r['method']} | {r['limit_s']} | {r['wall_s']} | {r['ratio']} | {r['status']} | "
            f"{'yes' if r['answer'] else 'no'} | {r['from']} |"
        )
    worst = {m: max(r["wall_s"] - r["limit_s"] for r in rows if r["method"] == m) for m in ("milp", "cpsat")}
    lines += ["", "Largest overrun: " + ", ".join(f"`{m}` {v:.2f} s" for m, v in worst.items()) + "."]
    (args.out / f"time_limits{suffix}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
