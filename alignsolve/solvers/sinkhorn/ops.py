"""The few array operations the entropic updates need, on numpy or torch (CPU or CUDA).

:class:`_Numpy` and :class:`_Torch` give one implementation of the updates both
backends; :func:`_ops_for` picks one from the input (a tensor or a ``device`` selects
torch).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import InvalidProblemError

if TYPE_CHECKING:
    from .sides import _EntrySide


class _Numpy:
    """numpy's side of the algorithm: conversions only.

    numpy always works on grouped entries (a dense problem's allowed pairs become entries,
    see :func:`entropic_duals`), whose block update is the compiled per-line kernel
    (:mod:`.kernels`), so no element-wise or segment operation runs here. The lockstep
    form of the same update on numpy, the reference the kernel is tested against, lives
    with its test (``tests/test_sinkhorn_kernels.py``).
    """

    name = "numpy"
    # Entries are grouped by line on numpy (see entropic_duals_sparse), for the compiled update.
    sorted_segments = True

    def __init__(self, dtype: Any = np.float64) -> None:
        self.dtype = dtype

    def asarray(self, a: Any) -> Any:
        return np.asarray(a, dtype=self.dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a, dtype=np.float64)


def _writable(a: Any) -> Any:
    """``a``, copied if it is a read-only numpy array: a Problem's arrays are, and torch warns on sharing those."""
    return a.copy() if isinstance(a, np.ndarray) and not a.flags.writeable else a


class _Torch:
    """The same operations on torch tensors (any device)."""

    name = "torch"

    def __init__(self, device: Any, dtype: Any) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.dtype = dtype

    def asarray(self, a: Any) -> Any:
        return self.torch.as_tensor(_writable(a), dtype=self.dtype, device=self.device)

    def mask(self, a: Any) -> Any:
        return self.torch.as_tensor(_writable(a), dtype=self.torch.bool, device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        return a.detach().to("cpu", self.torch.float64).numpy()

    def exp(self, a: Any) -> Any:
        return self.torch.exp(a)

    def log(self, a: Any) -> Any:
        return self.torch.log(a)

    def where(self, c: Any, a: Any, b: Any) -> Any:
        return self.torch.where(c, a, b)

    # A Python bound goes to clamp, not into a new tensor: on CUDA that would copy it from the host at every call.
    def minimum(self, a: Any, b: Any) -> Any:
        return self.torch.minimum(a, b) if self.torch.is_tensor(b) else a.clamp(max=b)

    def maximum(self, a: Any, b: Any) -> Any:
        return self.torch.maximum(a, b) if self.torch.is_tensor(b) else a.clamp(min=b)

    def sum(self, a: Any, axis: int) -> Any:
        return a.sum(dim=axis)

    def amin(self, a: Any, axis: int) -> Any:
        return a.amin(dim=axis)

    def total_max(self, a: Any) -> float:
        return float(a.max()) if a.numel() else -math.inf

    def logsumexp(self, a: Any, axis: int) -> Any:
        return self.torch.logsumexp(a, dim=axis)

    def clip(self, a: Any, lo: Any, hi: Any) -> Any:
        return self.torch.minimum(self.torch.maximum(a, lo), hi)

    # Entries grouped by line on each side (a second, expert-grouped copy of the entries):
    # contiguous segment reductions instead of atomic index_add_/scatter_reduce_ into E
    # lines, where tens of thousands of entries of one expert contend for one address.
    # False is the first layout: one copy of the values shared by both sides, reduced by
    # scatter with int64 ids (no less GPU memory at the scale target, where the grouped
    # copies' int32 ids make up for the second copy); ``benchmarks/run_cuda.py --layouts``
    # measures the two on a GPU.
    sorted_segments = True

    def ids(self, a: np.ndarray, dtype: Any = np.int64) -> Any:
        return self.torch.as_tensor(_writable(np.asarray(a, dtype=dtype)), device=self.device)

    @staticmethod
    def take(d: Any, ids: Any) -> Any:
        return d[ids]

    def segment_sum(self, a: Any, side: _EntrySide) -> Any:
        a = a.to(self.dtype)
        if side.width is not None:  # every line has `width` entries: a dense reduction
            return a.view(side.n_lines, side.width).sum(dim=1)
        if side.lengths is not None:
            return self.torch.segment_reduce(a, "sum", lengths=side.lengths, unsafe=True)
        out = self.torch.zeros(side.n_lines, dtype=self.dtype, device=self.device)
        return out.index_add_(0, side.line, a)

    def segment_max(self, a: Any, side: _EntrySide) -> Any:
        if side.width is not None:
            return a.view(side.n_lines, side.width).amax(dim=1)
        if side.lengths is not None:  # an empty line's maximum is -inf, as below
            return self.torch.segment_reduce(a, "max", lengths=side.lengths, unsafe=True)
        out = self.torch.full((side.n_lines,), -math.inf, dtype=self.dtype, device=self.device)
        return out.scatter_reduce_(0, side.line, a, "amax", include_self=True)

    def isfinite(self, a: Any) -> Any:
        return self.torch.isfinite(a)


def _ops_for(fitness: Any, device: str | None, dtype: str | None) -> _Numpy | _Torch:
    """numpy for numpy input without ``device``; torch for a tensor or a ``device``."""
    is_tensor = type(fitness).__module__.startswith("torch")
    if device is None and not is_tensor:
        if dtype not in (None, "float64", "float32"):
            raise InvalidProblemError("dtype", "must be 'float32' or 'float64'", repr(dtype))
        return _Numpy(np.float32 if dtype == "float32" else np.float64)
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from ...errors import MethodUnavailableError

        raise MethodUnavailableError('sinkhorn on torch needs torch; run: pip install "alignsolve[torch]"') from exc
    if device is None:
        device = str(fitness.device)
    if dtype not in (None, "float64", "float32"):
        raise InvalidProblemError("dtype", "must be 'float32' or 'float64'", repr(dtype))
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidProblemError("device", "must be a torch device such as 'cpu' or 'cuda'", repr(device)) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidProblemError("device", "needs a CUDA GPU, and torch sees none", repr(device))
    # float32 is the GPU's fast path; CPU defaults to float64 like numpy.
    chosen = dtype or ("float32" if dev.type == "cuda" else "float64")
    return _Torch(dev, torch.float32 if chosen == "float32" else torch.float64)
