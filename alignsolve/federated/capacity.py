"""Client capacity profiling: from device profiles and a round deadline to expert slots or budgets.

A client that trains the expert set S in a round downloads the shared weights and the
experts of S, trains them for ``local_epochs`` over its ``n`` samples, and uploads the
same tensors. With the downlink and uplink rates ``d`` and ``u`` (bits/s), the training
throughput ``f`` (FLOP/s) and the :class:`ExpertSpec` sizes, its round time is

.. math::

    T_i(S) = a_i + \\sum_{j \\in S} c_{ij}, \\qquad
    a_i = 8 B_s (1/d_i + 1/u_i) + \\text{epochs}\\, n_i \\Phi_s / f_i, \\qquad
    c_{ij} = 8 B_j (1/d_i + 1/u_i) + \\text{epochs}\\, n_i \\Phi_j / f_i,

and its training memory is ``memory_factor * (B_s + sum_{j in S} B_j)`` (weights,
gradients and optimiser state). The expert FLOPs are charged for every local sample:
an upper bound whatever the router does, so a client that keeps to its plan meets the
deadline.

- **Slot mode** (the unit variant): ``client_capacity[i]`` is the largest k such that the
  k most expensive experts client i may train fit in both the time left and the memory;
  any k of them then fit.
- **Budget mode** (the generalised variant): ``cost[i, j] = c_ij`` and
  ``budget[i] = deadline - a_i``; memory still gives a slot count as above.

``allowed[i, j]`` is False when expert j alone does not fit client i. A client whose
shared part alone misses the deadline or the memory is ineligible for the round, with
the reason in :attr:`CapacityPlan.reasons`.

:func:`sample_profiles` draws heterogeneous phones calibrated on real traces (see
``datasets/device_profiles/``).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ndtr

from .._validation import AT_LEAST_ONE, AT_LEAST_ONE_OR_NONE, COUNT
from ..errors import InvalidProblemError, InvalidReportError

__all__ = [
    "HETEROGENEITY",
    "CapacityPlan",
    "ClientProfile",
    "DeviceFigures",
    "ExpertSpec",
    "plan_capacity",
    "sample_profiles",
]

#: Named heterogeneity levels for :func:`sample_profiles`: the exponent applied to each
#: figure's ratio to its median (0: every client is the median phone; 1: the spread of
#: the traces; above 1: exaggerated).
HETEROGENEITY: dict[str, float] = {"none": 0.0, "low": 0.5, "trace": 1.0, "high": 1.5}


def _positive(owner: str, name: str, value: Any, *, allow_zero: bool = False) -> float:
    where = f"{owner}.{name}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidReportError(where, "must be a real number", value)
    out = float(value)
    if not math.isfinite(out) or out < 0 or (out == 0 and not allow_zero):
        rule = "must be finite and >= 0" if allow_zero else "must be finite and > 0"
        raise InvalidReportError(where, rule, value)
    return out


@dataclass(frozen=True)
class ClientProfile:
    """What a client can do in a round.

    Attributes
    ----------
    compute_flops : float
        Sustained training throughput, FLOP/s (> 0).
    memory_bytes : float
        Memory the client grants to training, bytes (> 0).
    downlink_bps, uplink_bps : float
        Network rates, bits per second (> 0).
    availability : float, default 1.0
        Probability in [0, 1] that the client completes a round it starts.
    n_samples : int, default 0
        Local training samples.
    """

    compute_flops: float
    memory_bytes: float
    downlink_bps: float
    uplink_bps: float
    availability: float = 1.0
    n_samples: int = 0

    def __post_init__(self) -> None:
        for name in ("compute_flops", "memory_bytes", "downlink_bps", "uplink_bps"):
            object.__setattr__(self, name, _positive("ClientProfile", name, getattr(self, name)))
        a = _positive("ClientProfile", "availability", self.availability, allow_zero=True)
        if a > 1:
            raise InvalidReportError("ClientProfile.availability", "must be in [0, 1]", self.availability)
        object.__setattr__(self, "availability", a)
        n = self.n_samples
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or int(n) < 0:
            if not (isinstance(n, float) and n.is_integer() and n >= 0):
                raise InvalidReportError("ClientProfile.n_samples", "must be an integer >= 0", n)
        object.__setattr__(self, "n_samples", int(n))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ClientProfile:
        unknown = set(doc) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidReportError("ClientProfile", "unknown field(s)", ", ".join(sorted(unknown)))
        try:
            return cls(**doc)
        except TypeError as exc:  # a missing field
            raise InvalidReportError(
                "ClientProfile", "needs compute_flops, memory_bytes, downlink_bps, uplink_bps", str(exc)
            ) from None


@dataclass(frozen=True)
class ExpertSpec:
    """Sizes of the model a client trains.

    Attributes
    ----------
    param_bytes : float or sequence of float, shape (E,)
        Bytes of one expert's parameters (per expert when a sequence).
    flops_per_sample : float or sequence of float, shape (E,)
        Training FLOPs (forward and backward) of one expert on one sample.
    shared_param_bytes : float, default 0
        Bytes of the shared part every participant trains (encoder, router, head).
    shared_flops_per_sample : float, default 0
        Training FLOPs of the shared part on one sample.
    memory_factor : float, default 4.0
        Training memory per parameter byte: weights, gradients and two optimiser moments.
    """

    param_bytes: float | tuple[float, ...]
    flops_per_sample: float | tuple[float, ...]
    shared_param_bytes: float = 0.0
    shared_flops_per_sample: float = 0.0
    memory_factor: float = 4.0

    def __post_init__(self) -> None:
        for name in ("param_bytes", "flops_per_sample"):
            value = getattr(self, name)
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                object.__setattr__(self, name, _positive("ExpertSpec", name, value, allow_zero=True))
                continue
            try:
                arr = np.asarray(value, dtype=float)
            except (TypeError, ValueError):
                raise InvalidProblemError(
                    f"ExpertSpec.{name}", "must be a number or a sequence of numbers", value
                ) from None
            if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise InvalidProblemError(
                    f"ExpertSpec.{name}", "must be a number or a 1-D sequence of finite numbers >= 0", value
                )
            object.__setattr__(self, name, tuple(float(v) for v in arr))
        for name in ("shared_param_bytes", "shared_flops_per_sample"):
            object.__setattr__(self, name, _positive("ExpertSpec", name, getattr(self, name), allow_zero=True))
        object.__setattr__(self, "memory_factor", _positive("ExpertSpec", "memory_factor", self.memory_factor))

    def per_expert(self, n_experts: int) -> tuple[np.ndarray, np.ndarray]:
        """``(param_bytes, flops_per_sample)`` as (E,) float arrays."""
        out = []
        for name in ("param_bytes", "flops_per_sample"):
            value = getattr(self, name)
            if isinstance(value, tuple):
                if len(value) != n_experts:
                    raise InvalidProblemError(
                        f"ExpertSpec.{name}", f"must have n_experts = {n_experts} entries", f"{len(value)}"
                    )
                out.append(np.array(value))
            else:
                out.append(np.full(n_experts, float(value)))
        return out[0], out[1]

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        for name in ("param_bytes", "flops_per_sample"):
            if isinstance(doc[name], tuple):
                doc[name] = list(doc[name])
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ExpertSpec:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc.items()})


@dataclass(frozen=True, eq=False)
class CapacityPlan:
    """What each client can take this round (output of :func:`plan_capacity`).

    Attributes
    ----------
    capacity : ndarray of int64, shape (N,)
        Expert slots (``client_capacity``); 0 for an ineligible client.
    allowed : ndarray of bool, shape (N, E)
        Expert j alone fits client i (time and memory).
    base_time : ndarray, shape (N,)
        Seconds of the shared part, ``a_i``.
    expert_time : ndarray, shape (N, E)
        Seconds each expert adds, ``c_ij``.
    cost, budget : ndarray, shapes (N, E) and (N,), or None
        The generalised variant's inputs (budget mode only): ``c_ij`` and ``deadline - a_i``.
    reasons : tuple of (str or None), length N
        Why a client is ineligible, None when it is eligible.
    """

    capacity: np.ndarray
    allowed: np.ndarray
    base_time: np.ndarray
    expert_time: np.ndarray
    cost: np.ndarray | None
    budget: np.ndarray | None
    reasons: tuple[str | None, ...]

    @property
    def eligible(self) -> np.ndarray:
        """(N,) bool: clients that can train at least one expert."""
        return np.array([r is None for r in self.reasons], dtype=bool)

    def round_time(self, matrix: np.ndarray) -> np.ndarray:
        """(N,) seconds each client needs for the experts ``matrix`` (N, E) gives it (0 if none)."""
        m = np.asarray(matrix, dtype=bool)
        busy = m.any(axis=1)
        return np.where(busy, self.base_time + (self.expert_time * m).sum(axis=1), 0.0)


def _largest_that_fit(values: np.ndarray, allowed: np.ndarray, room: np.ndarray) -> np.ndarray:
    """Per row: how many of its largest allowed ``values`` fit together in ``room``."""
    # Descending with the disallowed entries last (as +inf, so they never fit).
    v = -np.sort(-np.where(allowed, values, -np.inf), axis=1)
    v[np.isneginf(v)] = np.inf
    cum = np.cumsum(v, axis=1)
    return (cum <= room[:, None] * (1 + 1e-12) + 1e-300).sum(axis=1).astype(np.int64)


def plan_capacity(
    profiles: Sequence[ClientProfile],
    spec: ExpertSpec,
    deadline: float,
    *,
    n_experts: int,
    local_epochs: int = 1,
    budget_mode: bool = False,
    max_experts: int | None = None,
) -> CapacityPlan:
    """Turn profiles and a deadline into expert slots (and, in budget mode, costs and budgets).

    Parameters
    ----------
    profiles : sequence of ClientProfile, length N
    spec : ExpertSpec
    deadline : float
        Seconds a round may take (> 0).
    n_experts : int
        E.
    local_epochs : int, default 1
    budget_mode : bool, default False
        Also return ``cost`` and ``budget`` for the generalised variant.
    max_experts : int, optional
        A cap on every client's slots (for example the router's top-k).

    Returns
    -------
    CapacityPlan
    """
    deadline = _positive("plan_capacity", "deadline", deadline)
    local_epochs = AT_LEAST_ONE("local_epochs", local_epochs)
    max_experts = AT_LEAST_ONE_OR_NONE("max_experts", max_experts)
    for i, p in enumerate(profiles):
        if not isinstance(p, ClientProfile):
            raise InvalidProblemError(f"profiles[{i}]", "must be a ClientProfile", type(p).__name__)
    n, e = len(profiles), int(n_experts)
    bytes_e, flops_e = spec.per_expert(e)
    flops = np.array([p.compute_flops for p in profiles]).reshape(n)
    memory = np.array([p.memory_bytes for p in profiles]).reshape(n)
    link = np.array([8.0 / p.downlink_bps + 8.0 / p.uplink_bps for p in profiles]).reshape(n)
    work = np.array([local_epochs * p.n_samples for p in profiles], dtype=float).reshape(n)

    base_time = spec.shared_param_bytes * link + work * spec.shared_flops_per_sample / flops
    expert_time = bytes_e[None, :] * link[:, None] + (work / flops)[:, None] * flops_e[None, :]
    time_left = deadline - base_time
    memory_left = memory - spec.memory_factor * spec.shared_param_bytes
    expert_memory = spec.memory_factor * bytes_e
    allowed = (expert_time <= time_left[:, None]) & (expert_memory[None, :] <= memory_left[:, None])

    by_memory = _largest_that_fit(np.broadcast_to(expert_memory, (n, e)), allowed, np.maximum(memory_left, 0.0))
    capacity = by_memory
    if not budget_mode:
        capacity = np.minimum(capacity, _largest_that_fit(expert_time, allowed, np.maximum(time_left, 0.0)))
    if max_experts is not None:
        capacity = np.minimum(capacity, int(max_experts))

    reasons: list[str | None] = []
    for i in range(n):
        if time_left[i] < 0:
            reasons.append(f"the shared part alone takes {base_time[i]:.3g} s > deadline {deadline:.3g} s")
        elif memory_left[i] < 0:
            reasons.append(
                f"the shared part needs {spec.memory_factor * spec.shared_param_bytes:.3g} B > memory {memory[i]:.3g} B"
            )
        elif capacity[i] == 0:
            reasons.append("no expert fits in the time and memory left after the shared part")
        else:
            reasons.append(None)
    capacity = np.where([r is None for r in reasons], capacity, 0).astype(np.int64)
    cost = budget = None
    if budget_mode:
        cost = expert_time.copy()
        budget = np.maximum(time_left, 0.0)
    for arr in (capacity, allowed, base_time, expert_time, cost, budget):
        if arr is not None:
            arr.flags.writeable = False
    return CapacityPlan(capacity, allowed, base_time, expert_time, cost, budget, tuple(reasons))


# -- the trace-calibrated profile generator ---------------------------------------------------


@dataclass(frozen=True, eq=False)
class DeviceFigures:
    """Quantile tables derived from the real device traces (``datasets/device_profiles/``).

    All quantile arrays are taken at :attr:`levels` (shape (L,)).
    """

    levels: np.ndarray
    compute_relative: np.ndarray
    ram_gb: np.ndarray
    downlink_kbps: np.ndarray
    uplink_kbps: np.ndarray
    compute_ram_spearman: float
    down_up_spearman: float
    provenance: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path | None = None) -> DeviceFigures:
        """Read a figures file; the default is the table shipped with the package."""
        if path is None:
            text = resources.files("alignsolve").joinpath("_data", "device_figures.json").read_text()
        else:
            text = Path(path).read_text()
        doc = json.loads(text)
        if doc.get("format") != "alignsolve.device_figures":
            raise InvalidProblemError("path", "must be an alignsolve.device_figures file", repr(doc.get("format")))
        return cls(
            levels=np.asarray(doc["levels"], dtype=float),
            compute_relative=np.asarray(doc["compute"]["relative_to_median"], dtype=float),
            ram_gb=np.asarray(doc["ram_gb"], dtype=float),
            downlink_kbps=np.asarray(doc["downlink_kbps"], dtype=float),
            uplink_kbps=np.asarray(doc["uplink_kbps"], dtype=float),
            compute_ram_spearman=float(doc["compute_ram_spearman"]),
            down_up_spearman=float(doc["down_up_spearman"]),
            provenance=dict(doc.get("provenance", {})),
        )


def _correlated_uniforms(rng: np.random.Generator, n: int, spearman: float) -> tuple[np.ndarray, np.ndarray]:
    # A Gaussian copula with Pearson r = 2 sin(pi rho_s / 6) has Spearman correlation rho_s.
    r = 2.0 * math.sin(math.pi * spearman / 6.0)
    z1 = rng.standard_normal(n)
    z2 = r * z1 + math.sqrt(max(0.0, 1.0 - r * r)) * rng.standard_normal(n)
    return ndtr(z1), ndtr(z2)


def _spread(levels: np.ndarray, table: np.ndarray, u: np.ndarray, h: float) -> np.ndarray:
    median = float(np.interp(0.5, levels, table))
    value = np.interp(u, levels, table)
    return median * (value / median) ** h


def sample_profiles(
    n: int,
    *,
    heterogeneity: float | str = "trace",
    seed: int | None = None,
    n_samples: int | Sequence[int] = 100,
    flops_at_median: float = 5e9,
    memory_fraction: float = 0.25,
    availability: tuple[float, float] = (0.6, 1.0),
    figures: DeviceFigures | None = None,
) -> list[ClientProfile]:
    """Draw ``n`` client profiles calibrated on real phones and networks.

    Compute and RAM are drawn jointly (a Gaussian copula with the traces' rank
    correlation) from the AI-Benchmark quantiles; downlink and uplink likewise from the
    measured network mixture. Each figure ``v`` becomes ``median * (v / median) **
    heterogeneity`` so that one knob goes from identical clients (0) to the traces'
    spread (1) and beyond.

    Parameters
    ----------
    n : int
    heterogeneity : float >= 0 or {"none", "low", "trace", "high"}, default "trace"
    seed : int, optional
    n_samples : int or sequence of int, length n
        Local sample counts (the data partition decides them, not the phone).
    flops_at_median : float, default 5e9
        Training FLOP/s of the median phone. An assumption, not a trace figure: the
        AI-Benchmark scores are relative.
    memory_fraction : float, default 0.25
        Share of the phone's RAM granted to training (an assumption).
    availability : (low, high), default (0.6, 1.0)
        Uniform range of the completion probability (not in the traces).
    figures : DeviceFigures, optional
        Another figures table (default: the shipped one).

    Returns
    -------
    list of ClientProfile
    """
    if isinstance(heterogeneity, str):
        if heterogeneity not in HETEROGENEITY:
            raise InvalidProblemError(
                "heterogeneity", f"must be >= 0 or one of {sorted(HETEROGENEITY)}", repr(heterogeneity)
            )
        h = HETEROGENEITY[heterogeneity]
    else:
        h = _positive("sample_profiles", "heterogeneity", heterogeneity, allow_zero=True)
    n = COUNT("n", n)
    lo, hi = (float(v) for v in availability)
    if not (0.0 <= lo <= hi <= 1.0):
        raise InvalidProblemError("availability", "must be (low, high) with 0 <= low <= high <= 1", availability)
    samples = np.broadcast_to(np.asarray(n_samples), (n,))
    fig = figures if figures is not None else DeviceFigures.load()
    rng = np.random.default_rng(seed)
    u_compute, u_ram = _correlated_uniforms(rng, n, fig.compute_ram_spearman)
    u_down, u_up = _correlated_uniforms(rng, n, fig.down_up_spearman)
    compute = flops_at_median * _spread(fig.levels, fig.compute_relative, u_compute, h)
    ram = _spread(fig.levels, fig.ram_gb, u_ram, h) * 2.0**30
    down = _spread(fig.levels, fig.downlink_kbps, u_down, h) * 1e3
    up = _spread(fig.levels, fig.uplink_kbps, u_up, h) * 1e3
    avail = rng.uniform(lo, hi, size=n)
    return [
        ClientProfile(
            compute_flops=float(compute[i]),
            memory_bytes=float(memory_fraction * ram[i]),
            downlink_bps=float(down[i]),
            uplink_bps=float(up[i]),
            availability=float(avail[i]),
            n_samples=int(samples[i]),
        )
        for i in range(n)
    ]
