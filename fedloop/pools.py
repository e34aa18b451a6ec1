"""The image encoder's two pools, compiled for the CPU (numba), with PyTorch's results bit for bit.

The encoder pools an 8 x 28 x 28 map 2 x 2 (max) and a 16 x 14 x 14 map down to 7 x 7 (mean). PyTorch's CPU
kernels for both walk each output with its own bookkeeping, and on one thread they took a large share of a
client's local training and of an evaluation pass (``benchmarks/results/round_timing_tasks.md``). The loops below
are the same computations in the same order, compiled: the maximum's scan keeps the first of equal values and
takes a NaN, its gradient goes to that one input; the mean sums its window row by row from 0 and divides by 4 as
PyTorch's kernel for the layout does (two halvings on NCHW, one division channels-last). Outputs and input
gradients come in the input's layout, as PyTorch gives them: the layers after a pool pick their own kernels by
layout, and a batch of one-channel images can make the first convolution's output channels-last (its strides
decide).

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


# Each pool has a loop per layout, over the tensor's memory without a copy: NCHW as (B * C, H, W) planes, and
# channels-last as (B, H, W, C) with the channels innermost. Both call the same per-window step.


@njit(inline="always")
def _first_max(a, b, c, d):  # pragma: no cover - compiled
    """The largest of a window's four inputs in row order, and which (0-3): the first of equal ones; a NaN wins."""
    best, at = np.float32(-np.inf), 0
    for k, v in enumerate((a, b, c, d)):
        if v > best or math.isnan(v):
            best, at = v, k
    return best, at


@njit(inline="always")
def _mean(a, b, c, d, once):  # pragma: no cover - compiled
    """A window's sum from 0 in row order, divided by 4 as PyTorch divides (:func:`_quarter`)."""
    total = np.float32(0)
    total += a
    total += b
    total += c
    total += d
    return _quarter(total, once)


@njit(inline="always")
def _quarter(v, once):  # pragma: no cover - compiled
    """``v`` / 4 as one division (the vectorised lanes of PyTorch's channels-last kernels) or two by 2 (its NCHW
    kernels, and the lanes left over after the vectors): the same but for subnormal results."""
    two = np.float32(2)
    return v / (two * two) if once else v / two / two


@njit(cache=True, nogil=True)
def _max_planes(x, out, where):  # pragma: no cover - compiled
    for p in range(out.shape[0]):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                out[p, i, j], where[p, i, j] = _first_max(
                    x[p, 2 * i, 2 * j], x[p, 2 * i, 2 * j + 1], x[p, 2 * i + 1, 2 * j], x[p, 2 * i + 1, 2 * j + 1]
                )


@njit(cache=True, nogil=True)
def _max_last(x, out, where):  # pragma: no cover - compiled
    for n in range(out.shape[0]):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                for c in range(out.shape[3]):
                    out[n, i, j, c], where[n, i, j, c] = _first_max(
                        x[n, 2 * i, 2 * j, c],
                        x[n, 2 * i, 2 * j + 1, c],
                        x[n, 2 * i + 1, 2 * j, c],
                        x[n, 2 * i + 1, 2 * j + 1, c],
                    )


