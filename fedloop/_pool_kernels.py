"""The compiled loops of :mod:`fedloop.pools` (numba): PyTorch's CPU pool kernels' arithmetic, step for step.

Imported by :mod:`fedloop.pools` on the first pooled image, so that ``import fedloop`` does not load numba.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Each pool has a loop per layout, over the tensor's memory without a copy: NCHW as (B * C, H, W) planes, and
# channels-last as (B, H, W, C) with the channels innermost. Both call the same per-window step.


@njit(inline="always")
def _first_max(a, b, c, d, rectified):  # pragma: no cover - compiled
    """The largest of a window's four inputs in row order, and which (0-3): the first of equal ones; a NaN wins.

    ``rectified``: of the inputs as ``torch.relu`` leaves them, negatives as +0.0 (-0.0 and NaN kept).
    """
    best, at = np.float32(-np.inf), 0
    for k, v in enumerate((a, b, c, d)):
        if rectified and v < 0:
            v = np.float32(0)
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
def max_planes(x, out, where, rectified):  # pragma: no cover - compiled
    for p in range(out.shape[0]):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                out[p, i, j], where[p, i, j] = _first_max(
                    x[p, 2 * i, 2 * j],
                    x[p, 2 * i, 2 * j + 1],
                    x[p, 2 * i + 1, 2 * j],
                    x[p, 2 * i + 1, 2 * j + 1],
                    rectified,
                )


@njit(cache=True, nogil=True)
def max_last(x, out, where, rectified):  # pragma: no cover - compiled
    for n in range(out.shape[0]):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                for c in range(out.shape[3]):
                    out[n, i, j, c], where[n, i, j, c] = _first_max(
                        x[n, 2 * i, 2 * j, c],
                        x[n, 2 * i, 2 * j + 1, c],
                        x[n, 2 * i + 1, 2 * j, c],
                        x[n, 2 * i + 1, 2 * j + 1, c],
                        rectified,
                    )


@njit(cache=True, nogil=True)
def max_back_planes(grad, where, grad_in):  # pragma: no cover - compiled
    for p in range(grad.shape[0]):
        for i in range(grad.shape[1]):
            for j in range(grad.shape[2]):
                k = where[p, i, j]
                grad_in[p, 2 * i + k // 2, 2 * j + k % 2] += grad[p, i, j]


@njit(cache=True, nogil=True)
def max_back_last(grad, where, grad_in):  # pragma: no cover - compiled
    for n in range(grad.shape[0]):
        for i in range(grad.shape[1]):
            for j in range(grad.shape[2]):
                for c in range(grad.shape[3]):
                    k = where[n, i, j, c]
                    grad_in[n, 2 * i + k // 2, 2 * j + k % 2, c] += grad[n, i, j, c]


@njit(cache=True, nogil=True)
def mean_planes(x, out, once):  # pragma: no cover - compiled
    for p in range(out.shape[0]):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                out[p, i, j] = _mean(
                    x[p, 2 * i, 2 * j], x[p, 2 * i, 2 * j + 1], x[p, 2 * i + 1, 2 * j], x[p, 2 * i + 1, 2 * j + 1], once
                )


@njit(cache=True, nogil=True)
def mean_last(x, out, once):  # pragma: no cover - compiled
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
def mean_back_planes(grad, grad_in, once):  # pragma: no cover - compiled
    for p in range(grad.shape[0]):
        for i in range(grad.shape[1]):
            for j in range(grad.shape[2]):
                share = _quarter(grad[p, i, j], once)
                for k in range(4):
                    grad_in[p, 2 * i + k // 2, 2 * j + k % 2] += share


@njit(cache=True, nogil=True)
def mean_back_last(grad, grad_in, once):  # pragma: no cover - compiled
    for n in range(grad.shape[0]):
        for i in range(grad.shape[1]):
            for j in range(grad.shape[2]):
                for c in range(grad.shape[3]):
                    share = _quarter(grad[n, i, j, c], once)
                    for k in range(4):
                        grad_in[n, 2 * i + k // 2, 2 * j + k % 2, c] += share
