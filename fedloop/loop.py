"""The federated round loop: sample, report, assign, train, screen, aggregate, evaluate, record, checkpoint."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

import alignsolve as als

from .aggregation import (
    aggregate_experts,
    aggregate_rows,
    aggregate_shared,
    screen_updates,
    state_norm,
    update_norm,
)
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .client import LocalResult, client_statistics, private_report, train_local
from .data import DATASETS, FederatedData, load_dataset
from .history import History, RoundRecord
from .model import ROUTER_INPUTS, MoE, split_state
from .policies import POLICIES, Policy, make_policy

__all__ = [
    "ConfigError",
    "FaultPlan",
    "FedConfig",
    "RoundPlan",
    "begin_round",
    "build",
    "client_seed",
    "finish_round",
    "load_data",
    "load_profiles",
    "run",
    "run_round",
    "sample_round",
]

log = logging.getLogger("fedloop")
CHECKPOINT = "checkpoint.pt"


TESTBEDS = ("residual", "experts")
LOCAL_ROUTING = ("all", "assigned")
REPORT_MECHANISMS = ("gaussian", "top1")


class ConfigError(ValueError):
    """A configuration that cannot run; raised before any training."""


@dataclass
class FaultPlan:
    """Faults to inject, for tests and demonstrations: lists of ``[round, client id]``.

    ``drop``: the client drops mid-round (its update is lost); ``nan``: its update carries
    NaN; ``huge``: its update is scaled by 1e6 (a norm far beyond the round's median).
    """

    drop: list[list[Any]] = field(default_factory=list)
    nan: list[list[Any]] = field(default_factory=list)
    huge: list[list[Any]] = field(default_factory=list)

    def hits(self, kind: str, round: int, client_id: str) -> bool:
        return [round, client_id] in getattr(self, kind)


def _is_int_at_least(value: Any, low: int) -> bool:
    """An int (not a bool, which Python counts as one) of at least ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


@dataclass
class FedConfig:
    """Everything a run depends on (JSON-ready; the seed fixes the run)."""

    dataset: str = "synthetic"
    data_dir: str | None = None
    n_clients: int = 40
    per_round: int = 20
    n_experts: int = 8
    top_k: int = 2
    policy: str = "aligned"
    method: str = "flow"
    rounds: int = 20
    seed: int = 0
    local_epochs: int = 2
    lr: float = 0.1
    batch_size: int = 32
    hidden: int = 64
    expert_hidden: int = 64
    aux_weight: float = 0.01
    max_experts: int = 2
    deadline: float | None = None
    deadline_mode: bool = False
    heterogeneity: str = "trace"
    balance_tolerance: float = 0.25
    #: The FLEX-MoE-style policy's weight on its historical deficit (``fedloop.published.FlexMoEPolicy``); 0 turns
    #: the deficit off, so that the run shows what the deficit adds to the load bounds.
    deficit_weight: float = 0.5
    #: What the aligner's load bounds balance towards: "uniform" (1/E each) or "demand" (the routing's shares).
    load_target: str = "uniform"
    #: What the aligner's load term reads: "share" (the monitor's smoothed sample shares) or "queue" (a
    #: historical deficit in clients per round, as the FLEX-MoE-style policy's); see ``alignsolve.Aligner``.
    load_signal: str = "share"
    #: How the aligner and the FLEX-MoE-style policy pick among tied optima: "solver" (the method's own order) or
    #: "shuffle" (clients and experts in an order drawn from the seed and the round, so ties fall at random); see
    #: ``alignsolve.Aligner`` and ``fedloop.published.FlexMoEPolicy``.
    tie_break: str = "solver"
    min_cohort: int = 1
    #: None: the aligner fills every client's slots; k: at least k each, the rest only with pairs that beat the
    #: scorer's price (``alignsolve.Aligner(min_slots=...)``).
    min_slots: int | None = None
    reject_factor: float = 10.0
    device: str = "cpu"
    #: Overrides of the aligner's scoring weights (``alignsolve.ScoringWeights`` fields), e.g. {"load": 0.0}.
    score_weights: dict[str, float] = field(default_factory=dict)
    #: What the aligner's value term is divided by: "max" (the round's largest routed loss) or "mean_loss" (the mean
    #: reported loss, the FLEX-MoE-style policy's scale); see ``alignsolve.FitnessScorer``.
    value_scale: str = "max"
    #: False ablates capacity profiling: the aligner gives every client max_experts slots whatever its device
    #: (latency is still simulated from the real profiles).
    capacity_profiling: bool = True
    #: Privacy budget per round of a client's report: None sends routing and loss as measured; a number makes
    #: each client clip and noise both with ``alignsolve.GaussianMechanism(report_epsilon, report_delta)`` before
    #: they leave it, so the scorer reads only the privatised vectors.
    report_epsilon: float | None = None
    report_delta: float = 1e-5
    #: How a private report is made (with ``report_epsilon`` set): "gaussian" noises the routing and loss vectors
    #: (``alignsolve.GaussianMechanism``, (report_epsilon, report_delta)-DP); "top1" sends only the client's
    #: most-used expert through k-ary randomized response (``alignsolve.RandomizedResponse``, (report_epsilon,
    #: 0)-DP): the server sees a one-hot routing vector and no loss vector.
    report_mechanism: str = "gaussian"
    data_options: dict[str, Any] = field(default_factory=dict)
    faults: FaultPlan = field(default_factory=FaultPlan)
    #: "residual": the first testbed (experts added to the encoder's features, router masked to the assigned
    #: experts in local training, router averaged as a shared weight). "experts": experts carry the prediction
    #: (no path around them), local training routes over all experts with the unassigned ones frozen (so
    #: every expert's weights travel down, only the trained ones up), and router row j is averaged over the
    #: clients that trained expert j.
    testbed: str = "residual"
    #: End the encoder with a batch normalisation of its features (``fedloop.model.MoE``'s ``feature_norm``):
    #: without it the experts testbed's non-negative features can leave the router sending nearly every input to
    #: the same expert.
    feature_norm: bool = False
    #: Local training in the experts testbed: "all" routes over every expert (the unassigned ones frozen), as the
    #: deployed model does; "assigned" masks the router to the client's assigned experts, so that an assignment
    #: decides which expert each of its samples trains (the residual testbed always masks).
    local_routing: str = "all"
    #: What the router reads (``fedloop.model.MoE``'s ``router_input``): "features", or "token" (token data
    #: only) for the embedding of the last input token.
    router_input: str = "features"
    #: Token data written in several scripts (``load_shakespeare(scripts=S)``): answer in the script of the last
    #: input token (``fedloop.model.MoE``'s ``scripts``), as a keyboard answers in the alphabet being typed.
    answer_in_script: bool = False

    def routes_all(self) -> bool:
        """Whether local training routes over every expert (so every expert's weights go down to the client)."""
        return self.testbed == "experts" and self.local_routing == "all"

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the field, the rule and the value."""

        def bad(name: str, rule: str) -> ConfigError:
            return ConfigError(f"{name}: {rule}; got {getattr(self, name)!r}")

        if self.dataset not in DATASETS:
            raise bad("dataset", f"must be one of {', '.join(DATASETS)}")
        if self.dataset == "idx" and not self.data_dir:
            raise bad("data_dir", "the idx dataset needs the folder holding the IDX files")
        if self.policy not in POLICIES:
            raise bad("policy", f"must be one of {', '.join(POLICIES)}")
        if self.policy == "aligned" and self.method not in [*als.available_methods(), "auto"]:
            raise bad("method", f"must be one of {', '.join(als.available_methods())} or auto")
        for name in (
            "n_clients",
            "per_round",
            "n_experts",
            "top_k",
            "rounds",
            "local_epochs",
            "batch_size",
            "max_experts",
            "hidden",
            "expert_hidden",
        ):
            if not _is_int_at_least(getattr(self, name), 1):
                raise bad(name, "must be an integer >= 1")
        if self.per_round > self.n_clients:
            raise bad("per_round", f"must be <= n_clients = {self.n_clients}")
        if self.max_experts > self.n_experts:
            raise bad("max_experts", f"must be <= n_experts = {self.n_experts} (experts per client)")
        if self.top_k > self.n_experts:
            raise bad("top_k", f"must be <= n_experts = {self.n_experts}")
        if self.deadline is not None and not (self.deadline > 0 and math.isfinite(self.deadline)):
            raise bad("deadline", "must be None (calibrated) or a number of seconds > 0")
        for name in ("seed", "min_cohort"):
            if not _is_int_at_least(getattr(self, name), 0):
                raise bad(name, "must be an integer >= 0")
        if self.min_slots is not None and not _is_int_at_least(self.min_slots, 0):
            raise bad("min_slots", "must be None (every slot filled) or an integer >= 0")
        for name, low, strict in (
            ("lr", 0.0, True),
            ("aux_weight", 0.0, False),
            ("balance_tolerance", 0.0, False),
            ("deficit_weight", 0.0, False),
            ("reject_factor", 1.0, True),
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < low
                or (strict and value == low)
            ):
                raise bad(name, f"must be a finite number {'>' if strict else '>='} {low:g}")
        eps = self.report_epsilon
        if eps is not None and (
            isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0
        ):
            raise bad("report_epsilon", "must be None (reports sent as measured) or a finite number > 0")
        delta = self.report_delta
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0.0 < delta < 1.0:
            raise bad("report_delta", "must be a number in (0, 1)")
        if self.report_mechanism not in REPORT_MECHANISMS:
            raise bad("report_mechanism", f"must be one of {', '.join(REPORT_MECHANISMS)}")
        for name in ("deadline_mode", "capacity_profiling", "feature_norm", "answer_in_script"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be True or False")
        try:
            dev = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise bad("device", "must be a torch device such as 'cpu' or 'cuda'") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise bad("device", "CUDA is not available on this machine")
        if dev.type not in ("cpu", "cuda"):
            raise bad("device", "must be 'cpu' or a CUDA device")
        unknown = set(self.score_weights) - set(als.ScoringWeights.__dataclass_fields__)
        if unknown:
            raise bad("score_weights", f"keys must be fields of alignsolve.ScoringWeights, not {sorted(unknown)}")
        if self.load_target not in als.LOAD_TARGETS:
            raise bad("load_target", f"must be one of {', '.join(als.LOAD_TARGETS)}")
        if self.load_signal not in als.LOAD_SIGNALS:
            raise bad("load_signal", f"must be one of {', '.join(als.LOAD_SIGNALS)}")
        if self.tie_break not in als.TIE_BREAKS:
            raise bad("tie_break", f"must be one of {', '.join(als.TIE_BREAKS)}")
        if self.value_scale not in als.VALUE_SCALES:
            raise bad("value_scale", f"must be one of {', '.join(als.VALUE_SCALES)}")
        if self.testbed not in TESTBEDS:
            raise bad("testbed", f"must be one of {', '.join(TESTBEDS)}")
        if self.local_routing not in LOCAL_ROUTING:
            raise bad("local_routing", f"must be one of {', '.join(LOCAL_ROUTING)}")
        if self.router_input not in ROUTER_INPUTS:
            raise bad("router_input", f"must be one of {', '.join(ROUTER_INPUTS)}")
        if self.heterogeneity not in als.HETEROGENEITY:
            raise bad("heterogeneity", f"must be one of {', '.join(als.HETEROGENEITY)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FedConfig:
        doc = dict(doc)
        doc["faults"] = FaultPlan(**doc.get("faults", {}))
        return cls(**doc)


@dataclass
class Setup:
    """What :func:`build` makes from a config: data, profiles, model, spec, deadline, policy."""

    config: FedConfig
    data: FederatedData
    profiles: list[als.ClientProfile]
    model: MoE
    spec: als.ExpertSpec
    deadline: float
    policy: Policy

    @property
    def plan_deadline(self) -> float:
        """The deadline slots are planned against (none without capacity profiling: everyone gets max_experts)."""
        return self.deadline if self.config.capacity_profiling else 1e12


def _spec_of(model: MoE) -> als.ExpertSpec:
    # float32 parameters; training FLOPs per sample ~ 6 x parameters (forward 2, backward 4).
    expert = model.expert_parameters(0)
    shared = model.shared_parameters()
    return als.ExpertSpec(
        param_bytes=4.0 * expert,
        flops_per_sample=6.0 * expert,
        shared_param_bytes=4.0 * shared,
        shared_flops_per_sample=6.0 * shared,
    )


def load_data(config: FedConfig) -> FederatedData:
    """The run's dataset and client shards (the server and every client load the same split)."""
    try:
        return load_dataset(
            config.dataset, config.n_clients, seed=config.seed, data_dir=config.data_dir, **config.data_options
        )
    except (ValueError, TypeError, FileNotFoundError) as exc:  # bad data options or a missing cache: before training
        raise ConfigError(f"dataset {config.dataset!r}: {exc}") from None


def load_profiles(config: FedConfig, data: FederatedData) -> list[als.ClientProfile]:
    """The run's seeded device profile per client (the server's table; each ClientApp reports its own entry)."""
    return als.sample_profiles(
        config.n_clients, heterogeneity=config.heterogeneity, seed=config.seed, n_samples=data.n_samples
    )


def build_model(config: FedConfig, data: FederatedData) -> MoE:
    """The run's MoE for ``data``: the testbed, sizes and routing of ``config``, on its device."""
    if config.router_input == "token" and not data.info.get("tokens"):
        raise ConfigError(
            f"router_input: 'token' needs a dataset of token sequences (shakespeare); got dataset {config.dataset!r}"
        )
    scripts = int(data.info.get("scripts", 1))
    if config.answer_in_script and scripts < 2:
        raise ConfigError(
            "answer_in_script: needs token data written in several scripts (shakespeare with data option "
            f"scripts >= 2); got dataset {config.dataset!r} with {scripts} script"
        )
    return MoE(
        data.input_shape,
        data.n_classes,
        config.n_experts,
        top_k=config.top_k,
        hidden=config.hidden,
        expert_hidden=config.expert_hidden,
        vocab=data.n_classes if data.info.get("tokens") else None,
        residual=config.testbed == "residual",
        feature_norm=config.feature_norm,
        router_input=config.router_input,
        scripts=scripts if config.answer_in_script else 1,
    ).to(config.device)


def build(config: FedConfig) -> Setup:
    """Validate the config and build everything a run needs (no training)."""
    config.validate()
    data = load_data(config)
    profiles = load_profiles(config, data)
    device = torch.device(config.device)
    data.clients = [(x.to(device), y.to(device)) for x, y in data.clients]
    data.test = (data.test[0].to(device), data.test[1].to(device))
    torch.manual_seed(config.seed)
    model = build_model(config, data)  # initialised on the CPU: the same weights on every device
    spec = _spec_of(model)
    deadline = config.deadline
    if deadline is None:
        # The median client can just take max_experts experts; slower ones get fewer slots.
        plan = als.plan_capacity(profiles, spec, 1e30, n_experts=config.n_experts, local_epochs=config.local_epochs)
        needed = plan.base_time + config.max_experts * plan.expert_time.mean(axis=1)
        deadline = float(np.median(needed))
    aligner = None
    if config.policy == "aligned":
        try:
            scorer = als.FitnessScorer(als.ScoringWeights(**config.score_weights), value_scale=config.value_scale)
        except als.InvalidProblemError as exc:
            raise ConfigError(f"score_weights: {exc}") from None
        aligner = als.Aligner(
            config.n_experts,
            spec,
            deadline if config.capacity_profiling else 1e12,  # as Setup.plan_deadline
            method=config.method,
            scorer=scorer,
            balance_tolerance=config.balance_tolerance,
            load_target=config.load_target,
            load_signal=config.load_signal,
            min_cohort=config.min_cohort,
            min_slots=config.min_slots,
            local_epochs=config.local_epochs,
            max_experts=config.max_experts,
            seed=config.seed,
            tie_break=config.tie_break,
        )
    label_counts = None
    if config.policy == "oracle_labels":  # the diagnostic reads what no server sees: each client's labels
        label_counts = {
            cid: torch.bincount(y.cpu(), minlength=data.n_classes).numpy()
            for cid, (_, y) in zip(data.client_ids, data.clients)
        }
    policy = make_policy(
        config.policy,
        aligner=aligner,
        balance_tolerance=config.balance_tolerance,
        deficit_weight=config.deficit_weight,
        seed=config.seed,
        label_counts=label_counts,
        tie_break=config.tie_break,
    )
    return Setup(config, data, profiles, model, spec, deadline, policy)


@torch.no_grad()
def evaluate(model: MoE, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024) -> tuple[float, float]:
    """Test accuracy and mean cross-entropy."""
    accuracy, loss, _ = evaluate_routing(model, x, y, batch_size=batch_size)
    return accuracy, loss


@torch.no_grad()
def evaluate_routing(
    model: MoE, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024
) -> tuple[float, float, np.ndarray]:
    """Test accuracy, mean cross-entropy, and (E,) the share of test samples whose top-1 expert is each j."""
    model.eval()
    correct, loss = 0, 0.0
    picks = torch.zeros(model.n_experts, dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        logits, first = _logits_and_first(model, x[start : start + batch_size])
        loss += float(F.cross_entropy(logits, y[start : start + batch_size], reduction="sum"))
        correct += int((logits.argmax(dim=1) == y[start : start + batch_size]).sum())
        picks += torch.bincount(first, minlength=model.n_experts).double()
    return correct / x.shape[0], loss / x.shape[0], (picks / max(x.shape[0], 1)).cpu().numpy()


#: Images per forward pass when a batch of images is evaluated on CPU.
IMAGE_CHUNK = 256


def _logits_and_first(model: MoE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, C) and top-1 expert (B,) of a batch, images on CPU forwarded :data:`IMAGE_CHUNK` at a time:
    the activations of a whole batch of 1024 do not stay in cache, and its forward pass was slower per image.
    Each image's logits are the same in a chunk as in the whole batch (a test checks it), so the loss, summed per
    batch, is unchanged."""
    if x.device.type != "cpu" or x.dim() != 4:
        out = model(x)
        return out.logits, out.top[:, 0]
    outs = [model(x[start : start + IMAGE_CHUNK]) for start in range(0, x.shape[0], IMAGE_CHUNK)]
    return torch.cat([o.logits for o in outs]), torch.cat([o.top[:, 0] for o in outs])


def routing_entropy(share: np.ndarray) -> float:
    """``H(share) / log E`` in [0, 1]: 1 when the router spreads samples evenly over all E experts, 0 on one."""
    p = np.asarray(share, dtype=float)
    p = p[p > 0] / p.sum() if p.sum() > 0 else p[:0]
    value = float(-(p * np.log(p)).sum() / math.log(share.size)) if share.size > 1 and p.size else 0.0
    return max(0.0, value)  # one expert gives -0.0


def state_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes of a state dict's tensors (what sending them costs, before any framing)."""
    return int(sum(t.numel() * t.element_size() for t in tensors.values()))


@dataclass
class RoundPlan:
    """The first half of a round: who was sampled, what they reported, who trains what.

    ``matrix`` (M, E) is in the order of ``ids``; ``lost`` marks the clients the
    availability draw drops mid-round; ``latency`` (M,) is each client's simulated time.
    """

    round: int
    sampled: np.ndarray
    ids: list[str]
    lost: np.ndarray
    reports: list[als.ClientReport]
    matrix: np.ndarray
    latency: np.ndarray
    solver_s: float
    global_state: dict[str, torch.Tensor]
    #: (M,) the slots the capacity planner gave each client this round.
    capacity: np.ndarray | None = None
    #: Seconds this process spent computing the reports (0 when the clients sent them).
    report_s: float = 0.0

    def experts_of(self, m: int) -> list[int]:
        return np.flatnonzero(self.matrix[m]).tolist()

    def straggles(self, setup: Setup, m: int) -> bool:
        """In deadline mode, a client slower than the deadline is dropped (the server stops waiting)."""
        return setup.config.deadline_mode and bool(self.latency[m] > setup.deadline * (1 + 1e-9))


def sample_round(setup: Setup, r: int) -> tuple[np.random.Generator, np.ndarray, list[str], np.ndarray]:
    """Round ``r``'s generator, sampled client indices, their ids, the availability draw (seeded by (seed, r))."""
    cfg = setup.config
    rng = np.random.default_rng([cfg.seed, r])
    sampled = np.sort(rng.choice(cfg.n_clients, size=cfg.per_round, replace=False))
    lost = rng.random(sampled.size) > np.array([setup.profiles[c].availability for c in sampled])
    return rng, sampled, [setup.data.client_ids[c] for c in sampled], lost


def client_seed(config: FedConfig, r: int, client_index: int) -> int:
    """The seed of a client's local training in round ``r`` (the same in-process and on Flower)."""
    return int(np.random.default_rng([config.seed, r, int(client_index)]).integers(2**31))


def begin_round(
    setup: Setup, r: int, reports: list[als.ClientReport] | None = None, reachable: Any = None
) -> RoundPlan:
    """Sample, collect reports (computed here when not given), plan capacities and let the policy assign.

    ``reports`` come from the clients on a distributed run (Flower); they must be in the
    order of the sampled clients. ``reachable`` (M,) bool, on such a run, marks the sampled
    clients the server can reach this round: the others get no slot and the policy assigns
    among the reachable ones only (all reachable when None, as in-process).
    """
    cfg, data, model = setup.config, setup.data, setup.model
    rng, sampled, ids, lost = sample_round(setup, r)
    report_s = 0.0  # reports sent by the clients cost this process nothing
    if reports is None:
        report_start = time.perf_counter()
        reports = []
        for c, cid in zip(sampled, ids):
            routing, loss = private_report(*client_statistics(model, *data.clients[c]), cfg, r, int(c))
            reports.append(als.ClientReport(cid, setup.profiles[c], routing, loss=loss))
        report_s = time.perf_counter() - report_start
    elif [rep.client_id for rep in reports] != ids:
        raise ValueError(f"reports: must come from the sampled clients {ids} in that order")
    plan = als.plan_capacity(
        [rep.profile for rep in reports],
        setup.spec,
        setup.plan_deadline,
        n_experts=cfg.n_experts,
        local_epochs=cfg.local_epochs,
        max_experts=cfg.max_experts,
    )
    capacity = plan.capacity.copy()
    start = time.perf_counter()
    if reachable is None or np.all(reachable):
        matrix = np.asarray(setup.policy.assign(r, reports, capacity, plan.allowed, rng), dtype=bool)
    else:
        keep = np.flatnonzero(np.asarray(reachable, dtype=bool))
        capacity[np.setdiff1d(np.arange(len(ids)), keep)] = 0
        matrix = np.zeros((len(ids), cfg.n_experts), dtype=bool)
        part = setup.policy.assign(r, [reports[m] for m in keep], capacity[keep], plan.allowed[keep], rng)
        matrix[keep] = np.asarray(part, dtype=bool)
    solver_s = time.perf_counter() - start
    if matrix.shape != (len(ids), cfg.n_experts):
        raise RuntimeError(f"policy {setup.policy.name}: shape {matrix.shape}, expected {(len(ids), cfg.n_experts)}")
    if setup.policy.respects_capacity and np.any(matrix.sum(axis=1) > capacity):
        raise RuntimeError(f"policy {setup.policy.name}: exceeded a client's capacity")
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    return RoundPlan(
        r, sampled, ids, lost, reports, matrix, plan.round_time(matrix), solver_s, global_state, capacity, report_s
    )


def finish_round(
    setup: Setup, rp: RoundPlan, results: dict[str, LocalResult], dropped: list[str], train_s: float
) -> RoundRecord:
    """Screen and aggregate the returned updates, tell the policy, evaluate, record.

    ``results`` are the updates that arrived (by client id); ``dropped`` the clients whose
    update did not. Traffic counts every assigned client's download and every returned
    update's upload.
    """
    cfg, data, model, r = setup.config, setup.data, setup.model, rp.round
    shared_now, experts_now = split_state(rp.global_state)
    shared_bytes = state_bytes(shared_now)
    expert_bytes = {j: state_bytes(s) for j, s in experts_now.items()}
    sizes = [shared_bytes + sum(expert_bytes[j] for j in rp.experts_of(m)) for m in range(len(rp.ids))]
    assigned = rp.matrix.any(axis=1)
    # Routing over every expert needs every expert's weights on the client; only the trained ones return.
    down = [shared_bytes + sum(expert_bytes.values())] * len(sizes) if cfg.routes_all() else sizes
    bytes_down = sum(size for size, given in zip(down, assigned) if given)
    bytes_up = sum(size for size, cid in zip(sizes, rp.ids) if cid in results)

    agg_start = time.perf_counter()
    norms, sent = {}, {}
    for cid, res in results.items():
        before = dict(shared_now)
        after = dict(res.shared)
        for j, state in res.experts.items():
            before.update(experts_now[j])
            after.update(state)
        norms[cid] = update_norm(before, after)
        sent[cid] = state_norm(before)
    rejected = screen_updates(norms, factor=cfg.reject_factor, reference=sent)
    for cid, reason in rejected.items():
        log.warning("round %d: rejected the update of %s: %s", r, cid, reason)
    accepted = {cid: res for cid, res in results.items() if cid not in rejected}
    if accepted:
        shared_new = aggregate_shared(
            [res.shared for res in accepted.values()], [res.n_samples for res in accepted.values()]
        )
        contributions: dict[int, list[tuple[dict[str, torch.Tensor], float]]] = {}
        for res in accepted.values():
            for j, state in res.experts.items():
                contributions.setdefault(j, []).append((state, float(res.routed[j])))
        experts_new = aggregate_experts(experts_now, contributions)
        if cfg.testbed == "experts":
            # Router row j belongs to expert j: averaged over the clients that trained j, by the samples they
            # routed to it; a row nobody trained keeps its weights.
            for key in ("router.weight", "router.bias"):
                rows = {
                    j: [(res.shared[key][j], float(res.routed[j])) for res in accepted.values() if j in res.experts]
                    for j in range(cfg.n_experts)
                }
                shared_new[key] = aggregate_rows(shared_now[key], rows)
        new_state = dict(shared_new)
        for state in experts_new.values():
            new_state.update(state)
        model.load_state_dict(new_state)
    aggregate_s = time.perf_counter() - agg_start

    outcomes = []
    for m, cid in enumerate(rp.ids):
        if not assigned[m]:
            continue
        res = accepted.get(cid)
        if res is None:
            outcomes.append(als.ClientOutcome(cid, completed=False))
        else:
            outcomes.append(als.ClientOutcome(cid, completed=True, samples=np.where(rp.matrix[m], res.routed, 0.0)))
    setup.policy.observe(outcomes)

    evaluate_start = time.perf_counter()
    accuracy, test_loss, share = evaluate_routing(model, *data.test)
    evaluate_s = time.perf_counter() - evaluate_start
    returned = [m for m, cid in enumerate(rp.ids) if cid in results]
    loads = rp.matrix.sum(axis=0)
    info = setup.policy.info()
    given = np.flatnonzero(assigned)
    # what the server saw, as on a distributed run (the records of the two must agree): with private reports, the
    # noised routing, bounded by routed_share
    shares = [routed_share(rp.reports[m].routing, rp.matrix[m]) for m in given]
    shares = [x for x in shares if not math.isnan(x)]  # a report with no routing mass left has no share
    return RoundRecord(
        round=r,
        accuracy=accuracy,
        test_loss=test_loss,
        train_loss=float(np.mean([res.train_loss for res in accepted.values()])) if accepted else math.nan,
        bytes_down=int(bytes_down),
        bytes_up=int(bytes_up),
        latency_s=float(rp.latency[returned].max()) if returned else 0.0,
        solver_s=rp.solver_s,
        train_s=train_s,
        aggregate_s=aggregate_s,
        participants=int(assigned.sum()),
        completed=len(accepted),
        loads=loads.astype(int).tolist(),
        load_cv=als.coefficient_of_variation(loads),
        load_gini=als.gini(loads),
        trained=list(accepted),
        dropped=list(dropped),
        rejected=rejected,
        relaxed=list(info.get("relaxed", [])),
        routing_entropy=routing_entropy(share),
        assigned={rp.ids[m]: rp.experts_of(m) for m in given},
        routed_share=float(np.mean(shares)) if shares else math.nan,
        report_s=rp.report_s,
        evaluate_s=evaluate_s,
    )


def routed_share(routing: Any, experts: np.ndarray) -> float:
    """The share of a client's routing (E,) that falls on ``experts`` (E,) bool, its negative entries (a noised
    report's) clipped to 0 and the rest renormalised so that the share stays in [0, 1]; NaN for no routing mass."""
    mass = np.clip(np.asarray(routing, float), 0.0, None)
    total = float(mass.sum())
    return float(mass[np.asarray(experts, bool)].sum() / total) if total > 0 else math.nan


def local_training(config: FedConfig) -> dict[str, Any]:
    """:func:`~fedloop.client.train_local`'s keyword arguments that ``config`` fixes for every client alike."""
    return dict(epochs=config.local_epochs, lr=config.lr, batch_size=config.batch_size, aux_weight=config.aux_weight)


def run_round(setup: Setup, r: int, local: MoE) -> RoundRecord:
    """One round in this process on ``setup.model`` (updated in place); ``local`` is the clients' working copy."""
    cfg, data = setup.config, setup.data
    rp = begin_round(setup, r)
    shared_now, _ = split_state(rp.global_state)
    results: dict[str, LocalResult] = {}
    dropped: list[str] = []
    train_start = time.perf_counter()
    for m, (c, cid) in enumerate(zip(rp.sampled, rp.ids)):
        experts = rp.experts_of(m)
        if not experts:
            continue
        if rp.straggles(setup, m) or rp.lost[m] or cfg.faults.hits("drop", r, cid):
            dropped.append(cid)  # a straggler, or dropped mid-round: its update never arrives
            continue
        local.load_state_dict(rp.global_state)
        x, y = data.clients[c]
        res = train_local(
            local, x, y, experts, **local_training(cfg), seed=client_seed(cfg, r, c), route_all=cfg.routes_all()
        )
        if cfg.faults.hits("nan", r, cid):
            next(iter(res.shared.values())).fill_(float("nan"))
        if cfg.faults.hits("huge", r, cid):
            res.shared = {k: shared_now[k] + 1e6 * (v - shared_now[k]) for k, v in res.shared.items()}
        results[cid] = res
    return finish_round(setup, rp, results, dropped, time.perf_counter() - train_start)


def write_checkpoint(setup: Setup, history: History, r: int, path: Path) -> Path:
    """Save what resuming after round ``r`` needs: global weights, policy state, history, config, torch RNG."""
    return save_checkpoint(
        path,
        {
            "round": r,
            "model": {k: v.cpu() for k, v in setup.model.state_dict().items()},
            "policy": json.dumps(setup.policy.state()),
            "history": history.to_json(),
            "config": json.dumps(setup.config.to_dict()),
            "torch_rng": torch.get_rng_state(),
        },
    )


def restore_checkpoint(setup: Setup, path: Path) -> tuple[History, int]:
    """Load :func:`write_checkpoint`'s file into ``setup``; returns the history so far and the next round.

    Raises :class:`CheckpointError` when the file is damaged or was written by a run whose
    configuration differs from ``setup.config`` in anything but ``rounds``.
    """
    payload = load_checkpoint(path)
    saved = json.loads(payload["config"])
    mine = setup.config.to_dict()
    if {k: v for k, v in saved.items() if k != "rounds"} != {k: v for k, v in mine.items() if k != "rounds"}:
        raise CheckpointError(f"{path}: written by a run with another configuration")
    setup.model.load_state_dict(payload["model"])
    setup.policy.load_state(json.loads(payload["policy"]))
    torch.set_rng_state(payload["torch_rng"])
    return History.from_json(payload["history"]), int(payload["round"]) + 1


def run(
    config: FedConfig,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> History:
    """Run (or resume) a federated training run.

    Parameters
    ----------
    config : FedConfig
    out_dir : path, optional
        Where the checkpoint (after every round) and the history go.
    resume : bool
        Continue from ``out_dir``'s checkpoint; its config must equal ``config`` except ``rounds``.
    on_round : callable, optional
        Called with each round's record (progress bars).
    """
    setup = build(config)
    history = History(config=config.to_dict() | {"deadline_s": setup.deadline})
    first = 0
    ckpt = Path(out_dir) / CHECKPOINT if out_dir is not None else None
    if resume:
        if ckpt is None:
            raise ConfigError("resume: needs out_dir, the folder holding the checkpoint")
        history, first = restore_checkpoint(setup, ckpt)
    local = build_model(config, setup.data)  # the clients' working copy, reloaded with the global weights
    for r in range(first, config.rounds):
        record = run_round(setup, r, local)
        history.add(record)
        if ckpt is not None:
            write_checkpoint(setup, history, r, ckpt)
            history.save(ckpt.parent)
        if on_round is not None:
            on_round(record)
    return history
