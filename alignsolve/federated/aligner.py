"""The Aligner: what a federated system calls once per round.

Each round::

    assignment = aligner.assign(round, reports)   # who trains what (by client id)
    ... the clients train ...
    aligner.observe(outcomes)                      # who finished, on how many samples

:meth:`Aligner.assign` profiles the reporting clients (:func:`~alignsolve.plan_capacity`),
scores every pair (:class:`~alignsolve.FitnessScorer`, fed by the
:class:`~alignsolve.LoadMonitor`), bounds each expert's load and solves. The bounds:

- ``expert_max = ceil((1 + balance_tolerance) * mean load)``, where the mean load is the
  slots the eligible clients offer divided by E (with ``load_target="demand"``, per expert:
  ``ceil((1 + balance_tolerance) * slots * d_j)``, ``d_j`` the round's routing share of j);
- ``expert_min = min_cohort``: every expert trained by at least that many clients, which
  is also the minimum cohort secure aggregation needs to hide one client's update;
- ``client_min = client_capacity``: every eligible client uses all its slots (so the
  realised mean load is the planned one); with ``min_slots = k``, ``client_min =
  min(k, client_capacity)``: a client trains k experts and more only where a pair's score
  is positive (the scorer's ``price`` sets the bar).

When that round is infeasible the aligner relaxes, in this order, and records each step
in ``stats["aligner"]["relaxed"]``:

1. ``client_min``: clients may leave slots empty;
2. ``cohort_partial``: ``expert_min`` drops to 0 for the experts that cannot reach
   ``min_cohort`` on their own (fewer allowed clients than the cohort);
3. ``cohort``: ``expert_min`` drops to 0 for every expert.

The load cap is never relaxed: with ``client_min = expert_min = 0`` the problem is always
feasible, so no expert's load exceeds its ``expert_max`` in any round.
After a cohort relaxation, an expert that ends up with fewer than ``min_cohort`` clients
(but more than 0) cannot be securely aggregated: with ``enforce_cohort=True`` (default)
its pairs are removed and listed in ``stats["aligner"]["below_cohort"]``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .._validation import AT_LEAST_ONE, COUNT, FLAG, NONNEGATIVE, Option, as_optional_positive_float
from ..assignment import Assignment
from ..errors import InvalidProblemError, InvalidReportError
from ..feasibility import diagnose
from ..problem import Problem
from ..solve import solve
from ..solvers import METHODS, check_options
from ..verify import verify
from .capacity import ClientProfile, ExpertSpec, plan_capacity
from .monitor import LoadMonitor, deficit_pressure, deficit_queue_step
from .reports import (
    ClientOutcome,
    ClientReport,
    _check_id,
    _key_of,
    _Parsed,
    _vector,
    expert_totals,
    held_and_loss,
    outcome_figures,
    top_k_affinity,
)
from .scoring import FitnessScorer, affinity_shares
from .state import checked_state, config_of, restore, state_of

__all__ = ["Aligner", "ClientOutcome", "ClientReport", "solve_with_random_ties", "top_k_affinity"]

log = logging.getLogger("alignsolve.aligner")
_DEADLINE = Option("float", low=0.0, low_open=True, text="must be a finite number of seconds > 0")
_HALFLIFE = Option("float", low=0.0, low_open=True, text="must be a finite number of rounds > 0")
FORMAT = "alignsolve.aligner"


#: What the load bounds balance towards (see the ``load_target`` parameter of :class:`Aligner`).
LOAD_TARGETS = ("uniform", "demand")
#: What the load term reads (see the ``load_signal`` parameter of :class:`Aligner`).
LOAD_SIGNALS = ("share", "queue")
#: How the aligner picks among tied optima (see the ``tie_break`` parameter of :class:`Aligner`).
TIE_BREAKS = ("solver", "shuffle")


def _methods_for(method: str, budget_mode: bool) -> tuple[str, ...]:
    """The methods ``solve`` may run for this aligner (``auto`` chooses by size and variant)."""
    if method != "auto":
        return (method,)
    return ("cpsat", "greedy") if budget_mode else ("flow", "greedy")


def solve_with_random_ties(problem: Problem, run: Callable[[Problem], Assignment], key: Sequence[int]) -> Assignment:
    """Solve with the clients and experts in an order drawn from ``key``, and map the answer back.

    A method that meets several optima returns the first it reaches, which follows the order of
    the clients and experts; solving ``problem.relabel(rows, cols)`` with ``rows`` and ``cols``
    permutations drawn from ``numpy.random.default_rng(key)`` makes those ties fall at random,
    reproducibly for one key.

    Parameters
    ----------
    problem : Problem
        The problem, shape (N, E).
    run : callable
        ``run(p)`` solves a problem ``p`` and returns its :class:`Assignment` (the method and its
        options are the caller's).
    key : sequence of int
        The random draw's seed, e.g. ``(seed, round)``.

    Returns
    -------
    Assignment
        ``run``'s answer for the relabelled problem with its matrix in ``problem``'s order:
        ``x[np.ix_(rows, cols)] = y``. Relabelling moves no objective, so the answer is one the
        method could return for ``problem``, with the same status and bound (an exact method's
        optimum stays optimal). The method's certificate names the shuffled indices and is left
        out of ``stats``; ``stats["tie_break"]`` holds the two orders. When the relabelled problem
        has no solution there is no tie to break: ``run(problem)`` is returned, so that its
        explanation names the problem's own clients and experts.
    """
    rng = np.random.default_rng(list(key))
    rows, cols = rng.permutation(problem.shape[0]), rng.permutation(problem.shape[1])
    answer = run(problem.relabel(rows, cols))
    if not answer.has_solution:
        return run(problem)
    matrix = np.zeros(problem.shape, dtype=bool)
    matrix[np.ix_(rows, cols)] = np.asarray(answer.matrix, dtype=bool)
    stats = {k: v for k, v in answer.stats.items() if k != "certificate"}
    stats["tie_break"] = {"client_order": rows.tolist(), "expert_order": cols.tolist()}
    return dataclasses.replace(answer, matrix=matrix, stats=stats)


class Aligner:
    """Dynamic client-expert alignment across rounds.

    Parameters
    ----------
    n_experts : int
        E.
    expert_spec : ExpertSpec
        Sizes of the shared part and of each expert (bytes, FLOPs per sample).
    deadline : float
        Seconds a round may take; with the profiles it gives each client's slots.
    method : str, default "auto"
        Any :func:`alignsolve.solve` method.
    scorer : FitnessScorer, optional
        Default weights when omitted (see :mod:`alignsolve.federated.scoring`).
    balance_tolerance : float >= 0, default 0.25
        ``t`` in ``expert_max = ceil((1 + t) * mean load)``.
    load_target : {"uniform", "demand"}, default "uniform"
        What the load bounds and the load term balance towards. ``uniform``: every expert the
        same share ``1/E`` of the round's slots. ``demand``: each expert the share ``d_j`` of
        the round's routing that goes to it (the mean of the clients' routing shares), so
        ``expert_max_j = ceil((1 + t) * slots * d_j)`` (at least 1) and the load term's deficit
        is ``d_j`` minus the monitor's smoothed share. An expert the router does not use then
        draws no client, and a popular one may take more than the mean load.
    load_signal : {"share", "queue"}, default "share"
        What the load term ``D_j`` reads. ``share``: the monitor's smoothed share of trained
        samples against the target, ``clip(deficit_j / target_j, -1, 1)``, its weight boosted
        while loads are uneven. ``queue``: a historical deficit in clients per round, the
        virtual queue ``H_j <- max(0, H_j + slots * target_j - load_j)`` updated with each
        round's assignment, read as ``D_j = H_j / (1 + max_k H_k)`` in [0, 1) and weighted
        without the boost (the queue itself carries the history). An expert assigned fewer
        clients than its target share, round after round, gains until it is served; one
        served at its target does not.
    min_cohort : int >= 0, default 1
        ``expert_min``: clients every expert needs each round (secure-aggregation cohort).
    local_epochs : int, default 1
    budget_mode : bool, default False
        Solve the generalised variant (per-pair time costs against the deadline) instead
        of slot counts.
    max_experts : int, optional
        Cap on any client's slots (for example the router's top-k).
    enforce_cohort : bool, default True
        Remove the pairs of an expert that ends a relaxed round with 0 < load < min_cohort.
    min_slots : int >= 0, optional
        None (the default) asks every eligible client to use all its slots
        (``client_min = client_capacity``). An integer k asks for ``min(k, client_capacity)``
        and allows the rest to stay empty: the solver then fills a slot beyond the k-th only
        with a pair whose fitness is above 0.
    smoothing : float, default 0.3
        The load monitor's EMA weight.
    pair_halflife : float > 0, default 20
        Rounds over which a pair's training count halves, for the scorer's ``explore`` term:
        ``n_ij`` adds 1 each round client i completes training expert j and is multiplied by
        ``0.5 ** (rounds / pair_halflife)`` between. Counted only while that term's weight is
        above 0 (the counts are kept per client id, in :attr:`pair_counts`).
    seed : int, default 0
        Round r is solved with seed ``seed + r``: same seed, same run.
    tie_break : {"solver", "shuffle"}, default "solver"
        Which optimum a round returns when several have the same objective. ``solver``:
        the one the method reaches first, which follows the order of the clients and
        experts (for the flow solver, the order of its arcs), so the same kind of tie falls
        the same way round after round. ``shuffle``: the round's problem is solved with its
        clients and experts in an order drawn from ``(seed, round)`` and the answer mapped
        back, so ties fall at random, reproducibly. Relabelling moves no objective: the
        answer is one the method could return for the same problem, with the same status
        and bound (an exact method's optimum stays optimal). The method's certificate
        names the shuffled indices and is left out of ``stats`` (``stats["tie_break"]``
        holds the two orders); a round with no solution is solved again as given, so its
        explanation names the problem's own clients and experts.
    time_limit : float, optional
        Passed to :func:`alignsolve.solve`.
    strict : bool, default False
        Raise on a bad report or outcome instead of rejecting it with a logged reason.
    solver_options : dict, optional
        Method-specific options for :func:`alignsolve.solve`.
    """

    def __init__(
        self,
        n_experts: int,
        expert_spec: ExpertSpec,
        deadline: float,
        *,
        method: str = "auto",
        scorer: FitnessScorer | None = None,
        balance_tolerance: float = 0.25,
        load_target: str = "uniform",
        load_signal: str = "share",
        min_cohort: int = 1,
        local_epochs: int = 1,
        budget_mode: bool = False,
        max_experts: int | None = None,
        enforce_cohort: bool = True,
        min_slots: int | None = None,
        smoothing: float = 0.3,
        pair_halflife: float = 20.0,
        seed: int = 0,
        tie_break: str = "solver",
        time_limit: float | None = None,
        strict: bool = False,
        solver_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.n_experts = AT_LEAST_ONE("n_experts", n_experts)
        if not isinstance(expert_spec, ExpertSpec):
            raise InvalidProblemError("expert_spec", "must be an ExpertSpec", type(expert_spec).__name__)
        expert_spec.per_expert(self.n_experts)  # its per-expert sequences must match E
        self.expert_spec = expert_spec
        self.deadline = _DEADLINE("deadline", deadline)
        if not isinstance(method, str) or (method != "auto" and method not in METHODS):
            raise InvalidProblemError("method", f"must be one of auto, {', '.join(METHODS)}", method)
        self.method = method
        if scorer is not None and not isinstance(scorer, FitnessScorer):
            raise InvalidProblemError("scorer", "must be a FitnessScorer", type(scorer).__name__)
        self.scorer = scorer or FitnessScorer()
        self.balance_tolerance = NONNEGATIVE("balance_tolerance", balance_tolerance)
        if load_target not in LOAD_TARGETS:
            raise InvalidProblemError("load_target", f"must be one of {', '.join(LOAD_TARGETS)}", load_target)
        self.load_target = load_target
        if load_signal not in LOAD_SIGNALS:
            raise InvalidProblemError("load_signal", f"must be one of {', '.join(LOAD_SIGNALS)}", load_signal)
        self.load_signal = load_signal
        self.min_cohort = COUNT("min_cohort", min_cohort)
        self.local_epochs = AT_LEAST_ONE("local_epochs", local_epochs)
        self.budget_mode = FLAG("budget_mode", budget_mode)
        self.max_experts = None if max_experts is None else AT_LEAST_ONE("max_experts", max_experts)
        self.enforce_cohort = FLAG("enforce_cohort", enforce_cohort)
        self.min_slots = None if min_slots is None else COUNT("min_slots", min_slots)
        self.pair_halflife = _HALFLIFE("pair_halflife", pair_halflife)
        self.seed = COUNT("seed", seed)
        if tie_break not in TIE_BREAKS:
            raise InvalidProblemError("tie_break", f"must be one of {', '.join(TIE_BREAKS)}", tie_break)
        self.tie_break = tie_break
        self.time_limit = as_optional_positive_float("time_limit", time_limit)
        self.strict = FLAG("strict", strict)
        if solver_options is not None and not isinstance(solver_options, Mapping):
            raise InvalidProblemError("solver_options", "must be a mapping of option names to values", solver_options)
        self.solver_options = dict(solver_options or {})
        # Every method this aligner may call must take the options: checked now, not at the first round.
        for name in _methods_for(method, self.budget_mode):
            check_options(name, self.solver_options)
        self.monitor = LoadMonitor(self.n_experts, smoothing=smoothing)
        #: The virtual queue of ``load_signal="queue"``, in clients (zeros otherwise).
        self.queue = np.zeros(self.n_experts)
        self.held: dict[str | int, list[int]] = {}
        #: Per client id: (round, n) with n the (E,) discounted training counts as of that round.
        self.pair_counts: dict[str | int, tuple[int, np.ndarray]] = {}
        self.last_round: int | None = None
        self.pending: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.last_problem: Problem | None = None

    # -- reports ------------------------------------------------------------------------
    def _parse(self, report: Any) -> _Parsed:
        if not isinstance(report, ClientReport):
            report = ClientReport.from_dict(report)
        cid = _check_id(report.client_id, "client_id")
        if not isinstance(report.profile, ClientProfile):
            raise InvalidReportError("profile", "must be a ClientProfile", type(report.profile).__name__)
        routing = _vector("routing", report.routing, self.n_experts)
        loss = None if report.loss is None else _vector("loss", report.loss, self.n_experts, allow_nan=True)
        held = None
        if report.held is not None:
            idx = np.asarray(report.held)
            if (
                idx.ndim != 1
                or (idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0))
                or (idx.size and idx.max() >= self.n_experts)
            ):
                raise InvalidReportError("held", f"must list expert indices in [0, {self.n_experts})", report.held)
            held = np.zeros(self.n_experts, dtype=bool)
            held[idx.astype(np.int64)] = True
        return _Parsed(cid, report.profile, routing, loss, held)

    def _reject(self, rejected: dict[str, str], key: Any, reason: str, exc: Exception | None = None) -> None:
        if self.strict and exc is not None:
            raise exc
        rejected[str(key)] = reason
        log.warning("aligner: rejected %s: %s", key, reason)

    # -- the round ----------------------------------------------------------------------
    def assign(self, round: int, reports: Iterable[ClientReport | Mapping[str, Any]]) -> Assignment:
        """This round's assignment of experts to the reporting clients.

        Parameters
        ----------
        round : int
            Strictly increasing across calls.
        reports : iterable of ClientReport (or mappings for :meth:`ClientReport.from_dict`)

        Returns
        -------
        Assignment
            Rows are the eligible clients, named by ``client_ids`` (``by_client()`` gives
            ``{id: [experts]}``). ``stats["aligner"]`` holds the rejected reports and
            ineligible clients with reasons, the relaxations, the bounds and the weights.
        """
        r = COUNT("round", round)
        if self.last_round is not None and r <= self.last_round:
            raise InvalidProblemError("round", f"must be after the last assigned round {self.last_round}", round)
        if self.pending is not None:
            log.warning("aligner: round %s was never observed; its clients count as dropped", self.pending["round"])
            self.pending = None

        rejected: dict[str, str] = {}
        parsed: list[_Parsed] = []
        seen: set[str | int] = set()
        for k, report in enumerate(reports):
            try:
                p = self._parse(report)
            except InvalidReportError as exc:
                self._reject(rejected, _key_of(report, f"report[{k}]"), str(exc), exc)
                continue
            if p.client_id in seen:
                dup = InvalidReportError("client_id", "must be unique within a round (a later duplicate)", p.client_id)
                self._reject(rejected, p.client_id, str(dup), dup)
                continue
            seen.add(p.client_id)
            parsed.append(p)

        plan = plan_capacity(
            [p.profile for p in parsed],
            self.expert_spec,
            self.deadline,
            n_experts=self.n_experts,
            local_epochs=self.local_epochs,
            budget_mode=self.budget_mode,
            max_experts=self.max_experts,
        )
        for p, reason in zip(parsed, plan.reasons):
            if reason is not None:
                rejected[str(p.client_id)] = f"ineligible: {reason}"
        keep = np.flatnonzero(plan.eligible)
        clients = [parsed[i] for i in keep]
        ids = tuple(p.client_id for p in clients)
        info: dict[str, Any] = {"round": r, "rejected": rejected, "relaxed": [], "below_cohort": []}
        self.last_round = r

        if not clients:
            self.last_problem = None
            empty = Assignment(
                status="infeasible",
                message="no eligible client this round",
                matrix=np.zeros((0, self.n_experts), dtype=bool),
                objective=-math.inf,
                method=self.method,
                stats={"aligner": info},
                client_ids=(),
            )
            self.pending = {"round": r, "client_ids": [], "pairs": [], "n_samples": []}
            return empty

        capacity = plan.capacity[keep]
        allowed = plan.allowed[keep]
        capability = np.array([p.profile.availability for p in clients])[:, None] * np.maximum(
            0.0, 1.0 - (plan.base_time[keep][:, None] + plan.expert_time[keep]) / self.deadline
        )
        held, loss = held_and_loss(clients, self.held, self.n_experts)
        routing = np.stack([p.routing for p in clients])
        n = len(clients)
        slots = int(capacity.sum())
        if self.load_target == "demand":
            target = affinity_shares(routing).mean(axis=0)
            wanted = np.ceil((1.0 + self.balance_tolerance) * slots * target - 1e-9)
            expert_max: Any = np.minimum(n, np.maximum(1, wanted)).astype(np.int64)
            deficit = target - self.monitor.share
        else:
            target = self.monitor.target_share
            expert_max = min(n, max(1, math.ceil((1.0 + self.balance_tolerance) * slots / self.n_experts - 1e-9)))
            deficit = self.monitor.deficit
        if self.load_signal == "queue":
            load_inputs: dict[str, Any] = {"load_pressure": deficit_pressure(self.queue)}
        else:
            load_inputs = {"deficit": deficit, "target_share": target, "load_cv": self.monitor.load_cv}
        # counted only while the explore term is on, so an aligner without it keeps no per-client state beyond `held`
        counts = np.stack([self._counts_at(p.client_id, r) for p in clients]) if self.scorer.weights.explore else None
        scores = self.scorer.score(
            routing,
            loss=loss,
            capability=capability,
            staleness=self.monitor.staleness(r),
            held=held,
            pair_counts=counts,
            **load_inputs,
        )

        mean_load = slots / self.n_experts
        info.update(mean_load=mean_load, expert_max=np.asarray(expert_max).tolist(), weights=scores.weights)
        info.update(load_cv=self.monitor.load_cv, load_target=self.load_target)
        base = dict(
            fitness=scores.fitness,
            client_capacity=capacity,
            expert_max=expert_max,
            allowed=allowed,
            cost=None if plan.cost is None else plan.cost[keep],
            budget=None if plan.budget is None else plan.budget[keep],
        )
        answer, problem, steps = self._solve_with_relaxation(base, capacity, allowed, expert_max, r)
        info["relaxed"] = steps
        matrix = np.array(answer.matrix)
        if self.enforce_cohort and self.min_cohort > 1 and answer.has_solution:
            loads = matrix.sum(axis=0)
            short = np.flatnonzero((loads > 0) & (loads < self.min_cohort) & (problem.expert_min < self.min_cohort))
            if short.size:
                matrix[:, short] = False
                info["below_cohort"] = short.tolist()
                if problem.client_min.any():
                    # The removed pairs leave their clients' slots empty: that relaxes client_min.
                    problem = problem.replace(client_min=0)
                    if "client_min" not in steps:
                        steps.append("client_min")
                answer = dataclasses.replace(
                    answer,
                    matrix=matrix,
                    objective=problem.objective(matrix),
                    status="feasible",
                    message=f"feasible: experts {short.tolist()} removed below the cohort of {self.min_cohort} "
                    f"from the solver's answer ({answer.message})",
                    bound=None,
                    gap=None,
                )
        if answer.has_solution:
            verify(problem, answer)
            if self.load_signal == "queue":
                self.queue = deficit_queue_step(self.queue, slots * target, answer.loads)
                info["queue"] = self.queue.tolist()
        info["expert_min"] = problem.expert_min.tolist()
        info["client_min"] = problem.client_min.tolist()
        self.last_problem = problem
        result = dataclasses.replace(answer, client_ids=ids, stats={**answer.stats, "aligner": info})
        self.pending = {
            "round": r,
            "client_ids": list(ids),
            "pairs": np.argwhere(result.matrix).tolist() if result.has_solution else [],
            "n_samples": [p.profile.n_samples for p in clients],
        }
        return result

    def _solve_with_relaxation(
        self, base: dict[str, Any], capacity: np.ndarray, allowed: np.ndarray, expert_max: Any, r: int
    ) -> tuple[Assignment, Problem, list[str]]:
        c = self.min_cohort
        lowest_cap = int(np.min(expert_max))  # per expert under load_target="demand"
        reachable = (allowed & (capacity > 0)[:, None]).sum(axis=0) >= c
        fill = capacity if self.min_slots is None else np.minimum(capacity, self.min_slots)
        rungs: list[tuple[str, Any, Any]] = [
            ("none", fill, c),
            ("client_min", 0, c),
            ("cohort_partial", 0, np.where(reachable, c, 0)),
            ("cohort", 0, 0),
        ]
        if c > lowest_cap:  # the cohort cannot be asked for under the load cap: drop it first
            rungs = [("cohort", fill, 0), ("client_min", 0, 0)]
        ladder: list[tuple[str, Any, Any]] = []
        tried: list[tuple[bytes, bytes]] = []
        for step, client_min, expert_min in rungs:
            key = (
                np.broadcast_to(client_min, capacity.shape).tobytes(),
                np.broadcast_to(expert_min, (self.n_experts,)).tobytes(),
            )
            if np.any(np.broadcast_to(expert_min, (self.n_experts,)) > expert_max) or key in tried:
                continue  # a cohort above the load cap cannot be asked for; a repeated rung adds nothing
            tried.append(key)
            ladder.append((step, client_min, expert_min))
        applied: list[str] = []
        answer: Assignment | None = None
        problem: Problem | None = None
        for step, client_min, expert_min in ladder:
            if step != "none" and step not in applied:
                applied.append(step)
            problem = Problem(**base, client_min=client_min, expert_min=expert_min)
            if not problem.is_generalised and diagnose(problem) is not None:
                continue  # proven infeasible without solving
            answer = self._solve(problem, r)
            if answer.has_solution:
                break
        if answer is None or problem is None:  # unreachable: the last rung has no lower bounds
            raise RuntimeError("aligner: no rung of the relaxation ladder ran")
        if c > lowest_cap:
            applied.insert(0, f"cohort above the load cap ({c} > {lowest_cap})")
        return answer, problem, applied

    def _solve(self, problem: Problem, r: int) -> Assignment:
        """Solve one rung; under ``tie_break="shuffle"`` in an order drawn from ``(seed, r)``, mapped back."""

        def run(p: Problem) -> Assignment:
            return solve(p, self.method, time_limit=self.time_limit, seed=self.seed + r, **self.solver_options)

        if self.tie_break == "solver":
            return run(problem)
        return solve_with_random_ties(problem, run, (self.seed, r))

    def observe(self, outcomes: Iterable[ClientOutcome | Mapping[str, Any]]) -> dict[str, Any]:
        """Record how the last assigned round went.

        Clients assigned in that round but absent from ``outcomes`` count as dropped. A
        bad outcome (unknown client id, wrong vector length, NaN, samples on an expert
        the client was not given) is rejected with a logged reason (raised when
        ``strict``) and counts as dropped; nothing of it reaches the load monitor.

        Returns
        -------
        dict
            The round's record (also appended to :attr:`history`): completed, dropped and
            rejected clients, clients and samples per expert, the monitor's summary.
        """
        if self.pending is None:
            raise InvalidReportError("outcomes", "observe() must follow assign()", "no round pending")
        pend = self.pending
        ids = list(pend["client_ids"])
        row = {cid: i for i, cid in enumerate(ids)}
        given = np.zeros((len(ids), self.n_experts), dtype=bool)
        for i, j in pend["pairs"]:
            given[i, j] = True
        rejected: dict[str, str] = {}
        done: dict[str | int, tuple[np.ndarray, np.ndarray | None]] = {}
        dropped: set[str | int] = set()
        for k, outcome in enumerate(outcomes):
            try:
                o = outcome if isinstance(outcome, ClientOutcome) else ClientOutcome.from_dict(outcome)
                cid = _check_id(o.client_id, "client_id")
                if cid not in row:
                    raise InvalidReportError("client_id", f"must be a client assigned in round {pend['round']}", cid)
                if cid in done or cid in dropped:
                    raise InvalidReportError("client_id", "must report once per round", cid)
                i = row[cid]
                if not o.completed:
                    dropped.add(cid)
                    continue
                done[cid] = outcome_figures(o, given[i], pend["n_samples"][i])
            except InvalidReportError as exc:
                self._reject(rejected, _key_of(outcome, f"outcome[{k}]"), str(exc), exc)
        dropped |= {cid for cid in ids if cid not in done}

        figures = [(given[row[cid]], *done[cid]) for cid in done]
        clients, samples, mean_loss = expert_totals(figures, self.n_experts)
        self.monitor.update(pend["round"], clients, samples, mean_loss)
        for cid in done:
            self.held[cid] = np.flatnonzero(given[row[cid]]).tolist()
            if self.scorer.weights.explore:
                counts = self._counts_at(cid, pend["round"]) + given[row[cid]]
                self.pair_counts[cid] = (pend["round"], counts)
        self.pending = None
        record = {
            "round": pend["round"],
            "completed": [cid for cid in ids if cid in done],
            "dropped": [cid for cid in ids if cid in dropped],
            "rejected": rejected,
            "clients_per_expert": clients.tolist(),
            "samples_per_expert": samples.tolist(),
            **self.monitor.summary(),
        }
        self.history.append(record)
        return record

    def _counts_at(self, cid: str | int, r: int) -> np.ndarray:
        """Client ``cid``'s discounted training counts per expert as of round ``r`` (zeros if never counted)."""
        if cid not in self.pair_counts:
            return np.zeros(self.n_experts)
        since, counts = self.pair_counts[cid]
        return counts * 0.5 ** ((r - since) / self.pair_halflife)

    # -- state --------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-ready."""
        return config_of(self)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: configuration, load monitor, held experts, pending round, history."""
        return state_of(self, FORMAT)

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.state_dict(), indent=indent)

    @classmethod
    def from_state(cls, doc: Mapping[str, Any] | str | bytes) -> Aligner:
        """Rebuild an aligner from :meth:`state_dict` (or its JSON).

        A tampered or damaged state (missing keys, wrong types, expert ids out of range,
        NaN averages, a pending round that names unknown clients, an unknown version)
        raises :class:`InvalidProblemError` here, not later in a round.
        """
        return restore(cls, checked_state(doc, FORMAT))

    from_json = from_state

    def __repr__(self) -> str:
        return (
            f"Aligner(n_experts={self.n_experts}, deadline={self.deadline}, method={self.method!r}, "
            f"balance_tolerance={self.balance_tolerance}, min_cohort={self.min_cohort}, rounds={self.monitor.rounds})"
        )
