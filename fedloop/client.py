"""What a client runs: routing statistics for its report, and local training on its assigned experts.

The same functions serve the in-process loop and the Flower client app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from .model import MoE, split_state

__all__ = ["LocalResult", "client_statistics", "private_report", "train_local"]


@torch.no_grad()
def client_statistics(
    model: MoE, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """What the global router does with this client's data.

    Returns
    -------
    routing : ndarray, shape (E,)
        Share of the client's top-k picks that go to each expert (sums to 1).
    loss : ndarray, shape (E,)
        Mean cross-entropy of the samples whose top-1 expert is j (NaN where none).
    """
    model.eval()
    e = model.n_experts
    picks = torch.zeros(e, dtype=torch.float64, device=x.device)
    loss_sum = torch.zeros(e, dtype=torch.float64, device=x.device)
    count = torch.zeros(e, dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        out = model(x[start : start + batch_size])
        picks += torch.bincount(out.top.reshape(-1), minlength=e).double()
        loss = F.cross_entropy(out.logits, y[start : start + batch_size], reduction="none").double()
        loss_sum.index_add_(0, out.top[:, 0], loss)
        count += torch.bincount(out.top[:, 0], minlength=e).double()
    routing = (picks / picks.sum()).cpu().numpy() if picks.sum() > 0 else np.full(e, 1.0 / e)
    mean_loss = torch.where(count > 0, loss_sum / count.clamp(min=1), torch.full_like(count, float("nan")))
    return routing, mean_loss.cpu().numpy()


def private_report(
    routing: np.ndarray, loss: np.ndarray, config: Any, round_index: int, client_index: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """The report as it leaves client ``client_index`` in round ``round_index``.

    Unchanged when ``config.report_epsilon`` is None. Otherwise, with
    ``config.report_mechanism``:

    * "gaussian": both vectors go through :class:`alignsolve.GaussianMechanism` (clipped,
      noised with the analytic calibration for ``(report_epsilon, report_delta)`` per round,
      rescaled). A NaN loss (no sample routed to that expert) is sent as 0 before noising:
      the NaN itself would say which experts the client's data avoid.
    * "top1": the client's most-used expert goes through :class:`alignsolve.RandomizedResponse`
      (``report_epsilon``-DP per round); the routing sent is that expert's one-hot vector, and
      no loss is sent (None).

    Noise comes from a generator seeded by ``(config.seed, round_index, client_index)`` so that
    the in-process loop and a Flower client send the same report.
    """
    if config.report_epsilon is None:
        return routing, loss
    import alignsolve as als  # the client needs the mechanism only when reports are private

    rng = np.random.default_rng([config.seed, round_index, client_index, 1])
    if config.report_mechanism == "top1":
        r = np.asarray(routing, float)
        sent_routing = np.zeros(r.size)
        sent_routing[als.RandomizedResponse(config.report_epsilon).privatize(r, rng=rng)] = 1.0
        return sent_routing, None
    mechanism = als.GaussianMechanism(config.report_epsilon, config.report_delta)
    sent = mechanism.privatize(np.asarray(routing, float), np.nan_to_num(np.asarray(loss, float), nan=0.0), rng=rng)
    return sent.routing, sent.loss


@dataclass
class LocalResult:
    """A client's update: the shared tensors, its experts' tensors, samples routed to each expert (E,)."""

    shared: dict[str, torch.Tensor]
    experts: dict[int, dict[str, torch.Tensor]]
    routed: np.ndarray
    n_samples: int
    train_loss: float


def train_local(
    model: MoE,
    x: torch.Tensor,
    y: torch.Tensor,
    experts: list[int],
    *,
    epochs: int = 1,
    lr: float = 0.05,
    batch_size: int = 32,
    aux_weight: float = 0.01,
    seed: int = 0,
    route_all: bool = False,
) -> LocalResult:
    """Train the shared part and the experts ``experts``.

    ``model`` holds the global weights on entry (it is trained in place). By default the
    router is masked to the assigned experts and the others take no part in the forward
    pass. With ``route_all`` the router chooses among all experts, as the deployed model
    does, and the unassigned ones run frozen (no gradient, not in the optimiser). Either
    way the other experts stay bit-identical and only the assigned ones are returned.
    """
    if not experts:
        raise ValueError("experts: a client must be given at least one expert to train")
    mask = None
    if not route_all:
        mask = torch.zeros(model.n_experts, dtype=torch.bool, device=x.device)
        mask[experts] = True
    frozen = [p for j in range(model.n_experts) if j not in experts for p in model.experts[j].parameters()]
    for p in frozen:
        p.requires_grad_(False)
    params = [p for name, p in model.named_parameters() if not name.startswith("experts.")]
    for j in experts:
        params += list(model.experts[j].parameters())
    optimiser = torch.optim.SGD(params, lr=lr)
    # Shuffles come from a CPU generator so that a run is the same on CPU and CUDA.
    gen = torch.Generator().manual_seed(seed)
    routed = torch.zeros(model.n_experts, dtype=torch.float64, device=x.device)
    model.train()
    total, batches = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen).to(x.device)
        for start in range(0, x.shape[0], batch_size):
            idx = order[start : start + batch_size]
            out = model(x[idx], mask=mask)
            loss = F.cross_entropy(out.logits, y[idx]) + aux_weight * out.aux
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            routed += torch.bincount(out.top.reshape(-1), minlength=model.n_experts).double()
            total += float(loss.detach())
            batches += 1
    for p in frozen:
        p.requires_grad_(True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    shared, by_expert = split_state(state)
    mine = {j: by_expert[j] for j in experts}
    return LocalResult(shared, mine, routed.cpu().numpy() / max(epochs, 1), int(x.shape[0]), total / max(batches, 1))
