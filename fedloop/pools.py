"""The image encoder's two pools, compiled for the CPU (numba), with PyTorch's results bit for bit.

The encoder pools an 8 x 28 x 28 map 2 x 2 (max) and a 16 x 14 x 14 map down to 7 x 7 (mean). PyTorch's CPU
kernels for both walk each output with its own bookkeeping, and on one thread they took a large share of a
client's local training and of an evaluation pass (``benchmarks/results/round_timing_tasks.md``). The loops of
:mod:`fedloop._pool_kernels` are the same computations in the same order, compiled: the maximum's scan keeps the
first of equal values and takes a NaN, its gradient goes to that one input; the mean sums its window row by row
from 0 and divides by 4 as PyTorch's kernel for the layout does (two halvings on NCHW, one division channels-last).
Outputs and input gradients come in the input's layout, as PyTorch gives them: the layers after a pool pick their
own kernels by layout, and a batch of one-channel images can make the first convolution's output channels-last
(its strides decide).

So outputs and gradients are those of ``nn.MaxPool2d(2)`` and ``nn.AdaptiveAvgPool2d`` bit for bit
(tests compare them on ties, NaN, infinities, signed zeros and subnormals, in both layouts), and a run's
records do not change. The max-pool can also rank its window as a ReLU before it would leave the values
(``rectified``), which lets the encoder run its first ReLU after the pool, on a quarter of the map, with the
values and gradients of the ReLU before it.

:class:`MaxPool2` and :class:`AvgPool` take this path for float32 (B, C, H, W) tensors on the CPU whose shape
the compiled loops cover (even sides; exactly twice the output side), and leave anything else to PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["AvgPool", "MaxPool2"]


def _memory(t: torch.Tensor, last: bool) -> np.ndarray:
    """``t`` (B, C, H, W), dense in the layout ``last`` names, as the array its loops take (no copy)."""
    b, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).numpy() if last else t.numpy().reshape(b * c, h, w)


def _kernel(name: str, last: bool) -> Any:
    """The compiled loop ``name`` for the layout (channels-last or NCHW planes), from :mod:`fedloop._pool_kernels`,
    imported here so that numba loads with the first pooled image rather than with ``fedloop``."""
    from . import _pool_kernels

    return getattr(_pool_kernels, f"{name}_{'last' if last else 'planes'}")


def _last(t: torch.Tensor) -> bool:
    """Whether ``t`` (B, C, H, W) is laid out channels-last (PyTorch's pools then keep that layout)."""
    return t.is_contiguous(memory_format=torch.channels_last)


def _format(last: bool) -> torch.memory_format:
    return torch.channels_last if last else torch.contiguous_format


def _empty(shape: Any, last: bool, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An empty tensor of ``shape`` (B, C, H, W), channels-last or not: PyTorch's pools give their output and
    their input's gradient in their input's layout."""
    return torch.empty(shape, dtype=dtype, memory_format=_format(last))


def _halved(ctx: Any, x: torch.Tensor) -> tuple[bool, torch.Tensor]:
    """Note ``x``'s shape and layout on ``ctx``; its layout and an empty (B, C, H/2, W/2) output in that layout."""
    b, c, h, w = x.shape
    ctx.shape, ctx.last = x.shape, _last(x)
    return ctx.last, _empty((b, c, h // 2, w // 2), ctx.last)


def _gradients(ctx: Any, grad: torch.Tensor) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """For a backward pass: ``grad`` in the input's layout and the input's gradient, zeros in that layout (the
    tensor to return), with the arrays the loops take of both."""
    grad_in = _empty(ctx.shape, ctx.last).zero_()
    grad = grad.contiguous(memory_format=_format(ctx.last))
    return _memory(grad, ctx.last), grad_in, _memory(grad_in, ctx.last)


class _MaxFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, rectified: bool) -> torch.Tensor:
        last, out = _halved(ctx, x)
        where = _empty(out.shape, last, torch.uint8)
        _kernel("max", last)(_memory(x.detach(), last), _memory(out, last), _memory(where, last), rectified)
        ctx.save_for_backward(where)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (where,) = ctx.saved_tensors
        grad_rows, grad_in, grad_in_rows = _gradients(ctx, grad)
        _kernel("max_back", ctx.last)(grad_rows, _memory(where, ctx.last), grad_in_rows)
        return grad_in, None


class _MeanFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        last, out = _halved(ctx, x)
        _kernel("mean", last)(_memory(x.detach(), last), _memory(out, last), last)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        once = _last(grad) and not grad.is_contiguous()  # PyTorch picks the kernel by the gradient's layout
        grad_rows, grad_in, grad_in_rows = _gradients(ctx, grad)
        _kernel("mean_back", ctx.last)(grad_rows, grad_in_rows, once)
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
    """``nn.MaxPool2d(2)``: the same outputs and gradients, compiled on the CPU for even-sided maps.

    Parameters
    ----------
    rectified
        Pool ``torch.relu(x)`` rather than ``x`` (B, C, H, W): the maximum and its place are those of the window's
        values as the ReLU leaves them (negatives as +0.0; -0.0 and NaN kept). Followed by ``nn.ReLU()``, whose
        gradient then passes where the pooled value is above 0 (or NaN), it gives what ``nn.ReLU()`` followed by
        ``nn.MaxPool2d(2)`` gives, values and gradients bit for bit, with the ReLU on a quarter of the map.
    """

    def __init__(self, rectified: bool = False) -> None:
        super().__init__(2)
        self.rectified = rectified

    def extra_repr(self) -> str:
        return super().extra_repr() + (", rectified=True" if self.rectified else "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _compiled(x) or x.shape[2] % 2 or x.shape[3] % 2:
            return super().forward(torch.relu(x) if self.rectified else x)
        return _MaxFunction.apply(x, self.rectified)


class AvgPool(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d(side)``: the same outputs and gradients, compiled on the CPU where the input is
    exactly twice ``side`` on both axes (2 x 2 windows)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = self.output_size
        if not isinstance(side, int) or not _compiled(x) or x.shape[2] != 2 * side or x.shape[3] != 2 * side:
            return super().forward(x)
        return _MeanFunction.apply(x)
