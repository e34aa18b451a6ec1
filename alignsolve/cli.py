"""The ``alignsolve`` command line.

Exit codes: 0 solved, 2 bad input (one line on stderr), 3 infeasible, 1 an internal error
(one line on stderr: a bug to report). No path prints a traceback.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .errors import AlignsolveError
from .generators import FAMILIES, generate
from .problem import Problem
from .solve import solve
from .solvers import method_info
from .verify import verify

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_INFEASIBLE = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    # argparse reports its own usage errors on stderr with exit status 2, our EXIT_BAD_INPUT.
    p = argparse.ArgumentParser(prog="alignsolve", description="Client-expert assignment for federated MoE training.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("solve", help="solve an instance (.json or .npz)")
    s.add_argument("instance", type=Path)
    s.add_argument("--method", default="auto")
    s.add_argument("--time-limit", type=float, default=None)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--output", "-o", type=Path, default=None, help="write the assignment as JSON")

    g = sub.add_parser("generate", help="generate an instance of a family")
    g.add_argument("--family", required=True, choices=sorted(FAMILIES))
    g.add_argument("--clients", type=int, required=True)
    g.add_argument("--experts", type=int, required=True)
    g.add_argument("--capacity", type=int, required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--expert-min-frac", type=float, default=0.0)
    g.add_argument("--expert-max-slack", type=float, default=0.1)
    g.add_argument("--load-penalty", type=float, default=0.0)
    g.add_argument("-o", "--output", type=Path, required=True, help=".json or .npz")

    sub.add_parser("info", help="methods, their guarantees and versions")

    d = sub.add_parser("demo", help="compare the methods on a generated instance")
    d.add_argument("--family", default="skewed", choices=sorted(FAMILIES))
    d.add_argument("--clients", type=int, default=2000)
    d.add_argument("--experts", type=int, default=64)
    d.add_argument("--capacity", type=int, default=4)
    d.add_argument("--expert-min-frac", type=float, default=0.5)
    d.add_argument("--seed", type=int, default=0)
    return p


def _cmd_solve(args: argparse.Namespace) -> int:
    problem = Problem.load(args.instance)
    result = solve(problem, args.method, time_limit=args.time_limit, seed=args.seed)
    if result.has_solution:
        verify(problem, result)
    print(f"instance   {args.instance}  ({problem.n_clients} clients x {problem.n_experts} experts)")
    print(result.summary())
    if args.output is not None:
        args.output.write_text(result.to_json(indent=1))
        print(f"written    {args.output}")
    return EXIT_OK if result.has_solution else EXIT_INFEASIBLE


def _cmd_generate(args: argparse.Namespace) -> int:
    problem = generate(
        args.family,
        args.clients,
        args.experts,
        args.capacity,
        seed=args.seed,
        expert_min_frac=args.expert_min_frac,
        expert_max_slack=args.expert_max_slack,
        load_penalty=args.load_penalty,
    )
    problem.save(args.output)
    print(f"written {args.output}: {args.family}, {problem.n_clients} clients x {problem.n_experts} experts")
    return EXIT_OK


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("alignsolve", "numpy", "scipy", "ortools", "numba", "cvxpy", "torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _cmd_info(args: argparse.Namespace) -> int:
    print("methods:")
    for m in method_info():
        state = "available" if m["available"] else f"missing ({m['install']})"
        budget = "budgets" if m["generalised"] else "unit only"
        print(f"  {m['name']:<8} {m['guarantee']:<13} {budget:<10} {state}\n           {m['summary']}")
    print("versions:")
    for pkg, ver in _versions().items():
        print(f"  {pkg:<10} {ver}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    problem = generate(
        args.family, args.clients, args.experts, args.capacity, seed=args.seed, expert_min_frac=args.expert_min_frac
    )
    print(
        f"instance: {args.family}, {problem.n_clients} clients x {problem.n_experts} experts, "
        f"capacity {args.capacity}, expert_min {int(problem.expert_min[0])}, expert_max {int(problem.expert_max[0])}"
    )
    rows = []
    for method in ("flow", "greedy", "random"):
        solve(problem, method, seed=args.seed)  # first call compiles numba kernels; time the second
        t0 = time.perf_counter()
        a = solve(problem, method, seed=args.seed)
        elapsed = time.perf_counter() - t0
        verify(problem, a)
        rows.append((method, a, elapsed))
    best = max(a.objective for _, a, _ in rows)
    print(f"{'method':<8} {'status':<9} {'objective':>12} {'% of best':>9} {'time (s)':>9} {'load cv':>8}")
    for method, a, elapsed in rows:
        print(
            f"{method:<8} {a.status:<9} {a.objective:>12.3f} {100 * a.objective / best:>8.2f}% "
            f"{elapsed:>9.4f} {a.load_cv:>8.3f}"
        )
    print("every assignment verified against every constraint")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"solve": _cmd_solve, "generate": _cmd_generate, "info": _cmd_info, "demo": _cmd_demo}
    try:
        return handlers[args.command](args)
    except (AlignsolveError, OSError) as exc:  # InvalidProblemError is an AlignsolveError
        print(f"alignsolve: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError:
        print("alignsolve: error: out of memory (the instance is too large for this machine)", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # a bug: one line, not a traceback, and a distinct status
        print(f"alignsolve: internal error (please report it): {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_INTERNAL


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
