"""What a lent CUDA GPU measures, in one call on that machine: its tests, the solver's GPU targets, a round's time
split, and federated runs on ``--device cuda`` beside the same runs on the CPU.

    python benchmarks/run_cuda.py --out DIR               # on the GPU machine: the four steps, within --budget s
    python benchmarks/run_cuda.py --out DIR --rehearse    # anywhere: the same steps, tiny, with the CPU for the GPU
    python benchmarks/run_cuda.py --out DIR --alone aligned_value --budget 165   # one run alone on the GPU
    python benchmarks/run_cuda.py --out DIR --layouts     # the solver's GPU targets, both torch layouts, profiled
    python benchmarks/run_cuda.py --render DIR            # benchmarks/results/cuda.md (and .png) from DIR

A GPU is lent for minutes, so one script does all of it, in an order that keeps the GPU timings from overlapping:

1. **tests**: the CUDA tests (``pytest``; they skip without a GPU), results in ``tests.xml``.
2. **solver** (a child process, started first because its instances take a minute to build on the CPU): ``sinkhorn``
   on CUDA at the scale benchmark's GPU target (``generate_sparse``, N = 1,000,000, E = 4096, m = 64, k = 4; target
   under 2 s) and at the relaxation benchmark's (``generate("skewed")``, 781,250 x 256, k = 8), each after a
   warm-up solve, each checked by ``verify``, with its proven gap (its bound is weak duality's); then, with the GPU
   free, ``flow`` on the CPU for the dense instance's optimum. The child builds the sparse instance while step 1
   runs and waits for the parent's go before it touches the GPU.
3. **round**: ``run_round.py``'s configuration on cuda and on the CPU of the same machine (its threads: all cores).
4. **federated**: ``mnist_shards`` (``run_federated.config``), seed 0, four policies, 200 rounds, each on cuda and
   on the CPU (one thread), all eight at once: four processes share the GPU, each CPU run has a core. Each run
   saves its rounds so far every 10 rounds, so a run stopped at the budget keeps what it did (``rounds_done``).

The machine's own description goes to ``env.json``. CUDA's arithmetic is not the CPU's, so a seed's CUDA run follows
another trajectory than its CPU run: these runs are a record of speed and of where CUDA runs land, never paired with
the saved CPU runs in the comparison tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # the other benchmark scripts, whose configurations and instances these are

from run_relaxations import CUDA_SIZE  # noqa: E402  (after the path above)

RESULTS = HERE / "results"
TESTS = (
    "tests/test_fedloop.py::test_the_loop_runs_on_cuda_like_on_cpu",
    "tests/test_relaxations.py::test_sinkhorn_on_cuda",
    "tests/test_sparse.py::test_sparse_sinkhorn_on_cuda",
)
POLICIES = ("random", "topk_affinity", "flex_moe", "aligned_value")
TASK, SEED, ROUNDS = "mnist_shards", 0, 200
#: (name, builder arguments) of the two solver instances, full size and rehearsal size
SPARSE = {False: (1_000_000, 4096, 4, 64), True: (2_000, 64, 4, 8)}
#: the dense one: the relaxation benchmark's GPU instance, and a small one
DENSE = {False: CUDA_SIZE, True: (2_000, 64, 4)}
SPARSE_TARGET_S = 2.0


def log(out: Path, *words: object) -> None:
    line = f"{time.strftime('%H:%M:%S')} " + " ".join(str(w) for w in words)
    print(line, flush=True)
    with open(out / "log.txt", "a") as fh:
        fh.write(line + "\n")


def write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def wait_for(condition, timeout: float, step: float = 0.5) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(step)
    return condition()


# --- on the GPU machine ---------------------------------------------------------------------------------------


def environment(device: str) -> dict:
    import torch

    env = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "device": device,
    }
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        try:
            query = "--query-gpu=driver_version,clocks.max.sm,power.limit"
            smi = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True)
            env["nvidia_smi"] = smi.stdout.strip()
        except OSError:
            env["nvidia_smi"] = None
    return env


def measure(instance, method: str, kind: str, sync=lambda: None, **options) -> dict:
    """One solve timed whole (after ``sync``, which waits for the GPU's queued work), checked by ``verify``, as a
    results row."""
    import alignsolve as als

    sync()
    started = time.perf_counter()
    result = als.solve(instance, method, **options)
    seconds = time.perf_counter() - started
    als.verify(instance, result)  # raises on any violated constraint
    return {
        "instance": kind,
        "method": method,
        "device": result.stats.get("device", "cpu"),
        "status": result.status,
        "seconds": seconds,
        "relaxation_s": result.stats.get("relaxation_time"),
        "sweeps": result.stats.get("sweeps"),
        "objective": result.objective,
        "bound": result.bound,
        "proven_gap": result.gap,
    }


def solver_child(out: Path, device: str, rehearse: bool) -> None:
    """Step 2 (its own process): build, wait for the go, solve on the GPU, free it, then the CPU optimum."""
    import alignsolve as als

    rows: list[dict] = []
    n, e, k, m = SPARSE[rehearse]
    started = time.perf_counter()
    sparse = als.generate_sparse(n, e, k, m, seed=0)
    log(out, f"solver: sparse instance {n} x {e}, m = {m} built in {time.perf_counter() - started:.1f} s")
    (out / "sparse_ready").touch()
    wait_for((out / "go").exists, timeout=600)

    als.solve(als.generate_sparse(200, 16, 2, 8, seed=1), "sinkhorn", device=device)  # context, kernels
    rows.append(measure(sparse, "sinkhorn", f"sparse {n} x {e}, m = {m}, k = {k}", device=device))
    rows[-1]["target_s"] = SPARSE_TARGET_S
    write_json(out / "solvers.json", rows)
    log(out, f"solver: sparse sinkhorn on {device}: {rows[-1]['seconds']:.2f} s")
    del sparse
    n, e, k = DENSE[rehearse]
    try:
        dense = als.generate("skewed", n, e, k, seed=0)
        als.solve(als.generate("skewed", 2000, 64, 4, seed=1), "sinkhorn", device=device)
        rows.append(measure(dense, "sinkhorn", f"dense {n} x {e}, k = {k}", device=device))
        write_json(out / "solvers.json", rows)
        log(out, f"solver: dense sinkhorn on {device}: {rows[-1]['seconds']:.2f} s")
    finally:
        (out / "gpu_free").touch()  # step 4 waits for this: a failure here must not hold it up
    rows.append(measure(dense, "flow", f"dense {n} x {e}, k = {k}"))
    write_json(out / "solvers.json", rows)
    log(out, f"solver: dense flow on the CPU: {rows[-1]['seconds']:.2f} s")


def layouts(out: Path, rehearse: bool) -> None:
    """``--layouts``: the CUDA tests, the dense GPU target, then the sparse GPU target once in each of torch's two
    layouts of the entries, each solve timed whole and then profiled over a short schedule.

    The layouts (``alignsolve.solvers.sinkhorn.ops._Torch.sorted_segments``): *grouped*, a copy of the entries per
    side grouped by line and reduced as contiguous segments; *scatter*, one copy shared by both sides and reduced
    by ``index_add_``/``scatter_reduce_`` (the layout of the first call). The sparse instance is built on the CPU
    while the tests and the dense solve use the GPU.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from torch.profiler import ProfilerActivity, profile

    import alignsolve as als
    from alignsolve.solvers.sinkhorn import ops as sk_ops

    device = "cpu" if rehearse else "cuda"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "env.json", environment(device) | {"rehearse": rehearse, "mode": "layouts"})
    n, e, k, m = SPARSE[rehearse]
    pool = ThreadPoolExecutor(1)
    started = time.perf_counter()
    building = pool.submit(als.generate_sparse, n, e, k, m, seed=0)
    tests = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"]
    run_step(out, "tests", [*tests, f"--junitxml={out / 'tests.xml'}", *TESTS], timeout=180)
    rows: list[dict] = []
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def timed(instance, kind: str, layout: str, **options) -> dict:
        row = measure(instance, "sinkhorn", kind, sync, device=device, **options) | {"layout": layout}
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
        log(out, f"layouts: {kind}, {layout}: {row['seconds']:.2f} s, {row['sweeps']} sweeps, {row['status']}")
        return row

    dn, de, dk = DENSE[rehearse]
    dense = als.generate("skewed", dn, de, dk, seed=0)
    als.solve(als.generate("skewed", 2000, 64, 4, seed=1), "sinkhorn", device=device)  # context, kernels
    rows.append(timed(dense, f"dense {dn} x {de}, k = {dk}", "dense"))
    write_json(out / "solvers.json", rows)
    del dense
    sparse = building.result()
    log(out, f"layouts: sparse instance {n} x {e}, m = {m} ready after {time.perf_counter() - started:.1f} s")
    kind = f"sparse {n} x {e}, m = {m}, k = {k}"
    short = {"max_sweeps": 2}  # every stage, two sweeps each: the profile's schedule
    for grouped in (True, False):
        layout = "grouped" if grouped else "scatter"
        sk_ops._Torch.sorted_segments = grouped
        try:
            als.solve(als.generate_sparse(200, 16, 2, 8, seed=1), "sinkhorn", device=device)  # this layout's kernels
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            rows.append(timed(sparse, kind, layout) | {"target_s": SPARSE_TARGET_S})
            write_json(out / "solvers.json", rows)
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
            with profile(activities=activities) as prof:
                profiled = timed(sparse, kind, layout, **short)
        except Exception as exc:  # the other layout is still worth its minute of GPU time
            log(out, f"layouts: {layout} failed: {type(exc).__name__}: {exc}")
            continue
        finally:
            sk_ops._Torch.sorted_segments = True  # the library's layout, whatever happened
        sort = "cuda_time_total" if device == "cuda" else "cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=12, max_name_column_width=48)
        (out / f"profile_{layout}.txt").write_text(
            f"{kind}, {layout} layout, max_sweeps = 2: {profiled['sweeps']} sweeps, {profiled['seconds']:.2f} s under "
            f"the profiler\n\n{table}\n"
        )
    pool.shutdown()


