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
    "MAX_MAGNITUDE",
    "Option",
    "as_bool_matrix",
    "as_bounds",
    "as_float_array",
    "as_int_vector",
    "as_nonneg_float",
    "as_optional_positive_float",
    "as_seed",
    "budget_slack",
    "frozen",
    "value_tolerance",
]

#: Largest magnitude accepted for fitness, cost, budget and load_penalty. Objectives sum up to
#: N * E terms and the penalty squares loads, so beyond this a finite problem could have an
#: infinite objective; below it every objective, bound and scaled model stays finite.
MAX_MAGNITUDE = 1e150

#: Largest lower bound (client_min, expert_min): sums of N or E of them stay inside int64.
MAX_LOWER_BOUND = 2**31 - 1


def budget_slack(budget: Any) -> Any:
    """How far a client's spend may exceed its budget (N,) and still count as within it: 1e-9 relative.

    Summing costs in another order moves the total by a few ulps, so an exact comparison
    would make feasibility depend on the order of a sum. The tolerance is relative, so a
    problem and the same problem with every cost and budget scaled by any factor have the
    same feasible assignments.
    """
    return 1e-9 * np.abs(budget)


def value_tolerance(value: float) -> float:
    """How far two objective values (a bound and an answer) may differ and still count as equal.

    1e-9 of the magnitude, and absolute below 1: sums of the same terms in another order
    differ by a few ulps, and nothing smaller than this is a real difference.
    """
    return 1e-9 * max(1.0, abs(value))


