"""The image encoder's two pools, compiled for the CPU (numba), with PyTorch's results bit for bit.

The encoder pools an 8 x 28 x 28 map 2 x 2 (max) and a 16 x 14 x 14 map down to 7 x 7 (mean). PyTorch's CPU
kernels for both walk each output with its own bookkeeping, and on one thread they took a large share of a
client's local training and of an evaluation pass (``benchmarks/results/round_timing_tasks.md``). The loops below
are the same computations in the same order, compiled: the maximum's scan keeps the first of equal values and
takes a NaN, its gradient goes to that one input; the mean sums its window row by row from 0 and divides by 4 as
PyTorch's kernel for the layout does (two halvings on NCHW, one division channels-last). Outputs and input
gradients come in the input's layout, as PyTorch gives them: the layers after a pool pick their own kernels by
layout, and a one-channel image makes the first convolution's output channels-last.

So outputs and gradients are those of ``nn.MaxPool2d(2)`` and ``nn.AdaptiveAvgPool2d`` bit for bit
(tests compare them on ties, NaN, infinities, signed zeros and subnormals, in both layouts), and a run's
records do not change.

:class:`MaxPool2` and :class:`AvgPool` take this path for float32 (B, C, H, W) tensors on the CPU whose shape
the compiled loops cover (even sides; exactly twice the output side), and leave anything else to PyTorch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from numba import njit
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["AvgPool", "MaxPool2"]


@njit(cache=True, nogil=True)
def _max_forward(x, out, where):  # pragma: no cover - compiled
    """(B, C, H, W) -> (B, C, H/2, W/2) maxima and which of its window's four inputs each is, 0-3 row by row
    (the first maximum; a NaN wins)."""
    for n in range(out.shape[0]):
        for c in range(out.shape[1]):
            for i in range(out.shape[2]):
                for j in range(out.shape[3]):
                    best = np.float32(-np.inf)
                    at = 0
                    for k in range(4):
                        v = x[n, c, 2 * i + k // 2, 2 * j + k % 2]
                        if v > best or math.isnan(v):
                            best = v
                            at = k
                    out[n, c, i, j] = best
                    where[n, c, i, j] = at


@njit(cache=True, nogil=True)
def _max_backward(grad, where, grad_in):  # pragma: no cover - compiled
    """Add each output's gradient (B, C, h, w) to its maximum's place in ``grad_in`` (B, C, 2h, 2w), zeros."""
    for n in range(grad.shape[0]):
        for c in range(grad.shape[1]):
            for i in range(grad.shape[2]):
                for j in range(grad.shape[3]):
                    k = where[n, c, i, j]
                    grad_in[n, c, 2 * i + k // 2, 2 * j + k % 2] += grad[n, c, i, j]


@njit(cache=True, nogil=True)
def _quarter(v, once):  # pragma: no cover - compiled
    """``v`` / 4 as one division (the vectorised lanes of PyTorch's channels-last kernels) or two by 2 (its NCHW
    kernels, and the lanes left over after the vectors): the same but for subnormal results."""
    two = np.float32(2)
    return v / (two * two) if once else v / two / two


@njit(cache=True, nogil=True)
def _mean_forward(x, out, once):  # pragma: no cover - compiled
    """(B, C, 2h, 2w) -> (B, C, h, w) means of the 2 x 2 windows, summed row by row from 0."""
    for n in range(out.shape[0]):
        for c in range(out.shape[1]):
            for i in range(out.shape[2]):
                for j in range(out.shape[3]):
                    total = np.float32(0)
                    for k in range(4):
                        total += x[n, c, 2 * i + k // 2, 2 * j + k % 2]
                    out[n, c, i, j] = _quarter(total, once)


@njit(cache=True, nogil=True)
def _mean_backward(grad, grad_in, once):  # pragma: no cover - compiled
    """Add a quarter of each output's gradient (B, C, h, w) to each input of its window in ``grad_in``."""
    for n in range(grad.shape[0]):
        for c in range(grad.shape[1]):
            for i in range(grad.shape[2]):
                for j in range(grad.shape[3]):
                    share = _quarter(grad[n, c, i, j], once)
                    for k in range(4):
                        grad_in[n, c, 2 * i + k // 2, 2 * j + k % 2] += share


def _last(t: torch.Tensor) -> bool:
    """Whether ``t`` (B, C, H, W) is laid out channels-last (PyTorch's pools then keep that layout)."""
    return t.is_contiguous(memory_format=torch.channels_last)


def _empty(shape: Any, last: bool) -> torch.Tensor:
    """An empty float32 tensor of ``shape`` (B, C, H, W), channels-last or not: PyTorch's pools give their output
    and their input's gradient in their input's layout."""
    return torch.empty(shape, memory_format=torch.channels_last if last else torch.contiguous_format)


class _MaxFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        out = _empty((b, c, h // 2, w // 2), _last(x))
        where = torch.empty(out.shape, dtype=torch.uint8)
        _max_forward(x.detach().numpy(), out.numpy(), where.numpy())
        ctx.save_for_backward(where)
        ctx.shape, ctx.last = x.shape, _last(x)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (where,) = ctx.saved_tensors
        grad_in = _empty(ctx.shape, ctx.last).zero_()
        _max_backward(grad.numpy(), where.numpy(), grad_in.numpy())
        return grad_in


class _MeanFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        out = _empty((b, c, h // 2, w // 2), _last(x))
        _mean_forward(x.detach().numpy(), out.numpy(), _last(x))
        ctx.shape, ctx.last = x.shape, _last(x)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad_in = _empty(ctx.shape, ctx.last).zero_()
        _mean_backward(grad.numpy(), grad_in.numpy(), _last(grad) and not grad.is_contiguous())
        return grad_in


def _compiled(x: torch.Tensor) -> bool:
    """Whether the compiled loops take ``x``: a float32 (B, C, H, W) tensor on the CPU, dense in exactly one of
    the two layouts (where both fit, as with one channel, PyTorch's choice between them is its own)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and x.is_contiguous() != x.is_contiguous(memory_format=torch.channels_last)
    )


class MaxPool2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)``: the same outputs and gradients, compiled on the CPU for even-sided maps."""

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _compiled(x) or x.shape[2] % 2 or x.shape[3] % 2:
            return super().forward(x)
        return _MaxFunction.apply(x)


class AvgPool(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d(side)``: the same outputs and gradients, compiled on the CPU where the input is
    exactly twice ``side`` on both axes (2 x 2 windows)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = self.output_size
        if not isinstance(side, int) or not _compiled(x) or x.shape[2] != 2 * side or x.shape[3] != 2 * side:
            return super().forward(x)
        return _MeanFunction.apply(x)