def federated_child(out: Path, policy: str, device: str, rounds: int, rehearse: bool) -> None:
    """Step 4, one run: ``run_federated``'s configuration on ``device``, its rounds saved every 10."""
    import run_federated

    import fedloop

    config = dataclasses.replace(run_federated.config(TASK, policy, SEED, rounds, rehearse), device=device)
    path = out / "federated" / device / f"{policy}-seed{SEED}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    records: list = []
    stamps = [time.perf_counter()]
    build = run_federated.build_environment()

    def save() -> None:
        write_json(
            path,
            {
                "policy": policy,
                "seed": SEED,
                "task": TASK,
                "device": device,
                "rounds": rounds,
                "rounds_done": len(records),
                "round_s": [b - a for a, b in itertools.pairwise(stamps)],
                "train_s": [r.train_s for r in records],
                "solver_s": [r.solver_s for r in records],
                "accuracy": [r.accuracy for r in records],
                "loads": [r.loads for r in records],
                "assigned": [r.assigned for r in records],
                "build": build,
            },
        )

    def on_round(record) -> None:
        stamps.append(time.perf_counter())
        records.append(record)
        if len(records) % 10 == 0 or len(records) == rounds:
            save()

    fedloop.run(config, on_round=on_round)
    save()


def run_step(out: Path, name: str, cmd: list[str], timeout: float) -> int | None:
    log(out, f"{name}: {' '.join(cmd)}")
    try:
        done = subprocess.run(cmd, cwd=ROOT, timeout=timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        log(out, f"{name}: stopped after {timeout:.0f} s")
        return None
    (out / f"{name}.txt").write_text(done.stdout + done.stderr)
    log(out, f"{name}: exit {done.returncode}")
    return done.returncode


def start_runs(out: Path, policies: tuple[str, ...], rehearse: bool) -> list[tuple[tuple[str, str], subprocess.Popen]]:
    """Step 4's runs, each in its own process with one thread: every policy on the GPU and on the CPU (on the CPU
    alone when rehearsing)."""
    rounds = "3" if rehearse else str(ROUNDS)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    me = [sys.executable, str(Path(__file__).resolve()), "--federated-child", str(out)]
    return [
        ((policy, dev), subprocess.Popen([*me, policy, dev, rounds, *(["--rehearse"] * rehearse)], cwd=ROOT, env=env))
        for policy in policies
        for dev in (("cpu",) if rehearse else ("cuda", "cpu"))
    ]


def stop_runs(out: Path, children: list[tuple[tuple[str, str], subprocess.Popen]], deadline: float) -> None:
    """Wait for the runs until ``deadline`` (``time.monotonic``), then stop those still running; log each."""
    wait_for(lambda: all(p.poll() is not None for _, p in children), max(0.0, deadline - time.monotonic()), 1.0)
    for (policy, dev), p in children:
        if p.poll() is None:
            p.terminate()
            log(out, f"federated: {policy} on {dev} stopped at the budget")
        else:
            log(out, f"federated: {policy} on {dev} exit {p.returncode}")
        p.wait()


def orchestrate(out: Path, budget: float, rehearse: bool) -> None:
    started = time.monotonic()
    deadline = started + budget
    device = "cpu" if rehearse else "cuda"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "env.json", environment(device) | {"rehearse": rehearse, "budget_s": budget})
    me = [sys.executable, str(Path(__file__).resolve())]
    flag = ["--rehearse"] if rehearse else []
    solver = subprocess.Popen([*me, "--solver-child", str(out), *flag], cwd=ROOT)

    run_step(
        out,
        "tests",
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rA",
            "-p",
            "no:cacheprovider",
            f"--junitxml={out / 'tests.xml'}",
            *TESTS,
        ],
        timeout=180,
    )
    rounds = "3" if rehearse else "9"
    for dev in ("cpu",) if rehearse else ("cuda", "cpu"):
        target = out / f"round_{dev}"
        cmd = [sys.executable, str(HERE / "run_round.py"), "--device", dev, "--rounds", rounds, "--out", str(target)]
        run_step(out, target.name, cmd, timeout=120)

    wait_for(lambda: (out / "sparse_ready").exists() or solver.poll() is not None, timeout=240)
    (out / "go").touch()
    log(out, "solver: go")
    wait_for(lambda: (out / "gpu_free").exists() or solver.poll() is not None, timeout=180)

    children = start_runs(out, POLICIES, rehearse)
    log(out, f"federated: {len(children)} runs started, {deadline - time.monotonic():.0f} s left")
    stop_runs(out, children, deadline)
    # the solver child's CPU part (flow) may still run: it shares the deadline
    wait_for(lambda: solver.poll() is not None, max(0.0, deadline - time.monotonic()), 1.0)
    if solver.poll() is None:
        solver.terminate()
        log(out, "solver: stopped at the budget")
    solver.wait()
    summary(out)


