"""A Flower strategy (Message API) driven by the aligner: :class:`AlignedMoEStrategy`.

Each round (``configure_train``):

1. on the first round, a ``hello`` query maps every SuperNode to its fedloop client id;
2. the round's clients are sampled as the in-process loop samples them
   (:func:`fedloop.loop.sample_round`) and a ``report`` query sends them the global weights;
   their replies carry their device profile, routing shares and losses per expert;
3. the policy (the :class:`alignsolve.Aligner` for ``aligned``) assigns experts
   (:func:`fedloop.loop.begin_round`), and each node gets the shared weights, **only its
   assigned experts** and their ids.

``aggregate_train`` turns the replies into the loop's :class:`~fedloop.client.LocalResult`
and merges the partial updates with the loop's own :func:`~fedloop.loop.finish_round`
(Flower's stock FedAvg cannot: replies carry different keys). A node that does not reply,
or replies with an error, is a dropout. Evaluation is server-side, as in fedloop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

import alignsolve as als

from ..client import LocalResult
from ..history import History
from ..loop import (
    ConfigError,
    FedConfig,
    RoundPlan,
    begin_round,
    build,
    client_seed,
    finish_round,
    restore_checkpoint,
    sample_round,
    state_bytes,
    write_checkpoint,
)
from ..model import split_state

__all__ = ["AlignedMoEStrategy"]

log = logging.getLogger("fedloop.flower")


class AlignedMoEStrategy(Strategy):
    """fedloop's round on Flower's Grid.

    Parameters
    ----------
    config : FedConfig
        The same configuration an in-process :func:`fedloop.run` takes; with the same
        seed and reports the per-round assignments are the same.
    timeout : float
        Seconds to wait for replies to each query and train message batch.
    wait_for_nodes : float
        Seconds to wait, before the first round, for ``min_nodes`` SuperNodes to connect.
    min_nodes : int, optional
        SuperNodes needed to start (default ``n_clients``). Nodes that connect later are
        greeted at the start of the next round and take part from then on; a sampled client
        whose node is unknown or did not answer the round's report query gets no experts.
    checkpoint : path, optional
        Written after every round (:func:`fedloop.loop.write_checkpoint`).
    resume : bool
        Continue from ``checkpoint``: the rounds already done are not run again.
    """

    def __init__(
        self,
        config: FedConfig,
        *,
        timeout: float = 600.0,
        wait_for_nodes: float = 120.0,
        min_nodes: int | None = None,
        checkpoint: str | Path | None = None,
        resume: bool = False,
    ) -> None:
        if config.testbed != "residual":  # its clients would need every expert's weights: not built on Flower yet
            raise ConfigError(f"testbed: the Flower strategy runs the 'residual' testbed only; got {config.testbed!r}")
        self.setup = build(config)
        self.config = config
        self.timeout = timeout
        self.wait_for_nodes = wait_for_nodes
        self.min_nodes = config.n_clients if min_nodes is None else int(min_nodes)
        if not 1 <= self.min_nodes <= config.n_clients:
            raise ConfigError(f"min_nodes: must be in [1, n_clients = {config.n_clients}]; got {min_nodes!r}")
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.history = History(config=config.to_dict() | {"deadline_s": self.setup.deadline, "runtime": "flower"})
        #: The first round this strategy runs (after the checkpoint's, when resuming).
        self.first = 0
        if resume:
            if self.checkpoint is None:
                raise ConfigError("resume: needs a checkpoint path")
            self.history, self.first = restore_checkpoint(self.setup, self.checkpoint)
        self.node_of: dict[str, int] = {}
        self.assignments: dict[int, dict[str, list[int]]] = {}
        #: Per round, per sampled client: the profile it reported, the slots planned from it, its experts.
        self.plans: dict[int, dict[str, dict[str, Any]]] = {}
        #: Wall-clock seconds of each round, from configure_train to the end of aggregate_train.
        self.round_seconds: dict[int, float] = {}
        self._pending: tuple[RoundPlan, float] | None = None
        #: Per client: (bytes, seconds) of its last train reply, from its creation to its receipt here; sent back
        #: with the next report query so that a client measuring its device learns its uplink rate.
        self.uploads: dict[str, tuple[int, float]] = {}
        self._round_start = 0.0

    def initial_arrays(self) -> ArrayRecord:
        return ArrayRecord(self.setup.model.state_dict())

    def summary(self) -> None:
        cfg = self.config
        log.info(
            "AlignedMoEStrategy: policy %s (%s), %d clients, %d per round, %d experts",
            cfg.policy,
            cfg.method,
            cfg.n_clients,
            cfg.per_round,
            cfg.n_experts,
        )

    # -- the round ----------------------------------------------------------------------
    def _handshake(self, grid: Grid) -> None:
        """Greet the nodes not greeted yet (before the first round: wait for ``min_nodes`` of them)."""
        greeted = set(self.node_of.values())
        if not greeted:
            deadline = time.monotonic() + self.wait_for_nodes
            while len(nodes := list(grid.get_node_ids())) < self.min_nodes:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(nodes)} of {self.min_nodes} SuperNodes connected")
                time.sleep(0.2)
        new = [n for n in grid.get_node_ids() if n not in greeted]
        if not new:
            return
        content = RecordDict({"config": ConfigRecord({"kind": "hello"})})
        hello = [Message(content, dst_node_id=n, message_type=MessageType.QUERY) for n in new]
        for reply in grid.send_and_receive(hello, timeout=self.timeout):
            if not reply.has_error():
                self.node_of[str(reply.content["info"]["client-id"])] = reply.metadata.src_node_id

    def _reports(self, grid: Grid, r: int) -> tuple[list[als.ClientReport], list[bool]]:
        _, sampled, ids, _ = sample_round(self.setup, r)
        state = ArrayRecord(self.setup.model.state_dict())
        messages = []
        for cid in ids:
            if cid not in self.node_of:
                continue
            query: dict[str, Any] = {"kind": "report", "round": r}
            if cid in self.uploads:
                query["uplink-bytes"], query["uplink-seconds"] = self.uploads[cid]
            content = RecordDict({"arrays": state, "config": ConfigRecord(query)})
            messages.append(Message(content, dst_node_id=self.node_of[cid], message_type=MessageType.QUERY))
        got: dict[str, tuple[als.ClientProfile, np.ndarray, np.ndarray | None]] = {}
        answered: set[str] = set()
        for reply in grid.send_and_receive(messages, timeout=self.timeout):
            if reply.has_error():
                continue
            cid = str(reply.content["info"]["client-id"])
            answered.add(cid)
            try:
                profile = als.ClientProfile.from_dict(dict(reply.content["profile"]))
            except als.InvalidReportError as exc:  # a bad profile never reaches the planner
                log.warning("round %d: ignored the report of %s: %s", r, cid, exc)
                continue
            stats = reply.content["stats"].to_torch_state_dict()
            loss = stats["loss"].numpy() if "loss" in stats else None
            got[cid] = (profile, stats["routing"].numpy(), loss)
        reports = []
        e = self.config.n_experts
        for c, cid in zip(sampled, ids):
            # A client that does not answer the query (or sends a bad profile) reports the run's
            # profile table entry and no preference; if it is assigned experts, its missing
            # train reply makes it a dropout.
            profile, routing, loss = got.get(cid, (self.setup.profiles[c], np.full(e, 1.0 / e), None))
            reports.append(als.ClientReport(cid, profile, routing, loss=loss))
        return reports, [cid in answered for cid in ids]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        r = self.first + server_round - 1
        self._round_start = time.perf_counter()
        if len(self.node_of) < self.config.n_clients:
            self._handshake(grid)
        reports, reachable = self._reports(grid, r)
        rp = begin_round(self.setup, r, reports, reachable)
        self.assignments[r] = {cid: rp.experts_of(m) for m, cid in enumerate(rp.ids) if rp.matrix[m].any()}
        self.plans[r] = {
            cid: {
                "profile": rp.reports[m].profile.to_dict(),
                "capacity": int(rp.capacity[m]) if rp.capacity is not None else None,
                "experts": rp.experts_of(m),
            }
            for m, cid in enumerate(rp.ids)
        }
        shared, experts = split_state(rp.global_state)
        cfg = self.config
        messages = []
        for m, (c, cid) in enumerate(zip(rp.sampled, rp.ids)):
            mine = rp.experts_of(m)
            if not mine or cid not in self.node_of:
                continue
            state = dict(shared)
            for j in mine:
                state.update(experts[j])
            content = RecordDict(
                {
                    "arrays": ArrayRecord(state),
                    "config": ConfigRecord(
                        {
                            "experts": mine,
                            "seed": client_seed(cfg, r, c),
                            "round": r,
                            "epochs": cfg.local_epochs,
                            "lr": cfg.lr,
                            "batch-size": cfg.batch_size,
                            "aux-weight": cfg.aux_weight,
                        }
                    ),
                }
            )
            messages.append(Message(content, dst_node_id=self.node_of[cid], message_type=MessageType.TRAIN))
        self._pending = (rp, time.perf_counter())
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self._pending is None:
            raise RuntimeError("aggregate_train before configure_train")
        rp, started = self._pending
        self._pending = None
        received_at = time.time()
        by_client: dict[str, Message] = {}
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                log.warning("round %d: node %s replied with an error: %s", rp.round, node, reply.error)
                continue
            try:
                cid = str(reply.content["info"]["client-id"])
            except Exception as exc:  # no record naming the client: nobody to credit, nothing to aggregate
                log.warning("round %d: dropped a reply of node %s without a client id: %r", rp.round, node, exc)
                continue
            if cid in by_client:
                log.warning("round %d: dropped a second reply for %s (node %s)", rp.round, cid, node)
                continue
            by_client[cid] = reply
        results: dict[str, LocalResult] = {}
        dropped: list[str] = []
        for m, cid in enumerate(rp.ids):
            mine = rp.experts_of(m)
            if not mine:
                continue
            reply = by_client.get(cid)
            # The simulated availability and deadline apply as in the in-process loop;
            # a node that did not reply is a dropout too.
            if reply is None or rp.lost[m] or rp.straggles(self.setup, m):
                dropped.append(cid)
                continue
            try:
                res = results[cid] = _local_result(reply, mine, rp.global_state, self.config.n_experts)
                sent = state_bytes(res.shared) + sum(state_bytes(t) for t in res.experts.values())
                self.uploads[cid] = (sent, max(received_at - float(reply.metadata.created_at), 0.0))
            except Exception as exc:  # a malformed reply (of any kind) never reaches aggregation: a dropout
                log.warning("round %d: dropped the reply of %s: %s", rp.round, cid, exc)
                dropped.append(cid)
        record = finish_round(self.setup, rp, results, dropped, time.perf_counter() - started)
        self.history.add(record)
        if self.checkpoint is not None:
            write_checkpoint(self.setup, self.history, rp.round, self.checkpoint)
        self.round_seconds[rp.round] = time.perf_counter() - self._round_start
        metrics = MetricRecord(
            {
                "accuracy": record.accuracy,
                "test-loss": record.test_loss,
                "bytes-down": record.bytes_down,
                "bytes-up": record.bytes_up,
                "load-cv": record.load_cv,
                "completed": record.completed,
            }
        )
        return ArrayRecord(self.setup.model.state_dict()), metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return []  # evaluation is server-side, in finish_round, as in fedloop

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None


def _local_result(reply: Message, experts: list[int], global_state: Any, n_experts: int) -> LocalResult:
    """A train reply as a :class:`LocalResult`, or ValueError saying what is wrong with it.

    The reply must carry exactly the shared tensors and the assigned experts' tensors of
    the global model, each of its shape and dtype and finite or not (non-finite values are
    screened later, as in the in-process loop); ``routed`` must hold E non-negative counts,
    ``n-samples`` a positive integer, ``train-loss`` a number.
    """
    state = reply.content["arrays"].to_torch_state_dict()
    shared, by_expert = split_state(state)
    missing = [j for j in experts if j not in by_expert]
    if missing or set(by_expert) - set(experts):
        raise ValueError(f"a reply must carry exactly the assigned experts {experts}; got {sorted(by_expert)}")
    want_shared, want_experts = split_state(global_state)
    if set(shared) != set(want_shared):
        raise ValueError(f"shared tensors differ from the model's: {sorted(set(shared) ^ set(want_shared))[:3]}")
    for j in experts:
        if set(by_expert[j]) != set(want_experts[j]):
            raise ValueError(f"expert {j}'s tensors differ from the model's")
    for key, value in state.items():
        want = global_state[key]
        if tuple(value.shape) != tuple(want.shape) or value.dtype != want.dtype:
            raise ValueError(
                f"tensor {key} has shape {tuple(value.shape)} {value.dtype}, the model's is "
                f"{tuple(want.shape)} {want.dtype}"
            )
    routed = np.asarray(reply.content["routed"].to_torch_state_dict()["routed"].numpy(), dtype=float)
    if routed.shape != (n_experts,) or not np.isfinite(routed).all() or (routed < 0).any():
        raise ValueError(f"routed must hold {n_experts} finite counts >= 0; got shape {routed.shape}")
    metrics = reply.content["metrics"]
    n_samples, train_loss = metrics["n-samples"], metrics["train-loss"]
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, float)) or int(n_samples) != n_samples:
        raise ValueError(f"n-samples must be an integer; got {n_samples!r}")
    if n_samples < 1:
        raise ValueError(f"n-samples must be >= 1; got {n_samples}")
    if isinstance(train_loss, bool) or not isinstance(train_loss, (int, float)):
        raise ValueError(f"train-loss must be a number; got {train_loss!r}")
    return LocalResult(
        shared=shared,
        experts=by_expert,
        routed=routed,
        n_samples=int(n_samples),
        train_loss=float(train_loss),
    )
