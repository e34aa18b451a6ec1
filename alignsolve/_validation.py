"""Input validation, in one place.

Every check raises :class:`~alignsolve.errors.InvalidProblemError` naming the
parameter, the rule and the value received. Never ``assert`` on user input.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .errors import InvalidProblemError

__all__ = [
    "as_bool_matrix",
    "as_bounds",
    "as_float_array",
    "as_int_vector",
    "as_nonneg_float",
    "as_optional_positive_float",
    "as_seed",
]


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + (",)" if len(shape) == 1 else ")")


def _first_index(mask: np.ndarray) -> str:
    idx = np.argwhere(mask)[0]
    return str(int(idx[0])) if idx.size == 1 else _shape_text(tuple(int(v) for v in idx))


def _numeric_array(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise InvalidProblemError(name, "must be array-like of numbers", f"{type(value).__name__} ({exc})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InvalidProblemError(name, "must be numeric", f"dtype {arr.dtype}")
    if arr.dtype == bool:
        raise InvalidProblemError(name, "must be numeric, not boolean", "dtype bool")
    if np.iscomplexobj(arr):
        raise InvalidProblemError(name, "must be real", f"dtype {arr.dtype}")
    return arr


def as_float_array(
    name: str,
    value: Any,
    shape: tuple[int, ...] | None,
    *,
    ndim: int | None = None,
    nonneg: bool = False,
    broadcast_from: tuple[tuple[int, ...], ...] = (),
) -> np.ndarray:
    """A finite float64 array, copied, read-only.

    Parameters
    ----------
    name : str
        Parameter name for error messages.
    value : array-like
        What the caller passed.
    shape : tuple or None
        Required shape (after broadcasting); None accepts any shape of ``ndim``.
    ndim : int, optional
        Required number of dimensions when ``shape`` is None.
    nonneg : bool
        Require every entry to be >= 0.
    broadcast_from : tuple of shapes
        Other shapes accepted and broadcast to ``shape`` (a scalar is always accepted
        when ``shape`` is given).
    """
    arr = _numeric_array(name, value)
    if shape is None:
        if ndim is not None and arr.ndim != ndim:
            raise InvalidProblemError(
                name, f"must be a {ndim}-D array", f"{arr.ndim}-D array of shape {_shape_text(arr.shape)}"
            )
    elif arr.shape != shape:
        if arr.ndim == 0 or arr.shape in broadcast_from:
            arr = np.broadcast_to(arr, shape)
        else:
            allowed = " or ".join(_shape_text(s) for s in (shape, *broadcast_from))
            raise InvalidProblemError(
                name, f"must have shape {allowed} (or be a scalar)", f"shape {_shape_text(arr.shape)}"
            )
    out = np.array(arr, dtype=np.float64, copy=True)
    bad = ~np.isfinite(out)
    if bad.any():
        where = _first_index(bad)
        raise InvalidProblemError(
            name, "must be finite (no NaN or inf)", f"{out[tuple(np.argwhere(bad)[0])]} at index {where}"
        )
    if nonneg and (out < 0).any():
        where = _first_index(out < 0)
        raise InvalidProblemError(name, "must be >= 0", f"{out[tuple(np.argwhere(out < 0)[0])]} at index {where}")
    out.flags.writeable = False
    return out


def as_int_vector(name: str, value: Any, length: int, *, minimum: int = 0) -> np.ndarray:
    """An int64 vector of ``length`` (a scalar broadcasts), integral, >= ``minimum``, read-only."""
    arr = _numeric_array(name, value)
    if arr.ndim == 0:
        arr = np.broadcast_to(arr, (length,))
    if arr.shape != (length,):
        raise InvalidProblemError(
            name, f"must be a scalar or have shape ({length},)", f"shape {_shape_text(arr.shape)}"
        )
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            where = _first_index(~np.isfinite(arr))
            raise InvalidProblemError(name, "must be finite integers", f"{arr[int(where)]} at index {where}")
        frac = arr != np.round(arr)
        if frac.any():
            where = _first_index(frac)
            raise InvalidProblemError(name, "must be integers", f"{arr[int(where)]} at index {where}")
        if (np.abs(arr) > 2**53).any():
            raise InvalidProblemError(name, "must be at most 2**53 in magnitude", f"max {np.abs(arr).max()}")
    out = np.array(arr, dtype=np.int64, copy=True)
    low = out < minimum
    if low.any():
        where = _first_index(low)
        raise InvalidProblemError(name, f"must be >= {minimum}", f"{out[int(where)]} at index {where}")
    out.flags.writeable = False
    return out


def as_bool_matrix(name: str, value: Any, shape: tuple[int, int]) -> np.ndarray:
    """A boolean (N, E) array, copied, read-only. 0/1 integers are refused (say ``astype(bool)``)."""
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise InvalidProblemError(name, "must be a boolean array", f"{type(value).__name__} ({exc})") from None
    if arr.dtype != bool:
        raise InvalidProblemError(
            name,
            "must be boolean (pass mask.astype(bool) if 0/1 was meant)",
            f"dtype {arr.dtype}",
        )
    if arr.ndim == 0:
        arr = np.broadcast_to(arr, shape)
    if arr.shape != shape:
        raise InvalidProblemError(name, f"must have shape {_shape_text(shape)}", f"shape {_shape_text(arr.shape)}")
    out = np.array(arr, dtype=bool, copy=True)
    out.flags.writeable = False
    return out


def as_nonneg_float(name: str, value: Any) -> float:
    """A finite float >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidProblemError(name, "must be a real number", value)
    out = float(value)
    if not math.isfinite(out) or out < 0:
        raise InvalidProblemError(name, "must be finite and >= 0", value)
    return out


def as_optional_positive_float(name: str, value: Any) -> float | None:
    """None, or a finite float > 0 (time limits)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidProblemError(name, "must be None or a positive number of seconds", value)
    out = float(value)
    if not math.isfinite(out) or out <= 0:
        raise InvalidProblemError(name, "must be None or a positive number of seconds", value)
    return out


def as_seed(name: str, value: Any) -> int | None:
    """None or a non-negative integer seed."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise InvalidProblemError(name, "must be None or a non-negative integer", value)
    return int(value)


def as_bounds(
    client_capacity: Any, client_min: Any, expert_min: Any, expert_max: Any, n: int, e: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The client and expert bounds as int64 vectors, each lower bound at most its upper bound.

    ``expert_max=None`` means ``n`` (no cap). Returns (client_capacity, client_min,
    expert_min, expert_max) of shapes (n,), (n,), (e,), (e,).
    """
    cap = as_int_vector("client_capacity", client_capacity, n)
    cmin = as_int_vector("client_min", client_min, n)
    over = cmin > cap
    if over.any():
        i = int(np.argmax(over))
        raise InvalidProblemError(
            "client_min", "must be <= client_capacity", f"client_min[{i}] = {cmin[i]} > client_capacity[{i}] = {cap[i]}"
        )
    emin = as_int_vector("expert_min", expert_min, e)
    emax = as_int_vector("expert_max", n if expert_max is None else expert_max, e)
    over = emin > emax
    if over.any():
        j = int(np.argmax(over))
        raise InvalidProblemError(
            "expert_min", "must be <= expert_max", f"expert_min[{j}] = {emin[j]} > expert_max[{j}] = {emax[j]}"
        )
    return cap, cmin, emin, emax