def orchestrate_alone(out: Path, policy: str, budget: float, rehearse: bool) -> None:
    """One policy's run alone on the GPU beside its CPU run (one thread each), both stopped at the budget."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "started.txt").write_text(datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + "\n")
    stop_runs(out, start_runs(out, (policy,), rehearse), time.monotonic() + budget)
    summary(out)


def summary(out: Path) -> None:
    """The short table printed last (the reply carries the end of the output)."""
    for row in json.loads((out / "solvers.json").read_text()) if (out / "solvers.json").exists() else []:
        print(f"{row['instance']:<32} {row['method']:<9} {row['device']:<8} {row['seconds']:8.2f} s  {row['status']}")
    for path in sorted((out / "federated").glob("*/*.json")):
        run = json.loads(path.read_text())
        s = run["round_s"]
        print(
            f"{run['policy']:<14} {run['device']:<5} {run['rounds_done']:>4} rounds, median "
            f"{statistics.median(s) if s else float('nan'):.3f} s/round, last acc "
            f"{run['accuracy'][-1] if run['accuracy'] else float('nan'):.4f}"
        )


# --- here: the results page ------------------------------------------------------------------------------------


def render(src: Path, dest: Path = RESULTS, command: str = "") -> Path:
    """Write ``cuda.md`` (and ``federated_cuda.png``) in ``dest`` from what a call left in ``src``."""
    import run_federated

    from fedloop import stats

    env = json.loads((src / "env.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Measured on a lent GPU",
        "",
        f"Measured {env['started'][:10]} on {env.get('gpu', env['device'])}"
        f"{' (' + str(env['gpu_memory_gib']) + ' GiB)' if 'gpu_memory_gib' in env else ''}, driver and limits "
        f"`{env.get('nvidia_smi')}`, {env['cpu_count']} CPU cores, Python {env['python']}, torch {env['torch']} "
        f"(CUDA {env['cuda']}), in one call of `python benchmarks/run_cuda.py --out DIR` "
        f"(budget {env['budget_s']:.0f} s); this page: `{command}`. The machine's own packages, not this project's "
        "pins (torch differs from the CPU runs' 2.13.0). Raw files: `benchmarks/results/cuda/`.",
        "",
        "## Tests",
        "",
    ]
    xml = src / "tests.xml"
    if xml.exists():
        cases = ET.parse(xml).getroot().iter("testcase")
        for case in cases:
            outcome = "passed"
            for tag in ("failure", "error", "skipped"):
                if case.find(tag) is not None:
                    outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
            lines.append(f"- `{case.get('classname')}.{case.get('name')}`: {outcome}")
    else:
        lines.append("- not run")
    lines += ["", "## Solver on the GPU", ""]
    solvers = json.loads((src / "solvers.json").read_text()) if (src / "solvers.json").exists() else []
    if solvers:
        lines.append("Each solve timed whole (transfers, repair, the result back on the CPU) after a warm-up solve.")
        lines.append("")
        optimum = {r["instance"]: r["objective"] for r in solvers if r["method"] == "flow"}
        lines += [
            "| instance | method | device | status | seconds | sweeps | objective | bound | proven gap | gap to "
            "flow's optimum |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in solvers:
            opt = optimum.get(r["instance"])
            gap = "" if opt is None or r["method"] == "flow" else f"{100 * (opt - r['objective']) / abs(opt):.4f}%"
            proven = "" if r["proven_gap"] is None else f"{100 * r['proven_gap']:.4f}%"
            bound = "" if r["bound"] is None else f"{r['bound']:.1f}"
            lines.append(
                f"| {r['instance']} | {r['method']} | {r['device']} | {r['status']} | {r['seconds']:.2f} | "
                f"{'' if r.get('sweeps') is None else r['sweeps']} | "
                f"{r['objective']:.1f} | {bound} | {proven} | {gap} |"
            )
        for r in solvers:
            if "target_s" in r:
                verdict = "met" if r["seconds"] < r["target_s"] else "missed"
                lines += [
                    "",
                    f"Scale benchmark's GPU target (sparse, under {r['target_s']:.0f} s): {verdict}, "
                    f"{r['seconds']:.2f} s in {r['sweeps']} sweeps (not profiled further: the call had no time left).",
                ]
    dense = f"dense {DENSE[False][0]} x {DENSE[False][1]}, k = {DENSE[False][2]}"
    lines += layouts_section(src / "layouts")
    if not any(r["instance"].startswith("dense") for r in solvers):
        stdout = src / "stdout.txt"
        errors = [ln for ln in stdout.read_text().splitlines() if "Error" in ln] if stdout.exists() else []
        later = "; the later call above measured it" if (src / "layouts" / "solvers.json").exists() else ""
        lines += [
            "",
            "The dense instance, in the first call: not measured"
            + (f"; the solver child stopped: `{errors[-1]}`" if errors else "")
            + f" (today's script builds {dense}, within it){later}.",
        ]
    if not solvers:
        lines.append("Not measured.")
    lines += ["", "## A round's time split, on the GPU and on the CPU of the same machine", ""]
    split = {}
    for name in sorted(p.name for p in src.glob("round_*")):
        md = next((src / name).glob("round_timing*.md"), None)
        if md is not None:
            table = [ln for ln in md.read_text().splitlines() if ln.startswith("| ") and "part" not in ln]
            rows = [ln.split("|")[1:3] for ln in table]
            split[name.removeprefix("round_")] = {a.strip(): b.strip() for a, b in rows}
    if split:
        devices = sorted(split)
        lines += [
            "`run_round.py`'s configuration, median seconds per round (step 3). Its CPU run sets torch to every core "
            f"({env['cpu_count']} threads) for a model this small, and ran while the solver child built its instance "
            "on one core: a record, not the CPU's best (the federated runs below give the CPU one thread).",
            "",
        ]
        lines += ["| part | " + " | ".join(devices) + " |", "|---|" + "---|" * len(devices)]
        for part in split[devices[0]]:
            lines.append(f"| {part} | " + " | ".join(split[d].get(part, "") for d in devices) + " |")
    else:
        lines.append("Not measured.")
    central = json.loads((RESULTS / "federated" / f"{TASK}-v2" / "central.json").read_text())["accuracy"]
    target = 0.8 * central
    saved = run_federated.load_runs(run_federated.run_folder(RESULTS, TASK))
    runs = load_federated(src)
    lines += ["", f"## Federated runs: `{TASK}`, seed {SEED}, four policies, on the GPU and on the CPU", ""]
    if runs:
        lines += [
            f"All {sum(len(v) for v in runs.values())} runs at once (step 4): the four CUDA runs share the GPU, each "
            "CPU run has a core and one thread, and every run stopped at the call's budget. Together (each run at its "
            "median round time):",
            "",
            "| device | runs | rounds per second together |",
            "|---|---|---|",
            *(
                f"| {dev} | {sum(dev in per for per in runs.values())} | {throughput(runs, dev):.2f} |"
                for dev in ("cuda", "cpu")
            ),
            "",
            *federated_table(runs, target, saved, stats),
        ]
        png = plot(runs, target, dest / "federated_cuda.png")
        lines += ["", f"Figure: `{png.name}` (accuracy by round; CUDA solid, CPU dotted)."]
    else:
        lines.append("Not measured.")
    alone = load_federated(src / "alone")
    if alone:
        started = (src / "alone" / "started.txt").read_text().strip()
        lines += [
            "",
            f"### One run on the GPU alone ({started} UTC, a second call)",
            "",
            "The same configuration, one policy, its CUDA run alone on the GPU beside its CPU run (one thread), both "
            "stopped at the call's budget (`run_cuda.py --alone POLICY`, which runs the two `--federated-child` "
            "commands side by side):",
            "",
            *federated_table(alone, target, saved, stats),
            "",
            repeats(runs, alone),
        ]
    lines += [
        "",
        f'Target: 80% of the central accuracy ({target:.4f}). Rounds to it count the rounds done ("not reached" '
        "where it was not). The last column is the mean accuracy over the last 10 rounds that the policy's CUDA run "
        "did, for each row of the policy, so the rows compare at the same rounds. CUDA's arithmetic is not the "
        "CPU's, so a seed's CUDA run follows another trajectory: the saved run is the comparison's (this project's "
        "2-core machine, torch 2.13.0, the CPU), its time per round unrecorded where the run predates wall times.",
    ]
    page = dest / "cuda.md"
    page.write_text("\n".join(lines) + "\n")
    return page


def layouts_section(src: Path) -> list[str]:
    """The page's part for a ``--layouts`` call (empty when none is committed)."""
    if not (src / "solvers.json").exists():
        return []
    env = json.loads((src / "env.json").read_text())
    rows = json.loads((src / "solvers.json").read_text())
    lines = [
        "",
        f"### The GPU targets by layout ({env['started'].replace('T', ' ')[:16]} UTC, `run_cuda.py --layouts`)",
        "",
        "A later call, after the sparse form on torch changed: each side now reduces its own copy of the entries "
        "grouped by line (contiguous segment reductions), built on the GPU from the values and expert ids; *scatter* "
        "is the earlier layout (one shared copy, atomic `index_add_`/`scatter_reduce_`), run in the same call. Each "
        "solve timed whole after a warm-up; *relaxation* is its entropic part (setup, transfers and sweeps), the rest "
        "is the bound and the rounding on the CPU.",
        "",
        "| instance | layout | status | seconds | relaxation s | sweeps | objective | bound | proven gap | peak GPU "
        "GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['instance']} | {r['layout']} | {r['status']} | {r['seconds']:.2f} | {r['relaxation_s']:.2f} | "
            f"{r['sweeps']} | {r['objective']:.1f} | {r['bound']:.1f} | {100 * r['proven_gap']:.4f}% | "
            f"{'' if r['peak_gib'] is None else format(r['peak_gib'], '.2f')} |"
        )
    sparse = {r["layout"]: r for r in rows if "target_s" in r}
    if {"grouped", "scatter"} <= sparse.keys():
        g, sc = sparse["grouped"], sparse["scatter"]
        verdict = "met" if g["seconds"] < g["target_s"] else "missed"
        lines += [
            "",
            f"Scale benchmark's GPU target (under {g['target_s']:.0f} s): {verdict}, {g['seconds']:.2f} s grouped "
            f"against {sc['seconds']:.2f} s scatter ({sc['seconds'] / g['seconds']:.2f} times as fast; relaxation "
            f"{sc['relaxation_s'] / g['relaxation_s']:.2f} times). Where the GPU's time goes, over a short schedule "
            "(every stage, two sweeps): `cuda/layouts/profile_grouped.txt` and `profile_scatter.txt`.",
        ]
    return lines


