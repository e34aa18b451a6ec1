"""Relaxation and exact-backend benchmark (issue 3), with external references in the same run.

    python benchmarks/run_relaxations.py           # a few minutes on 2 cores
    python benchmarks/run_relaxations.py --quick   # small sizes, a smoke test
    python benchmarks/run_relaxations.py --cuda    # on a GPU: sinkhorn at 781,250 x 256 (k = 8)

Writes ``benchmarks/results/relaxations.csv`` and ``relaxations.md``. Every ratio is
measured in this one run (the machine is shared and noisy):

* unit variant, skewed family: ``flow`` (the optimum), ``sinkhorn`` on numpy (gap to
  the optimum, its certified bound), ``lp`` with CLARABEL and SCIPY, ``milp``, ``cpsat``,
  and the references cvxpy-textbook LP and ``scipy.optimize.milp`` on the dense model;
* POT's ``ot.sinkhorn`` on the balanced transport without the box ``x <= 1``: how much
  of its plan puts more than one unit of a client on one expert (why it is the wrong
  relaxation when clients hold several experts);
* generalised variant (``budget`` family, 1000 x 64, k = 4): ``cpsat`` with a 30 s limit on
  2 workers (proven gap; with its Lagrangian phase, the default, and without it),
  ``milp`` with the same limit, ``lp``, ``greedy``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from references import cvxpy_textbook, pot_sinkhorn, scipy_milp_textbook

import alignsolve as als

RESULTS = Path(__file__).resolve().parent / "results"


#: The GPU target's instance: the most clients ``generate`` builds densely at 256 experts (its cap,
#: ``alignsolve.generators.MAX_DENSE_CELLS``, is 2e8 cells; 1,000,000 x 256 was asked before the cap and refused).
CUDA_SIZE = (781_250, 256, 8)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def unit_rows(n: int, e: int, k: int, heavy: bool) -> list[dict]:
    problem = als.generate("skewed", n, e, k, seed=0)
    flow, t_flow = timed(als.solve, problem, "flow")
    opt = flow.objective
    rows = [dict(variant="unit", size=f"{n}x{e}", method="flow", objective=opt, bound=flow.bound, seconds=t_flow)]
    runs = [("sinkhorn", {}), ("greedy", {})]
    if heavy:
        runs += [
            ("lp", {"solver": "CLARABEL"}),
            ("lp", {"solver": "SCIPY"}),
            ("milp", {}),
            ("cpsat", {"workers": 2, "time_limit": 60.0}),
        ]
    for method, opts in runs:
        res, t = timed(als.solve, problem, method, **opts)
        als.verify(problem, res)
        label = method + (f"[{opts['solver']}]" if "solver" in opts else "")
        rows.append(
            dict(variant="unit", size=f"{n}x{e}", method=label, objective=res.objective, bound=res.bound, seconds=t)
        )
    if heavy:
        value, t = timed(cvxpy_textbook, problem)
        rows.append(
            dict(
                variant="unit", size=f"{n}x{e}", method="ref:cvxpy-textbook-LP", objective=value, bound=value, seconds=t
            )
        )
        (value, bound), t = timed(scipy_milp_textbook, problem)
        rows.append(
            dict(variant="unit", size=f"{n}x{e}", method="ref:scipy-milp", objective=value, bound=bound, seconds=t)
        )
    for r in rows:
        r["gap_to_opt_pct"] = 100 * (opt - r["objective"]) / abs(opt)
        r["ratio_to_flow"] = r["seconds"] / t_flow
    return rows


def cuda_rows(n: int, e: int, k: int) -> list[dict]:
    """``sinkhorn`` on torch CUDA (float32) against ``flow`` on CPU, on one skewed instance."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--cuda needs a CUDA GPU, and torch sees none")
    als.solve(als.generate("skewed", 2000, 64, 4, seed=1), "sinkhorn", device="cuda")  # CUDA context, kernels
    problem = als.generate("skewed", n, e, k, seed=0)
    gpu, t_gpu = timed(als.solve, problem, "sinkhorn", device="cuda")
    als.verify(problem, gpu)
    flow, t_flow = timed(als.solve, problem, "flow")
    size = f"{n}x{e}"
    return [
        dict(variant="unit", size=size, method="flow", objective=flow.objective, bound=flow.bound, seconds=t_flow),
        dict(
            variant="unit",
            size=size,
            method=f"sinkhorn[cuda: {torch.cuda.get_device_name(0)}]",
            objective=gpu.objective,
            bound=gpu.bound,
            seconds=t_gpu,
            gap_to_opt_pct=100 * (flow.objective - gpu.objective) / abs(flow.objective),
            proven_gap_pct=None if gpu.gap is None else 100 * gpu.gap,
            ratio_to_flow=t_gpu / t_flow,
        ),
    ]


