"""The parts of an :class:`~alignsolve.Aligner`'s saved state that need checking when read back."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._files import parse_json
from .._validation import COUNT
from ..errors import InvalidProblemError
from .capacity import ExpertSpec
from .monitor import LoadMonitor
from .reports import _check_id
from .scoring import FitnessScorer


def _held_from_state(value: Any, n_experts: int) -> dict[str | int, list[int]]:
    if not isinstance(value, list):
        raise InvalidProblemError("held", "must be a list of [client_id, [experts]]", type(value).__name__)
    held: dict[str | int, list[int]] = {}
    for entry in value:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[1], list):
            raise InvalidProblemError("held", "must be a list of [client_id, [experts]]", entry)
        cid = _check_id(entry[0], "held client_id")
        held[cid] = [_expert_id("held", j, n_experts) for j in entry[1]]
    return held


def _pending_from_state(value: Any, n_experts: int) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"round", "client_ids", "pairs", "n_samples"}:
        raise InvalidProblemError("pending", "must be null or an object of round, client_ids, pairs, n_samples", value)
    ids = value["client_ids"]
    if not isinstance(ids, list):
        raise InvalidProblemError("pending", "client_ids must be a list", type(ids).__name__)
    ids = [_check_id(c, "pending client_id") for c in ids]
    samples = value["n_samples"]
    if not isinstance(samples, list) or len(samples) != len(ids):
        raise InvalidProblemError("pending", "n_samples must hold one count per client", samples)
    samples = [COUNT("pending n_samples", s) for s in samples]
    pairs = value["pairs"]
    if not isinstance(pairs, list) or any(not isinstance(p, (list, tuple)) or len(p) != 2 for p in pairs):
        raise InvalidProblemError("pending", "pairs must be a list of [row, expert]", pairs)
    rows = [COUNT("pending row", i) for i, _ in pairs]
    if rows and max(rows) >= len(ids):
        raise InvalidProblemError("pending", f"pairs must name rows below {len(ids)}", max(rows))
    pairs = [[i, _expert_id("pending", j, n_experts)] for i, (_, j) in zip(rows, pairs)]
    return {
        "round": COUNT("pending round", value["round"]),
        "client_ids": ids,
        "pairs": pairs,
        "n_samples": samples,
    }


def _expert_id(where: str, value: Any, n_experts: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < n_experts:
        raise InvalidProblemError(where, f"must name experts in [0, {n_experts})", value)
    return int(value)


def checked_state(doc: Mapping[str, Any] | str | bytes, fmt: str) -> Mapping[str, Any]:
    """The saved state ``doc`` (or its JSON) once its format, version and keys are checked."""
    state = parse_json(doc, "state") if isinstance(doc, (str, bytes)) else doc
    if not isinstance(state, Mapping):
        raise InvalidProblemError("state", "must be a JSON object", type(state).__name__)
    if state.get("format") != fmt:
        raise InvalidProblemError("format", f"must be {fmt!r}", repr(state.get("format")))
    if state.get("version") != 1 or isinstance(state.get("version"), bool):
        raise InvalidProblemError("version", "must be 1 (a later one is a newer alignsolve's)", state.get("version"))
    missing = [k for k in ("config", "monitor", "held", "last_round", "pending", "history") if k not in state]
    if missing:
        raise InvalidProblemError("state", "must hold config, monitor, held, last_round, pending, history", missing)
    return state


def restored_rounds(state: Mapping[str, Any], n_experts: int) -> tuple[dict, int | None, dict | None, list]:
    """``held``, ``last_round``, ``pending`` and ``history`` of a checked state, each checked in turn."""
    held = _held_from_state(state["held"], n_experts)
    last = state["last_round"]
    if last is not None:
        last = COUNT("last_round", last)
    pending = _pending_from_state(state["pending"], n_experts)
    history = state["history"]
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise InvalidProblemError("history", "must be a list of round records (objects)", type(history).__name__)
    return held, last, pending, list(history)


def restore(cls: Any, state: Mapping[str, Any]) -> Any:
    """An aligner of class ``cls`` rebuilt from a :func:`checked_state`: configuration, monitor, then the rounds."""
    try:
        cfg = dict(state["config"])
        cfg["expert_spec"] = ExpertSpec.from_dict(cfg["expert_spec"])
        cfg["scorer"] = FitnessScorer.from_dict(cfg["scorer"])
        aligner = cls(**cfg)
        monitor = LoadMonitor.from_dict(state["monitor"])
    except InvalidProblemError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidProblemError("state", "must hold a valid configuration and load monitor", repr(exc)) from None
    e = aligner.n_experts
    if monitor.n_experts != e:
        raise InvalidProblemError("monitor", f"must track n_experts = {e} experts", monitor.n_experts)
    aligner.monitor = monitor
    aligner.held, aligner.last_round, aligner.pending, aligner.history = restored_rounds(state, e)
    aligner.queue = _queue_from_state(state.get("queue"), e)  # absent in states saved before the queue existed
    aligner.pair_counts = _pair_counts_from_state(state.get("pair_counts"), e, aligner.last_round)
    return aligner


def _counts_vector(value: Any, n_experts: int) -> np.ndarray | None:
    """``value`` as ``n_experts`` finite numbers >= 0 (a queue, a client's pair counts), or None if it is not."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    if arr.shape != (n_experts,) or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        return None
    return arr


def _pair_counts_from_state(
    value: Any, n_experts: int, last_round: int | None
) -> dict[str | int, tuple[int, np.ndarray]]:
    if value is None:  # absent in states saved before the explore term existed
        return {}
    rule = f"must be a list of [client_id, round, [{n_experts} finite numbers >= 0]]"
    if not isinstance(value, list):
        raise InvalidProblemError("pair_counts", rule, type(value).__name__)
    counts: dict[str | int, tuple[int, np.ndarray]] = {}
    for entry in value:
        if not isinstance(entry, (list, tuple)) or len(entry) != 3 or not isinstance(entry[2], list):
            raise InvalidProblemError("pair_counts", rule, entry)
        cid = _check_id(entry[0], "pair_counts client_id")
        since = COUNT("pair_counts round", entry[1])
        n = _counts_vector(entry[2], n_experts)
        if n is None:
            raise InvalidProblemError("pair_counts", rule, entry)
        if last_round is None or since > last_round:
            # a count dated after the last assigned round would grow, not decay, until that round came
            raise InvalidProblemError(
                "pair_counts", f"must be dated no later than last_round ({last_round})", f"client {cid!r}"
            )
        counts[cid] = (since, n)
    return counts


def _queue_from_state(value: Any, n_experts: int) -> np.ndarray:
    if value is None:
        return np.zeros(n_experts)
    queue = _counts_vector(value, n_experts)
    if queue is None:
        raise InvalidProblemError("queue", f"must be a list of {n_experts} finite numbers >= 0", value)
    return queue


def config_of(aligner: Any) -> dict[str, Any]:
    """An aligner's constructor arguments, JSON-ready (what :func:`restore` passes back to the class)."""
    return {
        "n_experts": aligner.n_experts,
        "expert_spec": aligner.expert_spec.to_dict(),
        "deadline": aligner.deadline,
        "method": aligner.method,
        "scorer": aligner.scorer.to_dict(),
        "balance_tolerance": aligner.balance_tolerance,
        "load_target": aligner.load_target,
        "load_signal": aligner.load_signal,
        "min_cohort": aligner.min_cohort,
        "local_epochs": aligner.local_epochs,
        "budget_mode": aligner.budget_mode,
        "max_experts": aligner.max_experts,
        "enforce_cohort": aligner.enforce_cohort,
        "min_slots": aligner.min_slots,
        "smoothing": aligner.monitor.smoothing,
        "pair_halflife": aligner.pair_halflife,
        "seed": aligner.seed,
        "tie_break": aligner.tie_break,
        "time_limit": aligner.time_limit,
        "strict": aligner.strict,
        "solver_options": aligner.solver_options,
    }


def state_of(aligner: Any, fmt: str) -> dict[str, Any]:
    """Everything needed to resume an aligner: configuration, load monitor, held experts, pending round, history."""
    return {
        "format": fmt,
        "version": 1,
        "config": config_of(aligner),
        "monitor": aligner.monitor.to_dict(),
        "held": [[cid, experts] for cid, experts in aligner.held.items()],
        "last_round": aligner.last_round,
        "pending": aligner.pending,
        "history": aligner.history,
        "queue": aligner.queue.tolist(),
        "pair_counts": [[cid, since, counts.tolist()] for cid, (since, counts) in aligner.pair_counts.items()],
    }
