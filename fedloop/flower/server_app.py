"""The Flower ServerApp running :class:`AlignedMoEStrategy`, and a one-call local simulation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from ..history import History
from ..loop import CHECKPOINT, ConfigError, FedConfig
from .client_app import config_from_context, make_client_app
from .strategy import AlignedMoEStrategy

__all__ = ["make_server_app", "run_simulation"]

log = logging.getLogger("fedloop.flower")


def make_server_app(config: FedConfig | None = None, *, sink: list[AlignedMoEStrategy] | None = None) -> ServerApp:
    """A ServerApp bound to ``config`` (or reading it from the run config's ``fedloop-config``).

    The run config may also name an ``out-dir`` for the history files, ``clients.json`` (per
    round and sampled client: the profile it reported, its planned slots, its experts) and the
    checkpoint written after every round; ``resume = true`` continues from that checkpoint
    (the FedConfig must be the same except ``rounds``). ``round-timeout`` (seconds to wait for
    a round's replies: a node that has not answered by then is a dropout) and ``min-nodes``
    (SuperNodes needed to start; later ones join at the next round) tune the deployment. ``sink``, when given,
    receives the strategy (tests and :func:`run_simulation` read its history from it).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = config_from_context(context, config)
        run_config = context.run_config
        out = run_config.get("out-dir")
        options: dict = {}
        if "round-timeout" in run_config:
            options["timeout"] = float(run_config["round-timeout"])
        if int(run_config.get("min-nodes", 0)) > 0:  # 0: every one of the n_clients SuperNodes
            options["min_nodes"] = int(run_config["min-nodes"])
        if out:
            options["checkpoint"] = Path(str(out)) / CHECKPOINT
            options["resume"] = bool(run_config.get("resume", False))
        elif run_config.get("resume", False):
            raise ConfigError("resume: needs out-dir in the run config (the folder holding the checkpoint)")
        strategy = AlignedMoEStrategy(cfg, **options)
        if sink is not None:
            sink.append(strategy)
        left = cfg.rounds - strategy.first
        if left > 0:
            strategy.start(grid=grid, initial_arrays=strategy.initial_arrays(), num_rounds=left)
        else:
            log.info("the checkpoint already holds all %d rounds: nothing to run", cfg.rounds)
        if out:
            folder = Path(str(out))
            strategy.history.save(folder)
            # Who reported what and got which experts: what a deployment's capacity checks read.
            plans = {str(r): plan for r, plan in strategy.plans.items()}
            seconds = {str(r): t for r, t in strategy.round_seconds.items()}
            (folder / "timings.json").write_text(json.dumps(seconds))  # wall seconds per round, this process's
            (folder / "clients.json").write_text(json.dumps(plans, indent=1))  # last: its presence says "done"
            log.info("history written to %s", out)

    return app


def run_simulation(
    config: FedConfig, *, num_cpus: int = 2, cpus_per_client: float = 1.0, strategy_sink: list | None = None
) -> History:
    """Run ``config`` in Flower's simulation engine (Ray backend), one SuperNode per client.

    Returns the server's history (the same record type as :func:`fedloop.run`);
    ``strategy_sink``, when given, also receives the strategy (per-round timings).
    """
    from flwr.simulation import run_simulation as flwr_run_simulation

    sink: list[AlignedMoEStrategy] = []
    flwr_run_simulation(
        server_app=make_server_app(config, sink=sink),
        client_app=make_client_app(config),
        num_supernodes=config.n_clients,
        backend_config={
            "client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
            "init_args": {"num_cpus": num_cpus, "include_dashboard": False},
        },
    )
    if not sink or not sink[0].history.records:
        raise RuntimeError("the Flower simulation ended without a completed round (see the log above)")
    if strategy_sink is not None:
        strategy_sink.append(sink[0])
    return sink[0].history
