"""Exceptions raised by alignsolve.

Bad input raises; an infeasible problem does not (it is a status of the returned
:class:`~alignsolve.Assignment`).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlignsolveError",
    "ConstraintViolation",
    "InvalidProblemError",
    "InvalidReportError",
    "MethodUnavailableError",
]


class AlignsolveError(Exception):
    """Base class of every exception alignsolve raises on purpose."""


class InvalidProblemError(AlignsolveError, ValueError):
    """A parameter breaks a rule of the problem model (or of a solver option).

    Attributes
    ----------
    parameter : str
        The name of the offending parameter, as the caller spelled it.
    rule : str
        The rule it breaks, in words ("must be finite", "shape (N, E)", ...).
    received : str
        A short description of what was received.
    """

    def __init__(self, parameter: str, rule: str, received: Any) -> None:
        self.parameter = parameter
        self.rule = rule
        self.received = received if isinstance(received, str) else _describe(received)
        super().__init__(f"{parameter}: {rule}; got {self.received}")


class InvalidReportError(InvalidProblemError):
    """A client report, profile or round outcome breaks a rule of the aligner.

    Same attributes as :class:`InvalidProblemError`; the aligner rejects such a report
    (logging the reason) instead of letting it into its state.
    """


class ConstraintViolation(AlignsolveError):
    """An assignment breaks one or more hard constraints of its problem.

    Attributes
    ----------
    violations : list of str
        One human-readable line per violated constraint.
    """

    def __init__(self, violations: list[str]) -> None:
        self.violations = list(violations)
        lines = "\n".join(f"  - {v}" for v in self.violations)
        super().__init__(f"{len(self.violations)} constraint violation(s):\n{lines}")


class MethodUnavailableError(AlignsolveError, ImportError):
    """A method exists but its optional dependency is not installed."""


def _describe(value: Any) -> str:
    """A short, bounded description of a received value for error messages."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return text
