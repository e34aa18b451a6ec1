"""Instance generators shared by the CLI, the tests and the benchmarks.

Every family takes N clients, E experts and a per-client capacity k. Unless the
family fixes them, the load bounds are ``expert_max = ceil((1 + expert_max_slack) * N k / E)``
and ``expert_min = floor(expert_min_frac * N k / E)`` (the benchmark settings).
"""

from __future__ import annotations

import math

import numpy as np

from ._validation import AT_LEAST_ONE, as_nonneg_float, as_seed
from .errors import InvalidProblemError
from .problem import Problem

__all__ = ["FAMILIES", "SPARSE_BLOCK", "generate", "generate_sparse"]

FAMILIES: dict[str, str] = {
    "uniform": "fitness i.i.d. uniform on [0, 1)",
    "skewed": "a few popular experts every client prefers (uniform noise plus a Zipf-like expert popularity)",
    "lowrank": "client data mixtures times expert specialities (Dirichlet mixtures over latent domains) plus noise",
    "tight": "every client must fill all its slots and every expert's load is pinned to floor/ceil of N k / E, "
    "on a random 70% allowed mask",
    "adversarial": "bait pairs that lead greedy to about half the optimum",
    "infeasible": "a set of experts whose total expert_min exceeds what the clients allowed to train them can give",
    "budget": "generalised variant: lowrank fitness, cost = expert size / client speed (log-normal, "
    "sigma 0.3 and 0.5), budget = k experts of average cost for an average client, 2k slots",
}


def _bounds(n: int, e: int, k: int, expert_min_frac: float, expert_max_slack: float) -> tuple[int, int]:
    mean = n * k / e
    emax = max(1, math.ceil((1.0 + expert_max_slack) * mean - 1e-9))
    emin = min(emax, math.floor(expert_min_frac * mean + 1e-9))
    return emin, emax


#: Largest dense instance :func:`generate` makes (N x E cells; 1.6 GB of float64 fitness).
MAX_DENSE_CELLS = 200_000_000


