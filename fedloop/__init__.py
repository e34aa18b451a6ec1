"""fedloop: a thin PyTorch federated Mixture-of-Experts loop that calls alignsolve's aligner every round.

It uses :mod:`alignsolve` only through its public API, as any other federated system would::

    from fedloop import FedConfig, run
    history = run(FedConfig(dataset="synthetic", policy="aligned", method="flow", rounds=10))
    print(history.to_frame()[["accuracy", "bytes_down", "load_cv"]])
"""

from __future__ import annotations

from .aggregation import aggregate_experts, aggregate_shared, screen_updates, weighted_average
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import FederatedData, load_dataset
from .history import History, RoundRecord
from .loop import ConfigError, FaultPlan, FedConfig, build, run
from .model import MoE
from .policies import POLICIES, Policy, make_policy

__all__ = [
    "POLICIES",
    "CheckpointError",
    "ConfigError",
    "FaultPlan",
    "FedConfig",
    "FederatedData",
    "History",
    "MoE",
    "Policy",
    "RoundRecord",
    "aggregate_experts",
    "aggregate_shared",
    "build",
    "load_checkpoint",
    "load_dataset",
    "make_policy",
    "run",
    "save_checkpoint",
    "screen_updates",
    "weighted_average",
]
