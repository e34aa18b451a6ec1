"""Policies after two published federated-MoE systems, written from their papers' descriptions.

Neither paper's code is used; each class says what it takes from its paper and what had to be
chosen because the description leaves it open or because this loop's clients report less.
Both see what every policy sees: the clients' reports (routing shares and per-expert losses
under the global router), their slots and the experts they may take.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import alignsolve as als
from alignsolve.federated.monitor import deficit_pressure, deficit_queue_step
from alignsolve.federated.scoring import affinity_shares

from .policies import Policy

__all__ = ["FedMoEPolicy", "FlexMoEPolicy"]


def _routing_and_loss(reports) -> tuple[np.ndarray, np.ndarray]:
    """(M, E) routing shares (rows sum to 1) and losses (NaN where a client reported none)."""
    routing = np.stack([np.asarray(rep.routing, dtype=float) for rep in reports])
    shares = affinity_shares(routing)
    e = routing.shape[1]
    loss = np.stack([np.full(e, np.nan) if rep.loss is None else np.asarray(rep.loss, dtype=float) for rep in reports])
    return shares, loss


class FlexMoEPolicy(Policy):
    """FLEX-MoE-style: usage-and-loss scores, solved under client capacity and per-expert load bounds with a deficit.

    **From the paper** (FLEX-MoE, arXiv 2512.23070): clients report how much they use each
    expert and how well they do on it; the server solves an optimisation that respects every
    client's capacity and keeps every expert's load within bounds, and it carries a
    *historical deficit* so that experts under-trained in past rounds are favoured later.

    **Chosen here.** The score of (i, j) is ``u_ij * (1 + l_ij / mean_l)``: usage ``u`` (the
    routing share) raised by how badly the client does on that expert's samples (this loop's
    clients report a per-expert loss, not an accuracy; a missing loss counts as the mean).
    The deficit is a virtual queue per expert, ``H_j <- max(0, H_j + L - load_j)`` with ``L``
    the mean load of the round, added as ``deficit_weight * H_j / (1 + max H)``. The problem
    is solved exactly (``alignsolve.solve``, method ``flow``) with
    ``expert_max = ceil((1 + balance_tolerance) * L)`` and no lower bounds. The paper does not
    say which optimum to take when several tie (pairs the router does not use score the same
    deficit bonus for every client): ``tie_break="solver"`` takes the one the flow solver
    reaches first, ``"shuffle"`` solves with the clients and experts in an order drawn from
    ``(seed, round)`` (``alignsolve.solve_with_random_ties``), a second draw of the same policy.
    """

    name = "flex_moe"

    def __init__(
        self,
        balance_tolerance: float = 0.25,
        deficit_weight: float = 0.5,
        *,
        tie_break: str = "solver",
        seed: int = 0,
    ) -> None:
        if tie_break not in als.TIE_BREAKS:
            raise ValueError(f"tie_break: must be one of {', '.join(als.TIE_BREAKS)}; got {tie_break!r}")
        self.balance_tolerance = balance_tolerance
        self.deficit_weight = deficit_weight
        self.tie_break = tie_break
        self.seed = seed
        self.queue: np.ndarray | None = None

    def assign(self, round, reports, capacity, allowed, rng):
        n, e = allowed.shape
        if self.queue is None:
            self.queue = np.zeros(e)
        if n == 0:
            return np.zeros((0, e), dtype=bool)
        usage, loss = _routing_and_loss(reports)
        mean_loss = float(np.nanmean(loss)) if np.isfinite(loss).any() else 1.0
        rel = np.where(np.isnan(loss), 1.0, loss / mean_loss if mean_loss > 0 else 1.0)
        score = usage * (1.0 + rel) + self.deficit_weight * deficit_pressure(self.queue)
        slots = float(np.minimum(capacity, allowed.sum(axis=1)).sum())
        cap = max(1, math.ceil((1.0 + self.balance_tolerance) * slots / e - 1e-9))
        problem = als.Problem(score, client_capacity=capacity, expert_max=min(cap, n), allowed=allowed)
        if self.tie_break == "shuffle":
            answer = als.solve_with_random_ties(problem, lambda p: als.solve(p, "flow"), (self.seed, round))
        else:
            answer = als.solve(problem, "flow")
        out = np.array(answer.matrix, dtype=bool)
        self.queue = deficit_queue_step(self.queue, slots / e, out.sum(axis=0))
        return out

    def state(self) -> dict[str, Any]:
        return {"queue": None if self.queue is None else self.queue.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.queue = None if state.get("queue") is None else np.asarray(state["queue"], dtype=float)


class FedMoEPolicy(Policy):
    """FedMoE-style: each client's sub-MoE from its activation pattern, by a per-client heuristic search.

    **From the paper** (FedMoE, arXiv 2408.11304): the server looks at which experts each
    client's data activates and searches, client by client, for a sub-MoE that fits the
    client's resources; no global load constraint couples the clients.

    **Chosen here.** The search keeps the fewest experts (most activated first) whose
    activation share reaches ``coverage`` (0.9), never more than the client's slots and at
    least one; ties in share are broken towards the expert with the higher reported loss. A
    client whose data concentrates on one expert thus trains one expert and saves the
    traffic and time of a second, where ``topk_affinity`` always fills its slots. The
    paper's server-side expert aggregation by similarity is not reproduced.
    """

    name = "fedmoe"

    def __init__(self, coverage: float = 0.9) -> None:
        self.coverage = coverage

    def assign(self, round, reports, capacity, allowed, rng):
        n, e = allowed.shape
        out = np.zeros((n, e), dtype=bool)
        if n == 0:
            return out
        usage, loss = _routing_and_loss(reports)
        for m in range(n):
            options = np.flatnonzero(allowed[m])
            if options.size == 0 or capacity[m] < 1:
                continue
            tie = np.nan_to_num(loss[m, options], nan=0.0)
            order = options[np.lexsort((-tie, -usage[m, options]))]
            covered = 0.0
            for j in order[: int(capacity[m])]:
                out[m, j] = True
                covered += usage[m, j]
                if covered >= self.coverage:
                    break
        return out
