"""A client's own device profile, measured where it runs (Flower deployment).

In simulation every client reports its entry of the run's seeded profile table. A deployed
ClientApp can instead measure the figures the capacity planner needs
(:class:`alignsolve.ClientProfile`), with no extra traffic:

========== =============================================================================
figure     how it is measured
========== =============================================================================
compute    a timed forward and backward pass of the run's own model on ``batch`` of the
           client's samples (gradients discarded, weights unchanged); FLOP/s =
           ``batch * 6 * (shared + top_k * expert parameters) / seconds``, the same count
           the planner uses for a round's work (:func:`fedloop.loop.spec_of`). Repeated
           every ``refresh_every`` rounds, cached in between.
memory     memory available to the process: the lower of the machine's available memory
           and the cgroup limit left (containers), at each report.
downlink   the effective rate of the last message received that carried model weights:
           ``8 * bytes / (received - sent)``, ``sent`` the message's creation time, so
           latency, queueing and (with Flower's subprocess isolation) the ClientApp's
           start-up count, as they count in a round's time.
uplink     the effective rate of this client's last reply carrying weights, timed by the
           server (from the reply's creation to its receipt) and sent back with the next
           message; until a first reply is timed, the downlink rate stands in.
========== =============================================================================

Sending and receiving times come from two machines' clocks: their skew enters the link
rates (a duration is never taken below 1 ms). All times are injected (``clock``), so the
measurement is tested without waiting.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.nn import functional as F

import alignsolve as als

from ..model import MoE

__all__ = ["DeviceMeter", "Measurement", "available_memory", "training_flops_per_sample"]

#: Shortest duration a link rate is computed from, seconds (clock resolution and skew).
MIN_SECONDS = 1e-3


def training_flops_per_sample(model: MoE) -> float:
    """``6 * (shared + top_k * expert parameters)``: forward (2) and backward (4) FLOPs per parameter used."""
    return 6.0 * (model.shared_parameters() + model.top_k * model.expert_parameters(0))


def available_memory(meminfo: str = "/proc/meminfo", cgroup: str = "/sys/fs/cgroup") -> float | None:
    """Bytes this process could still allocate: min(MemAvailable, cgroup memory.max - memory.current), or None."""
    found: list[float] = []
    try:
        with open(meminfo) as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found.append(float(line.split()[1]) * 1024.0)
                    break
    except OSError:
        pass
    try:
        with open(os.path.join(cgroup, "memory.max")) as fh:
            limit = fh.read().strip()
        with open(os.path.join(cgroup, "memory.current")) as fh:
            used = float(fh.read().strip())
        if limit != "max":
            found.append(max(float(limit) - used, 0.0))
    except (OSError, ValueError):
        pass
    if not found and hasattr(os, "sysconf"):
        try:
            found.append(float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")))
        except (OSError, ValueError):
            pass
    usable = [v for v in found if v > 0]
    return min(usable) if usable else None


@dataclass
class Measurement:
    """What the meter knows (JSON-ready; kept in the ClientApp's Flower context between messages)."""

    compute_flops: float | None = None
    compute_round: int | None = None
    downlink_bps: float | None = None
    uplink_bps: float | None = None
    memory_bytes: float | None = None


class DeviceMeter:
    """Measures a client's :class:`alignsolve.ClientProfile` (see the module docstring).

    Parameters
    ----------
    clock : callable, default time.perf_counter
        Seconds, for timing the compute pass.
    refresh_every : int >= 1, default 5
        Rounds between two compute measurements.
    batch : int >= 1, default 16
        Samples in the timed pass.
    memory : callable, default :func:`available_memory`
        Bytes available now (None when unknown).
    state : Measurement, optional
        A previous measurement to continue from.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.perf_counter,
        refresh_every: int = 5,
        batch: int = 16,
        memory: Callable[[], float | None] = available_memory,
        state: Measurement | None = None,
    ) -> None:
        if isinstance(refresh_every, bool) or not isinstance(refresh_every, int) or refresh_every < 1:
            raise ValueError(f"refresh_every: must be an integer >= 1; got {refresh_every!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch: must be an integer >= 1; got {batch!r}")
        self.clock = clock
        self.refresh_every = refresh_every
        self.batch = batch
        self.memory = memory
        self.state = state or Measurement()

    # -- compute -------------------------------------------------------------------------
    def due(self, round: int) -> bool:
        """Whether the compute figure is missing or ``refresh_every`` rounds old at ``round``."""
        last = self.state.compute_round
        return self.state.compute_flops is None or last is None or round - last >= self.refresh_every

    def measure_compute(self, model: MoE, x: torch.Tensor, y: torch.Tensor, round: int) -> float:
        """Time one forward and backward pass on the first ``batch`` samples; returns and keeps FLOP/s."""
        xb, yb = x[: self.batch], y[: self.batch]
        was_training = model.training
        # A training-mode pass moves normalisation statistics (buffers): keep them as they were.
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        model.train()
        start = self.clock()
        out = model(xb)
        loss = F.cross_entropy(out.logits, yb)
        grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
        seconds = self.clock() - start
        del grads  # measured, not applied: the weights are unchanged
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        model.train(was_training)
        flops = xb.shape[0] * training_flops_per_sample(model) / max(seconds, 1e-9)
        self.state.compute_flops, self.state.compute_round = float(flops), int(round)
        return float(flops)

    # -- links ---------------------------------------------------------------------------
    @staticmethod
    def rate(n_bytes: float, seconds: float) -> float:
        """Effective bits per second of ``n_bytes`` that took ``seconds`` end to end."""
        return 8.0 * float(n_bytes) / max(float(seconds), MIN_SECONDS)

    def observe_download(self, n_bytes: float, sent_at: float, received_at: float) -> float:
        """A received message carrying weights: keeps and returns its effective rate."""
        self.state.downlink_bps = self.rate(n_bytes, received_at - sent_at)
        return self.state.downlink_bps

    def observe_upload(self, n_bytes: float, seconds: float) -> float:
        """This client's last weight-carrying reply, as the server timed it."""
        self.state.uplink_bps = self.rate(n_bytes, seconds)
        return self.state.uplink_bps

    # -- the profile ---------------------------------------------------------------------
    def profile(self, fallback: als.ClientProfile, *, n_samples: int) -> als.ClientProfile:
        """The measured profile; a figure not measured yet comes from ``fallback`` (availability always does)."""
        memory = self.memory()
        if memory is not None and memory > 0:
            self.state.memory_bytes = float(memory)
        s = self.state
        down = s.downlink_bps or fallback.downlink_bps
        return als.ClientProfile(
            compute_flops=s.compute_flops or fallback.compute_flops,
            memory_bytes=s.memory_bytes or fallback.memory_bytes,
            downlink_bps=down,
            uplink_bps=s.uplink_bps or (s.downlink_bps or fallback.uplink_bps),
            availability=fallback.availability,
            n_samples=n_samples,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self.state).items() if v is not None}

    @classmethod
    def from_dict(cls, doc: dict[str, Any], **kwargs: Any) -> DeviceMeter:
        known = set(Measurement.__dataclass_fields__)
        fields = {k: (int(v) if k == "compute_round" else float(v)) for k, v in doc.items() if k in known}
        return cls(state=Measurement(**fields), **kwargs)