def frozen(arr: np.ndarray) -> np.ndarray:
    """``arr`` as a read-only view of a read-only array.

    ``flags.writeable = False`` alone can be undone by anyone holding the array (numpy
    lets the owner of the data flip it back). A view whose base is read-only cannot be
    made writeable again, so an immutable object stays immutable.
    """
    base = arr if arr.flags.owndata else arr.copy()
    base.flags.writeable = False
    view = base.view()
    view.flags.writeable = False
    return view


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
    max_magnitude: float = MAX_MAGNITUDE,
    scalar: bool = True,
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
        Other shapes accepted and broadcast to ``shape``.
    max_magnitude : float
        Largest ``|value|`` accepted (:data:`MAX_MAGNITUDE`).
    scalar : bool
        Accept a scalar and broadcast it to ``shape`` (when ``shape`` is given).
    """
    arr = _numeric_array(name, value)
    if shape is None:
        if ndim is not None and arr.ndim != ndim:
            raise InvalidProblemError(
                name, f"must be a {ndim}-D array", f"{arr.ndim}-D array of shape {_shape_text(arr.shape)}"
            )
    elif arr.shape != shape:
        if (scalar and arr.ndim == 0) or arr.shape in broadcast_from:
            arr = np.broadcast_to(arr, shape)
        else:
            allowed = " or ".join(_shape_text(s) for s in (shape, *broadcast_from))
            rule = f"must have shape {allowed}" + (" (or be a scalar)" if scalar else "")
            raise InvalidProblemError(name, rule, f"shape {_shape_text(arr.shape)}")
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
    big = np.abs(out) > max_magnitude
    if big.any():
        where = _first_index(big)
        raise InvalidProblemError(
            name,
            f"must be at most {max_magnitude:g} in magnitude (objectives and bounds must stay finite)",
            f"{out[tuple(np.argwhere(big)[0])]} at index {where}",
        )
    return frozen(out)


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
    return frozen(out)


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
    return frozen(np.array(arr, dtype=bool, copy=True))


def as_nonneg_float(name: str, value: Any, *, maximum: float = math.inf) -> float:
    """A finite float >= 0 (and <= ``maximum``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidProblemError(name, "must be a real number", value)
    out = float(value)
    if not math.isfinite(out) or out < 0:
        raise InvalidProblemError(name, "must be finite and >= 0", value)
    if out > maximum:
        raise InvalidProblemError(name, f"must be at most {maximum:g}", value)
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

    An upper bound above the number of experts (``client_capacity``) or clients
    (``expert_max``) cannot bind, so it is stored as that number (or as the lower bound,
    when that is larger): the constraint is the same, and every sum of bounds stays far
    inside int64 (``10**9`` or ``2**62`` slots mean "no limit", not an overflow). Lower
    bounds are at most :data:`MAX_LOWER_BOUND`.
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
    for name, low in (("client_min", cmin), ("expert_min", emin)):
        if low.size and int(low.max()) > MAX_LOWER_BOUND:
            k = int(np.argmax(low))
            raise InvalidProblemError(name, f"must be at most {MAX_LOWER_BOUND}", f"{low[k]} at index {k}")
    cap = frozen(np.minimum(cap, np.maximum(e, cmin)))
    emax = frozen(np.minimum(emax, np.maximum(n, emin)))
    return cap, cmin, emin, emax


_NUMBER_KINDS = ("int", "float")


class Option:
    """The rule of one solver option: its kind and range, checked by name in one place.

    Parameters
    ----------
    kind : {"bool", "int", "float", "choice", "any"}
        ``int`` takes integers (not booleans), ``float`` any real number (not booleans),
        ``choice`` one of ``choices`` (strings compared case-insensitively), ``any`` what
        ``check`` accepts.
    low, high : float, optional
        The range; ``low_open`` / ``high_open`` make an end exclusive. Floats must be finite.
    none : bool
        None is accepted (it means the method's default).
    choices : tuple of str
    check : callable, optional
        For ``any``: ``check(name, value)`` returns the value to use or raises.
    text : str
        The rule in words, for the error message (derived from the range when empty).
    """

    __slots__ = ("check", "choices", "high", "high_open", "kind", "low", "low_open", "none", "text")

    def __init__(
        self,
        kind: str,
        *,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
        high_open: bool = False,
        none: bool = False,
        choices: tuple[str, ...] = (),
        check: Any = None,
        text: str = "",
    ) -> None:
        self.kind, self.low, self.high = kind, low, high
        self.low_open, self.high_open, self.none = low_open, high_open, none
        self.choices, self.check = choices, check
        self.text = text or self._describe()

    def _describe(self) -> str:
        if self.kind == "bool":
            words = "must be True or False"
        elif self.kind == "choice":
            words = "must be one of " + ", ".join(repr(c) for c in self.choices)
        else:
            words = "must be " + ("an integer" if self.kind == "int" else "a finite number")
            if self.low is not None:
                words += f" {'>' if self.low_open else '>='} {self.low:g}"
            if self.high is not None:
                words += (" and" if self.low is not None else "") + f" {'<' if self.high_open else '<='} {self.high:g}"
        return words + (" (or None for the default)" if self.none else "")

    def __call__(self, name: str, value: Any) -> Any:
        if value is None:
            if self.none:
                return None
            raise InvalidProblemError(name, self.text, value)
        if self.kind == "any":
            return self.check(name, value)
        if self.kind == "bool":
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            raise InvalidProblemError(name, self.text, value)
        if self.kind == "choice":
            if isinstance(value, str) and value.upper() in {c.upper() for c in self.choices}:
                return value.upper() if all(c.isupper() for c in self.choices) else value.lower()
            raise InvalidProblemError(name, self.text, value)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise InvalidProblemError(name, self.text, value)
        if self.kind == "int":
            if not isinstance(value, numbers.Integral):
                raise InvalidProblemError(name, self.text, value)
            out: float = int(value)
        else:
            out = float(value)
            if not math.isfinite(out):
                raise InvalidProblemError(name, self.text, value)
        if self.low is not None and (out < self.low or (self.low_open and out == self.low)):
            raise InvalidProblemError(name, self.text, value)
        if self.high is not None and (out > self.high or (self.high_open and out == self.high)):
            raise InvalidProblemError(name, self.text, value)
        return out


# Rules that many parameters share: one definition, so the same rule reads the same everywhere.
FLAG = Option("bool")
COUNT = Option("int", low=0)
AT_LEAST_ONE = Option("int", low=1)
AT_LEAST_ONE_OR_NONE = Option("int", low=1, none=True)
POSITIVE = Option("float", low=0.0, low_open=True)
NONNEGATIVE = Option("float", low=0.0)
