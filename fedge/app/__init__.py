"""The federated app: ServerApp/ClientApp factories, strategies, update validation, results."""

from fedge.app.client import build_client_app
from fedge.app.results import RoundRecord, RunResult
from fedge.app.server import build_server_app, run_federation
from fedge.app.strategies import build_strategy, list_strategies

__all__ = [
    "RoundRecord",
    "RunResult",
    "build_client_app",
    "build_server_app",
    "build_strategy",
    "list_strategies",
    "run_federation",
]
