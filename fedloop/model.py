"""A small Mixture-of-Experts: shared encoder, top-k router (maskable to a subset), E experts, a head."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .pools import AvgPool, MaxPool2

__all__ = [
    "ROUTER_INPUTS",
    "MoE",
    "MoEOutput",
    "expert_prefix",
    "is_expert_key",
    "script_of",
    "silent_units",
    "split_state",
]

#: What the router reads: the encoder's features, or (token inputs only) the embedding of the last input token.
ROUTER_INPUTS = ("features", "token")

#: Width of the token embedding of the sequence encoder (what a "token" router reads).
TOKEN_EMBEDDING = 16


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


def script_of(ids: torch.Tensor, n_ids: int, scripts: int) -> torch.Tensor:
    """The script of each token id (same shape as ``ids``), for ``n_ids`` ids written in ``scripts`` scripts.

    Ids ``s * m`` to ``(s + 1) * m - 1`` form script ``s``, with ``m = (n_ids - 1) // scripts``; the last id,
    ``n_ids - 1``, is the unknown character shared by every script and maps to ``scripts`` (no script). This is
    the layout of ``fedloop.real_data.load_shakespeare(scripts=...)``.
    """
    return torch.div(ids, (n_ids - 1) // scripts, rounding_mode="floor")


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


def _conv_stack(c: int, channels: tuple[int, int], kernel: int, side: int, native: bool = False) -> list[nn.Module]:
    """Two convolutions (``kernel``, same padding), a ReLU and a 2x2 max-pool between them, average-pooled to
    ``side``.

    The first ReLU comes after the max-pool, on a quarter of the map, with the pool ranking the values as the ReLU
    would leave them (``MaxPool2(rectified=True)``): the outputs and gradients of a ReLU then a max-pool, bit for
    bit. The pool and the ReLU have no parameters, so trading places leaves the state dict's keys as they were.
    ``native``: that textbook order with PyTorch's own pools, the reference the compiled ones are checked and timed
    against.
    """
    conv = [
        nn.Conv2d(c, channels[0], kernel, padding=kernel // 2),
        nn.Conv2d(channels[0], channels[1], kernel, padding=kernel // 2),
    ]
    if native:
        first: list[nn.Module] = [nn.ReLU(), nn.MaxPool2d(2)]
        mean: nn.Module = nn.AdaptiveAvgPool2d(side)
    else:
        first, mean = [MaxPool2(rectified=True), nn.ReLU()], AvgPool(side)
    return [conv[0], *first, conv[1], nn.ReLU(), mean, nn.Flatten()]


class _Channels(nn.Module):
    """(B, L, C) -> (B, C, L), between an embedding and a 1-D convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class _Causal(nn.Module):
    """A 1-D convolution over (B, C, L) whose output at position t sees positions t - kernel + 1 .. t only."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        self.pad = kernel - 1
        self.conv = nn.Conv1d(c_in, c_out, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (self.pad, 0)))


class _Last(nn.Module):
    """(B, C, L) -> (B, C): the features at the last position."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, -1]


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
        Inputs are token ids (B, L) below ``vocab``: an embedding and 1-D convolution encoder. Its features
        depend on the last ``context`` tokens alone (9: two causal convolutions of width 5), so
        :meth:`features` reads only those.
    residual : bool, default True
        ``head(h + mixed)`` with a dense encoder; False: a convolution-only encoder whose features go to
        the router and the experts, and ``head(mixed)``: no path around the experts, which hold most of the
        parameters.
    feature_norm : bool, default False
        End the encoder with a batch normalisation of its features (no learned scale or shift): each feature
        centred and scaled over the batch in training, by running statistics at evaluation (buffers that the
        federation averages like shared weights). Without it the convolution-only encoder's features are
        non-negative and the router's choice can hardly depend on the input: it may send almost every input to
        one expert while small experts' ReLU units go silent, and the run stays near chance.
    router_input : {"features", "token"}, default "features"
        What the router reads: the encoder's features, or, for token inputs (``vocab`` given), the embedding of
        the last input token, the token whose successor is predicted (the router of a language-model MoE layer
        reads the current token's representation). On next-character prediction a router over the features
        split the inputs in ways no better than one expert; one over the last character lets experts take
        groups of characters.
    scripts : int, default 1
        Token inputs written in ``scripts`` scripts of equal size (``fedloop.real_data.load_shakespeare``): ids
        ``s * m`` to ``(s + 1) * m - 1`` form script ``s`` (``m = (vocab - 1) / scripts``), the last id is an
        unknown character shared by all. With ``scripts > 1`` the logits outside the script of the last input
        token (the unknown id excepted) are set to a large negative number, so the answer is always in the
        script being written; after an unknown last token every answer is allowed. The scripts are read from the
        input, never from the label.
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
        residual: bool = True,
        feature_norm: bool = False,
        router_input: str = "features",
        scripts: int = 1,
    ) -> None:
        super().__init__()
        if n_experts < 1 or top_k < 1:
            raise ValueError(f"n_experts, top_k: must be >= 1; got {n_experts}, {top_k}")
        if router_input not in ROUTER_INPUTS:
            raise ValueError(f"router_input: must be one of {', '.join(ROUTER_INPUTS)}; got {router_input!r}")
        if router_input == "token" and vocab is None:
            raise ValueError("router_input: 'token' needs token inputs (vocab given); got vocab=None")
        if isinstance(scripts, bool) or not isinstance(scripts, int) or scripts < 1:
            raise ValueError(f"scripts: must be an integer >= 1; got {scripts!r}")
        if scripts > 1 and (vocab is None or vocab != n_classes or (vocab - 1) % scripts):
            raise ValueError(
                "scripts: > 1 needs token inputs whose ids are the classes (vocab == n_classes) and vocab - 1 a "
                f"multiple of scripts; got scripts={scripts}, vocab={vocab}, n_classes={n_classes}"
            )
        self.scripts = scripts
        self.router_input = router_input
        self.n_experts = n_experts
        self.top_k = min(top_k, n_experts)
        self.residual = residual
        features = self._encoder(input_shape, hidden, vocab, dense=residual, norm=feature_norm)
        self.router = nn.Linear(TOKEN_EMBEDDING if router_input == "token" else features, n_experts)
        # Residual: experts map the features back onto themselves (h + mixed). Otherwise the encoder is only
        # convolutions (its flattened maps are the features) and the experts hold the dense capacity.
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(features, expert_hidden), nn.ReLU(), nn.Linear(expert_hidden, hidden))
            for _ in range(n_experts)
        )
        self.head = nn.Linear(hidden, n_classes)

    def _encoder(
        self, input_shape: tuple[int, ...], hidden: int, vocab: int | None, *, dense: bool, norm: bool = False
    ) -> int:
        """Build ``self.encoder``; returns the width of its output (``hidden`` when ``dense``)."""
        tail: list[nn.Module] = []
        self.context: int | None = None
        if vocab is not None:
            # Token sequences (L,) of ids < vocab: embedding, two causal convolutions, the last position's features.
            # The last position, not a pool over positions: the next token depends on the order of the last few,
            # and a max over positions keeps which patterns occur, not where.
            body: list[nn.Module] = [
                nn.Embedding(vocab, TOKEN_EMBEDDING),
                _Channels(),
                _Causal(TOKEN_EMBEDDING, 64, 5),
                nn.ReLU(),
                _Causal(64, 64, 5),
                nn.ReLU(),
                _Last(),
            ]
            width = 64
            # The last position, the only one kept, sees 1 + sum of (kernel - 1) tokens: the features of a window
            # cut to them are the same, for a ninth of the convolutions' work on 80-token windows.
            self.context = 1 + sum(m.pad for m in body if isinstance(m, _Causal))
        elif len(input_shape) == 1:
            body, width = [], input_shape[0]
        elif len(input_shape) == 3:
            # Dense: a small feature extractor before a dense layer. Otherwise the maps themselves (7 x 7 x 16)
            # are the features, so that the experts, not the encoder, hold the dense capacity.
            channels, kernel, side = ((16, 32), 3, 2) if dense else ((8, 16), 5, 7)
            body = _conv_stack(input_shape[0], channels, kernel, side)
            width = channels[1] * side * side
        else:
            raise ValueError(f"input_shape: must be (F,) or (C, H, W); got {input_shape}")
        if dense:
            tail = [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        if norm:
            tail.append(nn.BatchNorm1d(width, affine=False))
        self.encoder = nn.Sequential(*body, *tail)
        return width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output (B, F) for inputs ``x``; token windows (B, L) are first cut to their last
        ``context`` tokens, all that the last position's features depend on (the same features, less work)."""
        return self.encoder(x if self.context is None else x[:, -self.context :])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MoEOutput:
        """``mask`` (E,) bool: the experts the router may use (all when None)."""
        h = self.features(x)
        scores = self.router(self.encoder[0](x[:, -1]) if self.router_input == "token" else h)
        if mask is not None:
            if not bool(mask.any()):
                raise ValueError("mask: must allow at least one expert")
            scores = scores.masked_fill(~mask, float("-inf"))
        k = self.top_k if mask is None else min(self.top_k, int(mask.sum()))
        probs = F.softmax(scores, dim=-1)
        top_scores, top = scores.topk(k, dim=-1)
        # Residual: the top-k scores renormalised (with k = 1 the gate is 1 and the router learns from the balance
        # loss alone). Otherwise each chosen expert's output counts in full (gate value 1) while the gradient of
        # its full-softmax probability reaches the router: the task loss trains the router whatever k is, and
        # the output's scale does not shrink as 1/E the way a Switch gate p_j * expert_j does at the start.
        if self.residual:
            gates = F.softmax(top_scores, dim=-1)
        else:
            chosen = probs.gather(1, top)
            gates = chosen / chosen.detach()  # value 1, gradient of the probability: scale-free
        mixed = h.new_zeros((h.shape[0], self.head.in_features))
        for j in top.unique().tolist():  # only the experts some sample uses run
            rows, slot = (top == j).nonzero(as_tuple=True)
            mixed = mixed.index_add(0, rows, gates[rows, slot, None] * self.experts[j](h[rows]))
        # residual: the encoder's features reach the head around the experts (encoder + head alone is a
        # complete model); otherwise every prediction passes through the routed experts.
        logits = self.head(h + mixed if self.residual else mixed)
        if self.scripts > 1:
            logits = self._in_script(logits, x[:, -1])
        # Switch-style balance loss: E * sum_j (share of top-1 picks) * (mean router probability).
        share = F.one_hot(top[:, 0], self.n_experts).float().mean(dim=0)
        aux = self.n_experts * (share * probs.mean(dim=0)).sum()
        return MoEOutput(logits=logits, aux=aux, top=top, probs=probs)

    def _in_script(self, logits: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """``logits`` (B, C) with every class outside the script of ``last`` (B,) pushed far down."""
        n_ids = logits.shape[1]
        unknown = n_ids - 1
        classes = torch.arange(n_ids, device=logits.device)
        same = script_of(classes, n_ids, self.scripts)[None, :] == script_of(last, n_ids, self.scripts)[:, None]
        allowed = same | (classes == unknown) | (last == unknown)[:, None]
        # a finite floor, not -inf: a cross-entropy whose label were outside would stay finite
        return logits.masked_fill(~allowed, -1e9)

    def expert_parameters(self, j: int) -> int:
        return sum(p.numel() for p in self.experts[j].parameters())

    def shared_parameters(self) -> int:
        return sum(p.numel() for name, p in self.named_parameters() if not is_expert_key(name))


@torch.no_grad()
def silent_units(model: MoE, x: torch.Tensor) -> np.ndarray:
    """(E,) the hidden units of each expert that no input of ``x`` activates (ReLU output 0 on every one).

    An expert whose units are all silent outputs a constant whatever the input; SGD cannot revive such a unit
    (its gradient is 0), so a count that only grows over a run is units lost for good.
    """
    was_training = model.training
    model.eval()
    h = model.features(x)
    counts = [int((~(expert[1](expert[0](h)) > 0).any(dim=0)).sum()) for expert in model.experts]
    model.train(was_training)
    return np.array(counts, dtype=int)
