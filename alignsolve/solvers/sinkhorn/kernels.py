"""Compiled block update of the entropic relaxation on grouped candidate entries (numba).

The same equations as :func:`alignsolve.solvers.sinkhorn._solve_lines` (see the
sinkhorn module's docstring), one line at a time instead of every line in lockstep:

* a line stops its Newton steps as soon as it is within tolerance, where the vectorised
  form evaluates every line until the slowest one is done;
* an evaluation is one fused pass over the line's entries, with no temporaries;
* the exponentials are taken once per line and block, not once per Newton step:
  ``exp(t_j) = w_j exp(s)`` with ``w_j = exp(a_j / eps - M)`` (``M`` the line's largest
  ``a_j / eps``) and ``s = M + d / eps``. The factors stay exact while ``s <= 300``;
  beyond, the line falls back to one exponential per entry (a product ``w_j exp(s)``
  with ``w_j`` below float64's range could lose a term that is not negligible there).

A line's entries are ``starts[l]:starts[l + 1]``; entry ``k`` has value ``K[k]`` (``-inf``
when out of play) and its line on the other side is ``other[k]``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_SAFE_EXP = 300.0


@njit(cache=True, nogil=True, inline="always")
def _evaluate(scaled, w, size, d, big, lo, hi, lam, eps, out):  # pragma: no cover - compiled
    """``R(d) - target(d)``, the slope and the target of one line (written into ``out``)."""
    shift = d / eps
    s = big + shift
    z = math.exp(s) if s <= _SAFE_EXP else 0.0
    total = 0.0
    capped = 0.0
    for t in range(size):
        v = scaled[t] + shift
        if v >= 0.0:
            capped += 1.0
        elif s <= _SAFE_EXP:
            total += w[t] * z
        else:
            total += math.exp(v)
    R = total + capped
    U = total  # the uncapped mass drives the slope
    if lam > 0.0:
        raw = -d / (2.0 * lam)
        target = min(max(raw, lo), hi)
        slope = U / eps + (1.0 / (2.0 * lam) if (raw > lo and raw < hi) else 0.0)
    else:
        if d < 0.0:
            target = hi
        elif d > 0.0:
            target = lo
        else:
            target = min(max(R, lo), hi)
        slope = U / eps
    out[0] = total + (capped - target)  # the small uncapped mass is not rounded against R
    out[1] = slope
    out[2] = target


@njit(cache=True, nogil=True)
def solve_lines(K, other, other_dual, starts, d_prev, lo, hi, lam, eps, iters, tol):  # pragma: no cover - compiled
    """The duals ``d`` (n_lines,) of one block update, and the largest relative violation
    ``|R(d_prev) - target(d_prev)| / max(target, 1)`` of the incoming iterate."""
    n_lines = starts.shape[0] - 1
    longest = 0
    for line in range(n_lines):
        longest = max(longest, starts[line + 1] - starts[line])
    scaled = np.empty(longest)
    w = np.empty(longest)
    out = np.empty(3)
    d_new = np.zeros(n_lines)
    worst = 0.0
    for line in range(n_lines):
        h = hi[line]
        if not h > 0.0:
            continue  # an inactive line keeps a zero dual
        lo_l = lo[line]
        begin = starts[line]
        size = starts[line + 1] - begin
        big = -np.inf
        small = np.inf
        for t in range(size):
            a = K[begin + t] + other_dual[other[begin + t]]
            v = a / eps
            scaled[t] = v
            if v > big:
                big = v
            if a > -np.inf and a < small:
                small = a
        mass = 0.0
        for t in range(size):
            w[t] = math.exp(scaled[t] - big) if big > -np.inf else 0.0
            mass += w[t]
        lse = (big if big > -np.inf else 0.0) + (math.log(mass) if mass > 0.0 else -np.inf)
        safe_hi = max(h, 1.0)
        low = eps * (math.log(safe_hi) - lse)
        low = min(low, -2.0 * lam * safe_hi) if lam > 0.0 else min(low, 0.0)
        a_br = low
        b_br = -small
        d = min(max(d_prev[line], a_br), b_br)
        _evaluate(scaled, w, size, d, big, lo_l, h, lam, eps, out)
        phi, slope, target = out[0], out[1], out[2]
        worst = max(worst, abs(phi) / max(target, 1.0))
        for _ in range(iters):
            if abs(phi) <= tol * max(target, 1.0):
                break
            if phi < 0.0:
                a_br = d
            if phi > 0.0:
                b_br = d
            newton = d - phi / max(slope, 1e-300)
            if lam == 0.0 and newton * d < 0.0:
                # the target jumps at d = 0; a step across it tries 0 first (as the vectorised form)
                newton = 0.0
            d = newton if (newton > a_br and newton < b_br) else 0.5 * (a_br + b_br)
            _evaluate(scaled, w, size, d, big, lo_l, h, lam, eps, out)
            phi, slope, target = out[0], out[1], out[2]
        d_new[line] = d
    return d_new, worst
