"""The Flower ServerApp running :class:`AlignedMoEStrategy`, and a one-call local simulation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from ..history import History
from ..loop import FedConfig
from .client_app import config_from_context, make_client_app
from .strategy import AlignedMoEStrategy

__all__ = ["make_server_app", "run_simulation"]

log = logging.getLogger("fedloop.flower")


def make_server_app(config: FedConfig | None = None, *, sink: list[AlignedMoEStrategy] | None = None) -> ServerApp:
    """A ServerApp bound to ``config`` (or reading it from the run config's ``fedloop-config``).

    The run config may also name an ``out-dir`` for the history files and ``clients.json``
    (per round and sampled client: the profile it reported, its planned slots, its experts). ``sink``, when given,
    receives the strategy (tests and :func:`run_simulation` read its history from it).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = config_from_context(context, config)
        strategy = AlignedMoEStrategy(cfg)
        if sink is not None:
            sink.append(strategy)
        strategy.start(grid=grid, initial_arrays=strategy.initial_arrays(), num_rounds=cfg.rounds)
        out = context.run_config.get("out-dir")
        if out:
            folder = Path(str(out))
            strategy.history.save(folder)
            # Who reported what and got which experts: what a deployment's capacity checks read.
            plans = {str(r): plan for r, plan in strategy.plans.items()}
            (folder / "clients.json").write_text(json.dumps(plans, indent=1))
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
