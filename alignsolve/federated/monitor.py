"""Global expert load monitoring: how much training each expert has received, smoothed over rounds."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._validation import AT_LEAST_ONE, Option
from ..balance import coefficient_of_variation, gini
from ..errors import InvalidProblemError, InvalidReportError

__all__ = ["LoadMonitor", "deficit_pressure", "deficit_queue_step"]

FORMAT = "alignsolve.load_monitor"

_SMOOTHING = Option("float", low=0.0, low_open=True, high=1.0, text="must be a number in (0, 1]")


class LoadMonitor:
    """Per-expert training received, smoothed by an exponential moving average.

    After each round, :meth:`update` takes the clients and samples that trained each
    expert (completed clients only). The smoothed figures are
    ``ema <- (1 - smoothing) * ema + smoothing * this_round`` (the first round sets them).

    Parameters
    ----------
    n_experts : int
    smoothing : float in (0, 1], default 0.3
        Weight of the newest round.
    target_share : array_like, shape (E,), optional
        Each expert's intended share of the training samples (non-negative, normalised
        here); uniform by default.

    Attributes
    ----------
    clients_ema, samples_ema : ndarray, shape (E,)
        Smoothed clients and samples per round.
    clients_total, samples_total : ndarray, shape (E,)
        Cumulative counts.
    loss_ema : ndarray, shape (E,)
        Smoothed training loss per expert (NaN until an expert reports one).
    last_round : ndarray of int64, shape (E,)
        Last round in which the expert was trained (-1: never).
    rounds : int
        Rounds observed.
    """

    def __init__(self, n_experts: int, *, smoothing: float = 0.3, target_share: Any = None) -> None:
        e = AT_LEAST_ONE("n_experts", n_experts)
        smoothing = _SMOOTHING("smoothing", smoothing)
        if target_share is None:
            share = np.full(e, 1.0 / e)
        else:
            share = np.asarray(target_share, dtype=float)
            if share.shape != (e,) or not np.all(np.isfinite(share)) or np.any(share < 0) or share.sum() <= 0:
                raise InvalidProblemError(
                    "target_share", f"must be (E,) = ({e},) finite, >= 0, with a positive sum", target_share
                )
            share = share / share.sum()
        self.n_experts = e
        self.smoothing = float(smoothing)
        self.target_share = share
        self.clients_ema = np.zeros(e)
        self.samples_ema = np.zeros(e)
        self.clients_total = np.zeros(e, dtype=np.int64)
        self.samples_total = np.zeros(e)
        self.loss_ema = np.full(e, np.nan)
        self.last_round = np.full(e, -1, dtype=np.int64)
        self.rounds = 0
        self.last_update: int | None = None

    # -- updates ----------------------------------------------------------------------
    def check(
        self, round: int, clients: Any, samples: Any, loss: Any = None
    ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray | None]:
        """Validate one round's loads without touching the state; returns them as arrays."""
        if isinstance(round, bool) or not isinstance(round, numbers.Integral) or round < 0:
            raise InvalidReportError("round", "must be an integer >= 0", round)
        if self.last_update is not None and round <= self.last_update:
            raise InvalidReportError("round", f"must be after the last observed round {self.last_update}", round)
        out = []
        for name, value in (("clients", clients), ("samples", samples)):
            arr = np.asarray(value, dtype=float)
            if arr.shape != (self.n_experts,):
                raise InvalidReportError(name, f"must have shape (E,) = ({self.n_experts},)", f"shape {arr.shape}")
            if not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise InvalidReportError(name, "must be finite and >= 0", value)
            out.append(arr)
        ell = None
        if loss is not None:
            ell = np.asarray(loss, dtype=float)
            if ell.shape != (self.n_experts,) or np.any(np.isinf(ell)) or np.any(ell < 0):
                raise InvalidReportError("loss", f"must be (E,) = ({self.n_experts},), >= 0, NaN where unknown", loss)
        return int(round), out[0], out[1], ell

    def update(self, round: int, clients: Any, samples: Any, loss: Any = None) -> None:
        """Record one round: clients (E,) and samples (E,) that trained each expert, and their mean loss (E,).

        ``loss`` may hold NaN for experts nobody trained; those keep their smoothed loss.
        """
        r, c, s, ell = self.check(round, clients, samples, loss)
        if ell is not None:
            seen = ~np.isnan(ell)
            first = seen & np.isnan(self.loss_ema)
            blended = (1 - self.smoothing) * self.loss_ema + self.smoothing * ell
            self.loss_ema = np.where(first, ell, np.where(seen, blended, self.loss_ema))
        if self.rounds == 0:
            self.clients_ema = c.copy()
            self.samples_ema = s.copy()
        else:
            a = self.smoothing
            self.clients_ema = (1 - a) * self.clients_ema + a * c
            self.samples_ema = (1 - a) * self.samples_ema + a * s
        self.clients_total = self.clients_total + c.astype(np.int64)
        self.samples_total = self.samples_total + s
        self.last_round = np.where(c > 0, r, self.last_round)
        self.rounds += 1
        self.last_update = r

    # -- figures ----------------------------------------------------------------------
    @property
    def share(self) -> np.ndarray:
        """(E,) smoothed share of training samples per expert (the target share before any round)."""
        total = float(self.samples_ema.sum())
        return self.samples_ema / total if total > 0 else self.target_share.copy()

    @property
    def deficit(self) -> np.ndarray:
        """(E,) ``target_share - share``: positive when an expert is under-trained."""
        return self.target_share - self.share

    def staleness(self, round: int) -> np.ndarray:
        """(E,) rounds since each expert was last trained, as seen at ``round`` (``round + 1`` if never)."""
        return np.where(self.last_round >= 0, round - self.last_round, round + 1).astype(np.int64)

    @property
    def load_cv(self) -> float:
        """Coefficient of variation of the smoothed samples per expert (0 before any round)."""
        return coefficient_of_variation(self.samples_ema)

    @property
    def load_gini(self) -> float:
        return gini(self.samples_ema)

    @property
    def max_min_ratio(self) -> float:
        """max / min of the smoothed samples per expert (``inf`` when one expert has none, 1 before any round)."""
        lo, hi = float(self.samples_ema.min()), float(self.samples_ema.max())
        if hi <= 0:
            return 1.0
        return hi / lo if lo > 0 else math.inf

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures for logs (``max_min_ratio`` is None when infinite)."""
        ratio = self.max_min_ratio
        return {
            "rounds": self.rounds,
            "load_cv": self.load_cv,
            "load_gini": self.load_gini,
            "max_min_ratio": ratio if math.isfinite(ratio) else None,
            "deficit": self.deficit.tolist(),
        }

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": 1,
            "n_experts": self.n_experts,
            "smoothing": self.smoothing,
            "target_share": self.target_share.tolist(),
            "clients_ema": self.clients_ema.tolist(),
            "samples_ema": self.samples_ema.tolist(),
            "clients_total": self.clients_total.tolist(),
            "samples_total": self.samples_total.tolist(),
            "loss_ema": [None if np.isnan(v) else float(v) for v in self.loss_ema],
            "last_round": self.last_round.tolist(),
            "rounds": self.rounds,
            "last_update": self.last_update,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> LoadMonitor:
        if doc.get("format") != FORMAT:
            raise InvalidProblemError("format", f"must be {FORMAT!r}", repr(doc.get("format")))
        m = cls(int(doc["n_experts"]), smoothing=float(doc["smoothing"]), target_share=doc["target_share"])
        m.target_share = np.asarray(doc["target_share"], dtype=float)  # as saved, not renormalised
        m.clients_ema = np.asarray(doc["clients_ema"], dtype=float)
        m.samples_ema = np.asarray(doc["samples_ema"], dtype=float)
        m.clients_total = np.asarray(doc["clients_total"], dtype=np.int64)
        m.samples_total = np.asarray(doc["samples_total"], dtype=float)
        m.loss_ema = np.array([np.nan if v is None else float(v) for v in doc["loss_ema"]])
        m.last_round = np.asarray(doc["last_round"], dtype=np.int64)
        m.rounds = int(doc["rounds"])
        m.last_update = None if doc["last_update"] is None else int(doc["last_update"])
        for name in (
            "target_share",
            "clients_ema",
            "samples_ema",
            "clients_total",
            "samples_total",
            "loss_ema",
            "last_round",
        ):
            if getattr(m, name).shape != (m.n_experts,):
                raise InvalidProblemError(name, f"must have {m.n_experts} entries", len(getattr(m, name)))
            values = getattr(m, name)
            finite = np.isfinite(values) | (np.isnan(values) if name == "loss_ema" else False)
            if not finite.all() or (values[~np.isnan(values)] < (-1 if name == "last_round" else 0)).any():
                rule = "must be finite and >= 0" + (" (NaN: no loss yet)" if name == "loss_ema" else "")
                raise InvalidProblemError(name, rule, values[~finite][0] if (~finite).any() else values.min())
        if m.rounds < 0:
            raise InvalidProblemError("rounds", "must be >= 0", m.rounds)
        return m

    @classmethod
    def from_json(cls, text: str | bytes) -> LoadMonitor:
        return cls.from_dict(json.loads(text))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LoadMonitor):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"LoadMonitor(n_experts={self.n_experts}, rounds={self.rounds}, load_cv={self.load_cv:.3f})"


def deficit_queue_step(queue: np.ndarray, expected: Any, loads: Any) -> np.ndarray:
    """One round of a historical deficit queue: ``H_j <- max(0, H_j + expected_j - load_j)``.

    Parameters
    ----------
    queue : ndarray, shape (E,)
        The queue before the round, in clients.
    expected : float or array_like, shape (E,)
        The clients each expert should have had this round (the mean load, or its share of the slots).
    loads : array_like, shape (E,)
        The clients it was assigned.
    """
    return np.maximum(0.0, queue + np.asarray(expected, dtype=float) - np.asarray(loads, dtype=float))


def deficit_pressure(queue: np.ndarray) -> np.ndarray:
    """A queue read as a score term, ``H_j / (1 + max_k H_k)``: in [0, 1), 0 for an expert served on target."""
    return queue / (1.0 + queue.max())
