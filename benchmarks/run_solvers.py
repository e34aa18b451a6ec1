"""Solver suite: every alignsolve method and the external references, over instance families and sizes.

    python benchmarks/run_solvers.py            # full run, resumable (about an hour on one core)
    python benchmarks/run_solvers.py --quick    # 100x8 .. 1000x32, cap 0.5 s, four families (a few minutes)
    python benchmarks/run_solvers.py --render   # tables and plots from the CSV alone

Methods, all run in the same process on the same instances:

* alignsolve: ``flow``, ``greedy``, ``random``, ``sinkhorn`` (numpy), ``lp`` (cvxpy,
  CLARABEL), ``milp`` (scipy's HiGHS), ``cpsat`` (one worker);
* references written against the external libraries only (``references.py``):
  ``ref_ortools`` (a bare ``SimpleMinCostFlow`` on the same graph), ``ref_milp``
  (``scipy.optimize.milp`` on the dense textbook model), ``ref_linprog`` (the dense LP,
  HiGHS; its value), ``ref_cvxpy`` (the textbook LP in cvxpy; its value), ``ref_pot``
  (POT's ``ot.sinkhorn``: a transport plan without the box ``x <= 1``, not an
  assignment; time only) and ``ref_lsa`` (``linear_sum_assignment`` on the
  slot-expanded matrix, only on the one-expert-per-client family ``single``).

A method runs where it applies (no flow, random or sinkhorn on the budget family, the
unit-variant references only on unit instances). Sizes climb a ladder from 100x8 to
100000x256; a method leaves the ladder of a family after the first size whose seed-0
solve took more than ``--cap`` seconds (3 by default) or where the next size is
predicted to take more than ``--hard`` seconds (60; the prediction scales the last time
by the growth in pairs to the power of the method's fitted exponent, at least 1), so
that "the largest size a method takes on this machine" means within that budget.
Exact methods that can run long (``milp``, ``cpsat``, ``ref_milp``) have a 30 s limit;
a run that hits it is recorded with its status.

Every row is appended to the CSV as soon as it is measured: a crash loses nothing and a
second run resumes where the first stopped (``--fresh`` starts over).

Peak memory comes from a second pass: for every family, size (from ``MEMORY_MIN_PAIRS``
pairs up) and method measured, seed 0 is solved again in a fresh interpreter, which
reports the growth of its peak resident set during the call (``measure.py``), into
``solvers_memory.csv``. In the long timing process the same figure proved unreliable
(memory freed by earlier calls is reused without showing as growth), so the CSV keeps it
as ``peak_mb`` (a lower bound) and the tables and plots use the fresh-process figure.
The timing process re-executes itself with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed at
128 KiB (large freed blocks go back to the system), for every method alike.

Outputs (``--out``, default ``benchmarks/results``): ``solvers.csv`` (one row per
family, size, seed and method), ``solvers.md`` (medians over seeds, fitted exponents,
the Pareto table), ``solvers_time.png`` (time against instance size, log-log, fitted
exponent per method), ``solvers_pareto.png`` (gap to the best against time at 1000x32)
and ``solvers_memory.png`` (peak memory against size). Each figure names the machine
and the command.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from measure import machine_line, timed_peak
from references import (
    bare_min_cost_flow,
    cvxpy_textbook,
    linprog_textbook,
    lsa_slot_expanded,
    pot_sinkhorn,
    scipy_milp_textbook,
)

import alignsolve as als

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = [(100, 8, 2), (300, 16, 2), (1000, 32, 4), (3000, 64, 4), (10000, 128, 8), (30000, 256, 8), (100000, 256, 8)]
QUICK_SIZES = SIZES[:3]
PARETO_SIZE = (1000, 32)
MEMORY_MIN_PAIRS = 100_000  # smaller instances need a few MB at most: not worth a process each
LIMIT_S = 30.0
# name -> (generator family, capacity override or None, expert_min_frac)
FAMILIES = {
    "uniform": ("uniform", None, 0.0),
    "skewed": ("skewed", None, 0.0),
    "lowrank": ("lowrank", None, 0.5),
    "tight": ("tight", None, 0.0),
    "adversarial": ("adversarial", None, 0.0),
    "budget": ("budget", None, 0.0),
    "single": ("uniform", 1, 0.0),
}
QUICK_FAMILIES = ["skewed", "tight", "budget", "single"]
FIELDS = [
    "family",
    "n_clients",
    "n_experts",
    "capacity",
    "seed",
    "method",
    "kind",
    "status",
    "time_s",
    "objective",
    "bound",
    "peak_mb",
    "fitness_mb",
]


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "assignment" (feasible x, verified), "value" (an LP value), "plan" (a fractional plan)
    applies: Callable[[als.Problem], bool]
    run: Callable[[als.Problem, int], tuple[str, float, float | None]]  # (status, objective, bound)
    external: bool = False


def _unit(p: als.Problem) -> bool:
    return not p.is_generalised and not p.load_penalty


def _alignsolve(method: str, **options) -> Callable[[als.Problem, int], tuple[str, float, float | None]]:
    def run(problem: als.Problem, seed: int) -> tuple[str, float, float | None]:
        result = als.solve(problem, method, seed=seed, **options)
        if not result.has_solution:  # a time limit reached before any assignment: recorded as such
            return result.status, math.nan, result.bound
        als.verify(problem, result)
        return result.status, result.objective, result.bound

    return run


def _ref_ortools(problem: als.Problem, seed: int):
    _, objective = bare_min_cost_flow(problem)
    return "optimal", objective, None


def _ref_milp(problem: als.Problem, seed: int):
    value, bound = scipy_milp_textbook(problem, time_limit=LIMIT_S)
    return ("optimal" if bound is not None and value >= bound - 1e-6 * abs(bound) else "time_limit"), value, bound


def _ref_linprog(problem: als.Problem, seed: int):
    value = linprog_textbook(problem)
    return "optimal", value, value


def _ref_cvxpy(problem: als.Problem, seed: int):
    value = cvxpy_textbook(problem)
    return "optimal", value, value


def _ref_pot(problem: als.Problem, seed: int):
    plan = pot_sinkhorn(problem, reg=0.05 * float(np.ptp(problem.fitness)) or 1.0)
    return "plan", float((plan * problem.fitness).sum()), None


def _ref_lsa(problem: als.Problem, seed: int):
    x, objective = lsa_slot_expanded(problem)
    als.verify(problem, x)
    return "optimal", objective, None


def _single(p: als.Problem) -> bool:
    return _unit(p) and bool(np.all(p.client_capacity == 1)) and not p.has_lower_bounds


METHODS = [
    Method("flow", "assignment", lambda p: not p.is_generalised, _alignsolve("flow")),
    Method("greedy", "assignment", lambda p: True, _alignsolve("greedy")),
    Method("random", "assignment", lambda p: not p.is_generalised, _alignsolve("random")),
    Method("sinkhorn", "assignment", lambda p: not p.is_generalised, _alignsolve("sinkhorn")),
    Method("lp", "assignment", lambda p: True, _alignsolve("lp", solver="CLARABEL")),
    Method("milp", "assignment", lambda p: True, _alignsolve("milp", time_limit=LIMIT_S)),
    Method("cpsat", "assignment", lambda p: True, _alignsolve("cpsat", time_limit=LIMIT_S, workers=1)),
    Method("ref_ortools", "assignment", _unit, _ref_ortools, external=True),
    Method("ref_milp", "assignment", lambda p: not p.load_penalty, _ref_milp, external=True),
    Method("ref_linprog", "value", _unit, _ref_linprog, external=True),
    Method("ref_cvxpy", "value", _unit, _ref_cvxpy, external=True),
    Method("ref_pot", "plan", _unit, _ref_pot, external=True),
    Method("ref_lsa", "assignment", _single, _ref_lsa, external=True),
]
BY_NAME = {m.name: m for m in METHODS}


def make_problem(family: str, n: int, e: int, k: int, seed: int) -> als.Problem:
    gen, cap, frac = FAMILIES[family]
    return als.generate(gen, n, e, cap or k, seed=seed, expert_min_frac=frac)


def _key(row: dict) -> tuple:
    return (row["family"], int(row["n_clients"]), int(row["n_experts"]), int(row["seed"]), row["method"])


def fitted_exponent(pairs: list[float], times: list[float], floor: float = 5e-3) -> float | None:
    """Least-squares slope of log(time) on log(N E), over sizes whose time is above ``floor`` seconds
    (below it, fixed overheads dominate); None with fewer than two such sizes."""
    pts = [(math.log(p), math.log(t)) for p, t in zip(pairs, times, strict=True) if t >= floor]
    if len(pts) < 2:
        return None
    x = np.array([a for a, _ in pts])
    y = np.array([b for _, b in pts])
    return float(np.polyfit(x, y, 1)[0])


def still_climbing(
    rows: dict[tuple, dict], family: str, method: str, sizes: list, index: int, cap: float, hard: float
) -> bool:
    """Whether ``method`` runs at ``sizes[index]`` of ``family``: the ladder rule of the module docstring,
    computed from the rows measured so far (so a resumed run decides as the first would have)."""
    history = []
    for n, e, _ in sizes[:index]:
        row = rows.get((family, n, e, 0, method))
        if row is None:
            continue
        if row["status"].startswith("error"):
            return False
        history.append((n * e, float(row["time_s"])))
    if not history:
        return True
    last_pairs, last_time = history[-1]
    if last_time > cap:
        return False
    slope = fitted_exponent([p for p, _ in history], [t for _, t in history]) or 1.0
    n, e, _ = sizes[index]
    predicted = last_time * (n * e / last_pairs) ** max(slope, 1.0)
    return predicted <= hard


def load_rows(path: Path) -> dict[tuple, dict]:
    if not path.exists():
        return {}
    with open(path, newline="") as fh:
        return {_key(r): r for r in csv.DictReader(fh)}


def measure(method: Method, problem: als.Problem, seed: int) -> dict:
    try:
        (status, objective, bound), elapsed, peak = timed_peak(method.run, problem, seed)
    except MemoryError:
        return dict(status="error: out of memory", time_s=math.nan, objective=math.nan, bound=None, peak_mb=None)
    except Exception as exc:  # recorded (the method leaves the ladder) rather than losing the run
        status = f"error: {type(exc).__name__}: {exc}"[:200].replace("\n", " ")
        return dict(status=status, time_s=math.nan, objective=math.nan, bound=None, peak_mb=None)
    return dict(status=status, time_s=elapsed, objective=objective, bound=bound, peak_mb=peak)


def warm_up() -> None:
    """Compile numba kernels and import every backend outside the timings (ortools before cvxpy)."""
    problem = als.generate("uniform", 30, 6, 2, seed=0, expert_min_frac=0.5)
    for m in METHODS:
        if m.applies(problem) and m.name != "ref_lsa":
            m.run(problem, 0)
    single = make_problem("single", 30, 6, 1, 0)
    BY_NAME["ref_lsa"].run(single, 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="sizes up to 1000x32 and four families")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--families", nargs="+", choices=sorted(FAMILIES), help="default: all (quick: four)")
    ap.add_argument("--methods", nargs="+", choices=[m.name for m in METHODS], help="default: all")
    ap.add_argument("--cap", type=float, help="seconds of a seed-0 solve after which a method stops (3; quick: 0.5)")
    ap.add_argument("--hard", type=float, help="largest predicted seconds for the next size (60; quick: 3)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--fresh", action="store_true", help="discard the CSV's rows and start over")
    ap.add_argument("--render", action="store_true", help="only render tables and plots from the CSVs")
    ap.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory pass")
    ap.add_argument("--measure-one", nargs=5, metavar=("FAMILY", "N", "E", "K", "METHOD"), help=argparse.SUPPRESS)
    from_cli = argv is None
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    if args.measure_one:
        family, n, e, k, method = args.measure_one
        print(measure_one(family, int(n), int(e), int(k), method))
        return 0

    if from_cli and not args.render and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
        os.execve(sys.executable, [sys.executable, __file__, *argv], env)

    sizes = QUICK_SIZES if args.quick else SIZES
    if args.cap is None:
        args.cap = 0.5 if args.quick else 3.0
    if args.hard is None:
        args.hard = 3.0 if args.quick else 60.0
    families = args.families or (QUICK_FAMILIES if args.quick else list(FAMILIES))
    methods = [m for m in METHODS if args.methods is None or m.name in args.methods]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "solvers_quick" if args.quick else "solvers"
    csv_path = args.out / f"{stem}.csv"
    if args.fresh and csv_path.exists():
        csv_path.unlink()
    rows = load_rows(csv_path)
    command = "python benchmarks/run_solvers.py" + (" " + " ".join(argv) if argv else "")
    if args.render:  # keep the command that measured the rows
        md_old = csv_path.with_suffix(".md")
        found = re.search(r"Command: `([^`]*)`", md_old.read_text()) if md_old.exists() else None
        command = found.group(1) if found else "python benchmarks/run_solvers.py"

    if not args.render:
        warm_up()
        new_file = not csv_path.exists()
        with open(csv_path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            if new_file:
                writer.writeheader()
            run_ladder(args, sizes, families, methods, rows, writer, fh)

    rows = load_rows(csv_path)
    mem_path = args.out / f"{stem}_memory.csv"
    if not args.render and not args.no_memory:
        memory_pass(rows, mem_path, sizes)
    memory = load_memory(mem_path)
    md = render_markdown(list(rows.values()), sizes, families, command, memory)
    md_path = csv_path.with_suffix(".md")
    md_path.write_text(md)
    render_plots(list(rows.values()), families, args.out, stem, command, memory)
    print(f"\nwritten {csv_path}, {md_path} and {stem}_*.png")
    return 0


def measure_one(family: str, n: int, e: int, k: int, method: str) -> float | None:
    """Peak MB of one seed-0 solve, in this (fresh) interpreter, after a warm-up of the method alone."""
    m = BY_NAME[method]
    tiny = make_problem(family, 30, 6, 2, 0)
    if m.applies(tiny):
        m.run(tiny, 0)  # imports and compiled kernels outside the measurement
    problem = make_problem(family, n, e, k, 0)
    return timed_peak(m.run, problem, 0)[2]


def load_memory(path: Path) -> dict[tuple, float]:
    if not path.exists():
        return {}
    with open(path, newline="") as fh:
        return {
            (r["family"], int(r["n_clients"]), int(r["n_experts"]), r["method"]): float(r["peak_mb"])
            for r in csv.DictReader(fh)
            if r["peak_mb"] not in ("", "None")
        }


def memory_pass(rows: dict[tuple, dict], path: Path, sizes: list) -> None:
    """Fresh-process peak memory of every seed-0 cell from ``MEMORY_MIN_PAIRS`` pairs up (resumable)."""
    done = load_memory(path)
    capacity = {(n, e): k for n, e, k in sizes}
    cells = sorted(
        {
            (r["family"], int(r["n_clients"]), int(r["n_experts"]), r["method"])
            for r in rows.values()
            if r["seed"] == "0" and int(r["n_clients"]) * int(r["n_experts"]) >= MEMORY_MIN_PAIRS
        }
        - set(done)
    )
    new_file = not path.exists()
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["family", "n_clients", "n_experts", "method", "peak_mb"])
        if new_file:
            writer.writeheader()
        for family, n, e, method in cells:
            k = capacity.get((n, e))
            if k is None:
                continue
            out = subprocess.run(
                [sys.executable, __file__, "--measure-one", family, str(n), str(e), str(k), method],
                capture_output=True,
                text=True,
                # glibc's dynamic mmap threshold would let the solve reuse heap memory that building the
                # instance freed, hiding allocations below 32 MB; a fixed threshold keeps them visible.
                env=dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072"),
            )
            value = out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else ""
            peak = None if value in ("", "None") else float(value)
            writer.writerow(dict(family=family, n_clients=n, n_experts=e, method=method, peak_mb=peak))
            fh.flush()
            print(f"memory {family:<11} {n:>6}x{e:<4} {method:<12} {peak} MB", flush=True)


def run_ladder(args, sizes, families, methods, rows, writer, fh) -> None:
    started = time.perf_counter()
    for family in families:
        for index, (n, e, k) in enumerate(sizes):
            active = [m for m in methods if still_climbing(rows, family, m.name, sizes, index, args.cap, args.hard)]
            if not active:
                break
            for seed in range(args.seeds):
                todo = [m for m in active if (family, n, e, seed, m.name) not in rows]
                if not todo:
                    continue
                problem = make_problem(family, n, e, k, seed)
                for method in todo:
                    if not method.applies(problem):
                        continue
                    row = dict(
                        family=family,
                        n_clients=n,
                        n_experts=e,
                        capacity=int(problem.client_capacity.max()),
                        seed=seed,
                        method=method.name,
                        kind=method.kind,
                        fitness_mb=problem.fitness.nbytes / 2**20,
                        **measure(method, problem, seed),
                    )
                    writer.writerow(row)
                    fh.flush()
                    rows[_key(row)] = {key: str(value) for key, value in row.items()}
                    peak = "n/a" if row["peak_mb"] is None else f"{row['peak_mb']:.0f} MB"
                    print(
                        f"[{time.perf_counter() - started:7.0f} s] {family:<11} {n:>6}x{e:<4} seed {seed} "
                        f"{method.name:<12} {row['time_s']:9.4f} s  {row['status']:<10} {peak}",
                        flush=True,
                    )


def _float(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def summarise(rows: list[dict], memory: dict[tuple, float] | None = None) -> dict[tuple, dict]:
    """Medians over seeds per (family, n, e, method): time, gap to the best assignment of the same instance;
    ``peak``: the fresh-process peak MB of seed 0 from ``memory`` (None where not measured)."""
    # The reference of a gap: flow's exact optimum on the unit variant (no gap where flow did not run), the best
    # assignment any method found on the budget family (flow does not apply there).
    best: dict[tuple, float] = {}
    for r in rows:
        obj = _float(r["objective"])
        if obj is None or r["kind"] != "assignment":
            continue
        if r["family"] == "budget" or r["method"] == "flow":
            inst = (r["family"], int(r["n_clients"]), int(r["n_experts"]), int(r["seed"]))
            best[inst] = max(best.get(inst, -math.inf), obj)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["family"], int(r["n_clients"]), int(r["n_experts"]), r["method"]), []).append(r)
    out = {}
    for key, group in groups.items():
        gaps, times = [], []
        for r in group:
            t = _float(r["time_s"])
            if t is not None:
                times.append(t)
            obj = _float(r["objective"])
            ref = best.get((r["family"], int(r["n_clients"]), int(r["n_experts"]), int(r["seed"])))
            if r["kind"] == "assignment" and obj is not None and ref:
                gaps.append((ref - obj) / abs(ref))
        out[key] = dict(
            seeds=len(group),
            time=statistics.median(times) if times else None,
            peak=(memory or {}).get(key),
            gap=statistics.median(gaps) if gaps else None,
            statuses=sorted({r["status"] for r in group}),
            kind=group[0]["kind"],
        )
    return out


def exponents(summary: dict[tuple, dict], family: str, method: str) -> tuple[float | None, list, list]:
    points = sorted((n * e, s["time"]) for (f, n, e, m), s in summary.items() if f == family and m == method)
    points = [(p, t) for p, t in points if t is not None]
    pairs = [p for p, _ in points]
    times = [t for _, t in points]
    return fitted_exponent(pairs, times), pairs, times


def exact_violations(rows: list[dict]) -> list[str]:
    """Instances where any assignment beats ``flow`` (the exact optimum on the unit variant), or an LP value or a
    bound falls below it: each would break a guarantee of DESIGN.md."""
    flow = {
        (r["family"], r["n_clients"], r["n_experts"], r["seed"]): float(r["objective"])
        for r in rows
        if r["method"] == "flow"
    }
    out = []
    for r in rows:
        ref = flow.get((r["family"], r["n_clients"], r["n_experts"], r["seed"]))
        obj = _float(r["objective"])
        if ref is None or obj is None or r["method"] == "flow" or r["kind"] == "plan":
            continue
        tol = 1e-6 * max(1.0, abs(ref))
        if r["kind"] == "assignment" and obj > ref + tol:
            out.append(f"{r['method']} beats flow on {r['family']} {r['n_clients']}x{r['n_experts']} seed {r['seed']}")
        bound = _float(r["bound"])
        if bound is not None and bound < ref - tol:
            out.append(
                f"{r['method']}'s bound is below flow's optimum on {r['family']} {r['n_clients']}x"
                f"{r['n_experts']} seed {r['seed']}"
            )
    return out


def render_markdown(rows: list[dict], sizes, families, command: str, memory: dict[tuple, float]) -> str:
    summary = summarise(rows, memory)
    lines = [
        "# Solver suite",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d} on {machine_line()}, alignsolve {als.__version__}; "
        f"one process, methods one after the other on the same instances. Command: `{command}`.",
        "",
        "Medians over seeds. Gap: (reference - objective) / reference on the same instance, where the reference is "
        "`flow`'s exact optimum (blank where `flow` did not run at that size), and on `budget`, where `flow` does "
        "not apply, the best assignment any method found (which the exact methods may not have proven). "
        "Value rows (`ref_linprog`, `ref_cvxpy`) are LP values, equal to the optimum on the unit variant; "
        "`ref_pot` is a plan without the box, timed only. "
        "Largest: the largest N x E a method reached under the ladder rule (`run_solvers.py`'s docstring). "
        "Exponent: slope of log time on log(N E) over the sizes above 5 ms.",
        "",
    ]
    violations = exact_violations(rows)
    lines += [
        "Guarantee check over every instance: "
        + ("no assignment beats `flow` and no bound falls below it." if not violations else "; ".join(violations)),
        "",
    ]
    for family in families:
        gen, cap, frac = FAMILIES[family]
        fam_rows = [r for r in rows if r["family"] == family]
        if not fam_rows:
            continue
        lines += [
            f"## {family}",
            "",
            f"Generator `{gen}`" + (f", capacity {cap}" if cap else "") + f", expert_min_frac {frac}: "
            f"{als.FAMILIES[gen]}.",
            "",
            "| method | largest N x E | exponent | "
            + " | ".join(f"{n}x{e} time (s)" for n, e, _ in sizes)
            + f" | gap at {PARETO_SIZE[0]}x{PARETO_SIZE[1]} | gap at largest | peak MB at largest (fresh process) |",
            "|---|---|---|" + "---|" * len(sizes) + "---|---|---|",
        ]
        for m in METHODS:
            cells = [summary.get((family, n, e, m.name)) for n, e, _ in sizes]
            if not any(cells):
                continue
            last_index = max(i for i, c in enumerate(cells) if c)
            last = cells[last_index]
            n_last, e_last, _ = sizes[last_index]
            slope, _, _ = exponents(summary, family, m.name)
            pareto = summary.get((family, *PARETO_SIZE, m.name))
            times = " | ".join("" if c is None or c["time"] is None else f"{c['time']:.4g}" for c in cells)
            slope_text = "" if slope is None else f"{slope:.2f}"
            peak_text = "" if last["peak"] is None else f"{last['peak']:.0f}"
            lines.append(
                f"| {m.name} | {n_last}x{e_last} | {slope_text} | {times} | "
                f"{_pct(pareto)} | {_pct(last)} | {peak_text} |"
            )
        odd = sorted(
            {
                f"{m} at {n}x{e}: {', '.join(s['statuses'])}"
                for (f, n, e, m), s in summary.items()
                if f == family and set(s["statuses"]) - {"optimal", "feasible", "plan"}
            }
        )
        if odd:
            lines += ["", "Statuses other than optimal/feasible: " + "; ".join(odd) + "."]
        lines.append("")
    return "\n".join(lines)


def _pct(cell: dict | None) -> str:
    if cell is None or cell["gap"] is None:
        return ""
    return f"{cell['gap']:.3%}"


COLOURS = {
    "flow": "#1f77b4",
    "greedy": "#2ca02c",
    "random": "#7f7f7f",
    "sinkhorn": "#9467bd",
    "lp": "#8c564b",
    "milp": "#e377c2",
    "cpsat": "#17becf",
    "ref_ortools": "#ff7f0e",
    "ref_milp": "#d62728",
    "ref_linprog": "#bcbd22",
    "ref_cvxpy": "#393b79",
    "ref_pot": "#637939",
    "ref_lsa": "#843c39",
}


def render_plots(
    rows: list[dict], families: list[str], out: Path, stem: str, command: str, memory: dict[tuple, float]
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install 'alignsolve[plot]')")
        return
    summary = summarise(rows, memory)
    families = [f for f in families if any(r["family"] == f for r in rows)]
    caption = f"{machine_line()}; {command}"
    cols = min(4, len(families))
    grid = math.ceil(len(families) / cols)

    for what, ylabel, suffix in (
        ("time", "median seconds", "time"),
        ("peak", "peak MB (fresh process)", "memory"),
    ):
        fig, axes = plt.subplots(grid, cols, figsize=(4.2 * cols, 3.6 * grid), squeeze=False)
        for ax, family in zip(axes.flat, families, strict=False):
            for m in METHODS:
                pts = sorted(
                    (n * e, s[what])
                    for (f, n, e, name), s in summary.items()
                    if f == family and name == m.name and s[what] is not None and s[what] > 0
                )
                if not pts:
                    continue
                label = m.name
                if what == "time":
                    slope, _, _ = exponents(summary, family, m.name)
                    label += f" ({slope:.2f})" if slope is not None else ""
                ax.plot(
                    *zip(*pts, strict=True),
                    marker="o",
                    ms=3,
                    lw=1.2,
                    color=COLOURS[m.name],
                    ls="--" if m.external else "-",
                    label=label,
                )
            ax.set(xscale="log", yscale="log", title=family, xlabel="N x E (pairs)", ylabel=ylabel)
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(fontsize=6, ncol=2)
        for ax in list(axes.flat)[len(families) :]:
            ax.axis("off")
        title = "Solve time against size (exponent in brackets)" if what == "time" else "Peak memory against size"
        fig.suptitle(f"{title}; dashed: external references", fontsize=10)
        fig.text(0.5, 0.005, caption, ha="center", fontsize=7)
        fig.tight_layout(rect=(0, 0.02, 1, 0.97))
        fig.savefig(out / f"{stem}_{suffix}.png", dpi=120)
        plt.close(fig)

    fig, axes = plt.subplots(grid, cols, figsize=(4.2 * cols, 3.6 * grid), squeeze=False)
    floor = 1e-5
    for ax, family in zip(axes.flat, families, strict=False):
        pts = []
        for m in METHODS:
            s = summary.get((family, *PARETO_SIZE, m.name))
            if s is None or s["gap"] is None or s["time"] is None:
                continue
            gap = max(s["gap"], floor)
            pts.append((s["time"], gap, m.name))
            ax.scatter(s["time"], gap, color=COLOURS[m.name], marker="s" if m.external else "o", s=28)
            ax.annotate(m.name, (s["time"], gap), fontsize=6, xytext=(3, 3), textcoords="offset points")
        front, best_gap = [], math.inf
        for t, g, _ in sorted(pts):
            if g < best_gap:
                front.append((t, g))
                best_gap = g
        if front:
            ax.step(*zip(*front, strict=True), where="post", color="k", lw=0.8, alpha=0.6)
        ax.set(
            xscale="log",
            yscale="log",
            title=f"{family}, {PARETO_SIZE[0]}x{PARETO_SIZE[1]}",
            xlabel="median seconds",
            ylabel=f"gap to best (floored at {floor:g})",
        )
        ax.grid(True, which="major", alpha=0.3)
    for ax in list(axes.flat)[len(families) :]:
        ax.axis("off")
    fig.suptitle("Optimality gap against time; the line is the Pareto front; squares: external references", fontsize=10)
    fig.text(0.5, 0.005, caption, ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    fig.savefig(out / f"{stem}_pareto.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
