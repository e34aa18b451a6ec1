"""Assignment policies: who trains which experts this round. A policy overrides :meth:`Policy.assign`.

Every policy sees the same reports and the same per-client slots (``capacity``, from
:func:`alignsolve.plan_capacity` on the clients' profiles) and returns an (M, E) bool matrix
in the reports' order.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import alignsolve as als

__all__ = [
    "POLICIES",
    "AlignedPolicy",
    "AllExpertsPolicy",
    "OracleLabelsPolicy",
    "Policy",
    "RandomPolicy",
    "RoundRobinPolicy",
    "StickyRandomPolicy",
    "TopKAffinityPolicy",
    "make_policy",
]


class Policy:
    """Base class. Override :meth:`assign`; :meth:`observe` and the state methods are optional."""

    name = "policy"
    #: Whether the policy keeps to the clients' slots (``all_experts`` does not, on purpose).
    respects_capacity = True

    def assign(
        self,
        round: int,
        reports: Sequence[als.ClientReport],
        capacity: np.ndarray,
        allowed: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """(M, E) bool: row m lists the experts of ``reports[m]``, at most ``capacity[m]``, within ``allowed[m]``."""
        raise NotImplementedError

    def observe(self, outcomes: Sequence[als.ClientOutcome]) -> None:
        """After the round: who completed, on how many samples (only the aligner uses it)."""

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (for resuming)."""

    def info(self) -> dict[str, Any]:
        """Per-round figures for the history (solver time, relaxations...)."""
        return {}


class AlignedPolicy(Policy):
    """The :class:`alignsolve.Aligner`: scored, load-bounded, capacity-profiled assignment."""

    name = "aligned"

    def __init__(self, aligner: als.Aligner) -> None:
        self.aligner = aligner
        self._info: dict[str, Any] = {}

    def assign(self, round, reports, capacity, allowed, rng):
        result = self.aligner.assign(round, reports)
        rows = {cid: m for m, cid in enumerate(result.client_ids)}
        out = np.zeros((len(reports), self.aligner.n_experts), dtype=bool)
        for m, rep in enumerate(reports):
            if rep.client_id in rows:
                out[m] = result.matrix[rows[rep.client_id]]
        info = result.stats.get("aligner", {})
        self._info = {
            "solve_s": result.wall_time,
            "method": result.method,
            "relaxed": list(info.get("relaxed", [])),
            "below_cohort": list(info.get("below_cohort", [])),
        }
        return out

    def observe(self, outcomes):
        self.aligner.observe(outcomes)

    def state(self):
        return {"aligner": self.aligner.to_json()}

    def load_state(self, state):
        self.aligner = als.Aligner.from_json(state["aligner"])

    def info(self):
        return self._info


class RandomPolicy(Policy):
    """Each client a uniformly random set of ``capacity`` experts among those it is ``allowed`` (no load bounds)."""

    name = "random"

    def assign(self, round, reports, capacity, allowed, rng):
        out = np.zeros(allowed.shape, dtype=bool)
        for m in range(allowed.shape[0]):
            options = np.flatnonzero(allowed[m])
            k = min(int(capacity[m]), options.size)
            out[m, rng.choice(options, size=k, replace=False)] = True
        return out


class RoundRobinPolicy(Policy):
    """Client m takes the next ``capacity[m]`` allowed experts after a cursor moving across clients and rounds."""

    name = "round_robin"

    def __init__(self) -> None:
        self.cursor = 0

    def assign(self, round, reports, capacity, allowed, rng):
        n, e = allowed.shape
        out = np.zeros((n, e), dtype=bool)
        for m in range(n):
            taken = 0
            for step in range(e):
                j = (self.cursor + step) % e
                if taken < capacity[m] and allowed[m, j]:
                    out[m, j] = True
                    taken += 1
            self.cursor = (self.cursor + max(taken, 1)) % e
        return out

    def state(self):
        return {"cursor": self.cursor}

    def load_state(self, state):
        self.cursor = int(state["cursor"])


class TopKAffinityPolicy(Policy):
    """Each client its top experts by routing share, no load bounds (the usual federated-MoE heuristic)."""

    name = "topk_affinity"

    def assign(self, round, reports, capacity, allowed, rng):
        return als.top_k_affinity(reports, capacity, allowed)