def pot_rows(n: int, e: int, k: int) -> list[dict]:
    problem = als.generate("skewed", n, e, k, seed=0)
    spread = float(problem.fitness.max() - problem.fitness.min())
    plan, t = timed(pot_sinkhorn, problem, 1e-2 * spread)
    over = plan > 1 + 1e-6
    return [
        dict(
            variant="unit",
            size=f"{n}x{e}",
            method="ref:POT-ot.sinkhorn",
            seconds=t,
            max_entry=float(plan.max()),
            mass_above_one_pct=100 * float((plan[over] - 1).sum() / plan.sum()),
            pairs_above_one=int(over.sum()),
        )
    ]


def generalised_rows(n: int, e: int, k: int, limit: float) -> list[dict]:
    problem = als.generate("budget", n, e, k, seed=0)
    rows = []
    for label, method, opts in [
        ("greedy", "greedy", {}),
        ("lp", "lp", {}),
        ("cpsat", "cpsat", {"workers": 2, "time_limit": limit}),
        ("cpsat[lagrangian=False]", "cpsat", {"workers": 2, "time_limit": limit, "lagrangian": False}),
        ("milp", "milp", {"time_limit": limit}),
    ]:
        res, t = timed(als.solve, problem, method, **opts)
        if res.has_solution:
            als.verify(problem, res)
        rows.append(
            dict(
                variant="generalised",
                size=f"{n}x{e}",
                method=label,
                status=res.status,
                objective=res.objective,
                bound=res.bound,
                proven_gap_pct=None if res.gap is None else 100 * res.gap,
                seconds=t,
            )
        )
    best = max(r["objective"] for r in rows)
    for r in rows:
        r["gap_to_best_pct"] = 100 * (best - r["objective"]) / abs(best)
    return rows


def fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.1f}"
    return str(v)


def main() -> None:
    global RESULTS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--cuda",
        action="store_true",
        help="only the GPU target: sinkhorn on CUDA at 781,250 x 256 (relaxations_cuda.*)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    args = ap.parse_args()
    RESULTS = args.out
    als.solve(als.generate("skewed", 50, 8, 2), "greedy")  # compile the numba kernels
    if args.cuda:
        rows = cuda_rows(*CUDA_SIZE)
    elif args.quick:
        rows = unit_rows(500, 32, 4, heavy=True) + pot_rows(300, 16, 3) + generalised_rows(200, 16, 3, 5.0)
    else:
        rows = (
            unit_rows(2000, 64, 4, heavy=True)
            + unit_rows(10000, 256, 8, heavy=False)
            + pot_rows(2000, 64, 4)
            + generalised_rows(1000, 64, 4, 30.0)
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "relaxations_cuda" if args.cuda else "relaxations_quick" if args.quick else "relaxations"
    keys = sorted({k for r in rows for k in r})
    with open(RESULTS / f"{stem}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    flag = " --quick" if args.quick else " --cuda" if args.cuda else ""
    cols = ["variant", "size", "method", "status", "objective", "bound", "gap_to_opt_pct", "gap_to_best_pct"]
    cols += ["proven_gap_pct", "seconds", "ratio_to_flow", "max_entry", "mass_above_one_pct", "pairs_above_one"]
    lines = [
        f"# Relaxation benchmark ({datetime.now(timezone.utc):%Y-%m-%d}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores)",
        "",
        f"Command: `python benchmarks/run_relaxations.py{flag}`. One run, seed 0.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
