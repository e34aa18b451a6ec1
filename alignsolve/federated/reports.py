"""What clients tell the server: reports before a round, outcomes after it, and the top-k baseline on them.

:class:`ClientReport` and :class:`ClientOutcome` are plain frozen records; the
:class:`~alignsolve.Aligner` checks them (every rule names the field and the value
received) and rejects bad ones with a logged reason instead of letting them reach the
load monitor.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidReportError
from .capacity import ClientProfile

__all__ = ["ClientOutcome", "ClientReport", "expert_totals", "held_and_loss", "outcome_figures", "top_k_affinity"]


def _check_id(value: Any, where: str) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
        raise InvalidReportError(where, "must be a str or an int (JSON-serialisable)", type(value).__name__)
    return value if isinstance(value, str) else int(value)


def _vector(name: str, value: Any, n_experts: int, *, allow_nan: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InvalidReportError(name, "must be a vector of numbers", type(value).__name__) from None
    if arr.shape != (n_experts,):
        raise InvalidReportError(name, f"must have length n_experts = {n_experts}", f"shape {arr.shape}")
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if bad.any():
        rule = "must be finite or NaN" if allow_nan else "must be finite (no NaN or inf)"
        raise InvalidReportError(name, rule, f"{arr[int(np.argmax(bad))]} at index {int(np.argmax(bad))}")
    return arr


def _check_fields(doc: Any, where: str, kind: str, fields: Any, required: tuple[str, ...]) -> None:
    """``doc`` is a mapping of the record's ``fields`` only, holding every ``required`` one."""
    if not isinstance(doc, Mapping):
        raise InvalidReportError(where, f"must be a {kind} or a mapping", type(doc).__name__)
    unknown = set(doc) - set(fields)
    if unknown:
        raise InvalidReportError(where, "unknown field(s)", ", ".join(sorted(map(str, unknown))))
    for name in required:
        if name not in doc:
            raise InvalidReportError(f"{where}.{name}", "is required", "missing")


def _key_of(item: Any, fallback: str) -> Any:
    """The client id a bad report or outcome claims, for the rejection log."""
    cid = item.get("client_id") if isinstance(item, Mapping) else getattr(item, "client_id", None)
    return fallback if cid is None else cid


