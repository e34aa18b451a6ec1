"""Quality floor: a random maximal feasible assignment.

Every allowed pair gets an i.i.d. uniform priority and the greedy's three phases
(lower bounds, augmenting-path repair, fill) run on those priorities instead of the
fitness. The result satisfies every constraint, is maximal (no pair could be added),
ignores fitness and load penalty, and depends only on ``seed``. The priorities come from
their own stream (``seed`` mixed with a key fixed to this method), so that they are
independent of anything else drawn with the same integer seed: with a plain
``default_rng(seed)`` they would equal the fitness of a ``uniform`` instance generated
with that seed, and "random" would be greedy in disguise. It is a random
feasible assignment, not an exactly uniform sample over all feasible assignments
(counting those is #P-hard).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..problem import Problem
from . import SolverResult, check_options
from .rounding import run_greedy

__all__ = ["solve"]

_STREAM = 0x72616E646F6D  # "random": keeps this method's draws apart from other users of the same seed


def solve(
    problem: Problem, *, time_limit: float | None = None, seed: int | None = None, **options: Any
) -> SolverResult:
    check_options("random", options)
    rng = np.random.default_rng(None if seed is None else [_STREAM, seed])
    priority = rng.random(problem.shape)
    x, stats, message = run_greedy(problem, priority, skip_negative=False, use_penalty=False)
    stats["seed"] = seed
    if x is None:
        return SolverResult("infeasible", None, message, stats=stats)
    return SolverResult("feasible", x, "feasible (random)", stats=stats)