def generate(
    family: str,
    n_clients: int,
    n_experts: int,
    capacity: int,
    *,
    seed: int | None = 0,
    expert_min_frac: float = 0.0,
    expert_max_slack: float = 0.1,
    load_penalty: float = 0.0,
) -> Problem:
    """Generate an instance of a family (see :data:`FAMILIES`).

    Parameters
    ----------
    family : str
        One of :data:`FAMILIES`.
    n_clients, n_experts : int
        N >= 1, E >= 1.
    capacity : int
        Expert slots per client, 1 <= k <= E.
    seed : int, optional
        Same seed, same instance.
    expert_min_frac : float
        ``expert_min`` as a fraction of the mean load N k / E (families without fixed bounds).
    expert_max_slack : float
        ``expert_max = ceil((1 + slack) * N k / E)`` (families without fixed bounds).
    load_penalty : float
        Passed to the problem.

    Returns
    -------
    Problem
    """
    if family not in FAMILIES:
        raise InvalidProblemError("family", f"must be one of {', '.join(FAMILIES)}", repr(family))
    n, e, k = (
        AT_LEAST_ONE(name, v)
        for name, v in (("n_clients", n_clients), ("n_experts", n_experts), ("capacity", capacity))
    )
    if n * e > MAX_DENSE_CELLS:
        raise InvalidProblemError(
            "n_clients * n_experts",
            f"must be at most {MAX_DENSE_CELLS:.0e} for a dense instance (use generate_sparse beyond)",
            f"{n} x {e} = {n * e:.3g}",
        )
    if k > e:
        raise InvalidProblemError("capacity", f"must be <= n_experts ({e})", k)
    frac = as_nonneg_float("expert_min_frac", expert_min_frac)
    if frac > 1:
        raise InvalidProblemError("expert_min_frac", "must be <= 1 (a fraction of the mean load)", frac)
    slack = as_nonneg_float("expert_max_slack", expert_max_slack)
    rng = np.random.default_rng(as_seed("seed", seed))
    emin, emax = _bounds(n, e, k, frac, slack)

    if family == "uniform":
        fit = rng.random((n, e))
        return Problem(fit, k, expert_min=emin, expert_max=emax, load_penalty=load_penalty)
    if family == "skewed":
        popularity = 1.0 / (1.0 + rng.permutation(e)) ** 0.7
        fit = 0.5 * rng.random((n, e)) + popularity[None, :]
        return Problem(fit, k, expert_min=emin, expert_max=emax, load_penalty=load_penalty)
    if family == "lowrank":
        d = max(2, e // 8)
        theta = rng.dirichlet(np.full(d, 0.3), size=n)
        phi = rng.dirichlet(np.full(d, 0.3), size=e)
        fit = d * theta @ phi.T + 0.05 * rng.standard_normal((n, e))
        return Problem(fit, k, expert_min=emin, expert_max=emax, load_penalty=load_penalty)
    if family == "tight":
        return _tight(rng, n, e, k, load_penalty)
    if family == "adversarial":
        return _adversarial(n, e, k, load_penalty)
    if family == "budget":
        return _budget(rng, n, e, k, emin, emax, load_penalty)
    return _infeasible(rng, n, e, k, load_penalty)


def _budget(rng: np.random.Generator, n: int, e: int, k: int, emin: int, emax: int, load_penalty: float) -> Problem:
    """Experts differ in size and clients in speed, so a client's budget (a time
    deadline, say) buys a few large experts or more small ones."""
    d = max(2, e // 8)
    theta = rng.dirichlet(np.full(d, 0.3), size=n)
    phi = rng.dirichlet(np.full(d, 0.3), size=e)
    fit = d * theta @ phi.T + 0.05 * rng.standard_normal((n, e))
    size = rng.lognormal(0.0, 0.3, size=e)
    speed = rng.lognormal(0.0, 0.5, size=n)
    cost = np.round(size[None, :] / speed[:, None], 4)
    budget = np.round(k * float(np.mean(size)) / speed * rng.uniform(0.8, 1.2, size=n), 4)
    return Problem(
        fit,
        min(2 * k, e),
        expert_min=emin,
        expert_max=emax,
        cost=cost,
        budget=budget,
        load_penalty=load_penalty,
    )


def _tight(rng: np.random.Generator, n: int, e: int, k: int, load_penalty: float) -> Problem:
    from .feasibility import diagnose

    total = n * k
    emin, emax = total // e, -(-total // e)
    fit = rng.random((n, e))
    for _ in range(20):
        allowed = rng.random((n, e)) < 0.7
        problem = Problem(
            fit, k, client_min=k, expert_min=emin, expert_max=emax, allowed=allowed, load_penalty=load_penalty
        )
        if diagnose(problem) is None:
            return problem
    # A dense enough mask is always found in practice; the full mask is always feasible.
    return Problem(fit, k, client_min=k, expert_min=emin, expert_max=emax, load_penalty=load_penalty)


def _adversarial(n: int, e: int, k: int, load_penalty: float) -> Problem:
    """Blocks of 2k experts: k bait experts (1 + eps for type A, 1 for type B) and k
    good experts (1 for type A, 0 for type B); each expert takes as many clients as
    the block has of type A. Greedy sends type A to the bait and leaves type B the
    zeros, about half of the optimum (A to the good experts, B to the bait)."""
    if e < 2 * k:
        raise InvalidProblemError("n_experts", f"must be >= 2 * capacity ({2 * k}) for the adversarial family", e)
    eps = 0.01
    blocks = e // (2 * k)
    fit = np.zeros((n, e))
    allowed = np.zeros((n, e), dtype=bool)
    emax = np.zeros(e, dtype=np.int64)
    for i in range(n):
        b = (i // 2) % blocks
        bait = slice(2 * k * b, 2 * k * b + k)
        good = slice(2 * k * b + k, 2 * k * (b + 1))
        allowed[i, 2 * k * b : 2 * k * (b + 1)] = True
        if i % 2 == 0:  # type A
            fit[i, bait], fit[i, good] = 1.0 + eps, 1.0
            emax[2 * k * b : 2 * k * (b + 1)] += 1
        else:
            fit[i, bait], fit[i, good] = 1.0, 0.0
    return Problem(fit, k, expert_max=emax, allowed=allowed, load_penalty=load_penalty)


def _infeasible(rng: np.random.Generator, n: int, e: int, k: int, load_penalty: float) -> Problem:
    fit = rng.random((n, e))
    allowed = np.ones((n, e), dtype=bool)
    emin = np.zeros(e, dtype=np.int64)
    if e > k and n >= 1:
        # Experts J (k+1 of them) may be trained only by clients A; J needs more than A can give.
        a = max(1, n // 8)
        j = k + 1
        allowed[a:, :j] = False
        emin[:j] = min(a, -(-(a * k + 1) // j))
        if emin[:j].sum() <= a * k:  # |A| too small to pin it by minima alone: pin the per-expert count
            emin[0] = a + 1 if a + 1 <= n else n
            allowed[:, 0] = np.arange(n) < a
    else:
        allowed[0, 0] = False
        emin[0] = n
    return Problem(fit, k, expert_min=emin, expert_max=np.maximum(emin, n), allowed=allowed, load_penalty=load_penalty)


#: Rows per block of :func:`generate_sparse` (fixed: the instance depends on it through the random streams).
SPARSE_BLOCK = 8192


def generate_sparse(
    n_clients: int,
    n_experts: int,
    capacity: int,
    m: int,
    *,
    seed: int | None = 0,
    domains: int = 16,
    expert_min_frac: float = 0.0,
    expert_max_slack: float = 0.1,
    values_dtype: str = "float32",
    dense: bool = False,
):
    """A large candidate-list instance, built block by block without an N x E matrix.

    The fitness is the ``lowrank`` model with a fixed number of latent domains:
    ``F = domains * theta @ phi.T + 0.05 * noise``, client mixtures ``theta`` and expert
    specialities ``phi`` Dirichlet(0.3) over ``domains`` domains, so a client's mass sits on
    the experts of its two or three domains. Each client keeps its ``m`` best experts.
    Rows are drawn in blocks of :data:`SPARSE_BLOCK` from their own streams, so memory is
    ``O(SPARSE_BLOCK * E + N m)``.

    Parameters
    ----------
    n_clients, n_experts, capacity : int
        N, E and k (bounds as in :func:`generate`).
    m : int
        Candidates per client, 1 <= m <= E.
    dense : bool
        Return the dense :class:`Problem` of the same fitness instead (every pair allowed;
        needs N x E float64): the reference for measuring what the candidate lists lose.

    Returns
    -------
    SparseProblem, or Problem when ``dense``
    """
    from .sparse import SparseProblem

    n, e, k, m = (
        AT_LEAST_ONE(name, v)
        for name, v in (("n_clients", n_clients), ("n_experts", n_experts), ("capacity", capacity), ("m", m))
    )
    if m > e:
        raise InvalidProblemError("m", f"must be <= n_experts ({e})", m)
    if k > m:
        raise InvalidProblemError("capacity", f"must be <= m ({m}): a client cannot hold more than it lists", k)
    domains = AT_LEAST_ONE("domains", domains)
    seed = as_seed("seed", seed)
    emin, emax = _bounds(
        n,
        e,
        k,
        as_nonneg_float("expert_min_frac", expert_min_frac),
        as_nonneg_float("expert_max_slack", expert_max_slack),
    )
    base = np.random.default_rng([0 if seed is None else seed, 0])
    phi = base.dirichlet(np.full(domains, 0.3), size=e)
    blocks = []
    full = np.empty((n, e)) if dense else None
    for b, lo in enumerate(range(0, n, SPARSE_BLOCK)):
        hi = min(n, lo + SPARSE_BLOCK)
        rng = np.random.default_rng([0 if seed is None else seed, 1, b])
        theta = rng.dirichlet(np.full(domains, 0.3), size=hi - lo)
        fit = domains * (theta @ phi.T) + 0.05 * rng.standard_normal((hi - lo, e))
        if full is not None:
            full[lo:hi] = fit
            continue
        top = np.argpartition(-fit, m - 1, axis=1)[:, :m] if m < e else np.broadcast_to(np.arange(e), (hi - lo, e))
        top = np.sort(top, axis=1)
        blocks.append((top.astype(np.int32), np.take_along_axis(fit, top, axis=1).astype(values_dtype)))
    if full is not None:
        return Problem(full, k, expert_min=emin, expert_max=emax)
    indices = np.concatenate([t.reshape(-1) for t, _ in blocks])
    values = np.concatenate([v.reshape(-1) for _, v in blocks])
    indptr = np.arange(0, n * m + 1, m, dtype=np.int64)
    return SparseProblem(indptr, indices, values, e, k, expert_min=emin, expert_max=emax, values_dtype=values_dtype)
