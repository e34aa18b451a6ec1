"""Scale benchmark: the sparse (candidate-list) form from a thousand to a million clients.

    python benchmarks/run_scale.py            # the grid below and the targets (about 40 minutes)
    python benchmarks/run_scale.py --quick    # small sizes, a smoke test

Instances come from :func:`alignsolve.generate_sparse` (the ``lowrank`` model over 16
latent domains, each client keeping its ``m`` best experts; k = 4, expert_max =
ceil(1.1 N k / E)). Each measurement runs in a fresh interpreter pinned to one CPU core
(``os.sched_setaffinity``): it builds the instance, warms the method up on a small one
(numba compilation), then times one solve; a second fresh interpreter repeats it to read
the growth of its peak resident set (``measure.py``; glibc's mmap threshold is fixed at
128 KiB there so that memory freed while building the instance cannot hide the solve's
allocations, which would distort the time, hence two children); "peak" therefore counts
what the solve allocates, not the instance, whose own size is the "instance MB" column.

Methods: ``greedy``, ``flow`` (the exact sparse optimum) and ``sinkhorn`` (numpy, one
core); with ``--cuda`` also ``sinkhorn`` on the GPU (``sinkhorn_cuda``) at every size
and at the GPU target's instance (N = 1e6, E = 4096, m = 64).

Grid: N from 1e3 to 1e6 at E = 1024, m = 32; E from 64 to 4096 at N = 1e5, m = 32 (m = 64
where it fits the row); m from 8 to 64 at N = 1e5, E = 1024. ``flow`` and ``sinkhorn``
are measured where their previous size on the same axis took under ``--cap`` seconds. Where the dense
problem still fits (N E <= 2.6e6), the dense optimum (``flow`` on the dense matrix of the
same fitness) gives the gap of the sparse optimum and of sparse greedy.

Writes ``scale.csv``, ``scale.md`` and ``scale.png`` (time and peak memory against N E)
under ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from measure import machine_line, timed_peak

import alignsolve as als

RESULTS = Path(__file__).resolve().parent / "results"
K = 4
GRID = (
    [("N", n, 1024, 32) for n in (1_000, 10_000, 100_000, 1_000_000)]
    + [("E", 100_000, e, min(32, e)) for e in (64, 256, 4096)]
    + [("m", 100_000, 1024, m) for m in (8, 64)]
    + [("gap", 10_000, 256, m) for m in (8, 32, 64)]
)
QUICK_GRID = [("N", n, 256, 16) for n in (1_000, 10_000)] + [("gap", 2_000, 64, m) for m in (8, 32)]
GPU_POINT = ("gpu", 1_000_000, 4096, 64)  # the GPU target's instance (only with --cuda)
DENSE_PAIRS = 2_600_000
TARGETS = {"greedy": 5.0, "flow": 60.0}
CAPPED = ("flow", "sinkhorn")  # methods measured only while their previous size on the axis stayed under --cap


def child(n: int, e: int, m: int, method: str) -> dict:
    """One measurement (run in a fresh interpreter)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    name, options = {"dense_flow": ("flow", {}), "sinkhorn_cuda": ("sinkhorn", {"device": "cuda"})}.get(
        method, (method, {})
    )
    warm = als.generate_sparse(200, 16, 2, 8, seed=1, dense=method == "dense_flow")
    als.solve(warm, name, **options)
    if method == "dense_flow":
        problem = als.generate_sparse(n, e, K, m, seed=0, dense=True)
        result, seconds, peak = timed_peak(als.solve, problem, "flow")
        instance_mb = problem.fitness.nbytes / 2**20
    else:
        problem = als.generate_sparse(n, e, K, m, seed=0)
        result, seconds, peak = timed_peak(als.solve, problem, name, **options)
        als.verify(problem, result)
        instance_mb = problem.nbytes / 2**20
    return dict(
        seconds=seconds,
        peak_mb=peak,
        objective=result.objective,
        status=result.status,
        instance_mb=instance_mb,
        pricing_rounds=result.stats.get("pricing_rounds"),
        arcs=result.stats.get("arcs"),
        bound=result.bound,
        sweeps=result.stats.get("sweeps"),
        device=result.stats.get("device"),
    )


def run_child(n: int, e: int, m: int, method: str, timeout: float) -> dict:
    """Time in one fresh interpreter, peak memory in another.

    The memory child fixes glibc's mmap threshold at 128 KiB so that heap memory freed
    while building the instance cannot serve the solve (the dynamic threshold would hide
    allocations below 32 MB); but then every large temporary is a fresh mmap with its page
    faults, which slowed ``sinkhorn`` 2.6x and ``greedy`` 1.4x, so the time comes from a
    child with the default allocator.
    """
    timed = _one_child(n, e, m, method, timeout, {})
    if "seconds" not in timed:
        return timed
    memory = _one_child(n, e, m, method, timeout, {"MALLOC_MMAP_THRESHOLD_": "131072"})
    timed["peak_mb"] = memory.get("peak_mb")
    return timed


