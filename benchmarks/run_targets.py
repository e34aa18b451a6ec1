"""Foundation targets: flow, greedy and random against a bare OR-Tools reference (issue 2's figures).

    python benchmarks/run_targets.py            # full run (a few minutes on 2 cores)
    python benchmarks/run_targets.py --quick    # small sizes only, for a smoke test

Writes ``benchmarks/results/targets.csv`` (one row per instance and method) and
``benchmarks/results/targets.md`` (medians over seeds and the targets, each a ratio
measured in this one run). Timings are wall-clock seconds per call, after one
warm-up call that compiles the numba kernels; a call under a second is repeated (up to
five calls within a second) and the median kept (see :func:`run_one`). Peak memory is measured separately, for
seed 0, each method in a fresh process (so that memory an earlier call freed but the
allocator kept cannot hide an allocation): the growth of the peak resident set during
the call, over the resident set just before it (``/proc/self/clear_refs`` resets the
peak; Linux only), with glibc's mmap threshold fixed in the child so that memory freed
while building the instance cannot hide the call's allocations.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from measure import timed_peak
from references import bare_min_cost_flow

import alignsolve as als

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = [(1000, 64, 4), (10000, 256, 8), (100000, 64, 4)]
QUICK_SIZES = [(1000, 64, 4), (3000, 64, 4)]
FRACS = [0.0, 0.5]
# flow_dense: `flow` with pricing=False (the dense graph), the reference the greedy-speed target was written against.
METHODS = ["bare_ortools", "flow", "flow_dense", "greedy", "random"]


#: A method is timed again while its calls so far took under this many seconds (at most REPEATS calls).
REPEAT_BUDGET = 1.0
REPEATS = 5


def run_one(problem: als.Problem, method: str, seed: int) -> tuple[float, float, float | None]:
    """(median seconds per call, objective, peak MB of the first call above the resident set before it).

    A call under a second is repeated (up to :data:`REPEATS` calls, while they total under
    :data:`REPEAT_BUDGET` s) and the median kept: one call of 50 ms right after a
    second-long one mostly measures page faults on memory the previous call returned, and a
    federated server calls the solver every round from a warm process. Every method gets
    the same rule, so slow calls run once and fast ones up to five times.
    """
    if method == "bare_ortools":
        fn, args, kwargs = bare_min_cost_flow, (problem,), {}
    elif method == "flow_dense":
        fn, args, kwargs = als.solve, (problem, "flow"), {"pricing": False}
    else:
        fn, args, kwargs = als.solve, (problem, method), {"seed": seed}
    out, first, peak_mb = timed_peak(fn, *args, **kwargs)
    times = [first]
    while len(times) < REPEATS and sum(times) < REPEAT_BUDGET:
        start = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
    if method == "bare_ortools":
        return statistics.median(times), out[1], peak_mb
    als.verify(problem, out)
    return statistics.median(times), out.objective, peak_mb


def measure_memory_in_child(n: int, e: int, k: int, frac: float, family: str, method: str) -> float | None:
    """Peak MB of one solve in a fresh interpreter (see the module docstring)."""
    # A fixed mmap threshold: glibc's dynamic one would let the solve reuse heap memory that building the
    # instance freed, hiding allocations below 32 MB.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    cmd = [sys.executable, __file__, "--memory-child", family, str(n), str(e), str(k), str(frac), method]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    value = out.stdout.strip().splitlines()[-1]
    return None if value == "None" else float(value)


def memory_child(family: str, n: int, e: int, k: int, frac: float, method: str) -> None:
    """In the fresh interpreter: warm the compiled kernels and imports on a tiny instance, then print the peak."""
    warm = als.generate("uniform", 30, 6, 2, expert_min_frac=0.5)
    for m in ("greedy", "random", "flow"):
        als.solve(warm, m, seed=0)
    als.solve(warm, "flow", pricing=True)
    problem = als.generate(family, n, e, k, seed=0, expert_min_frac=frac)
    print(run_one(problem, method, 0)[2])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--memory-child"]:
        family, n, e, k, frac, method = argv[1:7]
        memory_child(family, int(n), int(e), int(k), float(frac), method)
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes only")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--family", default="skewed", choices=sorted(als.FAMILIES))
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory measurements")
    args = ap.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else SIZES
    args.out.mkdir(parents=True, exist_ok=True)

    warm = als.generate("uniform", 50, 8, 2, seed=0, expert_min_frac=0.5)
    for method in ("greedy", "random", "flow"):
        als.solve(warm, method, seed=0)  # compile numba kernels, import OR-Tools

    rows = []
    for n, e, k in sizes:
        for frac in FRACS:
            for seed in range(args.seeds):
                problem = als.generate(args.family, n, e, k, seed=seed, expert_min_frac=frac)
                fit_mb = problem.fitness.nbytes / 2**20
                results = {}
                for method in METHODS:
                    if method == "bare_ortools" and (problem.load_penalty or problem.is_generalised):
                        continue
                    results[method] = run_one(problem, method, seed)
                optimum = results["flow"][1]
                for method, (elapsed, objective, peak_mb) in results.items():
                    if seed == 0 and not args.no_memory:
                        peak_mb = measure_memory_in_child(n, e, k, frac, args.family, method)
                    elif not args.no_memory:
                        peak_mb = None  # measured for seed 0 only, in a fresh process
                    gap = (optimum - objective) / abs(optimum) if optimum else 0.0
                    rows.append(
                        dict(
                            family=args.family,
                            n_clients=n,
                            n_experts=e,
                            capacity=k,
                            expert_min_frac=frac,
                            seed=seed,
                            method=method,
                            time_s=elapsed,
                            objective=objective,
                            gap_to_optimum=gap,
                            peak_mb=peak_mb,
                            fitness_mb=fit_mb,
                        )
                    )
                    peak_text = "n/a" if peak_mb is None else f"{peak_mb:.0f}"
                    print(
                        f"{n:>7}x{e:<4} k={k} min={frac:<3} seed={seed} {method:<13} {elapsed:8.3f} s  "
                        f"gap {gap:8.4%}  peak {peak_text} MB",
                        flush=True,
                    )

    csv_path = args.out / ("targets_quick.csv" if args.quick else "targets.csv")
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    md_path = csv_path.with_suffix(".md")
    md_path.write_text(render_markdown(rows, args, argv))
    print(f"\nwritten {csv_path} and {md_path}")
    print(md_path.read_text())
    return 0


def _median(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if r[key] is not None]
    return statistics.median(values) if values else math.nan


def render_markdown(rows: list[dict], args: argparse.Namespace, argv: list[str] | None) -> str:
    command = "python benchmarks/run_targets.py" + (
        " " + " ".join(argv) if argv else (" --quick" if args.quick else "")
    )
    lines = [
        "# Solver targets (foundation)",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node() or 'unknown host'}: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"alignsolve {als.__version__}.",
        f"Command: `{command}`. Family `{args.family}`, expert_max = ceil(1.1 N k / E), "
        f"expert_min = floor(frac N k / E); {args.seeds} seeds; medians over seeds of each method's median time "
        "per call (a call under a second is repeated, up to five calls within a second).",
        "",
        "| N x E (k) | expert_min frac | method | time (s) | x bare OR-Tools | gap to optimum | peak MB (seed 0) |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["n_clients"], r["n_experts"], r["capacity"], r["expert_min_frac"]) for r in rows})
    targets = []
    for n, e, k, frac in keys:
        group = [
            r for r in rows if (r["n_clients"], r["n_experts"], r["capacity"], r["expert_min_frac"]) == (n, e, k, frac)
        ]
        med = {m: _median([r for r in group if r["method"] == m], "time_s") for m in METHODS}
        for method in METHODS:
            sub = [r for r in group if r["method"] == method]
            if not sub:
                continue
            t = med[method]
            lines.append(
                f"| {n}x{e} ({k}) | {frac} | {method} | {t:.4f} | {t / med['bare_ortools']:.2f} | "
                f"{_median(sub, 'gap_to_optimum'):.4%} | {_median(sub, 'peak_mb'):.0f} |"
            )
        # Ratios per seed (the same instance, the same run), then their median.
        seeds = sorted({r["seed"] for r in group})
        by = {(r["seed"], r["method"]): r for r in group}
        overhead = statistics.median(by[s, "flow"]["time_s"] / by[s, "bare_ortools"]["time_s"] for s in seeds)
        speedup = statistics.median(by[s, "flow"]["time_s"] / by[s, "greedy"]["time_s"] for s in seeds)
        dense = statistics.median(by[s, "flow_dense"]["time_s"] / by[s, "greedy"]["time_s"] for s in seeds)
        gap = max(by[s, "greedy"]["gap_to_optimum"] for s in seeds)
        fit_mb = group[0]["fitness_mb"]
        peak = max((r["peak_mb"] or 0.0) for r in group if r["method"] not in ("bare_ortools", "flow_dense"))
        targets.append((n, e, k, frac, overhead, speedup, dense, gap, peak, 3 * fit_mb + 200))
    lines += [
        "",
        "## Targets",
        "",
        "| N x E (k) | expert_min frac | flow / bare OR-Tools (<= 1.3) | flow / greedy time (>= 20 at 10000x256) "
        "| dense flow / greedy time | worst greedy gap (<= 0.5% at 10000x256) "
        "| worst peak MB of a method (flow_dense aside) | 3 x fitness + 200 MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, e, k, frac, overhead, speedup, dense, gap, peak, limit in targets:
        lines.append(
            f"| {n}x{e} ({k}) | {frac} | {overhead:.2f} | {speedup:.1f} | {dense:.1f} | {gap:.3%} | {peak:.0f} "
            f"| {limit:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
