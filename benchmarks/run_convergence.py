"""Convergence benchmark (issue 6): rounds, bytes and simulated time to a target accuracy, per policy, over seeds.

    python benchmarks/run_convergence.py            # about 15 minutes on 2 cores
    python benchmarks/run_convergence.py --quick    # 2 seeds, few rounds: a smoke test (about a minute)
    python benchmarks/run_convergence.py --render   # tables and plots again from the saved histories
    # two cores, one task each, then render:
    python benchmarks/run_convergence.py --task synthetic --threads 1 & \
    python benchmarks/run_convergence.py --task digits --threads 1; wait; python benchmarks/run_convergence.py --render

A killed run resumes: saved histories are kept unless ``--fresh``.

Tasks (heterogeneous phone profiles from the traces, ``heterogeneity="trace"``):

* ``synthetic``: fedloop's latent-domains task, 40 clients, 20 per round, 8 experts, at most 2 per client;
* ``digits``: scikit-learn's digits, 20 clients (Dirichlet(0.5) label split), 10 per round, 8 experts, 2 per client.

Verdict on the 37% claim, from the 95% interval of the paired reduction: "beaten" above it, "missed" below it,
"consistent" when it contains 37% but not 0, "inconclusive" when it contains both.

Variants: ``aligned_flow`` and ``aligned_greedy`` (the Aligner), the baselines ``random``, ``round_robin``,
``topk_affinity`` and ``all_experts``, and three ablations of ``aligned_flow``: ``no_load_term``
(load weight 0), ``no_profiling`` (every client gets max_experts slots whatever its device; latency is still
simulated from its real profile) and ``no_switching`` (switching weight 0).

**Target, fixed before looking at the results**: per task, 90% of the best median final accuracy among the
non-ablated variants (the rule of ``fedloop compare``). Rounds to target is the first round whose test accuracy
reaches it (a run that never does counts as "never" and is left out of the mean, and the count is shown). Mean and
95% t-interval over seeds. The reduction of ``aligned_flow`` against a baseline is computed per seed (same seed,
same clients, same data) as ``1 - rounds_aligned / rounds_baseline``, then averaged with its 95% interval.

Writes ``benchmarks/results/convergence.csv``, ``convergence.md``, ``convergence_<task>.png`` and the run
histories under ``benchmarks/results/convergence/``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from scipy import stats

import fedloop

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "convergence"
CLAIM = 0.37  # "37% fewer communication rounds", the reported figure under test

TASKS = {
    "synthetic": dict(dataset="synthetic", n_clients=40, per_round=20, n_experts=8, max_experts=2, rounds=25),
    "digits": dict(
        dataset="digits",
        n_clients=20,
        per_round=10,
        n_experts=8,
        max_experts=2,
        rounds=25,
        data_options={"alpha": 0.5},
    ),
}
VARIANTS = {
    "aligned_flow": dict(policy="aligned", method="flow"),
    "aligned_greedy": dict(policy="aligned", method="greedy"),
    "random": dict(policy="random"),
    "round_robin": dict(policy="round_robin"),
    "topk_affinity": dict(policy="topk_affinity"),
    "all_experts": dict(policy="all_experts"),
    "no_load_term": dict(policy="aligned", method="flow", score_weights={"load": 0.0}),
    "no_profiling": dict(policy="aligned", method="flow", capacity_profiling=False),
    "no_switching": dict(policy="aligned", method="flow", score_weights={"switching": 0.0}),
}
ABLATIONS = ("no_load_term", "no_profiling", "no_switching")
BASELINES = ("random", "round_robin", "topk_affinity", "all_experts")


def run_all(seeds: list[int], rounds: int | None, variants: list[str], tasks: list[str]) -> None:
    """Run every (task, variant, seed) whose history is not saved yet (a killed run resumes)."""
    RUNS.mkdir(parents=True, exist_ok=True)
    total = len(tasks) * len(variants) * len(seeds)
    done = 0
    start = time.perf_counter()
    for task in tasks:
        base = TASKS[task]
        for variant in variants:
            for seed in seeds:
                path = RUNS / f"{task}__{variant}__seed{seed}.json"
                if path.exists():
                    total -= 1
                    continue
                cfg = dict(base) | VARIANTS[variant] | {"seed": seed}
                if rounds is not None:
                    cfg["rounds"] = rounds
                history = fedloop.run(fedloop.FedConfig(**cfg))
                path.write_text(history.to_json())
                done += 1
                elapsed = time.perf_counter() - start
                left = elapsed / done * (total - done)
                print(
                    f"[{done}/{total}] {task:<9} {variant:<15} seed {seed}: final accuracy "
                    f"{history.column('accuracy')[-1]:.4f}  ({elapsed:.0f} s, about {left:.0f} s left)",
                    flush=True,
                )


def _interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval (nan when fewer than 2 values)."""
    if not values:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def _fmt(values: list[float], scale: float = 1.0, spec: str = ".1f", total: int | None = None) -> str:
    finite = [v / scale for v in values if math.isfinite(v)]
    never = (total if total is not None else len(values)) - len(finite)
    if not finite:
        return "never"
    mean, lo, hi = _interval(finite)
    text = f"{mean:{spec}}" + (f" [{lo:{spec}}, {hi:{spec}}]" if math.isfinite(lo) else "")
    return text + (f" ({never} never)" if never else "")