def _one_child(n: int, e: int, m: int, method: str, timeout: float, env: dict[str, str]) -> dict:
    cmd = [sys.executable, __file__, "--child", str(n), str(e), str(m), method]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **env))
    except subprocess.TimeoutExpired:
        return dict(status=f"timeout after {timeout:.0f} s")
    if out.returncode != 0:
        return dict(status="error: " + (out.stderr.strip().splitlines() or ["?"])[-1][:120])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--cap", "--flow-cap", type=float, default=60.0, help="seconds at the previous size that stop flow/sinkhorn"
    )
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument(
        "--methods",
        nargs="+",
        choices=["greedy", "flow", "sinkhorn", "sinkhorn_cuda", "dense_flow"],
        help="default: all",
    )
    ap.add_argument("--cuda", action="store_true", help="add sinkhorn on the GPU (every size and the GPU target)")
    ap.add_argument("--render", action="store_true", help="only redraw the table and plot from the CSV")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        n, e, m, method = args.child
        print(json.dumps(child(int(n), int(e), int(m), method)))
        return 0
    grid = (QUICK_GRID if args.quick else GRID) + ([GPU_POINT] if args.cuda and not args.quick else [])
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "scale_quick" if args.quick else "scale"
    # Rows of an earlier run stay unless this run measures the same point again (``--methods`` re-runs some).
    previous = _load(args.out / f"{stem}.csv")
    if args.render:
        md = args.out / f"{stem}.md"
        found = re.search(r"Command: `([^`]*)`", md.read_text()) if md.exists() else None
        command = found.group(1) if found else "python benchmarks/run_scale.py"
        md.write_text(render(list(previous.values()), command))
        plot(list(previous.values()), args.out / f"{stem}.png", command)
        return 0
    rows: list[dict] = []
    last: dict[tuple[str, str], float] = {}
    for axis, n, e, m in grid:
        methods = ["greedy", "flow", "sinkhorn"] if axis != "gpu" else []
        if args.cuda:
            methods.append("sinkhorn_cuda")
        if n * e <= DENSE_PAIRS:
            methods.append("dense_flow")
        for method in methods:
            if args.methods and method not in args.methods:
                old = previous.get((axis, n, e, m, method))
                if old is not None:
                    rows.append(old)
                    if method in CAPPED and "seconds" in old:
                        last[axis, method] = old["seconds"]
                continue
            # The smoke test keeps the capped methods to their first size on an axis.
            cap = 0.25 if args.quick else args.cap
            if method in CAPPED and last.get((axis, method), 0.0) > cap:
                continue
            res = run_child(n, e, m, method, args.timeout)
            if method in CAPPED and "seconds" in res:
                last[axis, method] = res["seconds"]
            row = dict(axis=axis, n_clients=n, n_experts=e, m=m, capacity=K, method=method, **res)
            rows.append(row)
            print(
                f"{axis:<4} N={n:>8} E={e:<5} m={m:<3} {method:<10} "
                + (f"{res['seconds']:8.2f} s  peak {res['peak_mb']:.0f} MB" if "seconds" in res else res["status"]),
                flush=True,
            )
    order = ["axis", "n_clients", "n_experts", "m", "capacity", "method", "status", "seconds", "peak_mb"]
    order += ["objective", "bound", "instance_mb", "pricing_rounds", "arcs", "sweeps", "device"]
    fields = order + sorted({key for r in rows for key in r} - set(order))
    with open(args.out / f"{stem}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    command = "python benchmarks/run_scale.py" + (
        " " + " ".join(argv or sys.argv[1:]) if (argv or sys.argv[1:]) else ""
    )
    (args.out / f"{stem}.md").write_text(render(rows, command))
    plot(rows, args.out / f"{stem}.png", command)
    print((args.out / f"{stem}.md").read_text())
    return 0


def _load(path: Path) -> dict[tuple, dict]:
    if not path.exists():
        return {}
    out = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            row: dict = {}
            for key, value in r.items():
                if value == "":
                    continue
                if key in ("n_clients", "n_experts", "m", "capacity", "arcs", "pricing_rounds", "sweeps"):
                    row[key] = int(float(value))
                elif key in ("seconds", "peak_mb", "objective", "instance_mb", "bound"):
                    row[key] = float(value)
                else:
                    row[key] = value
            out[(row["axis"], row["n_clients"], row["n_experts"], row["m"], row["method"])] = row
    return out


