"""Server-side aggregation, as pure functions on state dicts (no model, no I/O)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

__all__ = [
    "aggregate_experts",
    "aggregate_rows",
    "aggregate_shared",
    "screen_updates",
    "state_norm",
    "update_norm",
    "weighted_average",
]

State = Mapping[str, torch.Tensor]


def weighted_average(states: Sequence[State], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """``sum_c w_c state_c / sum_c w_c`` key by key (float64 accumulation, cast back).

    Raises ValueError when the weights are not positive in total or the keys differ.
    """
    if len(states) != len(weights) or not states:
        raise ValueError(f"states, weights: need the same non-zero length; got {len(states)} and {len(weights)}")
    total = float(sum(weights))
    if not total > 0 or any(w < 0 for w in weights):
        raise ValueError(f"weights: must be >= 0 with a positive sum; got {list(weights)}")
    keys = set(states[0])
    for s in states[1:]:
        if set(s) != keys:
            raise ValueError(f"states: keys differ ({sorted(keys ^ set(s))[:3]}...)")
    out = {}
    for key in states[0]:
        acc = sum(float(w) * s[key].double() for s, w in zip(states, weights))
        out[key] = (acc / total).to(states[0][key].dtype)
    return out


def aggregate_shared(updates: Sequence[State], n_samples: Sequence[int]) -> dict[str, torch.Tensor]:
    """The shared weights: every participant's, weighted by its sample count."""
    return weighted_average(updates, [float(n) for n in n_samples])


def aggregate_experts(
    current: Mapping[int, State],
    contributions: Mapping[int, Sequence[tuple[State, float]]],
) -> dict[int, dict[str, torch.Tensor]]:
    """Each expert over the clients that trained it, weighted by the samples they routed to it.

    Parameters
    ----------
    current : {expert id: its state}
        The global experts before the round.
    contributions : {expert id: [(updated state, samples routed to it), ...]}

    Returns
    -------
    {expert id: new state} for every expert in ``current``: an expert nobody trained, or
    whose contributors routed no sample to it, keeps its weights (the same tensors).
    """
    out: dict[int, dict[str, torch.Tensor]] = {}
    for j, state in current.items():
        parts = [(s, w) for s, w in contributions.get(j, ()) if w > 0]
        if parts:
            out[j] = weighted_average([s for s, _ in parts], [w for _, w in parts])
        else:
            out[j] = dict(state)
    return out


def aggregate_rows(current: torch.Tensor, parts: Mapping[int, Sequence[tuple[torch.Tensor, float]]]) -> torch.Tensor:
    """Row j of ``current`` (first axis) replaced by the weighted average of its ``parts[j]``.

    Parameters
    ----------
    current : Tensor, shape (E, ...)
    parts : {row j: [(that row as a client sent it, weight), ...]}
        Rows without a part of positive weight keep their values.
    """
    out = current.clone()
    for j, items in parts.items():
        items = [(t, w) for t, w in items if w > 0]
        if items:
            total = sum(w for _, w in items)
            out[j] = (sum(w * t.double() for t, w in items) / total).to(current.dtype)
    return out


def update_norm(before: State, after: State) -> float:
    """L2 norm of ``after - before`` over the keys of ``after`` (``nan`` if anything is not finite)."""
    total = 0.0
    for key, value in after.items():
        if not torch.isfinite(value).all():
            return math.nan
        total += float(((value.double() - before[key].double()) ** 2).sum())
    return math.sqrt(total)


def state_norm(state: State) -> float:
    """L2 norm of every tensor of ``state`` together."""
    return math.sqrt(sum(float((value.double() ** 2).sum()) for value in state.values()))


def screen_updates(
    norms: Mapping[str, float],
    *,
    factor: float = 10.0,
    reference: Mapping[str, float] | None = None,
) -> dict[str, str]:
    """Reasons to reject updates: non-finite, far larger than the model, or far above the round's median.

    Parameters
    ----------
    norms : {client id: update norm}
    factor : float
        Both rules' multiple.
    reference : {client id: norm of the global weights the client was sent}, optional
        An update whose norm exceeds ``factor`` times the norm of the weights it updates is
        rejected whatever the other clients sent: this rule needs no other update, so one
        client's blown-up update is caught even in a round where it is the only one. (A
        model at zero has no scale: then only the median rule applies.)

    Returns
    -------
    {client id: reason} for the rejected ones. The median rule needs at least 3 finite norms.
    """
    rejected = {cid: "update has NaN or Inf values" for cid, v in norms.items() if not math.isfinite(v)}
    finite = sorted(v for cid, v in norms.items() if cid not in rejected)
    if len(finite) >= 3:
        median = (
            finite[len(finite) // 2]
            if len(finite) % 2
            else 0.5 * (finite[len(finite) // 2 - 1] + finite[len(finite) // 2])
        )
        if median > 0:
            for cid, v in norms.items():
                if cid not in rejected and v > factor * median:
                    rejected[cid] = f"update norm {v:.3g} > {factor:g} x the round's median {median:.3g}"
    for cid, v in norms.items():
        ref = None if reference is None else reference.get(cid)
        if cid not in rejected and ref is not None and ref > 0 and v > factor * ref:
            rejected[cid] = f"update norm {v:.3g} > {factor:g} x the norm {ref:.3g} of the weights it updates"
    return rejected