def render() -> str:
    histories: dict[tuple[str, str], dict[int, fedloop.History]] = {}
    for path in sorted(RUNS.glob("*.json")):
        task, variant, seed = path.stem.split("__")
        histories.setdefault((task, variant), {})[int(seed.removeprefix("seed"))] = fedloop.History.from_json(
            path.read_text()
        )
    rows, lines = [], []
    lines += [
        "# Convergence benchmark",
        "",
        f"Rendered {datetime.now(timezone.utc):%Y-%m-%d} on {platform.machine()} ({os.cpu_count()} cores) from the "
        "histories written by `python benchmarks/run_convergence.py` (see its docstring for the settings).",
        "Target: 90% of the best median final accuracy among the non-ablated variants, per task (fixed before the "
        "runs). Mean [95% t-interval] over seeds.",
    ]
    for task in TASKS:
        variants = [v for v in VARIANTS if (task, v) in histories]
        if not variants:
            continue
        finals = {
            v: statistics.median(h.column("accuracy")[-1] for h in histories[task, v].values())
            for v in variants
            if v not in ABLATIONS
        }
        target = round(0.9 * max(finals.values()), 4)
        seeds = sorted(histories[task, variants[0]])
        lines += [
            "",
            f"## {task} (target accuracy {target:.4f}, {len(seeds)} seeds)",
            "",
            "| variant | rounds to target | MB to target | simulated s to target | final accuracy | load CV |",
            "|---|---|---|---|---|---|",
        ]
        reach: dict[str, dict[int, dict[str, float]]] = {}
        for v in variants:
            hs = histories[task, v]
            reach[v] = {s: h.to_target(target) for s, h in hs.items()}
            final = [h.column("accuracy")[-1] for h in hs.values()]
            cv = [statistics.fmean(h.column("load_cv")) for h in hs.values()]
            r = [x["rounds"] for x in reach[v].values()]
            b = [x["bytes"] for x in reach[v].values()]
            t = [x["seconds"] for x in reach[v].values()]
            lines.append(
                f"| {v} | {_fmt(r)} | {_fmt(b, 1e6, '.2f')} | {_fmt(t)} | {_fmt(final, spec='.4f')} | "
                f"{_fmt(cv, spec='.3f')} |"
            )
            for s, h in hs.items():
                rows.append(
                    dict(
                        task=task,
                        variant=v,
                        seed=s,
                        target=target,
                        rounds_to_target=reach[v][s]["rounds"],
                        mb_to_target=reach[v][s]["bytes"] / 1e6,
                        seconds_to_target=reach[v][s]["seconds"],
                        final_accuracy=h.column("accuracy")[-1],
                        mean_load_cv=statistics.fmean(h.column("load_cv")),
                    )
                )
        if "aligned_flow" in reach:
            lines += [
                "",
                "Reduction in rounds to target of `aligned_flow` against each variant, per seed "
                "(`1 - rounds_aligned / rounds_other`), mean [95% interval]; the reported claim is 37%:",
                "",
                "| against | reduction in rounds | verdict on the 37% claim | reduction in MB "
                "| reduction in simulated s |",
                "|---|---|---|---|---|",
            ]
            for v in variants:
                if v == "aligned_flow":
                    continue
                red = {}
                for key in ("rounds", "bytes", "seconds"):
                    red[key] = [
                        1 - reach["aligned_flow"][s][key] / reach[v][s][key]
                        for s in reach[v]
                        if s in reach["aligned_flow"]
                        and math.isfinite(reach["aligned_flow"][s][key])
                        and math.isfinite(reach[v][s][key])
                    ]
                _, lo, hi = _interval(red["rounds"])
                if not red["rounds"] or not math.isfinite(lo):
                    verdict = "too few runs reach the target"
                elif lo > CLAIM:
                    verdict = "beaten (interval above 37%)"
                elif hi < CLAIM:
                    verdict = "missed (interval below 37%)"
                elif lo <= 0:
                    verdict = "inconclusive (interval contains both 0 and 37%)"
                else:
                    verdict = "consistent (interval contains 37%, excludes 0)"
                lines.append(
                    f"| {v} | {_fmt(red['rounds'], 0.01, '.0f')} % | {verdict} | {_fmt(red['bytes'], 0.01, '.0f')} % | "
                    f"{_fmt(red['seconds'], 0.01, '.0f')} % |"
                )
        _plot(task, {v: list(histories[task, v].values()) for v in variants}, target)
    with open(RESULTS / "convergence.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = "\n".join(lines) + "\n"
    (RESULTS / "convergence.md").write_text(text)
    return text


def _plot(task: str, runs: dict[str, list[fedloop.History]], target: float) -> None:
    from fedloop.plots import plot_comparison

    main = {v: hs for v, hs in runs.items() if v not in ABLATIONS}
    plot_comparison(main, RESULTS / f"convergence_{task}.png", target=target)
    ablations = {v: hs for v, hs in runs.items() if v in ABLATIONS or v == "aligned_flow"}
    if len(ablations) > 1:
        plot_comparison(ablations, RESULTS / f"convergence_{task}_ablations.png", target=target)


def main() -> None:
    global RESULTS, RUNS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 6 rounds, four variants")
    parser.add_argument("--render", action="store_true", help="only re-render from the saved histories")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument("--task", choices=sorted(TASKS), help="run only this task (parallel runs; render after)")
    parser.add_argument("--fresh", action="store_true", help="discard saved histories instead of resuming")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    args = parser.parse_args()
    RESULTS, RUNS = args.out, args.out / "convergence"
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = [args.task] if args.task else list(TASKS)
    if not args.render:
        if args.fresh or args.quick:
            for old in RUNS.glob("*.json"):
                old.unlink()
        if args.quick:
            run_all([0, 1], 6, ["aligned_flow", "random", "topk_affinity", "no_load_term"], tasks)
        else:
            run_all(list(range(args.seeds)), None, list(VARIANTS), tasks)
    if args.task and not args.quick:
        return  # one task of a parallel run: render once all are done
    print(render())


if __name__ == "__main__":
    main()
