"""Dynamic fitness scoring: the F_ij the assignment problem maximises.

.. math::

    F_{ij} = w_a A_{ij} + w_\\ell Q_{ij} + w_v V_{ij} + w_c C_{ij} + w_d(t) D_j + w_s S_j - w_w W_{ij} - w_p
             + w_x X_{ij}

Every term is normalised to [0, 1] (``D`` to [-1, 1]; ``V`` under ``value_scale="mean_loss"`` to
[0, N E], see below):

========== ========================================================================= =========
term       definition                                                                default w
========== ========================================================================= =========
affinity   ``A_ij = r_ij / sum_k r_ik``, the share of client i's samples the router   1.0
           sends to expert j (negatives from privacy noise clipped to 0; a row with
           no mass is uniform)
loss       ``Q_ij = A_ij l_ij / sum_k A_ik l_ik``, the share of client i's routed     0.5
           loss that falls on expert j (0 when the client sends no loss vector)
value      ``V_ij = A_ij l_ij / max_kl A_kl l_kl``: the loss client i's samples     0.0
           routed to j carry, relative to the round's largest (a client without
           a loss vector counts the median reported loss); or, with
           ``value_scale="mean_loss"``, ``A_ij l_ij / mean l``; see below
capability ``C_ij = availability_i * max(0, 1 - (a_i + c_ij) / deadline)``: the      0.25
           client is likely to finish, with time to spare, if it trains j
load       ``D_j = clip(deficit_j / target_share_j, -1, 1)`` from the load monitor:  0.5
           positive for an under-trained expert; or, given ``load_pressure``,
           that vector itself, unboosted (the Aligner's ``load_signal="queue"``
           passes its deficit queue so)
staleness  ``S_j = 1 - exp(-s_j / tau)``, ``s_j`` rounds since expert j was last     0.25
           trained, ``tau`` = ``staleness_scale`` (5 rounds)
switching  ``W_ij = 1`` if client i does not already hold expert j (it must          0.25
           download it), else 0; enters with a minus sign
price      ``P_ij = 1``: what one round of training any pair costs, subtracted; see   0.0
           below
explore    ``X_ij = 1 / sqrt(1 + n_ij)``, ``n_ij`` how often client i has trained     0.0
           expert j, recent rounds counting more (the Aligner's discounted count);
           see below
========== ========================================================================= =========

**Value of training.** Under top-1 routing a step on expert j changes client i's loss only
through the samples the router sends to j, and to first order by an amount that grows with
their loss: ``A_ij l_ij`` estimates what training j on i is worth. Unlike ``Q``, which shares
each client's loss out over its experts (every client's row sums to 1), ``V`` compares across
clients, so a client the model already fits counts less than one it does not. Its default
weight is 0 (the first scorer); the comparison of ``benchmarks/run_federated.py`` turns it on.

**Scale of the value.** Divided by the round's largest ``A l``, ``V`` is at most 1, and the
single pair with the most routed loss sets the scale: against the other terms' fixed ranges the
value's weight moves from round to round with that one pair.
``value_scale="mean_loss"`` divides by the mean loss of the clients scored instead (missing
entries count as that mean), ``V_ij = A_ij l_ij / mean l``: a pair whose loss is average scores
its affinity, as the FLEX-MoE-style policy's ``u (1 + l / mean l)`` does with its second term.
The Aligner scores only the clients it can assign in the round, so its mean leaves out a
sampled client without a slot, whose report that policy's mean includes.
Then ``V`` is no longer capped at 1 (at most ``N E``, when one pair carries all the loss).

**Price of training.** A constant moves no optimum while every client must fill its slots,
but with empty slots allowed (the Aligner's ``min_slots``) the solver fills a slot beyond
those asked for only with a pair whose score beats ``w_p``: a client whose data one expert
already covers trains that expert alone and saves the other's traffic and time, and an
expert its data hardly reach is trained by it only when the load term asks for it. Its
default weight is 0.

**Uncertainty of a pair.** ``S_j`` pushes towards experts nobody trained lately; ``X_ij`` is
per pair: it is 1 for a pair client i has never trained (or not for a long time) and falls
as ``1/sqrt(n)`` with the pair's training count, the width of a confidence interval on a mean
estimated from n observations (an optimistic bonus in the manner of UCB). With it on, a client
the router spreads over several experts is moved towards those of them it has trained least,
rather than back to the same pair every time it is sampled. Its default weight is 0.

**Adaptive load weight.** While the experts' load is unbalanced the load term grows:
``w_d(t) = w_d * min(max_load_boost, 1 + load_gain * cv_t)``, where ``cv_t`` is the load
monitor's coefficient of variation of the smoothed samples per expert (``load_gain`` 2,
``max_load_boost`` 5). At perfect balance ``w_d(t) = w_d``. A ``load_pressure`` passed
directly is not boosted: a signal that carries its own history (a deficit queue) would
otherwise count the imbalance twice.

Scores are always finite: every term is bounded and the weights are finite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .._validation import NONNEGATIVE, as_float_array
from ..errors import InvalidProblemError

__all__ = ["VALUE_SCALES", "FitnessScorer", "Scores", "ScoringWeights"]

TERMS = ("affinity", "loss", "value", "capability", "load", "staleness", "switching", "price", "explore")
#: What the value term is divided by: the round's largest ``A l`` ("max") or the mean reported loss ("mean_loss").
VALUE_SCALES = ("max", "mean_loss")


def _weight(name: str, value: Any) -> float:
    return NONNEGATIVE(name, value)


@dataclass(frozen=True)
class ScoringWeights:
    """Base weights of the scoring terms (all finite, >= 0). See the module docstring."""

    affinity: float = 1.0
    loss: float = 0.5
    value: float = 0.0
    capability: float = 0.25
    load: float = 0.5
    staleness: float = 0.25
    switching: float = 0.25
    price: float = 0.0
    explore: float = 0.0

    def __post_init__(self) -> None:
        for name in TERMS:
            object.__setattr__(self, name, _weight(f"weights.{name}", getattr(self, name)))


@dataclass(frozen=True, eq=False)
class Scores:
    """The fitness matrix and what it is made of.

    Attributes
    ----------
    fitness : ndarray, shape (N, E)
    terms : dict of str to ndarray
        Each normalised term, (N, E) or (E,).
    weights : dict of str to float
        The weights used this round (``load`` after adaptation).
    """

    fitness: np.ndarray
    terms: dict[str, np.ndarray] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)


def _rows_normalised(x: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    total = x.sum(axis=1, keepdims=True)
    return np.where(total > 0, x / np.where(total > 0, total, 1.0), fallback)


def affinity_shares(routing: np.ndarray) -> np.ndarray:
    """``A`` (N, E): each row of ``routing`` clipped at 0 and normalised to sum 1 (uniform when it has no mass)."""
    n, e = routing.shape
    return _rows_normalised(np.maximum(routing, 0.0), np.full((n, e), 1.0 / e))


def _held_matrix(held: Any, shape: tuple[int, int]) -> np.ndarray:
    """``held`` as a boolean (N, E) matrix: booleans, or numbers that are all 0 or 1."""
    try:
        arr = np.asarray(held)
    except Exception as exc:  # ragged lists and the like
        raise InvalidProblemError("held", "must be a boolean (N, E) matrix", f"{type(held).__name__} ({exc})") from None
    if arr.shape != shape:
        raise InvalidProblemError("held", f"must have shape {shape}", f"shape {arr.shape}")
    if arr.dtype != bool:
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise InvalidProblemError("held", "must be boolean (or 0/1)", f"dtype {arr.dtype}")
        other = ~np.isin(arr, (0, 1))
        if other.any():
            where = tuple(int(v) for v in np.argwhere(other)[0])
            raise InvalidProblemError("held", "must be boolean (or 0/1)", f"{arr[where]} at index {where}")
    return arr.astype(bool)


class FitnessScorer:
    """Combines the scoring terms into F_ij, with the adaptive load weight.

    Parameters
    ----------
    weights : ScoringWeights, optional
    load_gain : float >= 0, default 2.0
    max_load_boost : float >= 1, default 5.0
    staleness_scale : float > 0, default 5.0
        ``tau``, in rounds.
    value_scale : {"max", "mean_loss"}, default "max"
        What ``V`` is divided by (see the module docstring).
    """

    def __init__(
        self,
        weights: ScoringWeights | None = None,
        *,
        load_gain: float = 2.0,
        max_load_boost: float = 5.0,
        staleness_scale: float = 5.0,
        value_scale: str = "max",
    ) -> None:
        if weights is not None and not isinstance(weights, ScoringWeights):
            raise InvalidProblemError("weights", "must be a ScoringWeights", type(weights).__name__)
        self.weights = weights or ScoringWeights()
        self.load_gain = _weight("load_gain", load_gain)
        self.max_load_boost = _weight("max_load_boost", max_load_boost)
        if self.max_load_boost < 1:
            raise InvalidProblemError("max_load_boost", "must be >= 1", max_load_boost)
        self.staleness_scale = _weight("staleness_scale", staleness_scale)
        if self.staleness_scale == 0:
            raise InvalidProblemError("staleness_scale", "must be > 0", staleness_scale)
        if not isinstance(value_scale, str) or value_scale not in VALUE_SCALES:
            raise InvalidProblemError("value_scale", f"must be one of {', '.join(VALUE_SCALES)}", value_scale)
        self.value_scale = value_scale

    def load_weight(self, load_cv: float) -> float:
        """``w_d * min(max_load_boost, 1 + load_gain * cv)``."""
        cv = max(0.0, float(load_cv)) if math.isfinite(load_cv) else 0.0
        return self.weights.load * min(self.max_load_boost, 1.0 + self.load_gain * cv)

    def score(
        self,
        routing: Any,
        *,
        loss: Any = None,
        capability: Any = None,
        deficit: Any = None,
        target_share: Any = None,
        staleness: Any = None,
        held: Any = None,
        load_cv: float = 0.0,
        load_pressure: Any = None,
        pair_counts: Any = None,
    ) -> Scores:
        """Fitness of every (client, expert) pair.

        Parameters
        ----------
        routing : array_like, shape (N, E)
            Routing shares or counts per client (noised values are fine).
        loss : array_like, shape (N, E), optional
            Per-expert loss per client; NaN marks a client that sent none. Without it the
            value term is the affinity scaled to a maximum of 1.
        capability : array_like, shape (N, E), optional
            ``C_ij`` in [0, 1] (see :meth:`Aligner.assign`); 0 when absent.
        deficit, target_share : array_like, shape (E,), optional
            From the load monitor; the load term is 0 when absent.
        staleness : array_like, shape (E,), optional
            Rounds since each expert was last trained.
        held : array_like of bool, shape (N, E), optional
            Experts each client already holds; absent means none.
        load_cv : float
            The monitor's load coefficient of variation (drives the load weight).
        load_pressure : array_like, shape (E,), optional
            The load term ``D`` itself, finite and in [-1, 1], weighted by the base ``w_d``
            without the adaptive boost. Excludes ``deficit``, ``target_share`` and ``load_cv``.
        pair_counts : array_like, shape (N, E), optional
            ``n_ij >= 0``, how often (discounted) client i has trained expert j; absent means
            never, so ``X_ij = 1`` for every pair.
        """
        r = np.asarray(routing, dtype=float)
        if r.ndim != 2 or not np.all(np.isfinite(r)):
            raise InvalidProblemError("routing", "must be a finite (N, E) matrix", f"shape {r.shape}")
        n, e = r.shape
        affinity = affinity_shares(r)

        # the loss share and the value both read the clipped losses of the clients that sent a full vector
        reported = np.zeros(n, dtype=bool)
        pair_loss = np.zeros((n, e))
        loss_term = np.zeros((n, e))
        if loss is not None:
            ell = np.asarray(loss, dtype=float)
            if ell.shape != (n, e) or np.any(np.isinf(ell)):
                raise InvalidProblemError("loss", f"must be an ({n}, {e}) matrix without inf", f"shape {ell.shape}")
            reported = ~np.isnan(ell).any(axis=1)
            pair_loss = np.maximum(np.nan_to_num(ell, nan=0.0), 0.0)
            loss_term = np.where(reported[:, None], _rows_normalised(affinity * pair_loss, affinity), 0.0)

        value = np.zeros((n, e))
        if self.value_scale == "mean_loss":
            # a client without a loss vector (or a round without any loss) counts the mean: its V is its affinity
            mean = float(pair_loss[reported].mean()) if reported.any() else 0.0
            value = affinity * np.where(reported[:, None], pair_loss / mean, 1.0) if mean > 0 else affinity.copy()
        else:
            fill = float(np.median(pair_loss[reported])) if reported.any() else 1.0
            raw = affinity * np.where(reported[:, None], pair_loss, fill)
            top = float(raw.max()) if raw.size else 0.0
            if top > 0:
                value = raw / top

        cap = np.zeros((n, e))
        if capability is not None:
            c = as_float_array("capability", capability, (n, e), max_magnitude=math.inf, scalar=False)
            cap = np.clip(c, 0.0, 1.0)

        load = np.zeros(e)
        boosted = True
        if load_pressure is not None:
            clash = [name for name, v in (("deficit", deficit), ("target_share", target_share)) if v is not None]
            clash += ["load_cv"] if load_cv != 0.0 else []
            if clash:
                raise InvalidProblemError(
                    "load_pressure",
                    "excludes deficit, target_share and load_cv (it is the load term itself)",
                    "given together with " + ", ".join(clash),
                )
            p = np.asarray(load_pressure, dtype=float)
            if p.shape != (e,) or not np.all(np.isfinite(p)) or np.any(np.abs(p) > 1.0):
                raise InvalidProblemError(
                    "load_pressure", f"must be a finite ({e},) vector in [-1, 1]", f"shape {p.shape}, {p!r}"
                )
            load, boosted = p, False
        elif deficit is not None:
            share = np.full(e, 1.0 / e)
            if target_share is not None:
                share = as_float_array("target_share", target_share, (e,), nonneg=True, max_magnitude=math.inf)
            d = as_float_array("deficit", deficit, (e,), max_magnitude=math.inf)
            load = np.clip(np.divide(d, share, out=np.zeros(e), where=share > 0), -1.0, 1.0)

        stale = np.zeros(e)
        if staleness is not None:
            rounds = as_float_array("staleness", staleness, (e,), max_magnitude=math.inf)
            stale = 1.0 - np.exp(-np.maximum(rounds, 0.0) / self.staleness_scale)

        switching = np.ones((n, e)) if held is None else 1.0 - _held_matrix(held, (n, e))

        counts = np.zeros((n, e))
        if pair_counts is not None:
            counts = np.asarray(pair_counts, dtype=float)
            if counts.shape != (n, e):
                raise InvalidProblemError("pair_counts", f"must have shape ({n}, {e})", f"shape {counts.shape}")
            bad = ~np.isfinite(counts) | (counts < 0)
            if bad.any():
                raise InvalidProblemError(
                    "pair_counts",
                    "must be finite and >= 0",
                    f"{float(counts[bad][0])} at {np.argwhere(bad)[0].tolist()}",
                )
        explore = 1.0 / np.sqrt(1.0 + counts)

        w = asdict(self.weights)
        w["load"] = self.load_weight(load_cv) if boosted else self.weights.load
        fitness = (
            w["affinity"] * affinity
            + w["loss"] * loss_term
            + w["value"] * value
            + w["capability"] * cap
            + w["load"] * load[None, :]
            + w["staleness"] * stale[None, :]
            - w["switching"] * switching
            - w["price"]
            + w["explore"] * explore
        )
        terms = {
            "affinity": affinity,
            "loss": loss_term,
            "value": value,
            "capability": cap,
            "load": load,
            "staleness": stale,
            "switching": switching,
            "price": np.ones((n, e)),
            "explore": explore,
        }
        return Scores(fitness=fitness, terms=terms, weights=w)

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": asdict(self.weights),
            "load_gain": self.load_gain,
            "max_load_boost": self.max_load_boost,
            "staleness_scale": self.staleness_scale,
            "value_scale": self.value_scale,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> FitnessScorer:
        return cls(
            ScoringWeights(**doc["weights"]),
            load_gain=doc["load_gain"],
            max_load_boost=doc["max_load_boost"],
            staleness_scale=doc["staleness_scale"],
            # scorers saved before the option existed divided by the round's largest A l
            value_scale=doc.get("value_scale", "max"),
        )

    def __repr__(self) -> str:
        return (
            f"FitnessScorer({self.weights}, load_gain={self.load_gain}, max_load_boost={self.max_load_boost}, "
            f"value_scale={self.value_scale!r})"
        )
