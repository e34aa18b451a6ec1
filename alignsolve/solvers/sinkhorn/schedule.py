"""The epsilon schedule: stages of block updates at a decreasing entropy weight, duals carried over."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Schedule", "run_schedule"]


@dataclass(frozen=True)
class Schedule:
    """The schedule's settings (the options of :func:`~alignsolve.solvers.sinkhorn.entropic_duals`).

    ``eps_final`` and ``eps_start`` are in units of the fitness spread; ``eps_decay`` is
    the factor between stages; each stage runs at most ``max_sweeps`` sweeps and ends
    when every client row is within ``tol`` (the last stage) or ``max(tol, stage_tol)``
    (earlier ones); ``line_iters`` Newton steps per line and block update.
    """

    load_penalty: float = 0.0
    eps_final: float = 1e-3
    eps_start: float = 1.0
    eps_decay: float = 0.5
    max_sweeps: int = 50
    tol: float = 1e-4
    stage_tol: float = 1e-2
    line_iters: int = 8

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)


def run_schedule(ops: Any, rows: Any, cols: Any, spread: float, bounds: tuple, schedule: Schedule):
    """The epsilon schedule of block updates, rows then columns, shared by the dense and sparse forms.

    ``rows`` and ``cols`` are the two sides (:mod:`.sides`), ``spread`` the fitness spread
    that ``eps`` is measured in, ``bounds`` ``(row_lo, row_hi, col_lo, col_hi)``. Returns
    the duals ``f`` (N,), ``g`` (E,) as numpy arrays and the run's figures.
    """
    load_penalty, eps_final, eps_start = schedule.load_penalty, schedule.eps_final, schedule.eps_start
    eps_decay, max_sweeps, tol = schedule.eps_decay, schedule.max_sweeps, schedule.tol
    stage_tol, line_iters = schedule.stage_tol, schedule.line_iters
    r_lo, r_hi, c_lo, c_hi = (ops.asarray(b) for b in bounds)
    f = ops.asarray(np.zeros(rows.n_lines))
    g = ops.asarray(np.zeros(cols.n_lines))
    eps = eps_start * spread
    final = eps_final * spread
    sweeps = stages = 0
    violation = math.inf
    while True:
        stages += 1
        last = eps <= final * (1 + 1e-12)
        # Stages before the last only warm-start the next one: a loose tolerance there
        # saves sweeps without changing the rounded answer.
        stage_end = tol if last else max(tol, stage_tol)
        for _ in range(max_sweeps):
            sweeps += 1
            f, violation = rows.update(f, g, r_lo, r_hi, 0.0, eps, line_iters, tol)
            g, _ = cols.update(g, f, c_lo, c_hi, load_penalty, eps, line_iters, tol)
            if violation <= stage_end:
                break
        if last:
            break
        eps = max(eps * eps_decay, final)
    info = {
        "sweeps": sweeps,
        "stages": stages,
        "eps": eps,
        "violation": violation,
        "backend": ops.name,
        "device": str(getattr(ops, "device", "cpu")),
    }
    return ops.to_numpy(f), ops.to_numpy(g), info