def load_federated(src: Path) -> dict[str, dict[str, dict]]:
    runs: dict[str, dict[str, dict]] = {}
    for path in sorted((src / "federated").glob("*/*.json")):
        run = json.loads(path.read_text())
        runs.setdefault(run["policy"], {})[run["device"]] = run
    return runs


def repeats(first: dict[str, dict[str, dict]], second: dict[str, dict[str, dict]]) -> str:
    """Whether the second call's runs repeat the first's, round by round, over the rounds both ran."""
    import run_federated

    said = []
    for policy, per in second.items():
        for dev, run in per.items():
            old = first.get(policy, {}).get(dev)
            if old is None:
                continue
            n = min(run["rounds_done"], old["rounds_done"])
            found = run_federated.first_difference(old, run, ("accuracy", "assigned"))
            verdict = f"differs from round {found[0]}" if found else "identical"
            said.append(f"`{policy}` on {dev}: {verdict} over the {n} rounds both ran")
    return (
        (
            "Against the first call's run of the same policy (a fresh machine each call; accuracy and assignments "
            "compared): " + "; ".join(said) + "."
        )
        if said
        else ""
    )


def throughput(runs: dict[str, dict[str, dict]], device: str) -> float:
    """Rounds per second of one device's runs together (each at its median round time)."""
    return sum(1 / statistics.median(per[device]["round_s"]) for per in runs.values() if per.get(device))