@njit(cache=True, nogil=True)
def _max_back_planes(grad, where, grad_in):  # pragma: no cover - compiled
    for p in range(grad.shape[0]):
        for i in range(grad.shape[1]):
            for j in range(grad.shape[2]):
                k = where[p, i, j]
                grad_in[p, 2 * i + k // 2, 2 * j + k % 2] += grad[p, i, j]


@njit(cache=True, nogil=True)
def _max_back_last(grad, where, grad_in):  # pragma: no cover - compiled
    for n in range(grad.shape[0]):
        for i in range(grad.shape[1]):
            for j in range(grad.shape[2]):
                for c in range(grad.shape[3]):
                    k = where[n, i, j, c]
                    grad_in[n, 2 * i + k // 2, 2 * j + k % 2, c] += grad[n, i, j, c]


@njit(cache=True, nogil=True)
def _mean_planes(x, out, once):  # pragma: no cover - compiled
    for p in range(out.shape[0]):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                out[p, i, j] = _mean(
                    x[p, 2 * i, 2 * j], x[p, 2 * i, 2 * j + 1], x[p, 2 * i + 1, 2 * j], x[p, 2 * i + 1, 2 * j + 1], once
                )


@njit(cache=True, nogil=True)
def _mean_last(x, out, once):  # pragma: no cover - compiled
    for n in range(out.shape[0]):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                for c in range(out.shape[3]):
                    out[n, i, j, c] = _mean(
                        x[n, 2 * i, 2 * j, c],
                        x[n, 2 * i, 2 * j + 1, c],
                        x[n, 2 * i + 1, 2 * j, c],
                        x[n, 2 * i + 1, 2 * j + 1, c],
                        once,
                    )


@njit(cache=True, nogil=True)
def _mean_back_planes(grad, grad_in, once):  # pragma: no cover - compiled
    for p in range(grad.shape[0]):
        for i in range(grad.shape[1]):
            for j in range(grad.shape[2]):
                share = _quarter(grad[p, i, j], once)
                for k in range(4):
                    grad_in[p, 2 * i + k // 2, 2 * j + k % 2] += share


@njit(cache=True, nogil=True)
def _mean_back_last(grad, grad_in, once):  # pragma: no cover - compiled
    for n in range(grad.shape[0]):
        for i in range(grad.shape[1]):
            for j in range(grad.shape[2]):
                for c in range(grad.shape[3]):
                    share = _quarter(grad[n, i, j, c], once)
                    for k in range(4):
                        grad_in[n, 2 * i + k // 2, 2 * j + k % 2, c] += share


def _memory(t: torch.Tensor, last: bool) -> np.ndarray:
    """``t`` (B, C, H, W), dense in the layout ``last`` names, as the array its loops take (no copy)."""
    b, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).numpy() if last else t.numpy().reshape(b * c, h, w)


def _last(t: torch.Tensor) -> bool:
    """Whether ``t`` (B, C, H, W) is laid out channels-last (PyTorch's pools then keep that layout)."""
    return t.is_contiguous(memory_format=torch.channels_last)


def _format(last: bool) -> torch.memory_format:
    return torch.channels_last if last else torch.contiguous_format


def _empty(shape: Any, last: bool, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An empty tensor of ``shape`` (B, C, H, W), channels-last or not: PyTorch's pools give their output and
    their input's gradient in their input's layout."""
    return torch.empty(shape, dtype=dtype, memory_format=_format(last))


class _MaxFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        last = ctx.last = _last(x)
        out = _empty((b, c, h // 2, w // 2), last)
        where = _empty(out.shape, last, torch.uint8)
        (_max_last if last else _max_planes)(_memory(x.detach(), last), _memory(out, last), _memory(where, last))
        ctx.save_for_backward(where)
        ctx.shape = x.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (where,) = ctx.saved_tensors
        last = ctx.last
        grad_in = _empty(ctx.shape, last).zero_()
        grad = grad.contiguous(memory_format=_format(last))
        (_max_back_last if last else _max_back_planes)(
            _memory(grad, last), _memory(where, last), _memory(grad_in, last)
        )
        return grad_in


class _MeanFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        last = ctx.last = _last(x)
        out = _empty((b, c, h // 2, w // 2), last)
        (_mean_last if last else _mean_planes)(_memory(x.detach(), last), _memory(out, last), last)
        ctx.shape = x.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        last = ctx.last
        grad_in = _empty(ctx.shape, last).zero_()
        once = _last(grad) and not grad.is_contiguous()  # PyTorch picks the kernel by the gradient's layout
        grad = grad.contiguous(memory_format=_format(last))
        (_mean_back_last if last else _mean_back_planes)(_memory(grad, last), _memory(grad_in, last), once)
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
