"""A small Mixture-of-Experts: shared encoder, top-k router (maskable to a subset), E experts, a head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["MoE", "MoEOutput", "expert_prefix", "is_expert_key", "split_state"]


@dataclass
class MoEOutput:
    """``logits`` (B, C); ``aux`` the load-balancing loss (scalar); ``top`` (B, k) expert ids; ``probs`` (B, E)."""

    logits: torch.Tensor
    aux: torch.Tensor
    top: torch.Tensor
    probs: torch.Tensor


def expert_prefix(j: int) -> str:
    return f"experts.{j}."


def is_expert_key(key: str) -> bool:
    return key.startswith("experts.")


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[int, dict[str, torch.Tensor]]]:
    """Split a state dict into the shared part and ``{expert id: its tensors}`` (keys kept whole)."""
    shared: dict[str, torch.Tensor] = {}
    experts: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if is_expert_key(key):
            experts.setdefault(int(key.split(".")[1]), {})[key] = value
        else:
            shared[key] = value
    return shared, experts


class _Channels(nn.Module):
    """(B, L, C) -> (B, C, L), between an embedding and a 1-D convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class MoE(nn.Module):
    """Encoder -> router (top-k over the allowed experts) -> gated sum of experts (residual) -> head.

    Parameters
    ----------
    input_shape : tuple of int
        (F,) for vectors (MLP encoder) or (C, H, W) for images (small CNN encoder).
    n_classes, n_experts : int
    top_k : int, default 2
    hidden : int, default 64
        Width of the shared representation.
    expert_hidden : int, default 64
    vocab : int, optional
        Inputs are token ids (B, L) below ``vocab``: an embedding and 1-D convolution encoder.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        n_classes: int,
        n_experts: int,
        *,
        top_k: int = 2,
        hidden: int = 64,
        expert_hidden: int = 64,
        vocab: int | None = None,
    ) -> None:
        super().__init__()
        if n_experts < 1 or top_k < 1:
            raise ValueError(f"n_experts, top_k: must be >= 1; got {n_experts}, {top_k}")
        self.n_experts = n_experts
        self.top_k = min(top_k, n_experts)
        if vocab is not None:
            # Token sequences (L,) of ids < vocab: embedding, two convolutions, max over positions.
            self.encoder = nn.Sequential(
                nn.Embedding(vocab, 16),
                _Channels(),
                nn.Conv1d(16, 64, 5, padding=2),
                nn.ReLU(),
                nn.Conv1d(64, 64, 5, padding=2, dilation=1),
                nn.ReLU(),
                nn.AdaptiveMaxPool1d(1),
                nn.Flatten(),
                nn.Linear(64, hidden),
                nn.ReLU(),
            )
        elif len(input_shape) == 1:
            self.encoder: nn.Module = nn.Sequential(nn.Linear(input_shape[0], hidden), nn.ReLU())
        elif len(input_shape) == 3:
            c, _h, _w = input_shape
            self.encoder = nn.Sequential(
                nn.Conv2d(c, 16, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(2),
                nn.Flatten(),
                nn.Linear(32 * 4, hidden),
                nn.ReLU(),
            )
        else:
            raise ValueError(f"input_shape: must be (F,) or (C, H, W); got {input_shape}")
        self.router = nn.Linear(hidden, n_experts)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, expert_hidden), nn.ReLU(), nn.Linear(expert_hidden, hidden))
            for _ in range(n_experts)
        )
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MoEOutput:
        """``mask`` (E,) bool: the experts the router may use (all when None)."""
        h = self.encoder(x)
        scores = self.router(h)
        if mask is not None:
            if not bool(mask.any()):
                raise ValueError("mask: must allow at least one expert")
            scores = scores.masked_fill(~mask, float("-inf"))
        k = self.top_k if mask is None else min(self.top_k, int(mask.sum()))
        probs = F.softmax(scores, dim=-1)
        top_scores, top = scores.topk(k, dim=-1)
        gates = F.softmax(top_scores, dim=-1)
        mixed = torch.zeros_like(h)
        for j in top.unique().tolist():  # only the experts some sample uses run
            rows, slot = (top == j).nonzero(as_tuple=True)
            mixed = mixed.index_add(0, rows, gates[rows, slot, None] * self.experts[j](h[rows]))
        logits = self.head(h + mixed)
        # Switch-style balance loss: E * sum_j (share of top-1 picks) * (mean router probability).
        share = F.one_hot(top[:, 0], self.n_experts).float().mean(dim=0)
        aux = self.n_experts * (share * probs.mean(dim=0)).sum()
        return MoEOutput(logits=logits, aux=aux, top=top, probs=probs)

    def expert_parameters(self, j: int) -> int:
        return sum(p.numel() for p in self.experts[j].parameters())

    def shared_parameters(self) -> int:
        return sum(p.numel() for name, p in self.named_parameters() if not is_expert_key(name))