def federated_table(runs: dict[str, dict[str, dict]], target: float, saved: dict, stats) -> list[str]:
    lines = [
        "| policy | run | rounds done | median s per round | CPU over GPU | rounds to 80% | accuracy at the "
        "CUDA run's last 10 rounds |",
        "|---|---|---|---|---|---|---|",
    ]
    for policy in POLICIES:
        per = runs.get(policy)
        if not per:
            continue
        medians = {dev: statistics.median(run["round_s"]) for dev, run in per.items() if run["round_s"]}
        upto = per["cuda"]["rounds_done"] if "cuda" in per else min(run["rounds_done"] for run in per.values())
        rows = [(dev, per[dev], medians.get(dev)) for dev in ("cuda", "cpu") if dev in per]
        if policy in saved and SEED in saved[policy]:
            old = saved[policy][SEED]
            wall = old.get("wall_s")
            rows.append(("saved CPU run", old, wall / len(old["accuracy"]) if wall else None))
        for name, run, med in rows:
            acc = run["accuracy"]
            ratio = f"{medians['cpu'] / med:.2f}" if name == "cuda" and med and "cpu" in medians else ""
            reached, hit = stats.rounds_to_target(acc, target) if acc else (0, False)
            window = acc[max(0, upto - 10) : upto]
            level = f"{statistics.fmean(window):.4f}" if len(acc) >= upto and window else ""
            done = f"{run.get('rounds_done', len(acc))} / {run.get('rounds', len(acc))}"
            when = "" if med is None else f"{med:.3f}"
            lines.append(
                f"| {policy} | {name} | {done} | {when} | {ratio} | {reached if hit else 'not reached'} | {level} |"
            )
    return lines