@dataclass(frozen=True)
class ClientReport:
    """What one client tells the server before a round.

    Attributes
    ----------
    client_id : str or int
    profile : ClientProfile
    routing : sequence of float, shape (E,)
        Share (or count) of the client's samples the current router sends to each expert;
        possibly noised by :class:`~alignsolve.GaussianMechanism`.
    loss : sequence of float, shape (E,), optional
        The client's loss on each expert's samples (NaN where it has none).
    held : sequence of int, optional
        Experts the client already holds; None lets the aligner use its own record.
    """

    client_id: str | int
    profile: ClientProfile
    routing: Any
    loss: Any = None
    held: Any = None

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ClientReport:
        """Build from JSON-like data (the profile as a dict); a bad field raises :class:`InvalidReportError`."""
        _check_fields(doc, "report", "ClientReport", cls.__dataclass_fields__, ("client_id", "profile", "routing"))
        profile = doc["profile"]
        if isinstance(profile, Mapping):
            profile = ClientProfile.from_dict(profile)
        return cls(doc["client_id"], profile, doc["routing"], doc.get("loss"), doc.get("held"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "profile": self.profile.to_dict(),
            "routing": np.asarray(self.routing, dtype=float).tolist(),
            "loss": None if self.loss is None else np.asarray(self.loss, dtype=float).tolist(),
            "held": None if self.held is None else [int(j) for j in self.held],
        }


@dataclass(frozen=True)
class ClientOutcome:
    """What one client reports after a round.

    Attributes
    ----------
    client_id : str or int
    completed : bool, default True
        False for a client that dropped out.
    samples : sequence of float, shape (E,), optional
        Samples the client trained each expert on (0 for experts it was not given);
        None means its ``n_samples`` for every expert it was given.
    loss : sequence of float, shape (E,), optional
        Its final training loss per expert (NaN for experts it was not given).
    """

    client_id: str | int
    completed: bool = True
    samples: Any = None
    loss: Any = None

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ClientOutcome:
        _check_fields(doc, "outcome", "ClientOutcome", cls.__dataclass_fields__, ("client_id",))
        return cls(doc["client_id"], bool(doc.get("completed", True)), doc.get("samples"), doc.get("loss"))


@dataclass(frozen=True)
class _Parsed:
    client_id: str | int
    profile: ClientProfile
    routing: np.ndarray
    loss: np.ndarray | None
    held: np.ndarray | None


def top_k_affinity(reports: Sequence[ClientReport], capacity: Sequence[int], allowed: Any = None) -> np.ndarray:
    """The common heuristic to compare against: each client its top experts by routing share.

    Parameters
    ----------
    reports : sequence of ClientReport, length N
    capacity : sequence of int, length N
        Slots per client.
    allowed : array_like of bool, shape (N, E), optional
        Experts each client may take (all when omitted); a client takes at most its
        allowed count.

    Returns
    -------
    ndarray of bool, shape (N, E)
    """
    routing = np.stack([np.asarray(rep.routing, dtype=float) for rep in reports])
    mask = np.ones(routing.shape, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    order = np.argsort(-np.where(mask, routing, -np.inf), axis=1, kind="stable")
    out = np.zeros(routing.shape, dtype=bool)
    for i, k in enumerate(capacity):
        out[i, order[i, : min(int(k), int(mask[i].sum()))]] = True
    return out


def outcome_figures(outcome: ClientOutcome, given: np.ndarray, n_samples: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The checked per-expert samples and losses of a completed ``outcome``.

    ``given`` (E,) bool marks the experts the client was assigned; samples default to
    ``n_samples`` on each of them. Samples must be >= 0 and 0 off ``given``; losses, when
    reported, a number >= 0 on every expert given (NaN allowed elsewhere).
    """
    n_experts = given.size
    if outcome.samples is None:
        samples = np.where(given, float(n_samples), 0.0)
    else:
        samples = _vector("samples", outcome.samples, n_experts)
        if np.any(samples < 0):
            raise InvalidReportError("samples", "must be >= 0", outcome.samples)
        if np.any((samples > 0) & ~given):
            extra = np.flatnonzero((samples > 0) & ~given).tolist()
            raise InvalidReportError("samples", "must be 0 on experts the client was not given", extra)
    loss = None
    if outcome.loss is not None:
        loss = _vector("loss", outcome.loss, n_experts, allow_nan=True)
        if np.any(loss[given] < 0) or np.any(np.isnan(loss[given])):
            raise InvalidReportError("loss", "must be a number >= 0 on every expert the client trained", outcome.loss)
    return samples, loss


def expert_totals(
    figures: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]], n_experts: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per expert (E,): the clients that trained it, their samples, their sample-weighted mean loss (NaN if none).

    ``figures`` holds one ``(given, samples, loss)`` per completed client, as
    :func:`outcome_figures` returns them with the client's ``given`` row.
    """
    clients, samples = np.zeros(n_experts), np.zeros(n_experts)
    loss_sum, loss_weight = np.zeros(n_experts), np.zeros(n_experts)
    for given, s, ell in figures:
        clients += given
        samples += s
        if ell is not None:
            w = np.where(given, np.maximum(s, 1.0), 0.0)
            loss_sum += np.where(given, ell, 0.0) * w
            loss_weight += w
    mean_loss = np.where(loss_weight > 0, loss_sum / np.where(loss_weight > 0, loss_weight, 1.0), np.nan)
    return clients, samples, mean_loss


def held_and_loss(
    clients: Sequence[_Parsed], held_before: Mapping[str | int, list[int]], n_experts: int
) -> tuple[np.ndarray, np.ndarray]:
    """The scorer's ``held`` (N, E) bool and ``loss`` (N, E) inputs from the round's checked reports.

    A client's held experts are the ones it reports, else the ones it trained when last
    seen (``held_before``); losses are clipped at 0, with NaN where none is reported (0 on
    an expert whose reported loss is NaN).
    """
    held = np.zeros((len(clients), n_experts), dtype=bool)
    loss = np.full((len(clients), n_experts), np.nan)
    for i, p in enumerate(clients):
        if p.held is not None:
            held[i] = p.held
        else:
            held[i, held_before.get(p.client_id, [])] = True
        if p.loss is not None:
            loss[i] = np.where(np.isnan(p.loss), 0.0, np.maximum(p.loss, 0.0))
    return held, loss
