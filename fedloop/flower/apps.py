"""App objects for ``flwr run`` (``[tool.flwr.app.components]``): the config comes from the run config."""

from __future__ import annotations

from .client_app import make_client_app
from .server_app import make_server_app

client_app = make_client_app()
server_app = make_server_app()
