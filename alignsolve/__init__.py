"""alignsolve: client-expert alignment for federated Mixture-of-Experts training.

Solve one round's capacity-constrained client-expert assignment exactly or fast::

    >>> import alignsolve as als
    >>> p = als.Problem([[3.0, 1.0], [2.0, 2.5]], client_capacity=1, expert_max=1)
    >>> a = als.solve(p, method="flow")
    >>> a.status, a.pairs.tolist(), a.objective
    ('optimal', [[0, 0], [1, 1]], 5.5)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .assignment import Assignment
from .balance import coefficient_of_variation, gini
from .errors import (
    AlignsolveError,
    ConstraintViolation,
    InvalidProblemError,
    InvalidReportError,
    MethodUnavailableError,
)
from .feasibility import Certificate, diagnose, diagnose_generalised
from .federated.aligner import (
    LOAD_SIGNALS,
    LOAD_TARGETS,
    TIE_BREAKS,
    Aligner,
    ClientOutcome,
    ClientReport,
    solve_with_random_ties,
    top_k_affinity,
)
from .federated.capacity import (
    HETEROGENEITY,
    CapacityPlan,
    ClientProfile,
    DeviceFigures,
    ExpertSpec,
    plan_capacity,
    sample_profiles,
)
from .federated.monitor import LoadMonitor
from .federated.privacy import GaussianMechanism, PrivateStatistics, RandomizedResponse, gaussian_sigma
from .federated.scoring import VALUE_SCALES, FitnessScorer, Scores, ScoringWeights
from .generators import FAMILIES, generate, generate_sparse
from .problem import Problem
from .solve import choose_method, solve
from .solvers import available_methods, method_info
from .sparse import SparseProblem
from .verify import verify

try:
    __version__ = version("alignsolve")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"

__all__ = [
    "FAMILIES",
    "HETEROGENEITY",
    "LOAD_SIGNALS",
    "LOAD_TARGETS",
    "TIE_BREAKS",
    "VALUE_SCALES",
    "Aligner",
    "AlignsolveError",
    "Assignment",
    "CapacityPlan",
    "Certificate",
    "ClientOutcome",
    "ClientProfile",
    "ClientReport",
    "ConstraintViolation",
    "DeviceFigures",
    "ExpertSpec",
    "FitnessScorer",
    "GaussianMechanism",
    "InvalidProblemError",
    "InvalidReportError",
    "LoadMonitor",
    "MethodUnavailableError",
    "PrivateStatistics",
    "Problem",
    "RandomizedResponse",
    "Scores",
    "ScoringWeights",
    "SparseProblem",
    "__version__",
    "available_methods",
    "choose_method",
    "coefficient_of_variation",
    "diagnose",
    "diagnose_generalised",
    "gaussian_sigma",
    "generate",
    "generate_sparse",
    "gini",
    "method_info",
    "plan_capacity",
    "sample_profiles",
    "solve",
    "solve_with_random_ties",
    "top_k_affinity",
    "verify",
]
