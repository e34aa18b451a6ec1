"""Client-side privacy of the routing and loss statistics: clipping and the Gaussian mechanism.

A client reports two vectors per round: the share of its samples the router sends to
each expert (``routing``, shape (E,)) and its loss on each expert's samples (``loss``,
shape (E,)). :class:`GaussianMechanism` runs on the client, before anything leaves it:

1. each vector is clipped to an L2 norm (``routing_clip``, ``loss_clip``) and divided by
   it, so that each lies in the unit ball and their concatenation has norm <= sqrt(2);
2. two clients' (or one client's two datasets') scaled reports therefore differ by at
   most the L2 sensitivity ``Delta = 2 sqrt(2)`` (``Delta = 2`` for routing alone);
3. Gaussian noise with the smallest ``sigma`` for which the analytic Gaussian mechanism
   (Balle and Wang, ICML 2018, Theorem 8) is (epsilon, delta)-differentially private
   is added, and the vectors are scaled back.

The guarantee is local and per round: the server sees only noised vectors, and a client
that reports in T rounds spends T times (epsilon, delta) under basic composition
(tighter accountants apply; none is implemented here). The server's scorer treats the
noised vectors as post-processing (clips negatives, renormalises), which costs no privacy.

A lower-dimensional report trades information for privacy: :class:`RandomizedResponse`
sends only the expert the client's router uses most, through k-ary randomized response
(Warner, 1965; the k-ary form of Kairouz, Oh and Viswanath, 2014): with ``E`` experts the
true expert is sent with probability ``e^epsilon / (e^epsilon + E - 1)`` and each other
one with ``1 / (e^epsilon + E - 1)``. Any two inputs give every output with probabilities
within a factor ``e^epsilon``: the report is epsilon-DP with delta = 0, per round. No loss
vector is sent. Where the Gaussian mechanism must spread its noise over 2E numbers, this one
spends the whole budget on one choice among E.

The other privacy mechanism of the aligner is structural: ``expert_min`` doubles as the
minimum cohort of secure aggregation, so that no expert's update is aggregated from
fewer than ``min_cohort`` clients (see :class:`alignsolve.Aligner`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import log_ndtr, ndtr

from .._validation import AT_LEAST_ONE, POSITIVE, Option
from ..errors import InvalidProblemError

__all__ = ["GaussianMechanism", "PrivateStatistics", "RandomizedResponse", "clip_l2", "gaussian_sigma"]

_DELTA = Option("float", low=0.0, high=1.0, low_open=True, high_open=True, text="must be a number in (0, 1)")


def _delta_of(sigma: float, sensitivity: float, epsilon: float) -> float:
    # Theorem 8 of Balle and Wang: the smallest delta for which N(0, sigma^2) noise is
    # (epsilon, delta)-DP at L2 sensitivity Delta; decreasing in sigma.
    a = sensitivity / (2.0 * sigma)
    b = epsilon * sigma / sensitivity
    return float(ndtr(a - b) - math.exp(epsilon + log_ndtr(-a - b)))


def gaussian_sigma(sensitivity: float, epsilon: float, delta: float) -> float:
    """Smallest noise standard deviation that makes the Gaussian mechanism (epsilon, delta)-DP.

    Exact for every epsilon > 0 (the analytic calibration of Balle and Wang, 2018), unlike
    the classical ``sqrt(2 ln(1.25/delta)) Delta / epsilon``, which needs epsilon < 1 and
    adds more noise.

    Parameters
    ----------
    sensitivity : float > 0
        L2 sensitivity Delta.
    epsilon : float > 0
    delta : float in (0, 1)
    """
    sensitivity, epsilon = POSITIVE("sensitivity", sensitivity), POSITIVE("epsilon", epsilon)
    delta = _DELTA("delta", delta)
    lo, hi = 1e-12 * sensitivity, sensitivity
    while _delta_of(hi, sensitivity, epsilon) > delta:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if _delta_of(mid, sensitivity, epsilon) > delta:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1 + 1e-12:
            break
    return hi  # the side that satisfies the bound


def clip_l2(vector: Any, bound: float) -> np.ndarray:
    """``vector * min(1, bound / ||vector||_2)``: the vector with its L2 norm capped at ``bound``."""
    v = np.asarray(vector, dtype=float)
    norm = float(np.linalg.norm(v))
    return v * (bound / norm) if norm > bound else v.copy()


@dataclass(frozen=True)
class PrivateStatistics:
    """What a client sends after :meth:`GaussianMechanism.privatize` (shapes (E,))."""

    routing: np.ndarray
    loss: np.ndarray | None
    sigma_routing: float
    sigma_loss: float | None
    epsilon: float
    delta: float


@dataclass(frozen=True)
class GaussianMechanism:
    """Clip and noise a client's routing and loss vectors before they leave the client.

    Parameters
    ----------
    epsilon : float > 0
        Privacy budget per round.
    delta : float in (0, 1)
    routing_clip : float > 0, default 1.0
        L2 bound on the routing vector. A vector of shares (summing to 1) has norm <= 1,
        so the default never distorts it.
    loss_clip : float > 0, default 10.0
        L2 bound on the per-expert loss vector (cross-entropy over 10 classes at chance
        is 2.3 per expert).
    """

    epsilon: float
    delta: float
    routing_clip: float = 1.0
    loss_clip: float = 10.0

    def __post_init__(self) -> None:
        for name in ("routing_clip", "loss_clip"):
            POSITIVE(name, getattr(self, name))
        gaussian_sigma(2.0, self.epsilon, self.delta)  # validates epsilon and delta

    def sensitivity(self, *, with_loss: bool = True) -> float:
        """L2 sensitivity of the scaled report: ``2 sqrt(2)`` with the loss vector, 2 without."""
        return 2.0 * math.sqrt(2.0) if with_loss else 2.0

    def sigma(self, *, with_loss: bool = True) -> float:
        """Noise standard deviation on the unit-ball-scaled vectors."""
        return gaussian_sigma(self.sensitivity(with_loss=with_loss), self.epsilon, self.delta)

    def privatize(
        self, routing: Any, loss: Any = None, *, rng: np.random.Generator | int | None = None
    ) -> PrivateStatistics:
        """Clip, noise and rescale; returns what the client may send.

        Parameters
        ----------
        routing : array_like, shape (E,)
        loss : array_like, shape (E,), optional
        rng : numpy Generator or seed, optional
        """
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        r = np.asarray(routing, dtype=float)
        if r.ndim != 1 or not np.all(np.isfinite(r)):
            raise InvalidProblemError("routing", "must be a finite 1-D vector", routing)
        with_loss = loss is not None
        unit = self.sigma(with_loss=with_loss)
        noisy_r = clip_l2(r, self.routing_clip) + gen.normal(0.0, unit * self.routing_clip, size=r.shape)
        noisy_l = None
        if with_loss:
            ell = np.asarray(loss, dtype=float)
            if ell.shape != r.shape or not np.all(np.isfinite(ell)):
                raise InvalidProblemError("loss", f"must be a finite vector of shape {r.shape}", loss)
            noisy_l = clip_l2(ell, self.loss_clip) + gen.normal(0.0, unit * self.loss_clip, size=ell.shape)
        return PrivateStatistics(
            routing=noisy_r,
            loss=noisy_l,
            sigma_routing=unit * self.routing_clip,
            sigma_loss=unit * self.loss_clip if with_loss else None,
            epsilon=float(self.epsilon),
            delta=float(self.delta),
        )


@dataclass(frozen=True)
class RandomizedResponse:
    """Send a client's most-used expert, and nothing else, through k-ary randomized response.

    Parameters
    ----------
    epsilon : float > 0
        Privacy budget per round; the report is (epsilon, 0)-DP.

    Notes
    -----
    With E experts, the client's top expert ``t = argmax_j r_j`` (the first on a tie) is
    sent with probability ``p = e^epsilon / (e^epsilon + E - 1)`` and every other expert with
    ``q = 1 / (e^epsilon + E - 1)``; ``p / q = e^epsilon``. A routing vector without mass
    (all zeros: no sample routed) has no top expert: an expert drawn uniformly is sent, which
    is as private and says nothing.
    """

    epsilon: float

    def __post_init__(self) -> None:
        POSITIVE("epsilon", self.epsilon)

    def keep_probability(self, n_experts: int) -> float:
        """``p``, the probability that the true top expert is the one sent, among ``n_experts``."""
        e = AT_LEAST_ONE("n_experts", n_experts)
        # the exp(-epsilon) form: e^epsilon overflows a float beyond epsilon = 709
        return 1.0 / (1.0 + (e - 1) * math.exp(-self.epsilon))

    def privatize(self, routing: Any, *, rng: np.random.Generator | int | None = None) -> int:
        """The expert index the client sends.

        Parameters
        ----------
        routing : array_like, shape (E,)
            Shares or counts of the client's samples per expert (finite, >= 0).
        rng : numpy Generator or seed, optional
        """
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        r = np.asarray(routing, dtype=float)
        if r.ndim != 1 or r.size == 0 or not np.all(np.isfinite(r)) or np.any(r < 0):
            raise InvalidProblemError("routing", "must be a non-empty finite 1-D vector of values >= 0", routing)
        e = r.size
        if r.max() <= 0:
            return int(gen.integers(e))
        top = int(np.argmax(r))
        if e == 1 or gen.random() < self.keep_probability(e):
            return top
        other = int(gen.integers(e - 1))  # uniform over the E - 1 others
        return other + (other >= top)
