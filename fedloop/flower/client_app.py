"""The Flower ClientApp: one SuperNode is one fedloop client (its ``partition-id``).

It answers two kinds of query (``hello``: its client id and device profile; ``report``:
the profile again, the global router's routing shares and its loss per expert on its data, the same
:func:`fedloop.client.client_statistics` as the in-process loop) and trains with the same
:func:`fedloop.client.train_local`. A train message carries the shared weights and only
the assigned experts; the reply carries them back, with the samples routed to each expert.

**Device profile.** By default a client reports its entry of the run's seeded profile table
(the simulation's profiles). With ``profile="measure"`` in its node config (``flower-supernode
--node-config 'partition-id=0 num-partitions=4 profile="measure"'``) it measures its own device
instead (:mod:`fedloop.flower.device`); the measurement lives in the node's Flower context
between messages, so it is made once and refreshed every few rounds.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

import alignsolve as als

from ..client import client_statistics, private_report, train_local
from ..data import FederatedData
from ..loop import FedConfig, build_model, load_data, load_profiles, state_bytes
from ..model import MoE
from .device import DeviceMeter

__all__ = ["CONFIG_KEY", "PROFILE_SOURCES", "config_from_context", "make_client_app"]

#: The run-config key holding the FedConfig as JSON (``[tool.flwr.app.config]`` of the app).
CONFIG_KEY = "fedloop-config"

#: Where a client's profile comes from (node config ``profile``): the run's table, or its own device.
PROFILE_SOURCES = ("table", "measure")
#: The Flower context record holding a measuring client's :class:`~fedloop.flower.device.Measurement`.
DEVICE_KEY = "fedloop-device"

_CACHE: dict[str, tuple[FederatedData, MoE, list[als.ClientProfile]]] = {}


def config_from_context(context: Context, fixed: FedConfig | None) -> FedConfig:
    """The run's FedConfig: ``fixed`` when the app was built with one, else the run config's JSON."""
    if fixed is not None:
        return fixed
    text = context.run_config.get(CONFIG_KEY, "{}")
    return FedConfig.from_dict(json.loads(str(text)))


def _local(config: FedConfig) -> tuple[FederatedData, MoE, list[als.ClientProfile]]:
    # A SuperNode process serves many rounds: load the data and build the model once. The
    # device profile is the simulated one of the run's table (a deployment would measure it).
    key = json.dumps(config.to_dict(), sort_keys=True)
    if key not in _CACHE:
        data = load_data(config)
        _CACHE[key] = (data, build_model(config, data), load_profiles(config, data))
    return _CACHE[key]


def _partition(context: Context, config: FedConfig) -> int:
    pid = int(context.node_config["partition-id"])
    count = int(context.node_config.get("num-partitions", config.n_clients))
    if count != config.n_clients or not 0 <= pid < config.n_clients:
        raise ValueError(
            f"num-partitions: the federation must have n_clients = {config.n_clients} SuperNodes "
            f"(one per fedloop client); got partition {pid} of {count}"
        )
    return pid


def _measures(context: Context) -> bool:
    source = str(context.node_config.get("profile", "table"))
    if source not in PROFILE_SOURCES:
        raise ValueError(f"node config profile: must be one of {', '.join(PROFILE_SOURCES)}; got {source!r}")
    return source == "measure"


def _meter(context: Context) -> DeviceMeter:
    saved = context.state.get(DEVICE_KEY)
    return DeviceMeter.from_dict(dict(saved)) if saved is not None else DeviceMeter()


def _measured_profile(
    msg: Message,
    context: Context,
    received: dict[str, torch.Tensor] | None,
    data: FederatedData,
    pid: int,
    model: MoE,
    fallback: als.ClientProfile,
    r: int,
) -> als.ClientProfile:
    """Fold what ``msg`` (round ``r``, with its weights ``received``, if any) tells about this device; the profile
    to report."""
    meter = _meter(context)
    cfg = msg.content["config"]
    if received is not None:  # a message with weights: time its trip
        meter.observe_download(state_bytes(received), msg.metadata.created_at, time.time())
    if "uplink-bytes" in cfg and "uplink-seconds" in cfg:  # the server timed our last weight-carrying reply
        meter.observe_upload(float(cfg["uplink-bytes"]), float(cfg["uplink-seconds"]))
    if meter.due(r):
        meter.measure_compute(model, *data.clients[pid], r)
    profile = meter.profile(fallback, n_samples=data.n_samples[pid])
    context.state[DEVICE_KEY] = ConfigRecord(meter.to_dict())
    return profile


def handle_query(msg: Message, context: Context, config: FedConfig) -> Message:
    data, model, profiles = _local(config)
    pid = _partition(context, config)
    query = msg.content["config"]
    kind = str(query["kind"])
    r = int(query["round"]) if "round" in query else 0  # a hello carries no round
    reply: dict[str, Any] = {"client-id": data.client_ids[pid], "index": pid}
    if kind not in ("hello", "report"):
        raise ValueError(f"config.kind: must be 'hello' or 'report'; got {kind!r}")
    received = msg.content["arrays"].to_torch_state_dict() if kind == "report" else None
    if received is not None:
        model.load_state_dict(received)
    profile = profiles[pid]
    if _measures(context):
        profile = _measured_profile(msg, context, received, data, pid, model, profiles[pid], r)
        reply["profile-source"] = "measure"
    records: dict[str, Any] = {"profile": ConfigRecord(profile.to_dict())}
    if kind == "report":
        routing, loss = private_report(*client_statistics(model, *data.clients[pid]), config, r, pid)
        stats = {"routing": torch.from_numpy(np.asarray(routing))}
        if loss is not None:  # a top-1 private report sends no loss
            stats["loss"] = torch.from_numpy(np.asarray(loss))
        records["stats"] = ArrayRecord(stats)
    return Message(RecordDict({"info": ConfigRecord(reply), **records}), reply_to=msg)


def handle_train(msg: Message, context: Context, config: FedConfig) -> Message:
    data, model, _ = _local(config)
    pid = _partition(context, config)
    cfg = msg.content["config"]
    experts = [int(j) for j in cfg["experts"]]
    received = msg.content["arrays"].to_torch_state_dict()
    missing, unexpected = model.load_state_dict(received, strict=False)
    allowed_missing = {k for k in missing if k.startswith("experts.") and int(k.split(".")[1]) not in experts}
    if unexpected or set(missing) - allowed_missing:
        raise ValueError(f"arrays: must hold the shared weights and experts {experts}; missing {sorted(missing)[:3]}")
    if _measures(context):  # the train message's trip is a downlink measurement too
        meter = _meter(context)
        meter.observe_download(state_bytes(received), msg.metadata.created_at, time.time())
        context.state[DEVICE_KEY] = ConfigRecord(meter.to_dict())
    x, y = data.clients[pid]
    res = train_local(
        model,
        x,
        y,
        experts,
        epochs=int(cfg["epochs"]),
        lr=float(cfg["lr"]),
        batch_size=int(cfg["batch-size"]),
        aux_weight=float(cfg["aux-weight"]),
        seed=int(cfg["seed"]),
    )
    state = dict(res.shared)
    for tensors in res.experts.values():
        state.update(tensors)
    content = RecordDict(
        {
            "arrays": ArrayRecord(state),
            "routed": ArrayRecord({"routed": torch.from_numpy(np.asarray(res.routed, dtype=np.float64))}),
            "metrics": MetricRecord({"n-samples": res.n_samples, "train-loss": float(res.train_loss)}),
            "info": ConfigRecord({"client-id": data.client_ids[pid], "index": pid}),
        }
    )
    return Message(content, reply_to=msg)


def make_client_app(config: FedConfig | None = None) -> ClientApp:
    """A ClientApp bound to ``config`` (or reading it from the run config under :data:`CONFIG_KEY`)."""
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return handle_query(msg, context, config_from_context(context, config))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return handle_train(msg, context, config_from_context(context, config))

    return app