def _fit(points: list[tuple[float, float]]) -> float | None:
    pts = [(math.log(x), math.log(y)) for x, y in points if y and y > 1e-3]
    if len(pts) < 2:
        return None
    return float(np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)[0])


def render(rows: list[dict], command: str) -> str:
    dense = {
        (r["n_clients"], r["n_experts"]): r["objective"]
        for r in rows
        if r["method"] == "dense_flow" and "objective" in r
    }
    lines = [
        "# Scale benchmark (sparse candidate lists)",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d} on {machine_line()}, one core per measurement, "
        f"alignsolve {als.__version__}. Command: `{command}` (with `--methods`, the other methods' rows are those of "
        f"the previous run of the same script). k = {K}; instance from `generate_sparse` (seed 0).",
        "",
        "| axis | N | E | m | method | status | seconds | peak MB (solve) | instance MB | gap to dense optimum |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = dense.get((r["n_clients"], r["n_experts"]))
        gap = "" if ref is None or "objective" not in r else f"{(ref - r['objective']) / abs(ref):.4%}"
        secs = f"{r['seconds']:.3f}" if "seconds" in r else ""
        peak = f"{r['peak_mb']:.0f}" if r.get("peak_mb") is not None else ""
        inst = f"{r['instance_mb']:.0f}" if "instance_mb" in r else ""
        lines.append(
            f"| {r['axis']} | {r['n_clients']} | {r['n_experts']} | {r['m']} | {r['method']} | {r['status']} | "
            f"{secs} | {peak} | {inst} | {gap} |"
        )
    lines += ["", "Fitted exponents of time against nnz = N m along the N axis (E = 1024, m = 32):", ""]
    for method in ("greedy", "flow", "sinkhorn", "sinkhorn_cuda"):
        pts = [(r["n_clients"] * r["m"], r.get("seconds")) for r in rows if r["axis"] == "N" and r["method"] == method]
        slope = _fit([p for p in pts if p[1] is not None])
        lines.append(f"- `{method}`: {'n/a' if slope is None else f'{slope:.2f}'}")
    lines += ["", "Targets (N = 1,000,000, E = 1024, m = 32, k = 4, one core):", ""]
    for method, limit in TARGETS.items():
        hit = [r for r in rows if r["n_clients"] == 1_000_000 and r["n_experts"] == 1024 and r["method"] == method]
        if not hit or "seconds" not in hit[0]:
            lines.append(f"- `{method}`: not measured in this run")
            continue
        r = hit[0]
        extra = " and under 4 GB peak" if method == "greedy" else ""
        ok = r["seconds"] < limit and (method != "greedy" or (r["peak_mb"] or 0) < 4096)
        lines.append(
            f"- `{method}`: {r['seconds']:.2f} s, peak {r['peak_mb']:.0f} MB (target under {limit:.0f} s{extra}): "
            f"{'met' if ok else 'missed'}"
        )
    gpu = [r for r in rows if r["axis"] == "gpu" and r["method"] == "sinkhorn_cuda"]
    if gpu and "seconds" in gpu[0]:
        r = gpu[0]
        lines.append(
            f"- `sinkhorn` on {r.get('device', 'cuda')} at N = 1,000,000, E = 4096, m = 64: {r['seconds']:.2f} s "
            f"(target under 2 s): {'met' if r['seconds'] < 2 else 'missed'}"
        )
    else:
        lines.append("- `sinkhorn` on a GPU at N = 1,000,000, E = 4096, m = 64: not measured (no GPU in this run)")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, command: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colours = (
        ("greedy", "#2ca02c"),
        ("flow", "#1f77b4"),
        ("sinkhorn", "#9467bd"),
        ("sinkhorn_cuda", "#ff7f0e"),
        ("dense_flow", "#d62728"),
    )
    for method, colour in colours:
        pts = sorted(
            (r["n_clients"], r["seconds"], r.get("peak_mb"))
            for r in rows
            if r["method"] == method and r["axis"] == "N" and "seconds" in r
        )
        if not pts:
            continue
        x = [p[0] for p in pts]
        axes[0].plot(x, [p[1] for p in pts], "o-", color=colour, label=method)
        axes[1].plot(x, [max(p[2] or 0.1, 0.1) for p in pts], "o-", color=colour, label=method)
    for ax, label in zip(axes, ("seconds", "peak MB of the solve"), strict=True):
        ax.set(xscale="log", yscale="log", xlabel="clients N (E = 1024, m = 32, k = 4)", ylabel=label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Sparse form: time and peak memory of one solve against the number of clients")
    fig.text(0.5, 0.01, f"{machine_line()}; {command}", ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