class TopKCappedPolicy(Policy):
    """Top experts by routing share under the aligner's load cap: simple balancing without exact matching.

    Clients are served in a random order; each takes its best allowed experts (by routing
    share) among those still below ``expert_max = ceil((1 + balance_tolerance) * mean load)``,
    the cap the aligner uses, with the mean load the slots offered divided by E. Set
    against ``aligned``, it separates what the exact assignment adds from what capping the
    loads alone does.
    """

    name = "topk_capped"

    def __init__(self, balance_tolerance: float = 0.25) -> None:
        self.balance_tolerance = balance_tolerance

    def assign(self, round, reports, capacity, allowed, rng):
        n, e = allowed.shape
        routing = np.stack([np.asarray(rep.routing, dtype=float) for rep in reports]) if n else np.zeros((0, e))
        slots = float(np.minimum(capacity, allowed.sum(axis=1)).sum())
        cap = max(1, math.ceil((1.0 + self.balance_tolerance) * slots / e - 1e-9))
        loads = np.zeros(e, dtype=np.int64)
        out = np.zeros((n, e), dtype=bool)
        for m in rng.permutation(n):
            order = np.argsort(-np.where(allowed[m], routing[m], -np.inf), kind="stable")
            for j in order[: int(allowed[m].sum())]:
                if out[m].sum() >= capacity[m]:
                    break
                if loads[j] < cap:
                    out[m, j] = True
                    loads[j] += 1
        return out


class BottomKAffinityPolicy(Policy):
    """Each client the experts its data are routed to *least*: the control of the federated sanity gate.

    Every expert is then trained by clients whose data the router does not send to it. In a
    testbed where experts matter this must lose clearly against ``topk_affinity``.
    """

    name = "bottomk_affinity"

    def assign(self, round, reports, capacity, allowed, rng):
        inverted = [dataclasses.replace(rep, routing=-np.asarray(rep.routing, dtype=float)) for rep in reports]
        return als.top_k_affinity(inverted, capacity, allowed)


class AllExpertsPolicy(Policy):
    """Every client trains every expert, whatever its capacity: a reference whose bytes and latency count in full."""

    name = "all_experts"
    respects_capacity = False

    def assign(self, round, reports, capacity, allowed, rng):
        return np.ones(allowed.shape, dtype=bool)


# -- diagnostic references: what a deployed server could not run, or would not want ------------------------------


def _client_key(client_id: Any) -> int:
    """A stable integer of a client id (``hash`` of a str changes with each interpreter)."""
    return zlib.crc32(str(client_id).encode())


class StickyRandomPolicy(Policy):
    """Diagnostic: each client the same random experts every round, whatever its reports.

    Client ``i``'s experts are the first ``capacity`` allowed ones in a fixed permutation of
    the E experts, drawn from ``(seed, crc32(client id))``: as uninformed as ``random``, but
    every expert is trained by the same clients at each of their visits. Set against
    ``random``, it measures what consistency of the pairs alone is worth; against an
    informed policy, what the reports add beyond consistency.
    """

    name = "sticky_random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def assign(self, round, reports, capacity, allowed, rng):
        n, e = allowed.shape
        out = np.zeros((n, e), dtype=bool)
        for m, rep in enumerate(reports):
            order = np.random.default_rng([self.seed, _client_key(rep.client_id)]).permutation(e)
            keep = order[allowed[m, order]][: int(capacity[m])]
            out[m, keep] = True
        return out


