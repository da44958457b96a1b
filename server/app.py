"""The ServerApp component for ``flwr run .``: fedge's factory, configured from the run config.

``[tool.flwr.app.config]`` in ``pyproject.toml`` holds the same options as ``fedge simulate``.
"""

from fedge.app import build_server_app

__all__ = ["app"]

app = build_server_app()