def plot(runs: dict[str, dict[str, dict]], target: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, policy in enumerate(POLICIES):
        for dev, style in (("cuda", "-"), ("cpu", ":")):
            run = runs.get(policy, {}).get(dev)
            if run and run["accuracy"]:
                ax.plot(
                    range(1, len(run["accuracy"]) + 1), run["accuracy"], style, color=f"C{i}", label=f"{policy} ({dev})"
                )
    ax.axhline(target, color="grey", lw=0.8, ls="--", label="80% target")
    ax.set(xlabel="round", ylabel="test accuracy", title=f"{TASK}, seed {SEED}: CUDA (solid) and CPU (dotted)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where the call writes (on the GPU machine: under $OUT)")
    parser.add_argument("--budget", type=float, default=520.0, help="seconds from the start to stop every run")
    parser.add_argument("--rehearse", action="store_true", help="tiny sizes, the CPU standing in for the GPU")
    parser.add_argument("--render", type=Path, metavar="DIR", help="write benchmarks/results/cuda.md from DIR")
    parser.add_argument(
        "--alone",
        metavar="POLICY",
        choices=POLICIES,
        help="instead of the four steps: one policy's federated run "
        "alone on the GPU beside its CPU run, until --budget (what cuda.md's second call measured)",
    )
    parser.add_argument(
        "--layouts",
        action="store_true",
        help="instead of the four steps: the CUDA tests, the dense GPU target and the sparse one in both torch "
        "layouts, profiled (what cuda.md's section on layouts measured)",
    )
    parser.add_argument("--solver-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--federated-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = "cpu" if args.rehearse else "cuda"
    if args.solver_child:
        solver_child(args.solver_child, device, args.rehearse)
    elif args.federated_child:
        out, policy, dev, rounds = args.federated_child
        federated_child(Path(out), policy, dev, int(rounds), args.rehearse)
    elif args.render:
        command = " ".join(["python benchmarks/run_cuda.py", *(argv if argv is not None else sys.argv[1:])])
        print(f"written {render(args.render, command=command)}")
    elif args.out:
        if not args.rehearse:
            import torch

            if not torch.cuda.is_available():
                parser.error("no CUDA GPU is visible to torch: run with --rehearse to try the steps on the CPU")
        if args.layouts:
            layouts(args.out, args.rehearse)
        elif args.alone:
            orchestrate_alone(args.out, args.alone, args.budget, args.rehearse)
        else:
            orchestrate(args.out, args.budget, args.rehearse)
    else:
        parser.error("give --out DIR (run the steps) or --render DIR (write the page)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
