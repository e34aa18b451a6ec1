"""Dynamic-alignment benchmark (issue 4): the Aligner against per-client top-k-by-affinity over many rounds.

    python benchmarks/run_alignment.py           # about a minute on 2 cores
    python benchmarks/run_alignment.py --quick   # fewer seeds and rounds, a smoke test

No training happens here (that is ``fedloop``'s job): clients with trace-calibrated
profiles (``alignsolve.sample_profiles``) report fixed routing shares drawn from a
Dirichlet with a popularity skew (experts 0 and 1 attract most mass, as an untrained
router does), join each round with their availability, and drop out with probability
0.1. Every policy fills the same slots (the aligner's capacity plan):

* ``aligned/flow`` and ``aligned/greedy``: :class:`alignsolve.Aligner` with default scoring,
  balance tolerance 0.25, cohort 2, at most 3 experts per client;
* ``topk_affinity``: each client its top experts by routing share, no load bounds.

Per run: the load coefficient of variation of each round's assignment (mean over rounds)
and of the loads summed over the run, the Gini of the summed loads, the share of the
top-k policy's routing mass the policy captures, the rounds that needed a relaxation,
and the aligner's time per round (profiling, scoring and solving). Writes
``benchmarks/results/alignment.csv`` and ``alignment.md``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import alignsolve as als

RESULTS = Path(__file__).resolve().parent / "results"
E = 16
N = 200
SPEC = als.ExpertSpec(param_bytes=5e5, flops_per_sample=2e6, shared_param_bytes=1e6, shared_flops_per_sample=1e7)


def one_run(seed: int, rounds: int, heterogeneity: str, method: str) -> dict:
    rng = np.random.default_rng(seed)
    profiles = als.sample_profiles(N, seed=seed, heterogeneity=heterogeneity, n_samples=rng.integers(50, 300, N))
    popularity = np.geomspace(4.0, 0.25, E)
    routing = rng.dirichlet(0.5 * popularity, size=N)
    aligner = als.Aligner(
        E, SPEC, deadline=15.0, method=method, balance_tolerance=0.25, min_cohort=2, max_experts=3, seed=seed
    )
    per_round = {"aligned": [], "topk": []}
    total = {"aligned": np.zeros(E), "topk": np.zeros(E)}
    captured, relaxed, seconds = [], 0, []
    for r in range(rounds):
        reports = [als.ClientReport(i, p, routing[i]) for i, p in enumerate(profiles) if rng.random() < p.availability]
        start = time.perf_counter()
        a = aligner.assign(r, reports)
        seconds.append(time.perf_counter() - start)
        relaxed += bool(a.stats["aligner"]["relaxed"])
        ids = list(a.client_ids)
        by_id = {rep.client_id: rep for rep in reports}
        topk = als.top_k_affinity([by_id[i] for i in ids], aligner.last_problem.client_capacity)
        shares = routing[ids]
        captured.append(float((shares * a.matrix).sum() / (shares * topk).sum()))
        for name, m in (("aligned", a.matrix), ("topk", topk)):
            loads = m.sum(axis=0)
            per_round[name].append(float(loads.std() / loads.mean()))
            total[name] += loads
        aligner.observe([als.ClientOutcome(i, completed=bool(rng.random() > 0.1)) for i in ids])
    cv = {k: float(v.std() / v.mean()) for k, v in total.items()}
    return {
        "seed": seed,
        "heterogeneity": heterogeneity,
        "method": method,
        "round_cv_aligned": statistics.fmean(per_round["aligned"]),
        "round_cv_topk": statistics.fmean(per_round["topk"]),
        "run_cv_aligned": cv["aligned"],
        "run_cv_topk": cv["topk"],
        "gini_aligned": als.gini(total["aligned"]),
        "gini_topk": als.gini(total["topk"]),
        "affinity_captured": statistics.fmean(captured),
        "relaxed_rounds": relaxed,
        "ms_per_round": 1e3 * statistics.median(seconds),
    }


def main() -> None:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    RESULTS = args.out
    seeds = range(2) if args.quick else range(5)
    rounds = 8 if args.quick else 30
    rows = [
        one_run(seed, rounds, het, method)
        for het in ("low", "trace", "high")
        for method in ("flow", "greedy")
        for seed in seeds
    ]
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "alignment.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    lines = [
        "# Dynamic alignment against top-k affinity",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d} on {platform.machine()} ({os.cpu_count()} cores), "
        f"command `python benchmarks/run_alignment.py{' --quick' if args.quick else ''}`.",
        f"N = {N} clients (availability-sampled each round), E = {E} experts, {rounds} rounds, "
        f"{len(seeds)} seeds; median over seeds, [min, max] in brackets.",
        "",
        "| heterogeneity | method | load CV per round: aligned / top-k | load CV over the run: aligned / top-k "
        "| Gini over the run: aligned / top-k | affinity captured | rounds relaxed | ms per round |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def fmt(values, spec=".3f"):
        return f"{statistics.median(values):{spec}} [{min(values):{spec}}, {max(values):{spec}}]"

    for het in ("low", "trace", "high"):
        for method in ("flow", "greedy"):
            sel = [r for r in rows if r["heterogeneity"] == het and r["method"] == method]

            def col(key, sel=sel):
                return [r[key] for r in sel]

            lines.append(
                f"| {het} | {method} | {statistics.median(col('round_cv_aligned')):.3f} / "
                f"{statistics.median(col('round_cv_topk')):.3f} | {statistics.median(col('run_cv_aligned')):.3f} / "
                f"{statistics.median(col('run_cv_topk')):.3f} | {statistics.median(col('gini_aligned')):.3f} / "
                f"{statistics.median(col('gini_topk')):.3f} | {fmt(col('affinity_captured'))} | "
                f"{statistics.median(col('relaxed_rounds')):.0f} | {fmt(col('ms_per_round'), '.1f')} |"
            )
    (RESULTS / "alignment.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
