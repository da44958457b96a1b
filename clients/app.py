"""The ClientApp component for ``flwr run .``: fedge's factory, configured from the run config."""

from fedge.app import build_client_app

__all__ = ["app"]

app = build_client_app()
