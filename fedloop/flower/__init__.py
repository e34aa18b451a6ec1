"""fedloop on Flower (extra ``flower``): the aligner as a Message-API strategy, a ClientApp, a local simulation.

``pip install "alignsolve[flower]"``. See ``examples/flower_app/`` for an app folder that
``flwr run`` starts, and docs/flower.md for running it across machines.
"""

from __future__ import annotations

from .client_app import CONFIG_KEY, make_client_app
from .server_app import make_server_app, run_simulation
from .strategy import AlignedMoEStrategy

__all__ = ["CONFIG_KEY", "AlignedMoEStrategy", "make_client_app", "make_server_app", "run_simulation"]