class OracleLabelsPolicy(Policy):
    """Diagnostic: experts chosen from the clients' labels, which no server sees; not a deployable policy.

    A fixed map sends class ``c`` (of K) to its *home* experts ``{j : j mod K = c}`` when
    ``E >= K`` (with K = 10 and E = 16: classes 0-5 get two experts, 6-9 one), and to
    expert ``c mod E`` when ``E < K``. A client takes, for its classes from the most
    samples down, one home expert of each (among several, always the same one, chosen by
    its id), until its slots are full; a class whose home expert is not ``allowed`` is
    skipped, and slots beyond the client's classes stay empty. No load bounds.

    On a task where clients hold few classes (``mnist_shards``: two shards each) this is
    the assignment a server would make if it knew the partition: each expert learns the
    same classes from every client that trains it. It is a reference for what grouping
    clients by label gives there, without scores having to find that structure in reports.

    Parameters
    ----------
    label_counts : mapping of client id to array_like (K,)
        Samples per class on each client (``FederatedData``'s labels, counted).
    """

    name = "oracle_labels"

    def __init__(self, label_counts: Mapping[Any, Any]) -> None:
        counts = {cid: np.asarray(v, dtype=float) for cid, v in label_counts.items()}
        sizes = {v.shape for v in counts.values()}
        if not counts or len(sizes) != 1 or len(next(iter(sizes))) != 1:
            raise ValueError(
                f"label_counts: must map each client id to a (K,) vector of counts, one K for all; got shapes {sizes}"
            )
        bad = [cid for cid, v in counts.items() if not np.all(np.isfinite(v)) or np.any(v < 0)]
        if bad:
            raise ValueError(f"label_counts: counts must be finite and >= 0; not so for client {bad[0]!r}")
        self.label_counts = counts
        self.n_classes = next(iter(sizes))[0]

    def homes(self, c: int, e: int) -> list[int]:
        """The home experts of class ``c`` among ``e`` experts."""
        k = self.n_classes
        return list(range(c, e, k)) if e >= k else [c % e]

    def assign(self, round, reports, capacity, allowed, rng):
        n, e = allowed.shape
        out = np.zeros((n, e), dtype=bool)
        for m, rep in enumerate(reports):
            if rep.client_id not in self.label_counts:
                raise ValueError(f"reports: client {rep.client_id!r} has no entry in the oracle's label_counts")
            counts = self.label_counts[rep.client_id]
            key = _client_key(rep.client_id)
            for c in np.argsort(-counts, kind="stable"):
                if counts[c] <= 0 or out[m].sum() >= capacity[m]:
                    break
                homes = self.homes(int(c), e)
                j = homes[key % len(homes)]
                if allowed[m, j]:
                    out[m, j] = True
        return out


POLICIES = (
    "aligned",
    "random",
    "round_robin",
    "topk_affinity",
    "topk_capped",
    "all_experts",
    "bottomk_affinity",
    "flex_moe",
    "fedmoe",
    "sticky_random",
    "oracle_labels",
)


def make_policy(
    name: str,
    *,
    aligner: als.Aligner | None = None,
    balance_tolerance: float = 0.25,
    deficit_weight: float = 0.5,
    seed: int = 0,
    label_counts: Mapping[Any, Any] | None = None,
    tie_break: str = "solver",
) -> Policy:
    """A policy by name (``aligned`` needs its aligner; ``topk_capped`` and ``flex_moe`` use ``balance_tolerance``,
    ``flex_moe`` also ``deficit_weight``, ``tie_break`` and ``seed``; ``sticky_random`` uses ``seed``;
    ``oracle_labels`` needs ``label_counts``, each client's samples per class).

    ``flex_moe`` and ``fedmoe`` are the published-method policies of :mod:`fedloop.published`;
    ``sticky_random`` and ``oracle_labels`` are diagnostic references, not deployable policies.
    """
    if name == "aligned":
        if aligner is None:
            raise ValueError("aligner: the aligned policy needs an alignsolve.Aligner")
        return AlignedPolicy(aligner)
    classes = {"random": RandomPolicy, "round_robin": RoundRobinPolicy, "topk_affinity": TopKAffinityPolicy}
    classes["all_experts"] = AllExpertsPolicy
    classes["bottomk_affinity"] = BottomKAffinityPolicy
    classes["topk_capped"] = TopKCappedPolicy
    if name in ("flex_moe", "fedmoe"):
        from .published import FedMoEPolicy, FlexMoEPolicy  # they subclass Policy: imported after it

        if name == "fedmoe":
            return FedMoEPolicy()
        return FlexMoEPolicy(balance_tolerance, deficit_weight, tie_break=tie_break, seed=seed)
    if name == "sticky_random":
        return StickyRandomPolicy(seed)
    if name == "oracle_labels":
        if label_counts is None:
            raise ValueError("label_counts: the oracle_labels policy needs each client's samples per class")
        return OracleLabelsPolicy(label_counts)
    if name not in classes:
        raise ValueError(f"policy: must be one of {', '.join(POLICIES)}; got {name!r}")
    if name == "topk_capped":
        return TopKCappedPolicy(balance_tolerance)
    return classes[name]()
